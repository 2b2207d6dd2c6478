"""int8 conv2d on every distinct conv shape of ResNet-18 (CIFAR-10 form, width 64), batch 1 and 32,
against its peers, measured side by side in one run.

    python benchmarks/bench_int8_conv.py [--quick] [--no-write] [--device cpu|cuda|all] [--threads N]
                                         [--isa auto|portable|avx2|avx512vnni|avx512vbmi|amx]

    --quick      the first three shapes at batch 1 (CUDA: batch 32), short timing
    --no-write   print the tables only
    --device     which sections run: cpu, cuda (needs a GPU) or all (default: CUDA only where there is one)
    --threads N  torch threads of the CPU section (default: torch's choice); every contender uses them
    --isa        CPU kernel path of ours (default auto: the best this CPU has, amx on an Intel Xeon with AMX)

CPU peers, all measured in the same run on every machine: F.conv2d in fp32 and in bf16 (oneDNN,
channels_last; the bf16 weight, bias and input are cast once, outside the timed call) and
torch.ops.quantized.conv2d (prepacked, the same static uint8 -> uint8 semantics) under each quantized
engine x86, fbgemm and onednn (an engine that this torch build lacks is skipped). Where the machine
has AMX, the table's machine line also gives the AMX limit measured in the run (ck.ops.amx_peak).

CUDA section (when a GPU is present): QuantConv2d moved to the GPU against cuDNN fp16 channels_last
on the ResNet-18 shapes, CIFAR-10 and ImageNet forms, batch 32.

The written file holds the sections that ran, named by the CPU path (common.results_name):
benchmarks/results/int8_conv_amx.md on the amx path (Intel Xeon with AMX), int8_conv.md on
avx512vnni / avx512vbmi (the AMD Zen 4 tables) or without a CPU section, int8_conv_<path>.md on
another path (e.g. avx2).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from tqdm import tqdm

import compress_kernels as ck

from common import (
    QUANTIZED_ENGINES,
    amx_limit_line,
    best_seconds,
    cpu_and_cuda_parser,
    cpu_command,
    failures_line,
    machine_line,
    markdown_table,
    per_quantized_engine,
    run_cpu_and_cuda_sections,
)

warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated.*")

# (name, in_channels, out_channels, kernel, stride, input size) of ResNet-18 CIFAR, width 64
SHAPES = [
    ("stem", 3, 64, 3, 1, 32), ("layer1", 64, 64, 3, 1, 32),
    ("layer2.0.conv1", 64, 128, 3, 2, 32), ("layer2 3x3", 128, 128, 3, 1, 16), ("layer2 down", 64, 128, 1, 2, 32),
    ("layer3.0.conv1", 128, 256, 3, 2, 16), ("layer3 3x3", 256, 256, 3, 1, 8), ("layer3 down", 128, 256, 1, 2, 16),
    ("layer4.0.conv1", 256, 512, 3, 2, 8), ("layer4 3x3", 512, 512, 3, 1, 4), ("layer4 down", 256, 512, 1, 2, 8),
]


def bench(batch, cin, cout, k, stride, size, min_run_time, failures=None):
    torch.manual_seed(0)
    pad = k // 2
    conv = torch.nn.Conv2d(cin, cout, k, stride, pad)
    x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last)
    w = conv.weight.detach().contiguous(memory_format=torch.channels_last)
    b = conv.bias.detach()
    t = {}
    with torch.no_grad():
        t["fp32"] = best_seconds(lambda: F.conv2d(x, w, b, stride, pad), min_run_time)
        # bf16 peer: input and weight cast once (channels_last kept), outside the timed call
        x_bf16 = x.bfloat16().contiguous(memory_format=torch.channels_last)
        w_bf16 = w.bfloat16().contiguous(memory_format=torch.channels_last)
        b_bf16 = b.bfloat16()
        t["bf16"] = best_seconds(lambda: F.conv2d(x_bf16, w_bf16, b_bf16, stride, pad), min_run_time)
        q = ck.QuantConv2d.from_float(conv, input_scale=0.05, input_zero_point=128, output_scale=0.1,
                                      output_zero_point=128)
        x_u8 = ck.numerics.quantize(x, 0.05, 128, torch.uint8).contiguous(memory_format=torch.channels_last)
        t["ours"] = best_seconds(lambda: q(x_u8), min_run_time)
        w_q = torch.quantize_per_channel(conv.weight.detach(), q.weight_scale.double(),
                                         torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        x_q = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8).contiguous(memory_format=torch.channels_last)

        def time_engine(engine):
            packed = torch.ops.quantized.conv2d_prepack(w_q, b, [stride, stride], [pad, pad], [1, 1], 1)
            return best_seconds(lambda: torch.ops.quantized.conv2d(x_q, packed, 0.1, 128), min_run_time)

        t.update(per_quantized_engine(time_engine, failures))  # keys "x86", "fbgemm", "onednn"
    return t


# ResNet-18 ImageNet form: (name, in_channels, out_channels, kernel, stride, input size)
IMAGENET_SHAPES = [
    ("conv1 7x7", 3, 64, 7, 2, 224), ("layer1 3x3", 64, 64, 3, 1, 56),
    ("layer2.0.conv1", 64, 128, 3, 2, 56), ("layer2 3x3", 128, 128, 3, 1, 28), ("layer2 down", 64, 128, 1, 2, 56),
    ("layer3.0.conv1", 128, 256, 3, 2, 28), ("layer3 3x3", 256, 256, 3, 1, 14), ("layer3 down", 128, 256, 1, 2, 28),
    ("layer4.0.conv1", 256, 512, 3, 2, 14), ("layer4 3x3", 512, 512, 3, 1, 7), ("layer4 down", 256, 512, 1, 2, 14),
]


def bench_cuda(batch, cin, cout, k, stride, size, min_run_time):
    from common import cuda_best_seconds

    torch.manual_seed(0)
    pad = k // 2
    conv = torch.nn.Conv2d(cin, cout, k, stride, pad)
    q = ck.QuantConv2d.from_float(conv, input_scale=0.05, input_zero_point=128, output_scale=0.1,
                                  output_zero_point=128).to("cuda")
    x = torch.randn(batch, cin, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    x_u8 = ck.numerics.quantize(x, 0.05, 128, torch.uint8).contiguous(memory_format=torch.channels_last)
    conv_h = conv.to("cuda").half().to(memory_format=torch.channels_last)
    x_h = x.half().contiguous(memory_format=torch.channels_last)
    t = {}
    with torch.no_grad():
        t["ours"] = cuda_best_seconds(lambda: q(x_u8), min_run_time)
        t["fp16"] = cuda_best_seconds(lambda: conv_h(x_h), min_run_time)
    return t


def cuda_section(quick: bool) -> str:
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape
    min_run_time = 0.05 if quick else 0.3
    groups = [("CIFAR-10", SHAPES), ("ImageNet", IMAGENET_SHAPES)]
    if quick:
        groups = [("CIFAR-10", SHAPES[:3])]
    rows = []
    for form, shapes in groups:
        for name, cin, cout, k, stride, size in tqdm(shapes, desc=f"conv shapes (CUDA, {form})"):
            batch = 32
            t = bench_cuda(batch, cin, cout, k, stride, size, min_run_time)
            out = (size + 2 * (k // 2) - k) // stride + 1
            tops = 2.0 * batch * out * out * cout * cin * k * k / 1e12
            rows.append([form, name, batch, f"{cin}->{cout} {k}x{k}/{stride} @{size}", tops / t["ours"],
                         tops / t["fp16"], t["fp16"] / t["ours"]])
    headers = ["form", "layer", "batch", "shape", "ours TOP/s", "cuDNN fp16 TOP/s", "vs cuDNN fp16"]
    props = torch.cuda.get_device_properties(0)
    return (f"### int8 conv2d, ResNet-18 shapes (CUDA)\n\n{props.name} ({props.multi_processor_count} SMs), torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}. Command: "
            "`python benchmarks/bench_int8_conv.py`.\nRatios are peer time / our time (> 1: ours faster), "
            "CUDA-event timing, fastest block, same run. Ours: QuantConv2d on the GPU (uint8 NHWC in -> uint8 out, "
            "per-channel fused requantization, implicit GEMM on int8 tensor cores; depthwise not in ResNet-18). "
            "Peer: `nn.Conv2d` in fp16, channels_last, `cudnn.benchmark = True`.\n\n"
            + markdown_table(headers, rows))


def main() -> None:
    parser = cpu_and_cuda_parser(__doc__, "three shapes, batch 1, short timing", "int8_conv")
    args = parser.parse_args()
    command = cpu_command("bench_int8_conv.py", args)
    run_cpu_and_cuda_sections(args, "int8_conv", lambda: cpu_section(args.quick, command),
                              lambda: cuda_section(args.quick))


def cpu_section(quick: bool, command: str = "python benchmarks/bench_int8_conv.py") -> str:
    shapes = SHAPES[:3] if quick else SHAPES
    batches = [1] if quick else [1, 32]
    min_run_time = 0.05 if quick else 0.3
    limit = amx_limit_line()  # "" without AMX
    failures: dict[str, str] = {}
    rows = []
    for batch in batches:
        for name, cin, cout, k, stride, size in tqdm(shapes, desc=f"conv shapes, batch {batch}"):
            t = bench(batch, cin, cout, k, stride, size, min_run_time, failures)
            out = (size + 2 * (k // 2) - k) // stride + 1
            gop = 2.0 * batch * out * out * cout * cin * k * k / 1e9
            ao = [t[e] for e in QUANTIZED_ENGINES if e in t]
            rows.append([name, batch, f"{cin}->{cout} {k}x{k}/{stride} @{size}", gop / t["ours"], t["fp32"] / t["ours"],
                         t["bf16"] / t["ours"]] + [t[e] / t["ours"] if e in t else "n/a" for e in QUANTIZED_ENGINES]
                        + [min(ao) / t["ours"] if ao else "n/a"])
    headers = (["layer", "batch", "shape", "ours GOP/s", "vs fp32", "vs bf16"]
               + [f"vs ao {e}" for e in QUANTIZED_ENGINES] + ["vs best ao"])
    prose = (f"### int8 conv2d, ResNet-18 (CIFAR-10 form) shapes (CPU)\n\n{machine_line()}. "
             + (f"{limit}. " if limit else "") + f"Command: `{command}`.\n"
             "Every `vs` column is peer time / our time, both measured in this run on the same input and threads: "
             "> 1 means ours is faster, < 1 means the peer is.\n"
             "Ours: QuantConv2d (packed weight, per-channel scales, uint8 NHWC in -> uint8 out, fused requantization). "
             "Peers: `F.conv2d` in fp32 (`vs fp32`) and in bf16 (`vs bf16`), both channels_last (oneDNN; bf16 on AMX "
             "where the CPU has it; bf16 weight, bias and input cast once, outside the timed call), and "
             "`torch.ops.quantized.conv2d` prepacked with the same static uint8 -> uint8 semantics under each "
             "quantized engine, x86, fbgemm and onednn (`vs ao <engine>`; `vs best ao` is against the fastest of them "
             "on that shape; n/a: engine missing from this torch build or failed).\n\n"
             + markdown_table(headers, rows))
    prose += failures_line(failures)
    return prose


if __name__ == "__main__":
    main()
