"""The package's public surface: every exported name resolves, the demo application lives in
compress_kernels.study (its public names re-exported from the runner, ck.data / ck.models /
ck.training kept as aliases), and the python/ drivers import."""

import importlib.util
import os

import compress_kernels as ck
from compress_kernels import study
from compress_kernels.study import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_exported_name_resolves_once():
    assert len(ck.__all__) == len(set(ck.__all__))
    for name in ck.__all__:
        assert getattr(ck, name) is not None, name


def test_the_moved_modules_keep_their_top_level_aliases():
    assert ck.study is study
    assert ck.data is study.data and ck.models is study.models and ck.training is study.training
    assert ck.models.__name__ == "compress_kernels.study.models"
    from compress_kernels import models

    assert models.resnet18_cifar is study.models.resnet18_cifar


def test_study_reexports_the_runner_objects_themselves():
    for name in study.__all__:
        if name not in ("data", "models", "training"):
            assert getattr(study, name) is getattr(runner, name), name
    public = {n for n in vars(runner) if not n.startswith("_") and getattr(vars(runner)[n], "__module__", None)
              == runner.__name__}
    assert public <= set(study.__all__), public - set(study.__all__)


def test_python_drivers_import():
    for name in ("examples", "resnet18_cifar10"):
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "python", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # both run only under __main__
        assert callable(module.main)
