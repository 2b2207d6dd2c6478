"""Command line: ``python -m compress_kernels <command>``.

  tour    the int8 linear tour: train a small MLP on the bundled digits, convert it to integer-only
          and dynamic int8, and compare accuracy, speed and size (no download, ~10 s)
  isa     print the CPU path the kernels use
  study   compress a trained ResNet-18 every way (int8, codebooks, 2:4, pruning, distillation) and
          compare top-1, latency, stored bytes (python -m compress_kernels study --help)
  sensitivity  which layer to compress how: per-layer sensitivity of the study's model, mixed
          assignments at the size of uniform k-means 4-bit and the latency of uniform int8, Pareto plots
  transformer  a small ViT-style transformer on the digits: static int8 (smoothed), QAT, 2:4 by magnitude,
          Wanda and SparseGPT, 2:4 + fine-tuning; top-1 of each (~15 s with the cached checkpoint)
"""

from __future__ import annotations

import argparse
import sys


def _tour(args) -> int:
    import time

    import torch
    from torch import nn

    import compress_kernels as ck
    from compress_kernels.study import data, training

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = data.load_digits(size=8, channels=1)
    x_train, x_test = x_train.flatten(1), x_test.flatten(1)
    model = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))

    def fit(m, xb, yb):
        return nn.functional.cross_entropy(m(xb), yb)

    training.train(model, x_train.reshape(-1, 1, 8, 8), y_train, epochs=args.epochs, lr=0.02, augment=False,
                   loss_fn=lambda m, xb, yb: fit(m, xb.flatten(1), yb), progress=True, desc="train MLP")
    fp32_acc = training.evaluate(model, x_test, y_test)

    dynamic = ck.convert_(model, ck.Int8DynamicConfig(), inplace=False).model
    dyn_acc = training.evaluate(dynamic, x_test, y_test)

    def bench(m, x, reps=200):
        with torch.no_grad():
            m(x)
            t = time.perf_counter()
            for _ in range(reps):
                m(x)
        return (time.perf_counter() - t) / reps * 1e6

    batch = x_test[:256]
    rows = [("fp32", fp32_acc, bench(model, batch), sum(p.numel() * 4 for p in model.parameters())),
            ("int8 dynamic (QuantLinear)", dyn_acc, bench(dynamic, batch),
             sum(m.weight_q.numel() + m.weight_scale.numel() * 4 + (m.bias.numel() * 4 if m.bias is not None else 0)
                 for m in dynamic.modules() if isinstance(m, ck.QuantLinear)))]
    print(f"\nint8 linear tour on scikit-learn digits ({len(x_test)} test images), CPU path: {ck.cpu_isa()}\n")
    print(f"{'model':<30}{'top-1 %':>9}{'us / batch 256':>15}{'weight bytes':>14}")
    for name, acc, us, size in rows:
        print(f"{name:<30}{acc:>9.2f}{us:>16.1f}{size:>14,}")

    # Integer-only: one layer end to end, checked against the reference simulation.
    layer = model[2]
    h = torch.relu(model[0](x_test)).detach()
    in_scale, in_zp = ck.numerics.choose_qparams(h.min(), h.max(), torch.uint8)
    out = layer(h).detach()
    out_scale, out_zp = ck.numerics.choose_qparams(out.min(), out.max(), torch.uint8)
    q = ck.QuantLinear.from_float(layer, input_scale=in_scale.item(), input_zero_point=int(in_zp),
                                  output_scale=out_scale.item(), output_zero_point=int(out_zp), activation="relu")
    h_q = q.quantize_input(h)
    y_q = q(h_q)
    want = ck.reference.int8_linear(h_q, int(in_zp), q.weight_q, q.bias_q, q.m0, q.shift, int(out_zp), q.qmin,
                                    q.qmax, torch.uint8)
    err = (q.dequantize_output(y_q) - torch.relu(out)).abs().max().item()
    print(f"\nInteger-only layer {q}:\n  equals the reference integer simulation: {torch.equal(y_q, want)}; "
          f"max |error| vs float = {err:.4f} (output step {out_scale.item():.4f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress_kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="int8 linear tour on the bundled digits")
    tour.add_argument("--epochs", type=int, default=15)
    sub.add_parser("isa", help="print the CPU path in use")
    from .study import add_arguments as _study_arguments

    _study_arguments(sub.add_parser("study", help="compress a trained ResNet every way; accuracy, speed, size"))
    from .study import sensitivity_study

    sensitivity_study.add_arguments(sub.add_parser("sensitivity", help="per-layer sensitivity and mixed assignment"))
    from .study import transformer as transformer_study

    transformer_study.add_arguments(sub.add_parser("transformer", help="compress a small trained transformer"))
    args = parser.parse_args(argv)
    if args.command == "transformer":
        return transformer_study.main(args)
    if args.command == "sensitivity":
        return sensitivity_study.main(args)
    if args.command == "tour":
        return _tour(args)
    if args.command == "study":
        from .study import main_study

        return main_study(args)
    if args.command == "isa":
        import compress_kernels as ck

        print(ck.cpu_isa())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
