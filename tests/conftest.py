import pytest
import torch

import compress_kernels as ck


def available_isas() -> list[str]:
    """Every CPU path this machine can run, lowest first (the portable one always), then
    "amx_emulated" (the AMX kernels on the scalar tile model, which every machine runs)."""
    isas = ["portable"]
    for name in ("avx2", "avx512vnni", "avx512vbmi", "amx"):
        try:
            with ck.force_cpu_isa(name):
                isas.append(name)
        except RuntimeError as err:  # this CPU lacks it
            assert "this CPU lacks" in str(err)
    return isas + ["amx_emulated"]


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


DIGITS_WIDTH = 16
DIGITS_EPOCHS = 8


@pytest.fixture(scope="session")
def digits_data():
    from compress_kernels import data

    return data.load_digits()


@pytest.fixture(scope="session")
def digits_resnet(request, digits_data):
    """(model, data, fp32_accuracy): the package's ResNet-18 (CIFAR form, width 16) trained on the
    bundled digits. Trained once per session (cached under .pytest_cache between local runs);
    deep-copy the model before changing it."""
    import os

    from compress_kernels import models, training

    x_train, y_train, x_test, y_test = digits_data
    torch.manual_seed(0)
    model = models.resnet18_cifar(width=DIGITS_WIDTH)
    cache = os.path.join(str(request.config.cache.mkdir("digits_resnet")),
                         f"w{DIGITS_WIDTH}_e{DIGITS_EPOCHS}_torch{torch.__version__}.pt")
    if os.path.exists(cache):
        model.load_state_dict(torch.load(cache, weights_only=True))
    else:
        training.train(model, x_train, y_train, epochs=DIGITS_EPOCHS, lr=0.1)
        torch.save(model.state_dict(), cache)
    model.eval()
    return model, digits_data, training.evaluate(model, x_test, y_test)
