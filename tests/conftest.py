"""Fixtures shared by the tests. Plain helpers (the CPU paths, run_on_every_isa, seeded random
operands) live in compress_kernels.testing, imported by the test files directly."""

import os

import pytest
import torch

import compress_kernels as ck
from compress_kernels.testing import ISAS


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once under each CPU path of this machine (ISAS), with that path forced."""
    with ck.force_cpu_isa(request.param):
        yield request.param


DIGITS_WIDTH = 16
DIGITS_EPOCHS = 8


@pytest.fixture(scope="session")
def digits_data():
    from compress_kernels.study import data

    return data.load_digits()


@pytest.fixture(scope="session")
def digits_resnet(request, digits_data):
    """(model, data, fp32_accuracy): the package's ResNet-18 (CIFAR form, width 16) trained on the
    bundled digits. Trained once per session (cached under .pytest_cache between local runs);
    deep-copy the model before changing it."""
    from compress_kernels.study import models, training

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
