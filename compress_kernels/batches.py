"""Calibration batches as the call arguments of a model's forward.

A batch is one of:

* a tensor: the single positional input, ``model(batch)``;
* a tuple or list: positional inputs, ``model(*batch)``, cut to the number of positional parameters
  forward takes (so the ``(input, label)`` pairs of a classification loader feed ``forward(x)`` the
  input only; a forward with ``*args`` gets every element);
* a dict (any Mapping) with string keys: keyword inputs, ``model(**batch)``, e.g. a tokenizer's
  ``{"input_ids": ..., "attention_mask": ...}``.

Anything else, an empty tuple, or arguments that do not fit forward's signature are refused with a
TypeError naming the batch index, what was passed and what is expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn

BATCH_FORMS = ("a tensor (the single input), a tuple / list of positional inputs (an (input, label) pair feeds a "
               "one-input forward the input only), or a dict of keyword inputs such as {'input_ids': ..., "
               "'attention_mask': ...}")


def forward_signature(model: nn.Module) -> inspect.Signature:
    return inspect.signature(model.forward)


def positional_capacity(signature: inspect.Signature) -> int | None:
    """How many positional arguments forward takes (None: unbounded, it has *args)."""
    count = 0
    for param in signature.parameters.values():
        if param.kind == param.VAR_POSITIONAL:
            return None
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def call_arguments(batch, index: int, signature: inspect.Signature, what: str,
                   model_name: str) -> tuple[tuple, dict]:
    """(args, kwargs) for forward from one batch (see the module docstring); TypeError otherwise."""
    if isinstance(batch, torch.Tensor):
        args, kwargs = (batch,), {}
    elif isinstance(batch, (tuple, list)):
        if not batch:
            raise TypeError(f"{what}: batch {index} is an empty {type(batch).__name__}: expected {BATCH_FORMS}")
        capacity = positional_capacity(signature)
        args, kwargs = tuple(batch[:capacity] if capacity is not None else batch), {}
    elif isinstance(batch, Mapping):
        bad_keys = [k for k in batch if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(f"{what}: batch {index} is a dict with non-string key {bad_keys[0]!r}: keyword inputs "
                            f"need the names of {model_name}.forward's parameters as keys")
        args, kwargs = (), dict(batch)
    else:
        raise TypeError(f"{what}: batch {index} has type {type(batch).__name__} ({batch!r:.60}): "
                        f"expected {BATCH_FORMS}")
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        given = ([f"positional {type(a).__name__}" for a in args] + [f"{k}=" for k in kwargs])
        raise TypeError(f"{what}: batch {index} ({', '.join(given)}) does not fit {model_name}.forward{signature}: "
                        f"{err}") from None
    return args, kwargs


def run_calibration(call, batches, signature: inspect.Signature, model_name: str, desc: str, progress: bool,
                    keep_samples: int = 0) -> list[torch.Tensor]:
    """Feed every calibration batch to call(*args, **kwargs) (call_arguments turns a batch into the
    arguments), under a tqdm bar labelled desc. A CalibrationError gains the batch's index; no batch
    at all is refused. Returns references to the first keep_samples samples of the first positional
    input (empty when keep_samples is 0)."""
    from tqdm.auto import tqdm

    from .static_quant import CalibrationError

    count, kept, kept_samples = 0, [], 0
    for index, batch in enumerate(tqdm(batches, desc=desc, disable=not progress, leave=False)):
        args, kwargs = call_arguments(batch, index, signature, "calibrate", model_name)
        try:
            call(*args, **kwargs)
        except CalibrationError as err:
            raise CalibrationError(f"{err} (batch {index})") from err
        count += 1
        x = args[0] if args else None
        if kept_samples < keep_samples and isinstance(x, torch.Tensor):
            kept.append(x[:keep_samples - kept_samples])
            kept_samples += len(kept[-1])
    if count == 0:
        raise ValueError("calibrate: batches is empty: at least one calibration batch is needed")
    return kept
