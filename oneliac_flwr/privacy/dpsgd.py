"""Sample-level DP (a patient record): DP-SGD with Opacus, accounted across rounds.

Flower's Opacus example creates a new ``PrivacyEngine`` every round, so its
epsilon covers one round only. Here the accountant's history, a list of
``(noise_multiplier, sample_rate, steps)``, is kept between rounds
(:func:`accountant_state`) and restored into the next round's engine
(:func:`make_private` with ``history=...``), so epsilon accumulates over the
whole run. The history is what Opacus' ``RDPAccountant`` stores, so the
epsilon is exactly Opacus' own.

torch and opacus are imported inside the functions that need them: importing
this module does not import them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from oneliac_flwr.errors import PrivacyError
from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    require_positive,
    require_positive_int,
    require_probability,
    require_sample_rate,
)
from oneliac_flwr.privacy.accountant import PldAccountant
from oneliac_flwr.privacy.events import DpSgdSteps

__all__ = [
    "HistoryEntry",
    "PrivateTraining",
    "accountant_state",
    "calibrate_dpsgd_noise",
    "flatten_history",
    "history_events",
    "make_private",
    "restore_accountant",
    "sample_level_epsilon",
    "unflatten_history",
    "would_exceed_budget",
]

HistoryEntry: TypeAlias = tuple[float, float, int]
"""One Opacus accountant record: ``(noise_multiplier, sample_rate, steps)``."""

_MECHANISM = "rdp"


@dataclass(frozen=True)
class PrivateTraining:
    """What :func:`make_private` returns: use these objects, not the originals."""

    engine: Any
    module: Any
    optimizer: Any
    data_loader: Any


def _normalise(history: Iterable[Sequence[float]], *, field: str = "history") -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    for index, item in enumerate(history):
        if len(item) != 3:
            raise PrivacyConfigError(
                f"{field}[{index}]", f"must be (noise_multiplier, sample_rate, steps), got {item!r}"
            )
        z, q, steps = item
        steps_value: Any = steps
        if isinstance(steps, float) and steps.is_integer():
            steps_value = int(steps)
        event = DpSgdSteps(z, q, steps_value)  # validates every field
        entries.append((event.noise_multiplier, event.sample_rate, event.steps))
    return entries


def history_events(history: Iterable[Sequence[float]]) -> list[DpSgdSteps]:
    """The history as ledger events (:class:`~oneliac_flwr.privacy.events.DpSgdSteps`)."""
    return [DpSgdSteps(z, q, steps) for z, q, steps in _normalise(history)]


def flatten_history(history: Iterable[Sequence[float]]) -> list[float]:
    """History as a flat list of floats (fits a Flower ``ConfigRecord``/``MetricRecord``)."""
    return [float(value) for entry in _normalise(history) for value in entry]


def unflatten_history(values: Sequence[float]) -> list[HistoryEntry]:
    """Inverse of :func:`flatten_history`."""
    if len(values) % 3:
        raise PrivacyConfigError("history", f"flat history length must be a multiple of 3, got {len(values)}")
    return _normalise([tuple(values[i : i + 3]) for i in range(0, len(values), 3)])


def accountant_state(engine: Any) -> list[HistoryEntry]:
    """Copy of the engine's RDP accountant history, to keep until the next round.

    Raises
    ------
    PrivacyError
        If the engine does not use Opacus' RDP accountant.
    """
    accountant = getattr(engine, "accountant", None)
    if accountant is None or accountant.mechanism() != _MECHANISM:
        raise PrivacyError("engine: must use Opacus' 'rdp' accountant (PrivacyEngine(accountant='rdp'))")
    return _normalise(accountant.history)


def restore_accountant(engine: Any, history: Iterable[Sequence[float]]) -> None:
    """Load a saved history into a fresh engine's RDP accountant (replaces its history)."""
    entries = _normalise(history)
    accountant = getattr(engine, "accountant", None)
    if accountant is None or accountant.mechanism() != _MECHANISM:
        raise PrivacyError("engine: must use Opacus' 'rdp' accountant (PrivacyEngine(accountant='rdp'))")
    if entries:
        accountant.load_state_dict({"history": list(entries), "mechanism": _MECHANISM})
    else:
        accountant.history = []


def make_private(
    *,
    module: Any,
    optimizer: Any,
    data_loader: Any,
    noise_multiplier: float,
    max_grad_norm: float,
    history: Iterable[Sequence[float]] | None = None,
    noise_generator: Any = None,
    secure_mode: bool = False,
) -> PrivateTraining:
    """Wrap model, optimizer and data loader with Opacus (Poisson sampling, flat clipping).

    Parameters
    ----------
    module, optimizer, data_loader
        torch model, its optimizer, and the training ``DataLoader``.
    noise_multiplier : float
        Noise std divided by ``max_grad_norm`` (> 0).
    max_grad_norm : float
        Per-sample gradient clipping norm (> 0).
    history : iterable of (noise_multiplier, sample_rate, steps) or None
        Accountant history of earlier rounds (:func:`accountant_state`).
    noise_generator : torch.Generator or None
        Noise source for Opacus; None lets Opacus draw its own.
    secure_mode : bool
        Opacus' secure mode (needs ``torchcsprng``).

    Returns
    -------
    PrivateTraining
        The engine and the wrapped module, optimizer and Poisson data loader.
    """
    from opacus import PrivacyEngine

    z = require_positive("noise_multiplier", noise_multiplier)
    clip = require_positive("max_grad_norm", max_grad_norm)
    engine = PrivacyEngine(accountant=_MECHANISM, secure_mode=secure_mode)
    if history is not None:
        restore_accountant(engine, history)
    private_module, private_optimizer, private_loader = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=data_loader,
        noise_multiplier=z,
        max_grad_norm=clip,
        poisson_sampling=True,
        clipping="flat",
        noise_generator=noise_generator,
    )
    return PrivateTraining(engine, private_module, private_optimizer, private_loader)


def sample_level_epsilon(
    history: Iterable[Sequence[float]], delta: float, *, accountant: str = "rdp"
) -> float:
    """Sample-level epsilon of a DP-SGD history.

    Parameters
    ----------
    history : iterable of (noise_multiplier, sample_rate, steps)
        Accountant history (all rounds).
    delta : float
        Target delta, in (0, 1).
    accountant : {"rdp", "pld"}
        ``"rdp"`` (default) is Opacus' own ``RDPAccountant``; ``"pld"`` is the
        tighter :class:`~oneliac_flwr.privacy.accountant.PldAccountant`.

    Returns
    -------
    float
        Epsilon (0 for an empty history).
    """
    entries = _normalise(history)
    delta = require_probability("delta", delta)
    if not entries:
        return 0.0
    if accountant == "rdp":
        from opacus.accountants import RDPAccountant

        opacus_accountant = RDPAccountant()
        opacus_accountant.history = list(entries)
        return float(opacus_accountant.get_epsilon(delta))
    if accountant == "pld":
        pld = PldAccountant()
        for event in history_events(entries):
            pld.compose(event)
        return pld.get_epsilon(delta)
    raise PrivacyConfigError("accountant", f"must be 'rdp' or 'pld', got {accountant!r}")


def would_exceed_budget(
    history: Iterable[Sequence[float]],
    next_steps: DpSgdSteps | Iterable[Sequence[float]],
    epsilon_budget: float,
    delta: float,
    *,
    accountant: str = "rdp",
) -> bool:
    """True if training ``next_steps`` more would take epsilon above ``epsilon_budget``.

    Parameters
    ----------
    history : iterable of (noise_multiplier, sample_rate, steps)
        What was spent so far.
    next_steps : DpSgdSteps or iterable of (noise_multiplier, sample_rate, steps)
        The planned training, e.g. ``DpSgdSteps(z, q, epochs * ceil(1 / q))``.
    epsilon_budget : float
        Sample-level budget (> 0).
    delta : float
        Target delta, in (0, 1).
    accountant : {"rdp", "pld"}
        As in :func:`sample_level_epsilon`.
    """
    budget = require_positive("epsilon_budget", epsilon_budget)
    planned = (
        [(next_steps.noise_multiplier, next_steps.sample_rate, next_steps.steps)]
        if isinstance(next_steps, DpSgdSteps)
        else _normalise(next_steps, field="next_steps")
    )
    combined = _normalise(history) + planned
    return sample_level_epsilon(combined, delta, accountant=accountant) > budget


def calibrate_dpsgd_noise(
    *, epsilon: float, delta: float, sample_rate: float, steps: int, epsilon_tolerance: float = 0.01
) -> float:
    """Noise multiplier for ``steps`` DP-SGD steps to spend at most ``epsilon`` (Opacus RDP).

    Uses ``opacus.accountants.utils.get_noise_multiplier``; the result spends
    between ``epsilon - epsilon_tolerance`` and ``epsilon``.

    Raises
    ------
    PrivacyError
        If no noise multiplier below Opacus' limit reaches the budget.
    """
    from opacus.accountants.utils import get_noise_multiplier

    target = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)
    rate = require_sample_rate("sample_rate", sample_rate)
    count = require_positive_int("steps", steps)
    tolerance = require_positive("epsilon_tolerance", epsilon_tolerance)
    try:
        z = get_noise_multiplier(
            target_epsilon=target,
            target_delta=delta,
            sample_rate=rate,
            steps=count,
            accountant=_MECHANISM,
            epsilon_tolerance=tolerance,
        )
    except ValueError as exc:
        raise PrivacyError(f"epsilon: cannot reach epsilon={target} with {count} steps ({exc})") from exc
    if not math.isfinite(z) or z <= 0:  # pragma: no cover - defensive
        raise PrivacyError(f"epsilon: Opacus returned an invalid noise multiplier {z!r}")
    return float(z)
