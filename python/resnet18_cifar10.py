"""The full study on real CIFAR-10 (when its python-pickle files are on disk; nothing is downloaded).

    python python/resnet18_cifar10.py --data-dir ~/data/cifar-10-batches-py [--width 64 --epochs 30]

Public API only: compress_kernels.study builds every variant (int8 static / dynamic, k-means 4- and
2-bit, 2:4 and 2:4 + int8, Deep Compression, channel pruning, distillation), evaluates it on the
10,000 test images, times all of them in the same run and writes report.md, report.json and
study.png. The fp32 checkpoint is cached (keyed by data folder, width, epochs, ...), so a second run
with other variants or fine-tuning budgets reuses the training. On a 2-core CPU the standard model
(width 64) takes hours to train; width 16 with 10 epochs is the practical default here.
"""

from __future__ import annotations

import argparse
import os
import sys

from compress_kernels import study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir",
                   default=os.environ.get("CIFAR10_DIR", os.path.expanduser("~/data/cifar-10-batches-py")))
    p.add_argument("--width", type=int, default=16, help="base width (64 = the standard 11M-parameter ResNet-18)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--variants", default=",".join(study.DEFAULT_VARIANTS))
    p.add_argument("--out", default="study_cifar10")
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    settings = study.StudySettings(data="cifar10", data_dir=args.data_dir, width=args.width, epochs=args.epochs,
                                   finetune_epochs=args.finetune_epochs, calibration_batches=8,
                                   variants=[v for v in args.variants.split(",") if v], out=args.out,
                                   cache_dir=args.cache_dir)
    try:
        rows, paths = study.study(settings)
    except FileNotFoundError as why:
        print(why, file=sys.stderr)
        return 1
    print(study.format_table(rows))
    print("\nwrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
