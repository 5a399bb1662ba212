"""Privacy accountants: compose events, report epsilon at a given delta.

Three accountants share one small interface (:class:`Accountant`), in the
spirit of Opacus' ``accountants/``:

- :class:`PldAccountant` (primary): privacy-loss distributions from
  ``dp_accounting.pld`` with pessimistic discretisation, so the reported
  epsilon is an upper bound (up to floating-point rounding).
- :class:`RdpAccountant` (cross-check): ``dp_accounting.rdp``; looser.
- :class:`GdpAccountant` (closed form): exact mu-GDP for full-participation
  Gaussian releases only, ``mu = sqrt(sum_i count_i / z_i**2)``.

Every accountant keeps the list of composed events, so its state is that list
(:meth:`Accountant.state_dict`) and restoring it replays the events.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import pld_privacy_accountant, privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant

from oneliac_flwr.errors import PrivacyError
from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    require_positive,
    require_probability,
)
from oneliac_flwr.privacy.events import (
    DpSgdSteps,
    EpsilonDeltaDpEvent,
    GaussianRelease,
    PrivacyEvent,
    event_from_dict,
    is_privacy_event,
)
from oneliac_flwr.privacy.gdp import gaussian_full_participation_epsilon, gdp_epsilon

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "GdpAccountant",
    "PldAccountant",
    "RdpAccountant",
    "gaussian_full_participation_epsilon",
    "gdp_epsilon",
    "make_accountant",
]

_STATE_VERSION = 1

# Integer orders only: cheap for subsampled Gaussians, used to size the PLD grid.
_ESTIMATE_ORDERS = (*(float(order) for order in range(2, 65)), 128.0, 256.0, 512.0, 1024.0)


class _PldBackend(pld_privacy_accountant.PLDAccountant):  # type: ignore[misc]
    """``dp_accounting`` PLD accountant that also accepts :class:`EpsilonDeltaDpEvent`."""

    _pld: Any

    @property
    def pld(self) -> privacy_loss_distribution.PrivacyLossDistribution:
        """The composed privacy-loss distribution."""
        composed: privacy_loss_distribution.PrivacyLossDistribution = self._pld
        return composed

    def _maybe_compose(self, event: dp_event.DpEvent, count: int, do_compose: bool) -> Any:
        if isinstance(event, EpsilonDeltaDpEvent):
            if do_compose and count > 0 and (event.epsilon > 0 or event.delta > 0):
                pld = privacy_loss_distribution.from_privacy_parameters(
                    pld_common.DifferentialPrivacyParameters(event.epsilon, event.delta),
                    value_discretization_interval=self._value_discretization_interval,
                )
                if count > 1:
                    pld = pld.self_compose(count)
                self._pld = self._pld.compose(pld)
            return None
        return super()._maybe_compose(event, count, do_compose)


class _RdpBackend(rdp_privacy_accountant.RdpAccountant):  # type: ignore[misc]
    """``dp_accounting`` RDP accountant that also accepts :class:`EpsilonDeltaDpEvent`.

    Pure epsilon-DP releases enter the RDP curve as ``min(eps, alpha*eps**2/2)``
    (Bun and Steinke 2016, Prop. 3.3). Releases with delta > 0 have no RDP
    curve; they are added by basic composition: epsilon is
    ``eps_rdp(delta - sum delta_i) + sum eps_i``.
    """

    def __init__(self, orders: Sequence[float] | None = None) -> None:
        super().__init__(orders=orders)
        self._basic_epsilon = 0.0
        self._basic_delta = 0.0

    def _maybe_compose(self, event: dp_event.DpEvent, count: int, do_compose: bool) -> Any:
        if isinstance(event, EpsilonDeltaDpEvent):
            if do_compose and count > 0:
                if event.delta == 0:
                    eps = event.epsilon
                    self._rdp += count * np.minimum(eps, self._orders * eps * eps / 2.0)
                else:
                    self._basic_epsilon += count * event.epsilon
                    self._basic_delta += count * event.delta
            return None
        return super()._maybe_compose(event, count, do_compose)

    def get_epsilon(self, target_delta: float) -> float:
        remaining = target_delta - self._basic_delta
        if remaining <= 0:
            return math.inf
        rdp_epsilon = float(super().get_epsilon(remaining)) if np.any(self._rdp) else 0.0
        return rdp_epsilon + self._basic_epsilon


def _is_plain_gaussian(event: PrivacyEvent) -> bool:
    """Full-participation Gaussian: composes exactly into one Gaussian (mu-GDP)."""
    if isinstance(event, GaussianRelease):
        return event.full_participation
    if isinstance(event, DpSgdSteps):
        return event.sample_rate == 1.0
    return False


@functools.lru_cache(maxsize=64)
def _single_pld(atom: PrivacyEvent, interval: float) -> privacy_loss_distribution.PrivacyLossDistribution:
    """PLD of one release of ``atom`` (immutable; cached: building it is the slow part)."""
    backend = _PldBackend(value_discretization_interval=interval)
    backend.compose(atom.to_dp_event())
    return backend.pld


@functools.lru_cache(maxsize=16)
def _gaussian_pld(
    noise_multiplier: float, interval: float
) -> privacy_loss_distribution.PrivacyLossDistribution:
    """PLD of one Gaussian release with noise multiplier ``noise_multiplier``."""
    backend = _PldBackend(value_discretization_interval=interval)
    backend.compose(dp_event.GaussianDpEvent(noise_multiplier))
    return backend.pld


@functools.lru_cache(maxsize=256)
def _single_rdp(atom: PrivacyEvent, orders: tuple[float, ...]) -> tuple[np.ndarray, float, float]:
    """RDP curve (by ``dp_accounting``) and basic-composition part of one release of ``atom``."""
    backend = _RdpBackend(orders=orders)
    backend.compose(atom.to_dp_event())
    curve = backend.rdp
    curve.setflags(write=False)
    return curve, backend._basic_epsilon, backend._basic_delta


@dataclass
class _RdpTotal:
    """Sum of RDP curves (composition adds them) plus the basic-composition part."""

    orders: tuple[float, ...]
    curve: np.ndarray
    basic_epsilon: float = 0.0
    basic_delta: float = 0.0

    @classmethod
    def empty(cls, orders: tuple[float, ...]) -> _RdpTotal:
        return cls(orders, np.zeros(len(orders)))

    def add(self, atom: PrivacyEvent, count: int) -> None:
        curve, epsilon, delta = _single_rdp(atom, self.orders)
        self.curve = self.curve + count * curve
        self.basic_epsilon += count * epsilon
        self.basic_delta += count * delta

    def epsilon(self, delta: float) -> float:
        remaining = delta - self.basic_delta
        if remaining <= 0:
            return math.inf
        if not np.any(self.curve):
            return self.basic_epsilon
        bound = rdp_privacy_accountant.compute_epsilon(self.orders, self.curve, remaining)[0]
        return float(bound) + self.basic_epsilon


def _quick_epsilon_bound(counts: Mapping[PrivacyEvent, int], delta: float) -> float:
    """Cheap RDP upper bound on epsilon (integer orders), used to size the PLD grid."""
    total = _RdpTotal.empty(_ESTIMATE_ORDERS)
    for atom, count in counts.items():
        total.add(atom, count)
    return total.epsilon(delta)


class Accountant(ABC):
    """Composes :mod:`~oneliac_flwr.privacy.events` and reports epsilon.

    Subclasses set :attr:`name` and implement :meth:`_epsilon`; they may
    restrict :meth:`supports` and keep live state in :meth:`_after_compose`.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._events: list[PrivacyEvent] = []
        self._counts: dict[PrivacyEvent, int] = {}

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Events composed so far, in order."""
        return tuple(self._events)

    def supports(self, event: object) -> bool:
        """True if :meth:`compose` would accept ``event``."""
        return is_privacy_event(event) and self._supports(event)  # type: ignore[arg-type]

    def _supports(self, event: PrivacyEvent) -> bool:
        return True

    def compose(self, event: PrivacyEvent) -> Accountant:
        """Account for ``event`` (adaptive composition).

        Parameters
        ----------
        event : PrivacyEvent
            The release to add.

        Returns
        -------
        Accountant
            ``self``, for chaining.

        Raises
        ------
        PrivacyConfigError
            If ``event`` is not a privacy event.
        PrivacyError
            If this accountant cannot account for the event.
        """
        if not is_privacy_event(event):
            raise PrivacyConfigError("event", f"must be a privacy event, got {type(event).__name__}")
        if not self._supports(event):
            raise PrivacyError(f"event: the {self.name} accountant cannot account for {event!r}")
        self._events.append(event)
        atom = event.single()
        self._counts[atom] = self._counts.get(atom, 0) + event.count
        self._after_compose(event)
        return self

    def _after_compose(self, event: PrivacyEvent) -> None:  # noqa: B027 - optional hook
        """Hook for accountants with live state."""

    def _reset(self) -> None:
        self._events = []
        self._counts = {}

    def _gaussian_mu_squared(self) -> float:
        """``sum count / z**2`` over full-participation Gaussian events (exact GDP composition)."""
        total = 0.0
        for atom, count in self._counts.items():
            if _is_plain_gaussian(atom) and isinstance(atom, (GaussianRelease, DpSgdSteps)):
                total += count / atom.noise_multiplier**2
        return total

    def get_epsilon(self, delta: float) -> float:
        """Epsilon of everything composed so far, at ``delta``.

        Parameters
        ----------
        delta : float
            Target delta, in (0, 1).

        Returns
        -------
        float
            Epsilon (0 when nothing was composed; ``inf`` when unbounded).
        """
        delta = require_probability("delta", delta)
        if not self._events:
            return 0.0
        return self._epsilon(delta)

    @abstractmethod
    def _epsilon(self, delta: float) -> float:
        """Epsilon for a non-empty accountant."""

    def copy(self) -> Accountant:
        """An independent accountant holding the same events."""
        clone = type(self)(**self.settings())
        for event in self._events:
            clone.compose(event)
        return clone

    def settings(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-ready)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: accountant name, settings and the composed events."""
        return {
            "accountant": self.name,
            "version": _STATE_VERSION,
            "settings": self.settings(),
            "events": [event.to_dict() for event in self._events],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this accountant's events with those of ``state``.

        Raises
        ------
        PrivacyError
            If the state belongs to another accountant or other settings.
        """
        if not isinstance(state, Mapping):
            raise PrivacyError(f"state: must be a mapping, got {type(state).__name__}")
        if state.get("accountant") != self.name:
            raise PrivacyError(f"state.accountant: expected {self.name!r}, got {state.get('accountant')!r}")
        if state.get("version") != _STATE_VERSION:
            raise PrivacyError(f"state.version: expected {_STATE_VERSION}, got {state.get('version')!r}")
        if dict(state.get("settings") or {}) != self.settings():
            raise PrivacyError(f"state.settings: expected {self.settings()!r}, got {state.get('settings')!r}")
        events = state.get("events")
        if not isinstance(events, list):
            raise PrivacyError("state.events: must be a list")
        parsed = [event_from_dict(item) for item in events]
        self._reset()
        for event in parsed:
            self.compose(event)


class PldAccountant(Accountant):
    """Privacy-loss-distribution accountant (``dp_accounting.pld``).

    Full-participation Gaussian events are merged exactly into one Gaussian
    with ``mu**2 = sum count_i / z_i**2`` before building its PLD; other events
    are grouped by parameters and self-composed (one PLD per distinct event),
    so cost does not grow with the number of identical rounds.

    Parameters
    ----------
    value_discretization_interval : float or None
        Fixed PLD grid step. ``None`` (default) picks the largest power of two
        at or below ``relative_precision * eps_estimate`` (clipped to
        [1e-6, 1e-2]), where ``eps_estimate`` is a quick RDP upper bound: the
        pessimistic rounding then adds well under 0.1% to epsilon while each
        query stays fast. Pessimistic rounding keeps the result an upper bound
        whatever the step.
    relative_precision : float
        See above.
    """

    name = "pld"

    def __init__(
        self,
        *,
        value_discretization_interval: float | None = None,
        relative_precision: float = 2.5e-4,
    ) -> None:
        super().__init__()
        self._fixed_interval = (
            None
            if value_discretization_interval is None
            else require_positive("value_discretization_interval", value_discretization_interval)
        )
        self._relative_precision = require_positive("relative_precision", relative_precision)
        self._cache_key: tuple[int, float] | None = None
        self._cache: privacy_loss_distribution.PrivacyLossDistribution | None = None
        self._interval_key: tuple[int, float] | None = None
        self._interval = 1e-4

    def settings(self) -> dict[str, Any]:
        return {
            "value_discretization_interval": self._fixed_interval,
            "relative_precision": self._relative_precision,
        }

    def _reset(self) -> None:
        super()._reset()
        self._cache_key = None
        self._cache = None
        self._interval_key = None

    def discretization_interval(self, delta: float) -> float:
        """PLD grid step used for a query at ``delta``."""
        if self._fixed_interval is not None:
            return self._fixed_interval
        key = (len(self._events), delta)
        if self._interval_key != key:
            bound = _quick_epsilon_bound(self._counts, delta)
            if not math.isfinite(bound) or bound <= 0:
                interval = 1e-4
            else:
                # A power of two at or below the target, so nearby queries share cached PLDs.
                target = min(1e-2, max(1e-6, self._relative_precision * bound))
                interval = 2.0 ** math.floor(math.log2(target))
            self._interval_key, self._interval = key, interval
        return self._interval

    def _build(self, interval: float) -> privacy_loss_distribution.PrivacyLossDistribution:
        parts = []
        mu_squared = self._gaussian_mu_squared()
        if mu_squared > 0:
            parts.append(_gaussian_pld(1.0 / math.sqrt(mu_squared), interval))
        for atom, count in self._counts.items():
            if not _is_plain_gaussian(atom):
                single = _single_pld(atom, interval)
                parts.append(single if count == 1 else single.self_compose(count))
        composed = parts[0]
        for part in parts[1:]:
            composed = composed.compose(part)
        return composed

    def _epsilon(self, delta: float) -> float:
        interval = self.discretization_interval(delta)
        key = (len(self._events), interval)
        if self._cache is None or self._cache_key != key:
            self._cache = self._build(interval)
            self._cache_key = key
        return float(self._cache.get_epsilon_for_delta(delta))


class RdpAccountant(Accountant):
    """Rényi-DP accountant (``dp_accounting.rdp``), used as a cross-check.

    The RDP curve of each distinct release is computed once by
    ``dp_accounting``'s ``RdpAccountant`` and composition adds the curves, as
    that accountant does; epsilon comes from ``rdp.compute_epsilon``.

    Parameters
    ----------
    orders : sequence of float or None
        RDP orders; ``None`` uses ``dp_accounting``'s defaults (as Flower does).
    """

    name = "rdp"

    def __init__(self, *, orders: Sequence[float] | None = None) -> None:
        super().__init__()
        self._orders = None if orders is None else [float(order) for order in orders]
        if self._orders is not None and (not self._orders or min(self._orders) <= 1):
            raise PrivacyConfigError("orders", f"must be a non-empty list of values > 1, got {orders!r}")
        self._order_tuple = tuple(
            rdp_privacy_accountant.DEFAULT_RDP_ORDERS if self._orders is None else self._orders
        )
        self._total = _RdpTotal.empty(self._order_tuple)

    def settings(self) -> dict[str, Any]:
        return {"orders": self._orders}

    def _reset(self) -> None:
        super()._reset()
        self._total = _RdpTotal.empty(self._order_tuple)

    def _after_compose(self, event: PrivacyEvent) -> None:
        self._total.add(event.single(), event.count)

    def _epsilon(self, delta: float) -> float:
        return self._total.epsilon(delta)


class GdpAccountant(Accountant):
    """Closed form for full-participation Gaussian releases (exact mu-GDP).

    Accepts only :class:`GaussianRelease` without sampling (and
    :class:`DpSgdSteps` with ``sample_rate == 1``).
    """

    name = "gdp"

    def _supports(self, event: PrivacyEvent) -> bool:
        return _is_plain_gaussian(event)

    @property
    def mu(self) -> float:
        """``sqrt(sum count_i / z_i**2)``."""
        return math.sqrt(self._gaussian_mu_squared())

    def _epsilon(self, delta: float) -> float:
        return gdp_epsilon(mu=self.mu, delta=delta)


ACCOUNTANTS: dict[str, type[Accountant]] = {
    cls.name: cls for cls in (PldAccountant, RdpAccountant, GdpAccountant)
}


def make_accountant(name: str, *, field: str = "accountant") -> Accountant:
    """A fresh accountant by name (``"pld"``, ``"rdp"`` or ``"gdp"``) with default settings."""
    cls = ACCOUNTANTS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PrivacyConfigError(field, f"must be one of {sorted(ACCOUNTANTS)}, got {name!r}")
    return cls()
