"""The study: end to end in --quick mode, accuracy from real evaluation, stored bytes,
the CIFAR-10 pickle path, the checkpoint cache."""

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import compress_kernels as ck
from compress_kernels.__main__ import main
from compress_kernels.study import models, training
from compress_kernels.study import runner as study


def _report(out):
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


def test_quick_study_end_to_end(tmp_path):
    out = str(tmp_path / "out")
    assert main(["study", "--quick", "--out", out, "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    for name in ("report.md", "report.json", "study.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    rep = _report(out)
    rows = {r["name"]: r for r in rep["variants"]}
    assert list(rows) == study.QUICK["variants"]
    assert all(r["available"] for r in rows.values())
    n_test = study.QUICK["eval_limit"]
    for name, r in rows.items():
        if not r["available"]:
            continue
        # top-1 is a count of correct images out of n_test, not a made-up number
        assert 0.0 <= r["top1"] <= 100.0
        assert abs(r["top1"] * n_test / 100 - round(r["top1"] * n_test / 100)) < 1e-3, (name, r["top1"])
        assert r["latency_b1_ms"] > 0 and r["latency_b32_ms"] > 0 and r["stored_bytes"] > 0
        assert r["latency_b1_iqr_ms"] >= 0 and r["latency_b32_iqr_ms"] >= 0
        assert r["compression"] == pytest.approx(rows["fp32"]["stored_bytes"] / r["stored_bytes"])
        assert r["speedup_b32"] == pytest.approx(rows["fp32"]["latency_b32_ms"] / r["latency_b32_ms"])
    assert rows["fp32"]["finetune_steps"] == 0 and rows["kmeans4"]["finetune_steps"] > 0
    assert rows["int8_qat"]["finetune_steps"] > 0
    # integer weights, codebooks and 2:4 storage are really smaller than the fp32 model
    for name in ("int8_static", "int8_qat", "kmeans4", "sparse24", "sparse24_int8", "sparse24_int8_static",
                 "channels50_kd"):
        assert rows[name]["compression"] > 1.5, name
    md = open(os.path.join(out, "report.md")).read()
    assert "| int8_static |" in md and "| int8_qat |" in md
    assert not rep["fp32_checkpoint_reused"]


def test_reported_accuracy_is_measured(digits_resnet):
    """A variant that wrecks the weights must show a wrecked accuracy, equal to a direct evaluation."""
    model, (x_train, y_train, x_test, y_test), fp32_acc = digits_resnet
    perturbed = {}

    def wreck(m, data, ctx):
        m = copy.deepcopy(m)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 3 * p.std().clamp(min=1e-3))
        perturbed["model"] = m
        return m, 0

    study.register_variant("test_wrecked", "weights + heavy noise", wreck)
    try:
        data = study.StudyData(x_train, y_train, x_test, y_test)
        settings = study.StudySettings(timing_reps_b1=1, timing_reps_b32=1, progress=False)
        rows = {r.name: r for r in study.run_study(model, data, settings, ["fp32", "test_wrecked"])}
    finally:
        del study.VARIANTS["test_wrecked"]
    assert rows["fp32"].top1 == pytest.approx(fp32_acc)
    assert fp32_acc > 80
    assert rows["test_wrecked"].top1 < fp32_acc - 40
    assert rows["test_wrecked"].top1 == pytest.approx(training.evaluate(perturbed["model"], x_test, y_test))


def test_stored_bytes_count_the_converted_storage():
    torch.manual_seed(0)
    model = models.resnet18_cifar(width=4).eval()
    fp32 = study.stored_bytes(model)
    assert fp32 == sum(t.numel() * t.element_size() for t in model.state_dict().values())

    cb = ck.convert_(model, ck.CodebookConfig(bits=4), inplace=False).model
    codebook_layers = [m for m in cb.modules() if isinstance(m, ck.CodebookConv2d | ck.CodebookLinear)]
    rest = sum(t.numel() * t.element_size() for n, t in cb.state_dict().items()
               if isinstance(t, torch.Tensor)  # not the layers' _extra_state settings
               and "packed_idx" not in n and "codebook" not in n and "zero_mask" not in n
               and not (n.endswith(".bias") and n.rsplit(".", 1)[0] in dict(cb.named_modules())
                        and isinstance(dict(cb.named_modules())[n.rsplit(".", 1)[0]], ck.CodebookLinear)))
    assert study.stored_bytes(cb) == sum(m.stored_bytes() for m in codebook_layers) + rest
    assert study.stored_bytes(cb) < fp32 / 4

    sp = ck.convert_(model, ck.Sparse24Config(int8=True, prune=True), inplace=False).model
    sparse = [m for m in sp.modules() if isinstance(m, ck.SparseConv2d | ck.SparseLinear)]
    assert sparse
    # the non-persistent packed kernel copy is not counted; values + metadata + scales + bias are
    per_layer = sum(m.compressed_bytes() + (m.bias.numel() * 4 if m.bias is not None else 0) for m in sparse)
    dense = sum(study._module_stored_bytes(m) for m in sp.modules()
                if not isinstance(m, ck.SparseConv2d | ck.SparseLinear))
    assert study.stored_bytes(sp) == per_layer + dense

    dyn = ck.convert_(model, ck.Int8DynamicConfig(), inplace=False).model
    fc = model.fc
    want = fp32 - fc.weight.numel() * 4 + fc.weight.numel() + fc.out_features * 4  # int8 weight + per-channel scales
    assert study.stored_bytes(dyn) == want


def _write_cifar(folder, n=24, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n).tolist()
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels}, f)


def test_cifar10_pickle_path(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(str(folder))
    out = str(tmp_path / "out")
    # the parent folder works too (load_cifar10 looks into cifar-10-batches-py)
    assert main(["study", "--data", "cifar10", "--data-dir", str(tmp_path), "--quick", "--width", "2",
                 "--variants", "fp32,int8_dynamic", "--out", out, "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"]) == 0
    rep = _report(out)
    assert rep["settings"]["data"] == "cifar10" and rep["settings"]["width"] == 2
    rows = {r["name"]: r for r in rep["variants"]}
    assert set(rows) == {"fp32", "int8_dynamic"}
    assert abs(rows["fp32"]["top1"] * 24 / 100 - round(rows["fp32"]["top1"] * 24 / 100)) < 1e-3  # 24 test images


def test_cifar10_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="--data-dir"):
        study.load_data(study.StudySettings(data="cifar10"))
    with pytest.raises(FileNotFoundError, match="CIFAR-10 files not found"):
        study.load_data(study.StudySettings(data="cifar10", data_dir=str(tmp_path)))


def test_fp32_checkpoint_is_cached(tmp_path):
    settings = study.StudySettings(width=2, epochs=1, train_limit=64, eval_limit=32, cache_dir=str(tmp_path),
                                   progress=False)
    data = study.load_data(settings)
    first, cached = study.train_fp32(settings, data)
    assert not cached and os.path.exists(study.checkpoint_path(settings, data))
    again, cached = study.train_fp32(settings, data)
    assert cached
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    other = study.StudySettings(width=2, epochs=2, train_limit=64, cache_dir=str(tmp_path))
    assert study.checkpoint_path(other, data) != study.checkpoint_path(settings, data)


def test_unknown_variant_is_rejected():
    model = nn.Linear(2, 2)
    data = study.StudyData(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.zeros(1, 2),
                           torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown variant"):
        study.run_study(model, data, study.StudySettings(progress=False), ["fp32", "nope"])
