"""Every config class checks every field when it is built: the error names the config, the field, the
value passed and the rule (rather than failing later, deep inside a conversion)."""

import pytest
import torch
from torch import nn

import compress_kernels as ck
from compress_kernels.prune import CubicSchedule, PruneConfig

# (config class, field, bad value, exception type, message pattern)
BAD_FIELDS = [
    (ck.Int8StaticConfig, "observer", "median", ValueError,
     r"Int8StaticConfig: observer must be one of .*'mse'.*got 'median'"),
    (ck.Int8StaticConfig, "per_channel", 1, TypeError, r"Int8StaticConfig: per_channel must be a bool .*got 1"),
    (ck.Int8StaticConfig, "activation_dtype", torch.int32, ValueError,
     r"Int8StaticConfig: activation_dtype must be one of \[torch.uint8, torch.int8\], got torch.int32"),
    (ck.Int8StaticConfig, "activation_dtype", "uint8", ValueError, r"activation_dtype must be one of .*got 'uint8'"),
    (ck.Int8StaticConfig, "rounding", "nearest", ValueError,
     r"Int8StaticConfig: rounding must be one of \['double', 'single'\], got 'nearest'"),
    (ck.Int8StaticConfig, "sparse24", "yes", TypeError, r"Int8StaticConfig: sparse24 must be a bool .*got 'yes'"),
    (ck.Int8DynamicConfig, "per_channel", None, TypeError, r"Int8DynamicConfig: per_channel must be a bool .*got None"),
    (ck.Int4WeightConfig, "group_size", 48, ValueError,
     r"Int4WeightConfig: group_size must be one of \[32, 64, 128, 256\], got 48"),
    (ck.Int4WeightConfig, "activation", "fp16", ValueError,
     r"Int4WeightConfig: activation must be one of \['int8', 'bf16', 'fp32'\], got 'fp16'"),
    (ck.Int4WeightConfig, "symmetric", 0, TypeError, r"Int4WeightConfig: symmetric must be a bool .*got 0"),
    (ck.CodebookConfig, "bits", 0, ValueError, r"CodebookConfig: bits must be an int in \[1, 8\], got 0"),
    (ck.CodebookConfig, "bits", 9, ValueError, r"CodebookConfig: bits must be an int in \[1, 8\], got 9"),
    (ck.CodebookConfig, "bits", 4.0, TypeError, r"CodebookConfig: bits must be an int, got 4.0"),
    (ck.CodebookConfig, "granularity", "channel", ValueError,
     r"CodebookConfig: granularity must be one of \['layer', 'group'\], got 'channel'"),
    (ck.CodebookConfig, "init", "random", ValueError, r"CodebookConfig: init must be one of .*got 'random'"),
    (ck.CodebookConfig, "seed", -1, ValueError, r"CodebookConfig: seed must be an int >= 0, got -1"),
    (ck.CodebookConfig, "zero_centroid", 1, TypeError, r"CodebookConfig: zero_centroid must be a bool .*got 1"),
    (ck.CodebookConfig, "min_weights", -5, ValueError, r"CodebookConfig: min_weights must be an int >= 0, got -5"),
    (ck.Sparse24Config, "int8", "int8", TypeError, r"Sparse24Config: int8 must be a bool .*got 'int8'"),
    (ck.Sparse24Config, "prune", 0, TypeError, r"Sparse24Config: prune must be a bool .*got 0"),
    (ck.QATConfig, "weight_bits", 1, ValueError, r"QATConfig: weight_bits must be in \[2, 8\], got 1"),
    (ck.QATConfig, "weight_bits", True, TypeError, r"QATConfig: weight_bits must be an int, got True"),
    (ck.QATConfig, "activation_bits", 4, ValueError, r"QATConfig: activation_bits must be 8 .*got 4"),
    (ck.QATConfig, "per_channel", "yes", TypeError, r"QATConfig: per_channel must be a bool .*got 'yes'"),
    (ck.QATConfig, "observer", "minmax", ValueError, r"QATConfig: observer must be \"ema\" .*got 'minmax'"),
    (ck.QATConfig, "learnable_scale", None, TypeError, r"QATConfig: learnable_scale must be a bool .*got None"),
    (ck.QATConfig, "activation_dtype", torch.int32, ValueError,
     r"QATConfig: activation_dtype must be torch.uint8 or torch.int8, got torch.int32"),
    (ck.QATConfig, "rounding", "up", ValueError, r"QATConfig: rounding must be \"double\" or \"single\", got 'up'"),
    (ck.QATConfig, "momentum", 0.0, ValueError, r"QATConfig: momentum must be a number in \(0, 1\], got 0.0"),
    (ck.QATConfig, "momentum", float("nan"), ValueError, r"QATConfig: momentum must be a number in \(0, 1\], got nan"),
    (ck.QATConfig, "sparse24", 1, TypeError, r"QATConfig: sparse24 must be a bool .*got 1"),
    (PruneConfig, "sparsity", -0.1, ValueError, r"PruneConfig: sparsity must be a number in \[0, 1\), got -0.1"),
    (PruneConfig, "sparsity", 1.0, ValueError, r"PruneConfig: sparsity must be a number in \[0, 1\), got 1.0"),
    (PruneConfig, "sparsity", "half", TypeError, r"PruneConfig: sparsity must be a number in \[0, 1\), got 'half'"),
    (PruneConfig, "granularity", "3:4", ValueError, r"PruneConfig: granularity must be one of .*got '3:4'"),
    (PruneConfig, "criterion", "l3", ValueError, r"PruneConfig: criterion must be one of .*got 'l3'"),
    (PruneConfig, "scope", "model", ValueError,
     r"PruneConfig: scope must be one of \['layer', 'global'\], got 'model'"),
    (PruneConfig, "m", 0, ValueError, r"PruneConfig: m must be an int >= 1, got 0"),
    (PruneConfig, "n", 5, ValueError, r"PruneConfig: n must be an int in \[1, 4\], got 5"),
    (PruneConfig, "n", 0, ValueError, r"PruneConfig: n must be an int in \[1, 4\], got 0"),
    (PruneConfig, "vector_size", 0, ValueError, r"PruneConfig: vector_size must be an int >= 1, got 0"),
    (PruneConfig, "schedule", 0.5, TypeError, r"PruneConfig: schedule must be None or a CubicSchedule, got 0.5"),
    (PruneConfig, "module_types", nn.Linear, TypeError,
     r"PruneConfig: module_types must be a non-empty tuple of nn.Module subclasses"),
    (PruneConfig, "module_types", (), TypeError, r"PruneConfig: module_types must be a non-empty tuple .*got \(\)"),
    (PruneConfig, "filter_fn", "fc", TypeError, r"PruneConfig: filter_fn must be None or a callable .*got 'fc'"),
    (PruneConfig, "gradient_batches", 0, ValueError, r"PruneConfig: gradient_batches must be an int >= 1, got 0"),
    (CubicSchedule, "initial_sparsity", 1.5, ValueError,
     r"CubicSchedule: initial_sparsity must be a number in \[0, 1\), got 1.5"),
    (CubicSchedule, "final_sparsity", -0.5, ValueError,
     r"CubicSchedule: final_sparsity must be a number in \[0, 1\), got -0.5"),
    (CubicSchedule, "begin_step", -1, ValueError, r"CubicSchedule: begin_step must be an int >= 0, got -1"),
    (CubicSchedule, "end_step", -3, ValueError, r"CubicSchedule: end_step must be an int >= 0, got -3"),
    (CubicSchedule, "frequency", 0, ValueError, r"CubicSchedule: frequency must be an int >= 1, got 0"),
    (ck.Fp8WeightConfig, "format", "e2m1", ValueError,
     r"Fp8WeightConfig: format must be one of \['e4m3', 'e5m2'\], got 'e2m1'"),
    (ck.Fp8WeightConfig, "min_weights", -1, ValueError, r"Fp8WeightConfig: min_weights must be an int >= 0, got -1"),
    (ck.AdaRoundConfig, "bits", 1, ValueError, r"AdaRoundConfig: bits must be an int in \[2, 8\], got 1"),
    (ck.AdaRoundConfig, "iterations", 0, ValueError, r"AdaRoundConfig: iterations must be an int >= 1, got 0"),
    (ck.AdaRoundConfig, "lr", 0.0, ValueError, r"AdaRoundConfig: lr must be a number > 0, got 0.0"),
    (ck.AdaRoundConfig, "per_channel", 1, TypeError, r"AdaRoundConfig: per_channel must be a bool .*got 1"),
    (ck.Int8StaticConfig, "rounding_weights", "floor", ValueError,
     r"Int8StaticConfig: rounding_weights must be one of \['nearest', 'adaround'\], got 'floor'"),
    (ck.QATConfig, "weight_format", "fp8", ValueError,
     r"QATConfig: weight_format must be one of \['int', 'e4m3', 'e5m2', 'e2m1'\], got 'fp8'"),
]


@pytest.mark.parametrize("cls,field,value,error,pattern", BAD_FIELDS,
                         ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _, _ in BAD_FIELDS])
def test_bad_field_is_refused_at_construction(cls, field, value, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(**{field: value})


def test_every_config_class_is_covered():
    import compress_kernels.adaround as adaround
    import compress_kernels.convert as convert
    import compress_kernels.prune as prune
    import compress_kernels.qat as qat
    import compress_kernels.static_quant as static_quant

    configs = {obj for mod in (adaround, convert, prune, qat, static_quant) for name, obj in vars(mod).items()
               if isinstance(obj, type) and name.endswith("Config")}
    assert configs <= {c for c, *_ in BAD_FIELDS}, configs - {c for c, *_ in BAD_FIELDS}
    assert len(configs) == 9


def test_codebook_group_size_rules():
    with pytest.raises(ValueError, match=r'CodebookConfig: group_size must be None with granularity="layer".*got 8'):
        ck.CodebookConfig(group_size=8)
    with pytest.raises(TypeError, match=r"CodebookConfig: group_size must be an int, got None"):
        ck.CodebookConfig(granularity="group")
    with pytest.raises(ValueError, match=r"CodebookConfig: group_size must be an int >= 1, got 0"):
        ck.CodebookConfig(granularity="group", group_size=0)
    assert ck.CodebookConfig(granularity="group", group_size=16).group_size == 16


def test_schedule_end_before_begin():
    with pytest.raises(ValueError, match=r"CubicSchedule: end_step must be an int >= 10, got 5"):
        CubicSchedule(begin_step=10, end_step=5)


def test_nm_rule_and_m_zero_no_longer_crash_later():
    # n > m used to raise a shape error inside nm_mask, m = 0 a ZeroDivisionError: now both fail here
    with pytest.raises(ValueError, match=r"PruneConfig: n must be an int in \[1, 4\], got 5"):
        PruneConfig(granularity="n:m", n=5, m=4)
    with pytest.raises(ValueError, match=r"PruneConfig: m must be an int >= 1, got 0"):
        PruneConfig(granularity="n:m", m=0)


def test_qat_validate_catches_fields_changed_after_construction():
    config = ck.QATConfig()
    config.rounding = "up"
    with pytest.raises(ValueError, match=r"QATConfig: rounding must be \"double\" or \"single\", got 'up'"):
        ck.prepare_qat_(nn.Sequential(nn.Linear(4, 4)), config)


def test_valid_configs_build():
    assert ck.Int8StaticConfig(observer="kl", activation_dtype=torch.int8, rounding="single").observer == "kl"
    assert ck.QATConfig(weight_bits=4, momentum=1).weight_bits == 4
    assert PruneConfig(sparsity=0, granularity="n:m", n=4, m=4).n == 4
    assert ck.CodebookConfig(bits=8, zero_centroid=True).bits == 8
    assert CubicSchedule(final_sparsity=0.9, begin_step=0, end_step=0).end_step == 0
