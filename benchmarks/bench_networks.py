"""Whole networks: the package's ResNet-18 (CIFAR form, width 64 by default, 32x32 inputs) compressed every
way the package can, against fp32 and bf16 autocast (channels_last, oneDNN), torch.ao FX int8 (`prepare_fx` /
`convert_fx`, x86 engine) and ONNX Runtime on our exported integer model (`to_onnx`, exact and fast form), at
batch 1 and 32, all in one run.

Ours: int8 static (`calibrate` + `convert_(Int8StaticConfig(observer="minmax"))`), int8 QAT (`prepare_qat_`,
observers run on a few batches, `freeze_qat_`, `convert_`), 2:4 int8 static (magnitude 2:4 pruning, then
`Int8StaticConfig(sparse24=True)`), k-means 4-bit codebooks (`CodebookConfig(bits=4)` on the BatchNorm-folded
model, as deployed) and 2:4 fp32
(`Sparse24Config(prune=True)`). For each of ours the `kernels` column is the network's wall time over the time its
compress_kernels ops take in it (torch.profiler, the fastest of 10 profiled calls): 1.00x
would be a network that is nothing but its kernels; the rest is Python, dispatch, glue and float layers
(BatchNorm / ReLU of the codebook and 2:4 fp32 models, which are not folded).

    python benchmarks/bench_networks.py [--quick] [--no-write] [--threads N] [--width W]

`--width 8` times the study's model (`make demo`: width 8 on the digits at 32x32). Calibration uses random
batches: latency does not depend on the data, and nothing is downloaded.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compress_kernels as ck  # noqa: E402
from compress_kernels.study import models  # noqa: E402

from common import (  # noqa: E402
    best_seconds,
    cpu_seconds,
    machine_line,
    markdown_table,
    model_parser,
    results_name,
    write_result,
)

warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated.*")


def torch_ao_int8(model: torch.nn.Module, calibration: list[torch.Tensor]) -> torch.nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (calibration[0],))
    for batch in calibration:
        prepared(batch)
    return convert_fx(prepared)


def time_over_kernels(model: torch.nn.Module, x: torch.Tensor, calls: int = 10) -> float:
    """model(x)'s wall time over the time its compress_kernels ops take in it (torch.profiler: the ops' time
    on the calling thread), in the fastest of `calls` separately profiled calls (the call least disturbed by
    other jobs on the shared machine). The profiler's own cost per op counts as time outside the kernels."""
    from torch.profiler import ProfilerActivity, profile

    model(x)
    best_wall, ratio = float("inf"), float("nan")
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            model(x)
            wall = time.perf_counter() - start
        ours = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("compress_kernels::"))
        if wall < best_wall:
            best_wall, ratio = wall, wall / (ours * 1e-6)
    return ratio


def build_ours(model: torch.nn.Module, calibration: list[torch.Tensor]) -> dict[str, torch.nn.Module]:
    """Every compressed form of `model` (an evaluation-mode float ResNet) this benchmark times."""
    from compress_kernels.adaround import folded_copy
    from compress_kernels.prune import PruneConfig, prune_

    built = {}
    static = copy.deepcopy(model)
    ck.calibrate(static, calibration)
    built["int8 static"] = ck.convert_(static, ck.Int8StaticConfig(observer="minmax")).model
    qat = ck.prepare_qat_(copy.deepcopy(model), ck.QATConfig(), inplace=False)
    qat.train()
    with torch.no_grad():  # the observers see the calibration batches; no training step (latency only)
        for batch in calibration:
            qat(batch)
    ck.freeze_qat_(qat)
    built["int8 QAT"] = ck.convert_(qat.eval()).model
    pruned = copy.deepcopy(model)
    pruner = prune_(pruned, PruneConfig(granularity="2:4"))
    pruner.remove()
    pruned.eval()
    ck.calibrate(pruned, calibration)
    built["2:4 int8 static"] = ck.convert_(pruned, ck.Int8StaticConfig(observer="minmax", sparse24=True)).model
    # clustered as deployed (and as the study does it): on the BatchNorm-folded model
    built["k-means 4-bit"] = ck.convert_(folded_copy(model), ck.CodebookConfig(bits=4), inplace=False).model.eval()
    built["2:4 fp32"] = ck.convert_(model, ck.Sparse24Config(prune=True), inplace=False).model.eval()
    return built


def onnx_sessions(int_model: torch.nn.Module, folder: str, threads: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # no spinning between runs: a spinning ONNX Runtime thread takes the core the next contender runs on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    sessions = {}
    for form in ("exact", "fast"):
        path = os.path.join(folder, f"resnet_{form}.onnx")
        ck.to_onnx(int_model, (torch.randn(1, 3, 32, 32),), path, form=form)
        sessions[f"ORT {form} (our int8 static)"] = ort.InferenceSession(path, options,
                                                                         providers=["CPUExecutionProvider"])
    return sessions


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64: the standard model; "
                                                              "8: the study's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime as ort

    min_run_time = 0.2 if args.quick else 0.5
    torch.manual_seed(0)
    model = models.resnet18_cifar(width=args.width).eval()
    calibration = [torch.randn(8, 3, 32, 32) for _ in range(4)]
    ours = build_ours(model, calibration)
    ao = torch_ao_int8(model, calibration)
    float_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    float_nchw = copy.deepcopy(model)
    batches = [1] if args.quick else [1, 32]
    times: dict[tuple[str, int], float] = {}
    kernels: dict[tuple[str, int], float] = {}  # network time / kernel time
    # one thread: CPU time per call (robust to other jobs); more threads: wall time (the workers' time counts)
    timer = cpu_seconds if torch.get_num_threads() == 1 else best_seconds
    with tempfile.TemporaryDirectory() as folder:
        sessions = onnx_sessions(ours["int8 static"], folder, torch.get_num_threads())
        for batch in batches:
            x = torch.randn(batch, 3, 32, 32)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            feed = x.numpy()

            def bf16():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return float_cl(x_cl)

            contenders = {"fp32": lambda: float_cl(x_cl), "fp32 NCHW": lambda: float_nchw(x), "bf16 autocast": bf16,
                          "torch.ao FX int8": lambda: ao(x)}
            contenders.update({name: (lambda m=m: m(x)) for name, m in ours.items()})
            contenders.update({name: (lambda s=s: s.run(None, {s.get_inputs()[0].name: feed}))
                               for name, s in sessions.items()})
            with torch.no_grad():
                for _ in range(2):  # two interleaved rounds; the fastest of each counts
                    for name, fn in contenders.items():
                        times[name, batch] = min(times.get((name, batch), float("inf")), timer(fn, min_run_time))
        names = [n for n in contenders if n != "fp32 NCHW"]
    # profiled after every timing (a profiler session left the calls after it slower in this process)
    with torch.no_grad():
        for batch in batches:
            x = torch.randn(batch, 3, 32, 32)
            for name, m in ours.items():
                kernels[name, batch] = time_over_kernels(m, x)
    for batch in batches:  # the fp32 peer: the faster memory format (channels_last or NCHW)
        times["fp32", batch] = min(times["fp32", batch], times.pop(("fp32 NCHW", batch)))
    rows = []
    for name in names:
        row = [name]
        for batch in batches:
            t = times[name, batch]
            row += [t * 1e3, times["fp32", batch] / t, times["torch.ao FX int8", batch] / t]
            row.append(f"{kernels[name, batch]:.2f}x" if (name, batch) in kernels else "")
        rows.append(row)
    command = ("python benchmarks/bench_networks.py" + (f" --threads {args.threads}" if args.threads else "")
               + (f" --width {args.width}" if args.width != 64 else "") + (" --quick" if args.quick else ""))
    headers = ["network"]
    for batch in batches:
        headers += [f"ms b={batch}", f"vs fp32 b={batch}", f"vs torch.ao b={batch}", f"kernels b={batch}"]
    text = (f"### Whole network: ResNet-18 (CIFAR form, width {args.width}), every compressed form\n\n"
            f"{machine_line()}; onnxruntime {ort.__version__} (CPUExecutionProvider, {torch.get_num_threads()} "
            f"intra-op threads). Command: `{command}`.\nRatios are peer time / network time (> 1: the network "
            "is faster than the peer), fastest call (in the calling thread's CPU time with one thread, else wall "
            "time), all timed in the same run (interleaved rounds). fp32: the float "
            "model in channels_last or NCHW memory, whichever is faster; bf16 autocast: channels_last (oneDNN). "
            "Ours: int8 static = `calibrate` + `Int8StaticConfig(observer=\"minmax\")` (uint8 NHWC from the first "
            "Quantize to the last DeQuantize); "
            "int8 QAT = `prepare_qat_` + `freeze_qat_` + `convert_`; 2:4 int8 static = magnitude 2:4 pruning + "
            "`Int8StaticConfig(sparse24=True)`; k-means 4-bit = `CodebookConfig(bits=4)` on the BatchNorm-folded "
            "model; 2:4 fp32 = "
            "`Sparse24Config(prune=True)`. ORT exact / fast: `ck.to_onnx(int8 static, form=\"exact\" / \"fast\")` "
            "in ONNX Runtime. `kernels`: the network's wall time over the time its compress_kernels ops take in it, "
            "in the fastest of 10 profiled calls (torch.profiler; 1.00x = nothing but kernels; the profiler's own "
            "per-op cost counts outside).\n\n"
            + markdown_table(headers, rows))
    print(text)
    if not args.no_write:
        print("wrote", write_result(results_name("networks" + (f"_w{args.width}" if args.width != 64 else ""),
                                                 ck.ops.cpu_isa()), text))


if __name__ == "__main__":
    main()
