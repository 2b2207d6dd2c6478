"""The demo application: compress one trained ResNet every way and compare accuracy, speed and size
(``python -m compress_kernels study``, ``make demo``).

Its parts:
  data      datasets that need no download (scikit-learn's bundled digits; CIFAR-10 from local files)
  models    the ResNet-18 (CIFAR form) the study and the accuracy tests train
  training  small training and evaluation loops
  runner    the variant registry, evaluation, timing, stored bytes, reports and the command line
  transformer  (imported on its own, like sensitivity_study) a ViT-style encoder on the digits
            compressed by the transformer paths (``python -m compress_kernels transformer``)

The runner's public names are re-exported here, so ``compress_kernels.study.run_study`` is
``compress_kernels.study.runner.run_study`` (the same objects: ``register_variant`` and
``VARIANTS`` share one registry).
"""

from . import data, models, training
from .runner import (
    COLUMNS,
    DEFAULT_VARIANTS,
    MODELS,
    QUICK,
    VARIANTS,
    Row,
    StudyContext,
    StudyData,
    StudySettings,
    Variant,
    add_arguments,
    checkpoint_path,
    format_table,
    load_data,
    machine_info,
    main_study,
    register_variant,
    run_study,
    settings_from_args,
    steps_for,
    stored_bytes,
    study,
    time_models,
    train_fp32,
    write_reports,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_VARIANTS",
    "MODELS",
    "QUICK",
    "VARIANTS",
    "Row",
    "StudyContext",
    "StudyData",
    "StudySettings",
    "Variant",
    "add_arguments",
    "checkpoint_path",
    "data",
    "format_table",
    "load_data",
    "machine_info",
    "main_study",
    "models",
    "register_variant",
    "run_study",
    "settings_from_args",
    "steps_for",
    "stored_bytes",
    "study",
    "time_models",
    "train_fp32",
    "training",
    "write_reports",
]
