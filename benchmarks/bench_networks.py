"""Whole networks: the package's ResNet-18 (CIFAR form, width 64, 32x32 inputs) converted to integer-only
int8 with `calibrate` + `convert_(Int8StaticConfig(observer="minmax"))`, against fp32 and bf16 autocast
(channels_last, oneDNN) and torch.ao FX int8 (`prepare_fx` / `convert_fx`, x86 engine), at batch 1 and
32, in one run. The `in kernels` column is the share of the converted network's CPU time spent inside
compress_kernels ops (torch.profiler over a few calls); the rest is Python, dispatch and glue.

    python benchmarks/bench_networks.py [--quick] [--no-write] [--threads N]

Calibration uses random batches: latency does not depend on the data, and nothing is downloaded.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compress_kernels as ck  # noqa: E402
from compress_kernels.study import models  # noqa: E402

from common import best_seconds, machine_line, markdown_table, model_parser, results_name, write_result  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated.*")


def torch_ao_int8(model: torch.nn.Module, calibration: list[torch.Tensor]) -> torch.nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (calibration[0],))
    for batch in calibration:
        prepared(batch)
    return convert_fx(prepared)


def kernel_share(model: torch.nn.Module, x: torch.Tensor, calls: int = 5) -> float:
    """Share of model(x)'s CPU time inside compress_kernels ops."""
    from torch.profiler import ProfilerActivity, profile

    model(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ours = sum(e.self_cpu_time_total for e in events if e.key.startswith("compress_kernels::"))
    return ours / total if total else float("nan")


def main() -> None:
    args = model_parser(__doc__).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    min_run_time = 0.2 if args.quick else 1.0
    torch.manual_seed(0)
    model = models.resnet18_cifar(width=64).eval()
    calibration = [torch.randn(8, 3, 32, 32) for _ in range(4)]
    ours = copy.deepcopy(model)
    ck.calibrate(ours, calibration)
    ours = ck.convert_(ours, ck.Int8StaticConfig(observer="minmax")).model
    ao = torch_ao_int8(model, calibration)
    float_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    rows = []
    for batch in ([1] if args.quick else [1, 32]):
        x = torch.randn(batch, 3, 32, 32)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        t: dict[str, float] = {}
        with torch.no_grad():
            for _ in range(2):  # two interleaved rounds; the fastest of each counts
                for name, fn in (("fp32", lambda: float_cl(x_cl)), ("ours", lambda: ours(x)), ("ao", lambda: ao(x))):
                    t[name] = min(t.get(name, float("inf")), best_seconds(fn, min_run_time))
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    t["bf16"] = min(t.get("bf16", float("inf")), best_seconds(lambda: float_cl(x_cl), min_run_time))
            share = kernel_share(ours, x)
        rows.append([batch, t["fp32"] * 1e3, t["bf16"] * 1e3, t["ao"] * 1e3, t["ours"] * 1e3, t["fp32"] / t["ours"],
                     t["bf16"] / t["ours"], t["ao"] / t["ours"], f"{100 * share:.0f}%"])
    command = "python benchmarks/bench_networks.py" + (f" --threads {args.threads}" if args.threads else "") + (
        " --quick" if args.quick else "")
    headers = ["batch", "fp32 ms", "bf16 ms", "torch.ao int8 ms", "ours int8 ms", "vs fp32", "vs bf16",
               "vs torch.ao", "in kernels"]
    text = (f"### Whole network: ResNet-18 (CIFAR form, width 64) integer-only int8\n\n{machine_line()}. "
            f"Command: `{command}`.\nRatios are peer time / our time (> 1: ours faster), same run. Ours: "
            "`calibrate` + `convert_(model, Int8StaticConfig(observer=\"minmax\"))`, uint8 NHWC from the first "
            "Quantize to the last DeQuantize. Peers: the float model in fp32 and under bf16 autocast (channels_last), "
            "torch.ao FX int8 (x86 engine). `in kernels`: share of our network's CPU time inside compress_kernels "
            "ops.\n\n" + markdown_table(headers, rows))
    print(text)
    if not args.no_write:
        print("wrote", write_result(results_name("networks", ck.ops.cpu_isa()), text))


if __name__ == "__main__":
    main()
