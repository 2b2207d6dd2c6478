"""Field checks shared by the config dataclasses (Int8StaticConfig, QATConfig, PruneConfig, ...).

Every check raises at construction (``__post_init__``) with a message naming the config, the field,
the value passed and the rule, so a bad config fails where it is written rather than deep inside a
conversion. Booleans are not accepted where an integer is expected (``True`` is an ``int`` in Python)."""

from __future__ import annotations


def _fail(config: object, field: str, value: object, rule: str, error: type = ValueError):
    raise error(f"{type(config).__name__}: {field} must be {rule}, got {value!r}")


def check_bool(config: object, field: str) -> None:
    value = getattr(config, field)
    if not isinstance(value, bool):
        _fail(config, field, value, "a bool (True or False)", TypeError)


def check_int(config: object, field: str, lo: int | None = None, hi: int | None = None) -> None:
    """An int (not a bool) in [lo, hi] (either bound may be None: unbounded)."""
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(config, field, value, "an int", TypeError)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = (f"in [{lo}, {hi}]" if lo is not None and hi is not None
                  else f">= {lo}" if lo is not None else f"<= {hi}")
        _fail(config, field, value, f"an int {bounds}")


def check_choice(config: object, field: str, choices) -> None:
    value = getattr(config, field)
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        _fail(config, field, value, f"one of {list(choices)}")


def check_float(config: object, field: str, rule: str, ok) -> None:
    """A real number (int or float, not a bool, not NaN) for which ok(value) holds; `rule` says what
    ok checks, e.g. "in [0, 1)"."""
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(config, field, value, f"a number {rule}", TypeError)
    if value != value or not ok(value):
        _fail(config, field, value, f"a number {rule}")
