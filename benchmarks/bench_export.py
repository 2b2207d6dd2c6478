"""ONNX Runtime on the exported integer-only ResNet-18 (CIFAR form, width 16, the digits study's model),
both forms of `compress_kernels.export.to_onnx` next to our own kernels, at batch 1 and 32, in one run:
`exact` (ConvInteger / MatMulInteger + the fixed-point requantization in ONNX int64 arithmetic: our
integers bit for bit) and `fast` (QLinearConv and float requantization: within one step).

    python benchmarks/bench_export.py [--quick] [--no-write] [--threads N]

ONNX Runtime runs with intra_op_num_threads = torch's thread count and its default graph optimizations.
Calibration uses random batches: latency does not depend on the data, and nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compress_kernels as ck  # noqa: E402
from compress_kernels.export import to_onnx  # noqa: E402
from compress_kernels.study import models  # noqa: E402

from common import (  # noqa: E402
    best_seconds,
    cpu_model,
    machine_line,
    markdown_table,
    model_parser,
    results_name,
    write_result,
)


def main() -> None:
    import onnxruntime as ort

    args = model_parser(__doc__).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    min_run_time = 0.2 if args.quick else 1.0
    torch.manual_seed(0)
    model = models.resnet18_cifar(width=16).eval()
    ck.calibrate(model, [torch.randn(8, 3, 32, 32) for _ in range(2)])
    ours = ck.convert_(model, ck.Int8StaticConfig(observer="minmax")).model
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = {}
    with tempfile.TemporaryDirectory() as folder:
        for form in ("exact", "fast"):
            path = os.path.join(folder, f"resnet_{form}.onnx")
            to_onnx(ours, (torch.randn(1, 3, 32, 32),), path, form=form)
            sessions[form] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rows = []
    for batch in ([1] if args.quick else [1, 32]):
        x = torch.randn(batch, 3, 32, 32)
        feeds = {form: {s.get_inputs()[0].name: x.numpy()} for form, s in sessions.items()}
        t: dict[str, float] = {}
        with torch.no_grad():
            for _ in range(2):  # two interleaved rounds; the fastest of each counts
                for name, fn in (("ours", lambda: ours(x)),
                                 ("exact", lambda: sessions["exact"].run(None, feeds["exact"])),
                                 ("fast", lambda: sessions["fast"].run(None, feeds["fast"]))):
                    t[name] = min(t.get(name, float("inf")), best_seconds(fn, min_run_time))
        rows.append([batch, t["ours"] * 1e3, t["exact"] * 1e3, t["fast"] * 1e3, t["exact"] / t["ours"],
                     t["fast"] / t["ours"], t["exact"] / t["fast"]])
    command = "python benchmarks/bench_export.py" + (f" --threads {args.threads}" if args.threads else "") + (
        " --quick" if args.quick else "")
    headers = ["batch", "ours ms", "ORT exact ms", "ORT fast ms", "ORT exact / ours", "ORT fast / ours",
               "exact / fast"]
    text = (f"### ONNX export: ResNet-18 (CIFAR form, width 16) integer-only int8 in ONNX Runtime\n\n"
            f"{machine_line()}; onnxruntime {ort.__version__} (CPUExecutionProvider, "
            f"{torch.get_num_threads()} intra-op threads) on the same {cpu_model()}. Command: `{command}`.\n"
            "Ratios are time / time in the same run (> 1: the first is slower). Ours: `convert_(model, "
            "Int8StaticConfig(observer=\"minmax\"))`; ORT exact / fast: `ck.export.to_onnx(..., form=\"exact\" / "
            "\"fast\")` of that model.\n\n" + markdown_table(headers, rows))
    print(text)
    if not args.no_write:
        print("wrote", write_result(results_name("export", ck.ops.cpu_isa()), text))


if __name__ == "__main__":
    main()
