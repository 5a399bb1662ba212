"""Immutable privacy events: what was released, in accountant-neutral form.

Each event describes one mechanism applied ``count`` times and converts to a
``dp_accounting.DpEvent`` (:meth:`to_dp_event`). Events are plain frozen
dataclasses, hashable, and round-trip through JSON via :meth:`to_dict` and
:func:`event_from_dict`.

Sensitivity is folded into the parameters: a ``noise_multiplier`` is the noise
standard deviation divided by the L2 sensitivity, and a Laplace ``epsilon`` is
the L1 sensitivity divided by the Laplace scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import attr
from dp_accounting import dp_event

from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    require_non_negative,
    require_positive,
    require_positive_int,
    require_probability,
    require_sample_rate,
)

__all__ = [
    "DpSgdSteps",
    "EpsilonDeltaDpEvent",
    "ExactRelease",
    "GaussianRelease",
    "LaplaceRelease",
    "PoissonSampling",
    "PrivacyEvent",
    "event_from_dict",
    "is_privacy_event",
    "noise_multiplier_of",
]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class EpsilonDeltaDpEvent(dp_event.DpEvent):  # type: ignore[misc]
    """A mechanism known only to be (epsilon, delta)-DP.

    ``dp_accounting`` has no event for this; the accountants of
    :mod:`oneliac_flwr.privacy.accountant` handle it (the PLD accountant with
    the worst-case PLD of ``privacy_loss_distribution.from_privacy_parameters``,
    the RDP accountant by basic composition). Stock ``dp_accounting``
    accountants report it as unsupported.
    """

    epsilon: float
    delta: float


def _field(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise PrivacyConfigError(f"event.{name}", "is missing")
    return data[name]


def _self_composed(event: dp_event.DpEvent, count: int) -> dp_event.DpEvent:
    return event if count == 1 else dp_event.SelfComposedDpEvent(event, count)


@dataclass(frozen=True)
class PoissonSampling:
    """Each unit takes part independently with probability ``sample_rate``.

    Only claim this when the sampler really is Poisson (Flower's ``FedAvg``
    samples a fixed number of nodes without replacement, which is not).
    """

    sample_rate: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_rate", require_sample_rate("sample_rate", self.sample_rate))


@dataclass(frozen=True)
class GaussianRelease:
    """``count`` releases of a sum plus Gaussian noise of std ``noise_multiplier * C``.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation divided by the L2 sensitivity ``C`` (> 0).
    count : int
        Number of identical releases (>= 1).
    sampling : PoissonSampling or None
        ``None`` for full participation (no amplification claimed).
    """

    noise_multiplier: float
    count: int = 1
    sampling: PoissonSampling | None = None

    kind: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "noise_multiplier", require_positive("noise_multiplier", self.noise_multiplier)
        )
        object.__setattr__(self, "count", require_positive_int("count", self.count))
        if self.sampling is not None and not isinstance(self.sampling, PoissonSampling):
            raise PrivacyConfigError("sampling", f"must be PoissonSampling or None, got {self.sampling!r}")
        if self.sampling is not None and self.sampling.sample_rate == 1.0:
            object.__setattr__(self, "sampling", None)

    @property
    def full_participation(self) -> bool:
        """True when no sampling amplification is claimed."""
        return self.sampling is None

    def single(self) -> GaussianRelease:
        """The same event with ``count=1``."""
        return GaussianRelease(self.noise_multiplier, 1, self.sampling)

    def to_dp_event(self) -> dp_event.DpEvent:
        """``GaussianDpEvent``, Poisson-sampled if sampled, self-composed ``count`` times."""
        event: dp_event.DpEvent = dp_event.GaussianDpEvent(self.noise_multiplier)
        if self.sampling is not None:
            event = dp_event.PoissonSampledDpEvent(self.sampling.sample_rate, event)
        return _self_composed(event, self.count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``sample_rate`` is null for full participation)."""
        return {
            "type": self.kind,
            "noise_multiplier": self.noise_multiplier,
            "count": self.count,
            "sample_rate": None if self.sampling is None else self.sampling.sample_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GaussianRelease:
        """Inverse of :meth:`to_dict`."""
        rate = data.get("sample_rate")
        return cls(
            _field(data, "noise_multiplier"),
            data.get("count", 1),
            None if rate is None else PoissonSampling(rate),
        )


@dataclass(frozen=True)
class LaplaceRelease:
    """``count`` releases with Laplace noise of scale ``L1 sensitivity / epsilon`` (pure DP)."""

    epsilon: float
    count: int = 1

    kind: ClassVar[str] = "laplace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", require_positive("epsilon", self.epsilon))
        object.__setattr__(self, "count", require_positive_int("count", self.count))

    def single(self) -> LaplaceRelease:
        """The same event with ``count=1``."""
        return LaplaceRelease(self.epsilon, 1)

    def to_dp_event(self) -> dp_event.DpEvent:
        """``LaplaceDpEvent(1/epsilon)``, self-composed ``count`` times."""
        return _self_composed(dp_event.LaplaceDpEvent(1.0 / self.epsilon), self.count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the delta of a Laplace release is 0."""
        return {"type": self.kind, "epsilon": self.epsilon, "delta": 0.0, "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaplaceRelease:
        """Inverse of :meth:`to_dict`."""
        return cls(_field(data, "epsilon"), data.get("count", 1))


@dataclass(frozen=True)
class ExactRelease:
    """``count`` releases of a mechanism known only to be (epsilon, delta)-DP.

    Accounted with the worst-case privacy-loss distribution of an
    (epsilon, delta)-DP mechanism, so it is valid for any such mechanism but
    looser than describing the mechanism itself (prefer :class:`GaussianRelease`
    or :class:`LaplaceRelease` when the mechanism is known).
    """

    epsilon: float
    delta: float
    count: int = 1

    kind: ClassVar[str] = "exact"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", require_non_negative("epsilon", self.epsilon))
        object.__setattr__(self, "delta", require_probability("delta", self.delta, allow_zero=True))
        object.__setattr__(self, "count", require_positive_int("count", self.count))

    def single(self) -> ExactRelease:
        """The same event with ``count=1``."""
        return ExactRelease(self.epsilon, self.delta, 1)

    def to_dp_event(self) -> dp_event.DpEvent:
        """:class:`EpsilonDeltaDpEvent`, self-composed ``count`` times."""
        return _self_composed(EpsilonDeltaDpEvent(self.epsilon, self.delta), self.count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"type": self.kind, "epsilon": self.epsilon, "delta": self.delta, "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExactRelease:
        """Inverse of :meth:`to_dict`."""
        return cls(_field(data, "epsilon"), _field(data, "delta"), data.get("count", 1))


@dataclass(frozen=True)
class DpSgdSteps:
    """``steps`` DP-SGD steps: Poisson-subsampled Gaussian (Opacus' accountant history entry)."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    kind: ClassVar[str] = "dpsgd"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "noise_multiplier", require_positive("noise_multiplier", self.noise_multiplier)
        )
        object.__setattr__(self, "sample_rate", require_sample_rate("sample_rate", self.sample_rate))
        object.__setattr__(self, "steps", require_positive_int("steps", self.steps))

    @property
    def count(self) -> int:
        """Number of steps (alias used by the accountants)."""
        return self.steps

    def single(self) -> DpSgdSteps:
        """One step with the same parameters."""
        return DpSgdSteps(self.noise_multiplier, self.sample_rate, 1)

    def to_dp_event(self) -> dp_event.DpEvent:
        """``SelfComposed(PoissonSampled(q, Gaussian(z)), steps)``."""
        event: dp_event.DpEvent = dp_event.GaussianDpEvent(self.noise_multiplier)
        if self.sample_rate < 1.0:
            event = dp_event.PoissonSampledDpEvent(self.sample_rate, event)
        return _self_composed(event, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "type": self.kind,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DpSgdSteps:
        """Inverse of :meth:`to_dict`."""
        return cls(_field(data, "noise_multiplier"), _field(data, "sample_rate"), _field(data, "steps"))


PrivacyEvent: TypeAlias = GaussianRelease | LaplaceRelease | ExactRelease | DpSgdSteps

_EVENT_TYPES: dict[str, type[GaussianRelease | LaplaceRelease | ExactRelease | DpSgdSteps]] = {
    cls.kind: cls for cls in (GaussianRelease, LaplaceRelease, ExactRelease, DpSgdSteps)
}


def event_from_dict(data: Mapping[str, Any]) -> PrivacyEvent:
    """Rebuild an event from :meth:`to_dict` output.

    Raises
    ------
    PrivacyConfigError
        If ``type`` is unknown or a field is missing or out of range.
    """
    if not isinstance(data, Mapping):
        raise PrivacyConfigError("event", f"must be a mapping, got {type(data).__name__}")
    kind = data.get("type")
    cls = _EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PrivacyConfigError("event.type", f"must be one of {sorted(_EVENT_TYPES)}, got {kind!r}")
    return cls.from_dict(data)


def is_privacy_event(value: object) -> bool:
    """True if ``value`` is one of the event classes of this module."""
    return isinstance(value, (GaussianRelease, LaplaceRelease, ExactRelease, DpSgdSteps))


def noise_multiplier_of(event: PrivacyEvent) -> float | None:
    """The Gaussian noise multiplier of ``event``, or None for non-Gaussian events."""
    if isinstance(event, (GaussianRelease, DpSgdSteps)):
        return event.noise_multiplier
    return None
