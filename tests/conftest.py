import pytest
import torch

import compress_kernels as ck


def available_isas() -> list[str]:
    """Every CPU path this machine can run (the portable one always)."""
    isas = ["portable"]
    with ck.force_cpu_isa("auto"):
        if ck.cpu_isa() != "portable":
            isas.append(ck.cpu_isa())
    return isas


ISAS = available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    with ck.force_cpu_isa(request.param):
        yield request.param


def run_on_every_isa(fn, *args, **kwargs):
    """fn(*args) on every CPU path; asserts the results are bit-identical and returns one."""
    results = []
    for name in ISAS:
        with ck.force_cpu_isa(name):
            results.append(fn(*args, **kwargs))
    for name, r in zip(ISAS[1:], results[1:]):
        assert torch.equal(results[0], r), f"{name} differs from the portable path"
    return results[0]
