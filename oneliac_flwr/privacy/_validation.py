"""Parameter checks shared by the privacy modules.

Every check raises :class:`PrivacyConfigError`, which is both a
:class:`~oneliac_flwr.errors.ConfigError` (hence a :class:`ValueError`) and a
:class:`~oneliac_flwr.errors.PrivacyError`. Messages name the field and what was
expected, e.g. ``"epsilon: must be > 0, got -1"``.
"""

from __future__ import annotations

import math
import numbers
import secrets

import numpy as np

from oneliac_flwr.errors import ConfigError, PrivacyError

__all__ = [
    "PrivacyConfigError",
    "make_rng",
    "require_non_negative",
    "require_positive",
    "require_positive_int",
    "require_probability",
    "require_sample_rate",
]


class PrivacyConfigError(ConfigError, PrivacyError):
    """A differential-privacy parameter is missing or out of range.

    Subclass of both :class:`~oneliac_flwr.errors.ConfigError` (a
    :class:`ValueError`) and :class:`~oneliac_flwr.errors.PrivacyError`.
    """


def _as_real(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PrivacyConfigError(field, f"must be a real number, got {value!r}")
    result = float(value)
    if math.isnan(result):
        raise PrivacyConfigError(field, "must be a number, got nan")
    return result


def require_positive(field: str, value: object, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float if it is > 0 (and finite unless ``allow_inf``)."""
    result = _as_real(field, value)
    if result <= 0:
        raise PrivacyConfigError(field, f"must be > 0, got {value!r}")
    if math.isinf(result) and not allow_inf:
        raise PrivacyConfigError(field, f"must be finite, got {value!r}")
    return result


def require_non_negative(field: str, value: object) -> float:
    """Return ``value`` as a float if it is finite and >= 0."""
    result = _as_real(field, value)
    if result < 0:
        raise PrivacyConfigError(field, f"must be >= 0, got {value!r}")
    if math.isinf(result):
        raise PrivacyConfigError(field, f"must be finite, got {value!r}")
    return result


def require_probability(field: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` if it lies in (0, 1), or in [0, 1) when ``allow_zero``."""
    result = _as_real(field, value)
    low_ok = result >= 0 if allow_zero else result > 0
    if not (low_ok and result < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise PrivacyConfigError(field, f"must be in {interval}, got {value!r}")
    return result


def require_sample_rate(field: str, value: object) -> float:
    """Return ``value`` if it lies in (0, 1]."""
    result = _as_real(field, value)
    if not 0 < result <= 1:
        raise PrivacyConfigError(field, f"must be in (0, 1], got {value!r}")
    return result


def require_positive_int(field: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PrivacyConfigError(field, f"must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise PrivacyConfigError(field, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def make_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """Return ``rng``, or a new generator seeded from OS entropy (``secrets``).

    Never falls back to numpy's global random state.
    """
    if rng is None:
        return np.random.default_rng(secrets.randbits(128))
    if not isinstance(rng, np.random.Generator):
        raise PrivacyConfigError("rng", f"must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng
