"""Pruning toolkit: criteria, granularities, scopes, schedules, mask enforcement, rewinding,
structured channel removal, and the accuracy of pruned digits ResNets (2:4 fp32 / int8, 80%
unstructured, 30% of block channels)."""

import copy
import itertools
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import prune
from compress_kernels.prune import CubicSchedule, PruneConfig
from compress_kernels.study import training


def small_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16),
                         nn.ReLU(), nn.Linear(16, 8))


# ---------------------------------------------------------------- masks


def test_nm_mask_is_the_best_of_the_six_patterns():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 16, generator=g)
    for criterion in ("l1", "l2"):
        mask = prune.nm_mask(prune.element_scores(w, criterion), 2, 4)
        s = prune.element_scores(w, criterion)
        for r, grp in itertools.product(range(6), range(4)):
            sg = s[r, 4 * grp:4 * grp + 4]
            best = max(itertools.combinations(range(4), 2), key=lambda p: sg[list(p)].sum().item())
            assert mask[r, 4 * grp:4 * grp + 4].nonzero().flatten().tolist() == list(best)
    assert ck.nn.sparse.is_24_sparse(w * prune.mask_2to4(w))
    m = prune.nm_mask(w.abs(), 1, 4)
    assert (m.reshape(6, 4, 4).sum(-1) == 1).all()


@pytest.mark.parametrize("granularity, unit", [("element", (1, 1, 1, 1)), ("vector", (1, 4, 1, 1)),
                                               ("kernel", (1, 1, 3, 3)), ("channel", (1, 8, 3, 3))])
def test_layer_scope_granularities(granularity, unit):
    w = torch.randn(6, 8, 3, 3)
    if granularity == "vector":  # vectors of 4 along the flattened input: check on the 2-D view
        mask = prune.compute_masks({"w": w}, 0.5, "vector", vector_size=4)["w"].reshape(6, -1, 4)
        assert ((mask.all(-1)) | (~mask.any(-1))).all()
        assert mask.float().mean().item() == 0.5
        return
    mask = prune.compute_masks({"w": w}, 0.5, granularity)["w"]
    assert mask.shape == w.shape and mask.float().mean().item() == 0.5
    blocks = mask.unfold(0, unit[0], unit[0]).unfold(1, unit[1], unit[1]).unfold(2, unit[2], unit[2]).unfold(
        3, unit[3], unit[3]).reshape(-1, unit[0] * unit[1] * unit[2] * unit[3])
    assert ((blocks.all(-1)) | (~blocks.any(-1))).all()  # whole structures are kept or pruned


def test_l1_and_l2_rank_structures_differently():
    # Row 0: one large weight (l2 prefers it); row 1: many medium weights (l1 prefers it).
    w = torch.tensor([[4.0, 0.0, 0.0, 0.0], [1.5, 1.5, 1.5, 1.5]])
    assert prune.compute_masks({"w": w}, 0.5, "row", "l1")["w"][:, 0].tolist() == [False, True]
    assert prune.compute_masks({"w": w}, 0.5, "row", "l2")["w"][:, 0].tolist() == [True, False]


def test_global_scope_ranks_across_layers():
    a, b = torch.full((10, 10), 1.0), torch.full((10, 10), 2.0)
    a[0, :5] = 3.0
    masks = prune.compute_masks({"a": a, "b": b}, 0.5, scope="global")  # keep 100: a's five 3s, 95 of b's 2s
    assert masks["a"].sum().item() == 5 and masks["a"][0, :5].all() and masks["b"].sum().item() == 95
    masks = prune.compute_masks({"a": a, "b": b}, 0.45, scope="global")  # keep 110: all of b, 10 of a
    assert masks["b"].all() and masks["a"].sum().item() == 10
    layer = prune.compute_masks({"a": a, "b": b}, 0.5, scope="layer")
    assert layer["a"].float().mean().item() == 0.5 and layer["b"].float().mean().item() == 0.5


def test_bad_config_messages():
    with pytest.raises(ValueError, match="granularity must be one of"):
        prune.compute_masks({"w": torch.randn(4, 4)}, 0.5, "blocks")
    with pytest.raises(ValueError, match="criterion must be one of"):
        prune.compute_masks({"w": torch.randn(4, 4)}, 0.5, criterion="l0")
    with pytest.raises(ValueError, match='scope must be "layer" or "global"'):
        prune.compute_masks({"w": torch.randn(4, 4)}, 0.5, scope="model")
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune.compute_masks({"w": torch.randn(4, 4)}, 1.0)
    with pytest.raises(ValueError, match="kernel granularity needs a conv weight"):
        prune.compute_masks({"w": torch.randn(4, 4)}, 0.5, "kernel")
    with pytest.raises(ValueError, match="not a multiple of vector_size=3"):
        prune.compute_masks({"w": torch.randn(4, 4)}, 0.5, "vector", vector_size=3)
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        prune.nm_mask(torch.randn(4, 6))
    with pytest.raises(ValueError, match="the gradient criterion needs accumulated scores"):
        prune.compute_masks({"w": torch.randn(4, 4)}, 0.5, criterion="gradient")
    with pytest.raises(ValueError, match="needs data"):
        prune.prune_(small_model(), PruneConfig(criterion="gradient"))
    with pytest.raises(ValueError, match=r"amount must be in \[0, 1\)"):
        prune.prune_channels_(small_model(), 1.0)


def test_gradient_criterion_accumulates_w_times_grad():
    model = small_model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, 4, 4, generator=g), torch.randint(0, 8, (32,), generator=g)
    want = {}
    for name in ("0", "3", "5"):
        want[name] = torch.zeros_like(model.get_submodule(name).weight)
    for i in range(2):
        model.zero_grad()
        F.cross_entropy(model(x[16 * i:16 * i + 16]), y[16 * i:16 * i + 16]).backward()
        for name in want:
            w = model.get_submodule(name).weight
            want[name] += (w * w.grad).abs()
    scorer = prune.GradientScorer({n: model.get_submodule(n) for n in want})
    scores = scorer.run(model, x, y, batches=2, batch_size=16)
    for name in want:
        assert torch.allclose(scores[name], want[name], rtol=1e-5, atol=1e-8)
    full = prune.GradientScorer({n: model.get_submodule(n) for n in want}).run(model, x, y, batches=3)
    expected = prune.compute_masks({n: model.get_submodule(n).weight for n in want}, 0.6, criterion="gradient",
                                   grad_scores=full)
    pruner = prune.prune_(model, PruneConfig(sparsity=0.6, criterion="gradient", gradient_batches=3), data=(x, y))
    for name in want:
        assert torch.equal(pruner.masks()[name], expected[name])
        assert abs(pruner.masks()[name].float().mean().item() - 0.4) < 0.01


# ---------------------------------------------------------------- enforcement, schedule, rewind


def test_masks_survive_optimizer_steps_and_are_removable():
    model = small_model()
    pruner = prune.prune_(model, PruneConfig(sparsity=0.7, granularity="element"))
    masks = {n: m.clone() for n, m in pruner.masks().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    pruner.attach(opt)
    x, y = torch.randn(16, 4, 4, 4), torch.randint(0, 8, (16,))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for name, mask in masks.items():  # gradients of pruned weights are zero
            assert (model.get_submodule(name).weight.grad[~mask] == 0).all()
        opt.step()
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert (w[~mask] == 0).all() and (w[mask] != 0).all()
    assert abs(pruner.report()["total"] - 0.7) < 0.01
    pruner.remove()
    assert not any("weight_mask" in k for k in model.state_dict())
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()  # no longer enforced: pruned weights move (weight decay of 0 is 0, but gradients are not)
    assert any((model.get_submodule(n).weight[~m] != 0).any() for n, m in masks.items())


def test_cubic_schedule():
    s = CubicSchedule(initial_sparsity=0.1, final_sparsity=0.9, begin_step=10, end_step=110, frequency=10)
    assert s.sparsity(0) == 0.1 and s.sparsity(10) == 0.1 and s.sparsity(110) == 0.9 and s.sparsity(500) == 0.9
    assert s.sparsity(60) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5**3)
    assert s.sparsity(65) == s.sparsity(60)  # held between updates
    assert s.updates_at(20) and not s.updates_at(25) and not s.updates_at(120)
    values = [s.sparsity(t) for t in range(0, 120)]
    assert values == sorted(values)


def test_iterative_pruning_is_monotone_and_reaches_the_target():
    model = small_model()
    sched = CubicSchedule(0.0, 0.8, begin_step=0, end_step=20, frequency=5)
    pruner = prune.prune_(model, PruneConfig(granularity="element", scope="global", schedule=sched))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 4, 4, 4), torch.randint(0, 8, (16,))
    previous = {n: m.clone() for n, m in pruner.masks().items()}
    for _ in range(25):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.step()
        for n, m in pruner.masks().items():
            assert not (m & ~previous[n]).any()  # nothing pruned comes back
            previous[n] = m.clone()
    assert abs(pruner.report()["total"] - 0.8) < 0.01


def test_rewind_restores_initial_weights_under_the_mask():
    model = small_model()
    init = prune.snapshot(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4, 4, 4), torch.randint(0, 8, (16,))
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    pruner = prune.prune_(model, PruneConfig(sparsity=0.5))
    prune.rewind_(model, init, pruner)
    for name, mask in pruner.masks().items():
        w = model.get_submodule(name).weight
        assert torch.equal(w, init[f"{name}.weight"] * mask)


def test_nm_pruner_skips_layers_whose_input_is_not_a_multiple_of_four():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 4))
    pruner = prune.prune_(model, PruneConfig(granularity="2:4"))
    assert pruner.skipped == [("0", "input size 27 is not a multiple of 4")]
    assert ck.nn.sparse.is_24_sparse(model[2].weight)


# ---------------------------------------------------------------- channel removal


def test_channel_removal_matches_zeroed_channels():
    model = ck.models.resnet18_cifar(width=8)
    model.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
        # Silence 25% of every block's inner channels: removing them must not change the output.
        for _, conv1, bn1, _ in prune.block_pairs(model):
            dead = torch.arange(conv1.out_channels) % 4 == 0
            bn1.weight[dead] = 0.0
            bn1.bias[dead] = 0.0
    x = torch.randn(2, 3, 16, 16, generator=g)
    want = model(x)
    report = prune.prune_channels_(model, 0.25)
    assert report["layer1.0"] == (8, 6) and report["layer4.1"] == (64, 48)
    assert model.layer2[0].conv2.in_channels == 12
    assert model.layer2[0].bn1.running_mean.shape == (12,)
    assert torch.allclose(model(x), want, atol=1e-5)
    rounded = prune.prune_channels_(ck.models.resnet18_cifar(width=16), 0.3, multiple_of=16)
    assert rounded["layer1.0"] == (16, 16) and rounded["layer3.0"] == (64, 48) and rounded["layer4.0"] == (128, 96)


# ---------------------------------------------------------------- accuracy on the digits ResNet


def _finetune(model, data, epochs, pruner=None, lr=0.01):
    x_train, y_train, _, _ = data
    training.train(model, x_train, y_train, epochs=epochs, lr=lr, after_step=None if pruner is None else
                   (lambda m: pruner.step()))
    return model


def _not_stem(module, name):
    return name != "conv1"


def test_2to4_and_int8_accuracy(digits_resnet):
    model, data, fp32 = digits_resnet
    _, _, x_test, y_test = data
    m = copy.deepcopy(model)
    pruner = prune.prune_(m, PruneConfig(granularity="2:4", filter_fn=_not_stem))
    _finetune(m, data, 2, pruner)  # 1 epoch: 96.7% vs fp32 98.0% on an AVX2 machine
    pruner.remove()
    masked_acc = training.evaluate(m, x_test, y_test)
    report = ck.convert_(m, ck.Sparse24Config(), inplace=False)
    assert ("conv1", "Conv2d", "K = kh * kw * in_channels = 27 is not a multiple of 4 (2:4 needs groups of four)") \
        in report.skipped
    sparse = report.model
    assert sum(isinstance(mod, ck.SparseConv2d) for mod in sparse.modules()) == 19  # 16 3x3 + 3 downsample
    assert isinstance(sparse.fc, ck.SparseLinear)
    with torch.no_grad():
        assert torch.allclose(sparse(x_test[:64]), m(x_test[:64]), atol=1e-3, rtol=1e-3)
    acc24 = training.evaluate(sparse, x_test, y_test)
    int8 = ck.convert_(m, ck.Sparse24Config(int8=True), inplace=False).model
    acc_int8 = training.evaluate(int8, x_test, y_test)
    print(f"\ndigits ResNet: fp32 {fp32:.2f}%, 2:4 masked {masked_acc:.2f}%, 2:4 kernels {acc24:.2f}%, "
          f"2:4 + int8 {acc_int8:.2f}%")
    assert acc24 >= fp32 - 1.0
    assert acc_int8 >= fp32 - 1.5


def test_80_percent_iterative_accuracy(digits_resnet):
    model, data, fp32 = digits_resnet
    _, _, x_test, y_test = data
    m = copy.deepcopy(model)
    steps_per_epoch = -(-len(data[0]) // 64)
    # Two epochs: the sparsity ramps 0 -> 80% over the first, the second recovers.
    sched = CubicSchedule(0.0, 0.8, begin_step=0, end_step=steps_per_epoch, frequency=4)
    pruner = prune.prune_(m, PruneConfig(granularity="element", scope="global", schedule=sched, filter_fn=_not_stem))
    _finetune(m, data, 2, pruner, lr=0.02)
    sparsity = pruner.report()["total"]
    acc = training.evaluate(m, x_test, y_test)
    print(f"\ndigits ResNet: fp32 {fp32:.2f}%, 80% unstructured (iterative) {acc:.2f}% at sparsity {sparsity:.3f}")
    assert abs(sparsity - 0.8) < 0.005
    assert acc >= fp32 - 1.0


def _speedup(before, after, x, repeats=7):
    """Best-of-`repeats` latency ratio, the two models timed alternately (a shared machine's load
    then hits both alike)."""
    best = [float("inf"), float("inf")]
    with torch.no_grad():
        before(x), after(x)
        for _ in range(repeats):
            for i, model in enumerate((before, after)):
                t = time.perf_counter()
                model(x)
                best[i] = min(best[i], time.perf_counter() - t)
    return best[0] / best[1]


def test_channel_pruning_accuracy_and_speed(digits_resnet):
    model, data, fp32 = digits_resnet
    _, _, x_test, y_test = data
    m = copy.deepcopy(model)
    report = prune.prune_channels_(m, 0.3)
    assert all(after == before - round(0.3 * before) for before, after in report.values())
    _finetune(m, data, 1)
    acc = training.evaluate(m, x_test, y_test)
    params = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in m.parameters()))
    speedup = _speedup(model.eval(), m.eval(), x_test[:256])
    print(f"\ndigits ResNet: fp32 {fp32:.2f}%, 30% of block channels removed {acc:.2f}%, "
          f"params {params[0]} -> {params[1]}, batch-256 speed-up {speedup:.2f}x")
    assert acc >= fp32 - 1.5
