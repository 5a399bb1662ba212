"""What a submission must satisfy: the validation policy and its own validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.validation._values import as_count, as_real, config_count, config_real, type_name

__all__ = ["ValidationPolicy"]

_PREFIX = "validation_policy"


@dataclass(frozen=True, kw_only=True)
class ValidationPolicy:
    """Expectations the checks compare a submission with.

    Every expectation is optional: ``None`` means "not checked". The policy is
    validated at construction; numbers are stored as ``float``, shapes as tuples of
    ints and dtypes as canonical numpy names (``"float32"``).

    Parameters
    ----------
    expected_shapes : tuple of tuple of int, optional
        Shape of each array, in order; their number is the expected number of arrays.
    expected_dtypes : tuple of str, optional
        Dtype name of each array, in order (e.g. ``("float32", "float32")``). Same
        length as ``expected_shapes`` when both are given.
    max_l2_norm : float, optional
        Bound on the L2 norm of all arrays flattened together (the clip bound).
    norm_tolerance : float, default 0.01
        Relative slack on ``max_l2_norm``: a norm passes if it is at most
        ``max_l2_norm * (1 + norm_tolerance)`` (see :attr:`norm_bound`).
    value_range : tuple of (float, float), optional
        Inclusive ``(low, high)`` range every value must lie in.
    max_num_examples : int, optional
        Largest plausible number of local examples.
    clip_norm : float, optional
        Clipping norm the client must declare.
    noise_multiplier : float, optional
        Noise multiplier the client must declare (0 allowed).
    mechanism : str, optional
        Noise mechanism the client must declare; compared case-insensitively.
    epsilon_budget : float, optional
        Largest privacy budget ε a client may declare as spent.
    privacy_rel_tol : float, default 1e-6
        Relative tolerance when comparing declared floats with the policy: tight, but
        enough for a value that went through float32.
    expected_round : int, optional
        Round every submission must answer (checked by ``metadata_check``).
    expected_model_version : str, optional
        Model version every submission must be computed from (``metadata_check``).

    Raises
    ------
    ConfigError
        If a field is out of range or of the wrong type; the error names the field
        (``validation_policy.<field>``) and what was expected.
    """

    expected_shapes: tuple[tuple[int, ...], ...] | None = None
    expected_dtypes: tuple[str, ...] | None = None
    max_l2_norm: float | None = None
    norm_tolerance: float = 0.01
    value_range: tuple[float, float] | None = None
    max_num_examples: int | None = None
    clip_norm: float | None = None
    noise_multiplier: float | None = None
    mechanism: str | None = None
    epsilon_budget: float | None = None
    privacy_rel_tol: float = 1e-6
    expected_round: int | None = None
    expected_model_version: str | None = None

    def __post_init__(self) -> None:
        shapes = _shapes(self.expected_shapes)
        dtypes = _dtypes(self.expected_dtypes)
        if shapes is not None and dtypes is not None and len(shapes) != len(dtypes):
            raise ConfigError(
                f"{_PREFIX}.expected_dtypes",
                f"expected one dtype per expected shape ({len(shapes)}), got {len(dtypes)}",
            )
        rel_tol = config_real(f"{_PREFIX}.privacy_rel_tol", self.privacy_rel_tol, positive=False)
        if rel_tol >= 1.0:
            raise ConfigError(
                f"{_PREFIX}.privacy_rel_tol", f"expected a number in [0, 1), got {self.privacy_rel_tol!r}"
            )
        normalized: dict[str, object] = {
            "expected_shapes": shapes,
            "expected_dtypes": dtypes,
            "max_l2_norm": _real("max_l2_norm", self.max_l2_norm, positive=True),
            "norm_tolerance": config_real(f"{_PREFIX}.norm_tolerance", self.norm_tolerance, positive=False),
            "value_range": _range(self.value_range),
            "max_num_examples": _count("max_num_examples", self.max_num_examples, minimum=1),
            "clip_norm": _real("clip_norm", self.clip_norm, positive=True),
            "noise_multiplier": _real("noise_multiplier", self.noise_multiplier, positive=False),
            "mechanism": _name("mechanism", self.mechanism, lower=True),
            "epsilon_budget": _real("epsilon_budget", self.epsilon_budget, positive=True),
            "privacy_rel_tol": rel_tol,
            "expected_round": _count("expected_round", self.expected_round, minimum=0),
            "expected_model_version": _name("expected_model_version", self.expected_model_version, lower=False),
        }
        for name, value in normalized.items():
            object.__setattr__(self, name, value)

    @classmethod
    def for_arrays(cls, arrays: Sequence[np.ndarray], /, **settings: Any) -> ValidationPolicy:
        """Build a policy whose shapes and dtypes are those of reference ``arrays``.

        Parameters
        ----------
        arrays : sequence of numpy.ndarray
            The reference arrays, typically the current global model's.
        **settings
            Any other :class:`ValidationPolicy` field.

        Returns
        -------
        ValidationPolicy
        """
        return cls(
            expected_shapes=tuple(np.shape(a) for a in arrays),
            expected_dtypes=tuple(np.asarray(a).dtype.name for a in arrays),
            **settings,
        )

    @property
    def expected_num_arrays(self) -> int | None:
        """Number of arrays implied by the expected shapes or dtypes (``None``: any)."""
        if self.expected_shapes is not None:
            return len(self.expected_shapes)
        if self.expected_dtypes is not None:
            return len(self.expected_dtypes)
        return None

    @property
    def norm_bound(self) -> float | None:
        """``max_l2_norm * (1 + norm_tolerance)``, the largest norm that passes."""
        if self.max_l2_norm is None:
            return None
        return self.max_l2_norm * (1.0 + self.norm_tolerance)

    @property
    def requires_dp(self) -> bool:
        """Whether the policy expects a privacy declaration from every client."""
        return any(
            value is not None
            for value in (self.clip_norm, self.noise_multiplier, self.mechanism, self.epsilon_budget)
        )


def _real(name: str, value: object, *, positive: bool) -> float | None:
    return None if value is None else config_real(f"{_PREFIX}.{name}", value, positive=positive)


def _count(name: str, value: object, *, minimum: int) -> int | None:
    return None if value is None else config_count(f"{_PREFIX}.{name}", value, minimum=minimum)


def _name(name: str, value: object, *, lower: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{_PREFIX}.{name}", f"expected a non-empty string, got {value!r}")
    return value.strip().lower() if lower else value


def _range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    field = f"{_PREFIX}.value_range"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(field, f"expected a (low, high) pair, got {value!r}")
    low, high = as_real(value[0]), as_real(value[1])
    if low is None or high is None or math.isnan(low) or math.isnan(high) or low > high:
        raise ConfigError(field, f"expected two numbers with low <= high, got {value!r}")
    return (low, high)


def _shapes(value: object) -> tuple[tuple[int, ...], ...] | None:
    if value is None:
        return None
    field = f"{_PREFIX}.expected_shapes"
    if not isinstance(value, (tuple, list)):
        raise ConfigError(field, f"expected a sequence of shapes, got {type_name(value)}")
    shapes = []
    for i, shape in enumerate(value):
        dims = [as_count(d) for d in shape] if isinstance(shape, (tuple, list)) else [None]
        if any(d is None or d < 0 for d in dims):
            raise ConfigError(f"{field}[{i}]", f"expected a tuple of integers >= 0, got {shape!r}")
        shapes.append(tuple(int(d) for d in shape))
    return tuple(shapes)


def _dtypes(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    field = f"{_PREFIX}.expected_dtypes"
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ConfigError(field, f"expected a sequence of dtype names (one per array), got {value!r}")
    names = []
    for i, dtype in enumerate(value):
        if dtype is None:
            raise ConfigError(f"{field}[{i}]", "expected a numpy dtype name such as 'float32', got None")
        try:
            names.append(np.dtype(dtype).name)
        except TypeError as exc:
            raise ConfigError(f"{field}[{i}]", f"expected a numpy dtype name such as 'float32', got {dtype!r}") from exc
    return tuple(names)

