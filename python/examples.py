"""Short examples of each module swap, against the public API of compress_kernels only.

    python python/examples.py

Each example takes a small trained ResNet-18 (CIFAR form) on scikit-learn's bundled digits,
converts a copy one way, and prints top-1 accuracy and the bytes the converted model stores.
"""

from __future__ import annotations

import copy

import torch

import compress_kernels as ck
from compress_kernels import prune, study
from compress_kernels.nn.codebook import finetune_codebooks
from compress_kernels.study import data, models, training


def trained_model(width: int = 4, epochs: int = 2):
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = data.load_digits()
    model = models.resnet18_cifar(width=width)
    training.train(model, x_train, y_train, epochs=epochs, lr=0.1, progress=True)
    return model, (x_train, y_train, x_test, y_test)


def show(name: str, model, x_test, y_test) -> None:
    print(f"{name:<40} top-1 {training.evaluate(model, x_test, y_test):6.2f} %   "
          f"{study.stored_bytes(model) / 1024:8.1f} KiB stored")


def int8_static(model, x_train):
    """Integer-only int8: calibrate on a few batches, then convert (BatchNorm folded, ReLU fused,
    residual additions become QuantAdd). Returns a new torch.fx.GraphModule."""
    m = copy.deepcopy(model)
    ck.calibrate(m, [x_train[i:i + 64] for i in range(0, 256, 64)])
    report = ck.convert_(m, ck.Int8StaticConfig(observer="mse", per_channel=True))
    print(report)
    return report.model


def int8_dynamic(model):
    """nn.Linear -> QuantLinear(mode="dynamic"): int8 weights, activations quantized per row at run time."""
    return ck.convert_(model, ck.Int8DynamicConfig(), inplace=False).model


def codebook(model, x_train, y_train, bits: int = 4):
    """k-means weight sharing: Conv2d / Linear -> CodebookConv2d / CodebookLinear, then fine-tune
    the centroids with the indices fixed."""
    m = ck.convert_(model, ck.CodebookConfig(bits=bits), inplace=False).model
    return finetune_codebooks(m, x_train[:512], y_train[:512], epochs=1)


def sparse24(model, x_train, y_train, int8: bool = False):
    """2:4 sparsity: prune with the 2:4 mask, fine-tune with the masks enforced, then swap in the
    2:4 kernels (fp32 or int8). The 3-channel stem (K = 27) stays dense."""
    m = copy.deepcopy(model)
    pruner = ck.prune_(m, ck.PruneConfig(granularity="2:4"))
    training.train(m, x_train[:512], y_train[:512], epochs=1, lr=0.01, after_step=lambda _: pruner.step())
    pruner.remove()
    return ck.convert_(m, ck.Sparse24Config(int8=int8)).model


def int8_qat(model, x_train, y_train, weight_bits: int = 8, sparse24: bool = False):
    """Quantization-aware training (optionally after 2:4 pruning, whose masks QAT keeps), then the exact
    conversion to the integer-only model; checks that the QAT model's exact mode predicts it bit for bit."""
    m = copy.deepcopy(model)
    pruner = ck.prune_(m, ck.PruneConfig(granularity="2:4")) if sparse24 else None
    # sparse24=True: the converted 2:4 layers keep only values + metadata and run the int8 2:4 kernels
    qat = ck.prepare_qat_(m, ck.QATConfig(weight_bits=weight_bits, sparse24=sparse24))
    training.train(qat, x_train[:512], y_train[:512], epochs=1, lr=0.01,
                   after_step=(lambda _: pruner.apply()) if pruner else None)
    ck.freeze_qat_(qat)
    int_model = ck.convert_(qat).model
    with ck.qat_exact_mode(qat, use_kernels=True):
        assert torch.equal(qat(x_train[:32]), int_model(x_train[:32]))
    print({k: v for k, v in ck.qat_mismatch_report(qat, [x_train[:64]]).items() if k != "per_layer"})
    return int_model


def sparse24_int8_static(model, x_train, y_train):
    """2:4 pruning + fine-tune, then integer-only int8 on the 2:4 kernels: the same integers as the
    dense int8 conversion, with only the compressed weights stored."""
    m = copy.deepcopy(model)
    pruner = ck.prune_(m, ck.PruneConfig(granularity="2:4"))
    training.train(m, x_train[:512], y_train[:512], epochs=1, lr=0.01, after_step=lambda _: pruner.step())
    pruner.remove()
    ck.calibrate(m, [x_train[i:i + 64] for i in range(0, 256, 64)])
    report = ck.convert_(m, ck.Int8StaticConfig(sparse24=True))
    print(report)
    return report.model


def channel_pruning_with_distillation(model, x_train, y_train):
    """Remove half of every basic block's inner channels, then recover by distilling from the
    original model."""
    m = copy.deepcopy(model)
    prune.prune_channels_(m, amount=0.5)
    training.train(m, x_train[:512], y_train[:512], epochs=1, lr=0.01,
                   loss_fn=training.distillation_loss(model))
    return m


def main() -> None:
    model, (x_train, y_train, x_test, y_test) = trained_model()
    show("fp32", model, x_test, y_test)
    show("int8 static (integer-only)", int8_static(model, x_train), x_test, y_test)
    show("int8 dynamic (Linear only)", int8_dynamic(model), x_test, y_test)
    show("int8 QAT (integer-only)", int8_qat(model, x_train, y_train), x_test, y_test)
    show("4-bit weights / 8-bit activations QAT", int8_qat(model, x_train, y_train, weight_bits=4), x_test, y_test)
    show("2:4 + int8 QAT", int8_qat(model, x_train, y_train, sparse24=True), x_test, y_test)
    show("k-means 4-bit + centroid fine-tune", codebook(model, x_train, y_train), x_test, y_test)
    show("2:4 + fine-tune (fp32 kernels)", sparse24(model, x_train, y_train), x_test, y_test)
    show("2:4 + fine-tune (int8 kernels)", sparse24(model, x_train, y_train, int8=True), x_test, y_test)
    show("2:4 + int8 integer-only", sparse24_int8_static(model, x_train, y_train), x_test, y_test)
    show("channel pruning 50% + distillation", channel_pruning_with_distillation(model, x_train, y_train),
         x_test, y_test)


if __name__ == "__main__":
    main()
