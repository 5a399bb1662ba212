"""Scalar helpers: untrusted numbers, JSON-safe floats, and validated settings."""

from __future__ import annotations

import math
import numbers

from oneliac_flwr.errors import ConfigError

__all__ = ["as_count", "as_real", "config_count", "config_real", "json_float", "type_name"]


def type_name(value: object) -> str:
    """Return the name of the type of ``value`` (for messages)."""
    return type(value).__name__


def as_real(value: object) -> float | None:
    """Return ``value`` as a float if it is a real number (not a bool), else ``None``.

    NaN and infinities are returned as they are; callers decide about them.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def as_count(value: object) -> int | None:
    """Return ``value`` as an int if it is an integer (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def json_float(value: float) -> float | str:
    """Return ``value`` as a float, or as ``"nan"``/``"inf"``/``"-inf"`` if not finite.

    Strict JSON has no non-finite numbers, so reports carry them as strings.
    """
    value = float(value)
    return value if math.isfinite(value) else str(value)


def config_real(field: str, value: object, *, positive: bool) -> float:
    """Return a setting as a finite float ``> 0`` (``positive``) or ``>= 0``.

    Raises
    ------
    ConfigError
        Naming ``field`` and what was expected, if the value does not qualify.
    """
    number = as_real(value)
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        expected = "a finite number > 0" if positive else "a finite number >= 0"
        raise ConfigError(field, f"expected {expected}, got {value!r}")
    return number


def config_count(field: str, value: object, *, minimum: int) -> int:
    """Return a setting as an int ``>= minimum`` (bools refused).

    Raises
    ------
    ConfigError
        Naming ``field`` and what was expected, if the value does not qualify.
    """
    number = as_count(value)
    if number is None or number < minimum:
        raise ConfigError(field, f"expected an integer >= {minimum}, got {value!r}")
    return number
