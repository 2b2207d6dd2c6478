"""Whole-model cost of quantization-aware training: one SGD step (forward, backward, optimizer) of the
package's ResNet-18 (CIFAR form) in float, under compress_kernels.prepare_qat_, and under torch.ao's
prepare_qat_fx (the peer: its default fbgemm QAT qconfig, fused ConvBn, fake-quant modules), all in
one run on the same batches. The goal: a QAT step costs <= 1.3x a float step.

    python benchmarks/bench_qat.py [--quick] [--no-write] [--width 16] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compress_kernels as ck  # noqa: E402
from compress_kernels.study import models  # noqa: E402

from common import best_seconds, machine_line, markdown_table, results_name, write_result  # noqa: E402


def train_step(model, opt, x, y):
    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def torch_ao_qat(model, x):
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping("fbgemm"), (x,))


def measure(width: int, batch: int, min_run_time: float, rounds: int = 3) -> list:
    torch.manual_seed(0)
    model = models.resnet18_cifar(width=width).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    contenders = {
        "float": copy.deepcopy(model),
        "compress_kernels QAT": ck.prepare_qat_(model, ck.QATConfig(), inplace=False),
        "compress_kernels QAT (LSQ)": ck.prepare_qat_(model, ck.QATConfig(learnable_scale=True), inplace=False),
        "torch.ao QAT (prepare_qat_fx)": torch_ao_qat(model, x),
    }
    steps = {}
    for name, m in contenders.items():
        m.train()
        steps[name] = train_step(m, torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9), x, y)
    # rounds over all contenders, fastest per contender: load from other processes drifts over a run
    times = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name] = min(times[name], best_seconds(step, min_run_time / rounds))
    for name, t in times.items():
        print(f"{name}: {t * 1e3:.1f} ms", flush=True)
    base = times["float"]
    return [[name, width, batch, t * 1e3, t / base, times["torch.ao QAT (prepare_qat_fx)"] / t]
            for name, t in times.items()]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 8, batch 32, short timing")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/qat.md")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 by default: on this shared 2-core machine a descheduled second "
                             "thread stalls every parallel region, and whole-model steps are full of them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, batch = (8, 32) if args.quick else (args.width, args.batch)
    rows = measure(width, batch, 1.0 if args.quick else 6.0)
    headers = ["training step", "width", "batch", "ms / step", "x float step", "torch.ao QAT / this"]
    text = "\n".join([
        "# QAT: cost of a training step (whole model)",
        "",
        f"Machine: {machine_line()}. ResNet-18 (CIFAR form) on 32x32 inputs; one step = forward + "
        "cross-entropy + backward + SGD step; fastest of repeated steps. compress_kernels QAT: BatchNorm "
        "folded into fake-quantized per-channel int8 weights, EMA-observed uint8 activations (fused "
        "fake_quant_observe), or LSQ-learned scales. Goal: <= 1.3x the float step.",
        "",
        markdown_table(headers, rows),
        "",
        "Command: `python benchmarks/bench_qat.py" + (" --quick" if args.quick else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "") + "`",
    ])
    print(text)
    if not args.no_write:
        print("wrote", write_result(results_name("qat", ck.ops.cpu_isa()), text))
    return text


if __name__ == "__main__":
    main()
