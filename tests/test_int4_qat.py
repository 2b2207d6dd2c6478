"""Group-wise 4-bit QAT (QATConfig(weight_bits=4, group_size=g)) converting into Int4Linear (w4a8): the
fake-quantized weight is the converted layer's dequantized weight bit for bit, the converted model equals
qat_exact_mode bit for bit (kernels and reference), the fast simulation is close to it, training moves
the weights through the straight-through estimator, and every refusal names what is wrong."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.nn.int4 import QATInt4Linear, fake_quantize_rows_int8


class Mlp(nn.Module):
    """Two Linear layers in groups of 32, one with in_features (40) that no group size divides, and a
    Linear reached by two paths (shared), so every branch of prepare / convert runs."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 96)
        self.down = nn.Linear(96, 40)
        self.head = nn.Linear(40, 5)
        self.shared = self.up

    def forward(self, x):
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


def seeded_mlp(seed=0):
    torch.manual_seed(seed)
    return Mlp()


def batch(n=16, seed=1):
    return torch.randn(n, 64, generator=torch.Generator().manual_seed(seed))


def trained_qat(group_size=32, steps=5):
    qat = ck.prepare_qat_(seeded_mlp(), ck.QATConfig(weight_bits=4, group_size=group_size))
    opt = torch.optim.SGD(qat.parameters(), lr=0.05)
    target = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(3))
    for step in range(steps):
        loss = F.cross_entropy(qat(batch(seed=10 + step)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return qat


def test_prepare_wraps_the_groupable_linears_in_place():
    model = seeded_mlp()
    up = model.up
    qat = ck.prepare_qat_(model, ck.QATConfig(weight_bits=4, group_size=32))
    assert qat is model and isinstance(model.up, QATInt4Linear) and isinstance(model.down, QATInt4Linear)
    assert model.up.linear is up and model.shared is model.up  # the model's own Linear; the tie kept
    assert type(model.head) is nn.Linear  # in_features=40: no group of 32 divides it
    assert ck.qat.qat_config(model).group_size == 32


@pytest.mark.parametrize("group_size", [32])
def test_converted_model_equals_exact_mode_bit_for_bit(group_size):
    qat = trained_qat(group_size)
    report = ck.convert_(qat)
    converted = report.model
    assert [name for name, _, to in report.converted] == ["up", "down", "shared"]
    assert {to for _, _, to in report.converted} == {"Int4Linear"}
    assert isinstance(converted.up, ck.Int4Linear) and converted.up.activation == "int8" and converted.up.symmetric
    assert converted.shared is converted.up and isinstance(qat.up, QATInt4Linear)  # the QAT model is unchanged
    x = batch(32, seed=7)
    x[3, 5] = float("inf")  # a non-finite row: the float path in both
    with torch.no_grad():
        y_int = converted(x)
        with ck.qat_exact_mode(qat, use_kernels=True):
            y_exact_kernels = qat(x)
        with ck.qat_exact_mode(qat):
            y_exact_reference = qat(x)
        y_fast = qat(x)
    torch.testing.assert_close(y_exact_kernels, y_int, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(y_exact_reference, y_int, rtol=0, atol=0, equal_nan=True)
    finite = torch.ones(32, dtype=torch.bool)
    finite[3] = False
    # the fast simulation: the same grids, one fp32 dot product instead of per-group int32 sums
    torch.testing.assert_close(y_fast[finite], y_int[finite], rtol=1e-4, atol=1e-4)
    assert qat.training  # the mode is restored after the exact mode


def test_fake_quantized_weight_is_the_converted_weight_bit_for_bit():
    qat = trained_qat()
    converted = ck.convert_(qat).model
    for name in ("up", "down"):
        layer = getattr(qat, name)
        with torch.no_grad():
            assert torch.equal(layer.fake_quantized_weight(), getattr(converted, name).dequantized_weight())


def test_activation_grid_is_quantize_rows_and_gradients_pass_straight_through():
    x = batch(4).requires_grad_()
    y = fake_quantize_rows_int8(x)
    q, scale = ref.quantize_rows(x.detach())
    assert torch.equal(y.detach(), q.float() * scale[:, None])
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    layer = QATInt4Linear(nn.Linear(64, 8), 32)
    layer(batch(4)).sum().backward()
    assert layer.linear.weight.grad is not None and bool(layer.linear.weight.grad.abs().sum() > 0)


def test_training_moves_the_integers():
    before = ck.convert_(ck.prepare_qat_(seeded_mlp(), ck.QATConfig(weight_bits=4, group_size=32))).model
    after = ck.convert_(trained_qat(steps=5)).model
    q_before, _, _ = before.up.int4_weight()
    q_after, _, _ = after.up.int4_weight()
    assert not torch.equal(q_before, q_after)


def test_state_dict_and_deepcopy_keep_the_conversion():
    qat = trained_qat()
    fresh = ck.prepare_qat_(seeded_mlp(seed=5), ck.QATConfig(weight_bits=4, group_size=32))
    fresh.load_state_dict(copy.deepcopy(qat.state_dict()))
    x = batch(8, seed=9)
    with torch.no_grad():
        want = ck.convert_(qat).model(x)
        assert torch.equal(ck.convert_(fresh).model(x), want)
        assert torch.equal(ck.convert_(copy.deepcopy(qat)).model(x), want)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_bits=8, group_size=32), "group_size=32 (group-wise int4 QAT for Int4Linear) needs weight_bits=4, "
                                         "got 8"),
    (dict(weight_bits=4, group_size=16), "group_size must be one of [32, 64, 128, 256], got 16"),
    (dict(weight_bits=4, group_size=32, learnable_scale=True), "needs learnable_scale=False, got True"),
    (dict(weight_bits=4, group_size=32, weight_format="e4m3"), "needs weight_format='int', got 'e4m3'"),
    (dict(weight_bits=4, group_size=32, sparse24=True), "needs sparse24=False, got True"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError) as err:
        ck.QATConfig(**kwargs)
    assert message in str(err.value)


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"prepare_qat_: Sequential has no nn.Linear whose in_features is a multiple "
                                         r"of group_size=64"):
        ck.prepare_qat_(nn.Sequential(nn.Linear(32, 8)), ck.QATConfig(weight_bits=4, group_size=64))
    with pytest.raises(ValueError, match=r"QATInt4Linear: in_features=40 must be a multiple of group_size=32"):
        QATInt4Linear(nn.Linear(40, 8), 32)
    with pytest.raises(TypeError, match=r"QATInt4Linear: expected nn.Linear, got Conv2d"):
        QATInt4Linear(nn.Conv2d(3, 3, 1), 32)
    qat = trained_qat(steps=1)
    with pytest.raises(ValueError, match=r"qat_mismatch_report: the model was prepared module by module"):
        ck.qat_mismatch_report(qat, [batch()])
