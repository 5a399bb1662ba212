"""Sample-level DP (a patient record): DP-SGD with Opacus, accounted across rounds.

Flower's Opacus example creates a new ``PrivacyEngine`` every round, so its
epsilon covers one round only. Here the accountant's history, a list of
``(noise_multiplier, sample_rate, steps)``, is kept between rounds
(:func:`accountant_state`) and restored into the next round's engine
(:func:`make_private` with ``history=...``), so epsilon accumulates over the
whole run.

Accounting. The engine's Opacus ``RDPAccountant`` is used only as the
*recorder* of that history; the epsilon Opacus reports
(``engine.get_epsilon``) is never used for a budget decision. Budget checks
and calibration use our privacy-loss-distribution accountant
(:class:`~oneliac_flwr.privacy.accountant.PldAccountant`: each history entry is
``SelfComposed(PoissonSampled(q, Gaussian(z)), steps)``), which is tight at
small epsilon where RDP is loose: at ``q = 32/120`` and 40 steps, RDP cannot
certify epsilon = 0.1 at delta = 1e-5 with any noise multiplier Opacus will
search, PLD does with ``z ~ 52``. RDP is kept as a cross-check
(``accountant="rdp"``).

Randomness. :func:`make_private` draws both the Poisson batch sampling and the
gradient noise from torch generators seeded from OS entropy
(:func:`os_seeded_torch_generator`) unless the caller passes its own, so a
fixed ``torch.manual_seed`` (a seed in a config is public) does not fix them.

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
from oneliac_flwr.privacy.entropy import os_torch_generator
from oneliac_flwr.privacy.calibration import calibrate_noise_multiplier
from oneliac_flwr.privacy.events import DpSgdSteps

__all__ = [
    "HistoryEntry",
    "PrivateTraining",
    "accountant_state",
    "calibrate_dpsgd_noise",
    "flatten_history",
    "history_events",
    "make_private",
    "os_seeded_torch_generator",
    "restore_accountant",
    "sample_level_epsilon",
    "unflatten_history",
    "would_exceed_budget",
]

HistoryEntry: TypeAlias = tuple[float, float, int]
"""One Opacus accountant record: ``(noise_multiplier, sample_rate, steps)``."""

_MECHANISM = "rdp"
"""Opacus accountant that records the history (its epsilon is not used)."""

BUDGET_ACCOUNTANT = "pld"
"""Accountant of every budget decision and calibration here; ``"rdp"`` is the cross-check."""

_ACCOUNTANTS = ("pld", "rdp")


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


os_seeded_torch_generator = os_torch_generator
"""A CPU ``torch.Generator`` seeded from OS entropy (:func:`~oneliac_flwr.privacy.entropy.os_torch_generator`)."""


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
    sampler_generator: Any = None,
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
        Source of the gradient noise. None (default): a fresh
        :func:`os_seeded_torch_generator`, never torch's global generator.
    secure_mode : bool
        Opacus' secure mode (needs ``torchcsprng``): Opacus then draws both
        the noise and the sampling from ``/dev/urandom``; passing a generator
        with it is refused.
    sampler_generator : torch.Generator or None
        Source of the Poisson batch sampling (Opacus' ``DPDataLoader``).
        None (default): a fresh :func:`os_seeded_torch_generator`.

    Returns
    -------
    PrivateTraining
        The engine and the wrapped module, optimizer and Poisson data loader.

    Notes
    -----
    ``engine.get_epsilon`` is Opacus' RDP figure; do not budget with it: use
    :func:`sample_level_epsilon` / :func:`would_exceed_budget` on
    :func:`accountant_state`.
    """
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    z = require_positive("noise_multiplier", noise_multiplier)
    clip = require_positive("max_grad_norm", max_grad_norm)
    if secure_mode and (noise_generator is not None or sampler_generator is not None):
        raise PrivacyConfigError(
            "secure_mode", "draws noise and sampling from /dev/urandom; do not pass generators with it"
        )
    engine = PrivacyEngine(accountant=_MECHANISM, secure_mode=secure_mode)
    if history is not None:
        restore_accountant(engine, history)
    if secure_mode:
        loader, opacus_samples = data_loader, True
    else:
        noise_generator = os_seeded_torch_generator() if noise_generator is None else noise_generator
        sampler = os_seeded_torch_generator() if sampler_generator is None else sampler_generator
        # Same sample rate (1 / len(data_loader)) as Opacus' own conversion, our generator.
        loader, opacus_samples = DPDataLoader.from_data_loader(data_loader, generator=sampler), False
    private_module, private_optimizer, private_loader = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=z,
        max_grad_norm=clip,
        poisson_sampling=opacus_samples,
        clipping="flat",
        noise_generator=noise_generator,
    )
    if not opacus_samples:
        private_module.forbid_grad_accumulation()  # what Opacus does for its own Poisson loader
    return PrivateTraining(engine, private_module, private_optimizer, private_loader)


def _require_accountant(accountant: str) -> str:
    if accountant not in _ACCOUNTANTS:
        raise PrivacyConfigError("accountant", f"must be 'pld' or 'rdp', got {accountant!r}")
    return accountant


def sample_level_epsilon(
    history: Iterable[Sequence[float]], delta: float, *, accountant: str = BUDGET_ACCOUNTANT
) -> float:
    """Sample-level epsilon of a DP-SGD history.

    Parameters
    ----------
    history : iterable of (noise_multiplier, sample_rate, steps)
        Accountant history (all rounds).
    delta : float
        Target delta, in (0, 1).
    accountant : {"pld", "rdp"}
        ``"pld"`` (default, the budget accountant):
        :class:`~oneliac_flwr.privacy.accountant.PldAccountant`, tight at
        small epsilon. ``"rdp"``: Opacus' own ``RDPAccountant``, the
        cross-check (an upper bound, looser).

    Returns
    -------
    float
        Epsilon (0 for an empty history).
    """
    entries = _normalise(history)
    delta = require_probability("delta", delta)
    accountant = _require_accountant(accountant)
    if not entries:
        return 0.0
    if accountant == "rdp":
        from opacus.accountants import RDPAccountant

        opacus_accountant = RDPAccountant()
        opacus_accountant.history = list(entries)
        return float(opacus_accountant.get_epsilon(delta))
    pld = PldAccountant()
    for event in history_events(entries):
        pld.compose(event)
    return pld.get_epsilon(delta)


def would_exceed_budget(
    history: Iterable[Sequence[float]],
    next_steps: DpSgdSteps | Iterable[Sequence[float]],
    epsilon_budget: float,
    delta: float,
    *,
    accountant: str = BUDGET_ACCOUNTANT,
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
    accountant : {"pld", "rdp"}
        As in :func:`sample_level_epsilon` (default ``"pld"``).
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
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    epsilon_tolerance: float = 0.01,
    accountant: str = BUDGET_ACCOUNTANT,
) -> float:
    """Noise multiplier for ``steps`` DP-SGD steps to spend at most ``epsilon``.

    Parameters
    ----------
    epsilon : float
        Sample-level budget of the whole training (> 0).
    delta : float
        Target delta, in (0, 1).
    sample_rate : float
        Poisson sampling rate ``q`` (batch size / dataset size), in (0, 1].
    steps : int
        Total optimizer steps ``T`` over all rounds (>= 1).
    epsilon_tolerance : float
        Only for ``accountant="rdp"``: Opacus' search tolerance (absolute).
    accountant : {"pld", "rdp"}
        ``"pld"`` (default): :func:`~oneliac_flwr.privacy.calibration.calibrate_noise_multiplier`
        on ``SelfComposed(PoissonSampled(q, Gaussian(z)), T)``; the result
        spends, by :func:`sample_level_epsilon`, at most ``epsilon`` and at
        least 99% of it (e.g. ``epsilon=0.1, q=32/120, T=40`` gives
        ``z ~ 52.04``). ``"rdp"``: Opacus' ``get_noise_multiplier`` (cannot
        reach small epsilon).

    Returns
    -------
    float
        ``z``.

    Raises
    ------
    PrivacyError
        If no noise multiplier reaches the budget.
    """
    target = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)
    rate = require_sample_rate("sample_rate", sample_rate)
    count = require_positive_int("steps", steps)
    tolerance = require_positive("epsilon_tolerance", epsilon_tolerance)
    if _require_accountant(accountant) == "pld":
        z = calibrate_noise_multiplier(epsilon=target, delta=delta, rounds=count, sample_rate=rate)
        spent = sample_level_epsilon([(z, rate, count)], delta)
        if spent > target:  # pragma: no cover - the calibration checks with the same accountant
            raise PrivacyError(f"epsilon: calibrated z={z} spends {spent} > {target}")
        return z

    from opacus.accountants.utils import get_noise_multiplier

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
