"""Int4Conv2d: im2col + int4_linear with the depth zero-padded to a multiple of the group size. Checked
against the reference (reference.int4_linear_w4a8 on the padded patches, bit for bit), against F.conv2d
on the dequantized weight (w4a16, fp32 tolerance), its stored bytes, state dict, refusals, and
Int4WeightConfig(conv2d=True) with nearest and AdaRound rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress_kernels as ck
from compress_kernels import reference as ref
from compress_kernels.nn.int4_conv import Int4Conv2d, conv_patches


def seeded_conv(cin=3, cout=16, k=3, stride=1, padding=1, dilation=1, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=bias)


def images(n=2, c=3, hw=9, seed=1):
    return torch.randn(n, c, hw, hw, generator=torch.Generator().manual_seed(seed))


GEOMETRIES = [dict(cin=3, k=3), dict(cin=8, k=1, stride=2, padding=0), dict(cin=16, k=3, stride=2, padding=2,
                                                                            dilation=2, bias=False)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["stem_k27", "1x1_s2_k8", "dilated_k144"])
def test_w4a8_is_the_reference_on_the_padded_patches(geometry):
    conv = seeded_conv(**geometry)
    layer = Int4Conv2d.from_float(conv, group_size=32)
    x = images(c=geometry["cin"])
    y = layer(x)
    expected_shape = conv(x).shape
    assert y.shape == expected_shape and y.dtype == torch.float32
    rows = conv_patches(x, conv.kernel_size, conv.stride, conv.padding, conv.dilation, layer.linear.in_features)
    assert rows.shape[1] % 32 == 0 and bool((rows[:, conv.weight[0].numel():] == 0).all())
    q, scales, _ = layer.linear.int4_weight()
    want = ref.int4_linear_w4a8(rows, q, scales, None, 32, layer.linear.bias)
    b, n, h, w = expected_shape
    assert torch.equal(y, want.reshape(b, h, w, n).permute(0, 3, 1, 2))
    with ck.reference_mode():
        assert torch.equal(layer(x), y)
    # the padded columns of the weight are zero: the layer is the conv on the dequantized weight
    assert bool((q[:, conv.weight[0].numel():] == 0).all())
    torch.testing.assert_close(y, F.conv2d(x, layer.dequantized_weight(), conv.bias, conv.stride, conv.padding,
                                           conv.dilation), rtol=0.05, atol=0.05)


def test_w4a16_is_the_conv_on_the_dequantized_weight_and_close_to_the_float_conv():
    conv = seeded_conv(cin=8, cout=24)
    layer = Int4Conv2d.from_float(conv, group_size=32, activation="fp32")
    x = images(c=8)
    y = layer(x)
    torch.testing.assert_close(y, F.conv2d(x, layer.dequantized_weight(), conv.bias, 1, 1), rtol=1e-5, atol=1e-5)
    assert float((y - conv(x)).abs().max()) < 0.1 * float(conv(x).abs().max())
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_stored_bytes_are_the_pack_and_state_dict_round_trips(tmp_path):
    conv = seeded_conv(cin=3, cout=16)
    layer = Int4Conv2d.from_float(conv, group_size=32)
    # K = 27 padded to 32: one group per output channel, 4 words of nibbles + 1 scale, + the header rows
    assert layer.linear.weight_packed.shape[1] == 5
    assert layer.stored_bytes() == layer.linear.weight_packed.numel() * 4 + 16 * 4 < layer.fp32_bytes()
    path = tmp_path / "conv.pt"
    torch.save(layer.state_dict(), path)
    fresh = Int4Conv2d(3, 16, 3, padding=1, group_size=32)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = images()
    assert torch.equal(fresh(x), layer(x))
    other = Int4Conv2d(3, 16, 3, padding=0, group_size=32)
    with pytest.raises(ValueError, match=r"Int4Conv2d at '<root>': load_state_dict: _extra_state\['padding'\] = "
                                         r"\[1, 1\]: expected \[0, 0\] as this module was built"):
        other.load_state_dict(torch.load(path, weights_only=True))


def test_nonfinite_patch_gives_the_float_layer_at_that_position_only():
    layer = Int4Conv2d.from_float(seeded_conv(cin=3, cout=8, k=1, padding=0), group_size=32)
    x = images()
    x[0, 1, 2, 3] = float("inf")
    y = layer(x)
    assert bool(y[0, :, 2, 3].isinf().any()) and bool(torch.isfinite(y[1]).all())
    finite = torch.isfinite(y)
    assert int((~finite).sum()) == int((~finite[0, :, 2, 3]).sum())


def test_refusals():
    with pytest.raises(ValueError, match=r"only groups=1 convolutions are supported, got groups=2"):
        Int4Conv2d.from_float(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match=r"only numeric zero padding is supported, got padding='same'"):
        Int4Conv2d.from_float(nn.Conv2d(4, 4, 3, padding="same"))
    with pytest.raises(TypeError, match=r"Int4Conv2d.from_float: expected nn.Conv2d, got Linear"):
        Int4Conv2d.from_float(nn.Linear(4, 4))
    layer = Int4Conv2d.from_float(seeded_conv())
    with pytest.raises(ValueError, match=r"Int4Conv2d: x must be \[B, 3, H, W\], got shape \[2, 4, 9, 9\]"):
        layer(images(c=4))


class TinyCnn(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.depthwise(torch.relu(self.body(torch.relu(self.stem(x))))))
        return self.fc(x.mean((2, 3)))


def test_config_converts_convs_only_when_asked():
    report = ck.convert_(TinyCnn(), ck.Int4WeightConfig())
    assert [name for name, _, _ in report.converted] == []
    assert {name: why for name, _, why in report.skipped}["stem"].startswith("conv2d=False")
    model = TinyCnn()
    x = images(4, hw=8)
    want = model(x)
    report = ck.convert_(model, ck.Int4WeightConfig(conv2d=True, group_size=32))
    assert [name for name, _, _ in report.converted] == ["stem", "body"]
    assert "groups=1" in {name: why for name, _, why in report.skipped}["depthwise"]
    assert isinstance(model.stem, Int4Conv2d) and isinstance(model.body, Int4Conv2d)
    assert float((model(x) - want).abs().max()) < 0.2 * float(want.abs().max())


def test_config_adaround_lowers_the_conv_output_error():
    calibration = [images(16, hw=8, seed=s) for s in (5, 6)]
    ada = ck.AdaRoundConfig(bits=4, group_size=32, iterations=120, batch_size=64, lr=2e-2, max_samples=32, seed=0)
    nearest = ck.convert_(TinyCnn(), ck.Int4WeightConfig(conv2d=True, activation="fp32")).model
    adaround = ck.convert_(TinyCnn(), ck.Int4WeightConfig(conv2d=True, activation="fp32", rounding_weights="adaround",
                                                          calibration=calibration, adaround=ada)).model
    float_model = TinyCnn()
    with torch.no_grad():
        # the body conv on its float inputs (ReLU outputs: correlated, where AdaRound gains over nearest; on the
        # stem's white-noise patches nearest is already the best rounding on average)
        x = torch.relu(float_model.stem(torch.cat(calibration)))
        want = float_model.body(x)
        err = {label: float((m.body(x) - want).pow(2).sum()) for label, m in (("nearest", nearest),
                                                                              ("adaround", adaround))}
    assert err["adaround"] < 0.8 * err["nearest"], err
    assert isinstance(adaround.body, Int4Conv2d)
