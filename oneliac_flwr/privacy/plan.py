r"""The start-up privacy plan: what a budget buys, printed before round 1.

:func:`budget_plan` is pure: from the budget, the unit of privacy and the
federation's size it derives the noise multiplier, the rounds it affords and
how large the noise is on what the model learns from, and says plainly when
the noise drowns the signal and what would make the run workable.

The "drowned" threshold
-----------------------
The quantity compared is the standard deviation of the noise on the averaged
update, per coordinate, divided by the clipping norm ``C``
(:attr:`BudgetPlan.relative_noise`). The averaged clipped update has norm at
most ``C``; the noise's component along that update's own direction has the
per-coordinate standard deviation. Above :data:`DROWNED_THRESHOLD` = 1 the noise
along the update's own direction is larger than the largest signal the update
can carry, in every round: no useful descent is expected. It is a necessary
condition, not a sufficient one (the noise in the other ``d - 1`` directions
still slows training; DP-SGD practice runs at ratios of 0.01-0.1).

What each mode's ratio is
-------------------------
- ``organization`` (DP-FedAvg, central or distributed noise): noise std ``z C``
  on the sum of ``n`` updates, so ``z / n`` on the mean.
- ``release``: every organization releases its own update with noise
  ``z C`` (Gaussian) or Laplace scale ``C / eps_round`` (std ``sqrt(2)`` times
  that); the mean of ``n`` independent noises has ``1 / sqrt(n)`` of it.
- ``sample`` (DP-SGD): per step, noise ``z C`` on a batch sum of expected size
  ``B``, so ``z / B`` on the batch mean, and ``z / (B sqrt(n))`` after
  averaging the organizations' (independently noised) models; ``z`` is
  calibrated on ``rounds * steps_per_round`` Poisson-sampled steps with the PLD
  accountant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    require_positive,
    require_positive_int,
    require_probability,
    require_sample_rate,
)
from oneliac_flwr.privacy.calibration import calibrate_noise_multiplier, rounds_affordable, rounds_epsilon

__all__ = ["DROWNED_THRESHOLD", "MODES", "BudgetPlan", "budget_plan"]

DROWNED_THRESHOLD = 1.0
"""Largest noise std on the mean, per coordinate, relative to ``C``, that is not "drowned"."""

MODES = ("organization", "release", "sample")

_EPSILON_CAP = 1e4  # largest epsilon the advice searches


@dataclass(frozen=True)
class BudgetPlan:
    """What a privacy budget buys (see :func:`budget_plan`).

    Attributes
    ----------
    mode, mechanism : str
        As passed.
    epsilon, delta : float
        The budget.
    rounds : int
        Rounds asked for.
    num_organizations : int
        ``n``.
    clip_norm : float
        ``C``.
    noise_multiplier : float
        ``z`` used: given, or calibrated so ``rounds`` rounds spend the budget.
        For Laplace, the scale per unit of L1 sensitivity (``1 / eps_round``).
    rounds_afforded : int
        Rounds the budget pays for at ``z`` (``>= rounds`` when calibrated).
    noise_std : float
        Noise std on the averaged update, per coordinate (same unit as ``C``).
    relative_noise : float
        ``noise_std / C``.
    drowned : bool
        ``relative_noise > DROWNED_THRESHOLD``.
    advice : str
        One paragraph for the operator: the ratio and, when drowned, the
        organizations, epsilon or rounds at which the ratio is at the threshold.
    refusal : str or None
        Why the run must not start (a fixed ``z`` that affords no round), else None.
    """

    mode: str
    mechanism: str
    epsilon: float
    delta: float
    rounds: int
    num_organizations: int
    clip_norm: float
    noise_multiplier: float
    rounds_afforded: int
    noise_std: float
    relative_noise: float
    drowned: bool
    advice: str
    refusal: str | None


def _ratio_divisor(mode: str, n: int, batch_size: int | None) -> float:
    """``relative_noise = z * scale / divisor`` for each mode (``scale`` is 1, or sqrt 2 for Laplace)."""
    if mode == "organization":
        return float(n)
    if mode == "release":
        return math.sqrt(n)
    return float(batch_size) * math.sqrt(n)  # type: ignore[arg-type]


def _round_up(value: float, digits: int = 3) -> float:
    """``value`` rounded up to ``digits`` significant digits (advice must suffice as printed)."""
    if value <= 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / step * (1 - 1e-12)) * step


def _epsilon_for(z: float, *, steps: int, delta: float, sample_rate: float | None) -> float:
    return rounds_epsilon(noise_multiplier=z, rounds=steps, delta=delta, sample_rate=sample_rate)


def budget_plan(
    *,
    epsilon: float,
    delta: float,
    mode: str,
    rounds: int,
    num_organizations: int,
    clip_norm: float,
    noise_multiplier: float | None = None,
    mechanism: str = "gaussian",
    sample_rate: float | None = None,
    batch_size: int | None = None,
    steps_per_round: int = 1,
) -> BudgetPlan:
    """Noise, rounds and a verdict for a budget, before any round runs.

    Parameters
    ----------
    epsilon, delta : float
        The budget (epsilon > 0, delta in (0, 1)).
    mode : {"organization", "release", "sample"}
        Unit of privacy.
    rounds : int
        Rounds planned (>= 1).
    num_organizations : int
        Organizations whose updates are averaged each round (>= 1).
    clip_norm : float
        ``C`` (> 0).
    noise_multiplier : float or None
        Fixed ``z``; None calibrates it so ``rounds`` rounds spend the budget.
    mechanism : {"gaussian", "laplace"}
        Laplace only in ``release`` mode (epsilon split evenly over rounds).
    sample_rate : float or None
        ``sample`` mode only: Poisson rate ``q`` of DP-SGD (required there).
    batch_size : int or None
        ``sample`` mode only: expected batch size ``B`` (required there).
    steps_per_round : int
        ``sample`` mode: DP-SGD steps per round.

    Returns
    -------
    BudgetPlan

    Raises
    ------
    PrivacyConfigError
        Naming the argument that is missing or out of range.
    """
    epsilon = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)
    rounds = require_positive_int("rounds", rounds)
    n = require_positive_int("num_organizations", num_organizations)
    clip = require_positive("clip_norm", clip_norm)
    if mode not in MODES:
        raise PrivacyConfigError("mode", f"must be one of {list(MODES)}, got {mode!r}")
    if mechanism not in ("gaussian", "laplace"):
        raise PrivacyConfigError("mechanism", f"must be 'gaussian' or 'laplace', got {mechanism!r}")
    if mechanism == "laplace" and mode != "release":
        raise PrivacyConfigError("mechanism", f"'laplace' is only valid in 'release' mode, not {mode!r}")
    steps = require_positive_int("steps_per_round", steps_per_round)
    rate: float | None = None
    if mode == "sample":
        if sample_rate is None or batch_size is None:
            raise PrivacyConfigError("sample_rate", "and batch_size are required in 'sample' mode")
        rate = require_sample_rate("sample_rate", sample_rate)
        batch_size = require_positive_int("batch_size", batch_size)
    else:
        steps = 1
    divisor = _ratio_divisor(mode, n, batch_size)

    if mechanism == "laplace":
        scale = math.sqrt(2.0)  # Laplace std / scale
        if noise_multiplier is None:
            z = rounds / epsilon
            afforded = rounds
        else:
            z = require_positive("noise_multiplier", noise_multiplier)
            afforded = math.floor(epsilon * z * (1 + 1e-12))
    else:
        scale = 1.0
        if noise_multiplier is None:
            z = calibrate_noise_multiplier(
                epsilon=epsilon, delta=delta, rounds=rounds * steps, sample_rate=rate
            )
            afforded = rounds
        else:
            z = require_positive("noise_multiplier", noise_multiplier)
            afforded = rounds_affordable(
                epsilon=epsilon, delta=delta, noise_multiplier=z, sample_rate=rate, max_rounds=rounds * steps
            ) // steps
    relative = z * scale / divisor
    drowned = relative > DROWNED_THRESHOLD

    refusal = None
    if afforded == 0:
        refusal = (
            f"privacy_budget.noise_multiplier: z={z:.4g} affords no round at epsilon={epsilon:g}, "
            f"delta={delta:g}; raise epsilon or z, or leave noise_multiplier unset to calibrate it"
        )

    advice = _advice(
        mode=mode,
        mechanism=mechanism,
        epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        n=n,
        z=z,
        scale=scale,
        relative=relative,
        afforded=afforded,
        steps=steps,
        rate=rate,
        batch_size=batch_size,
        fixed=noise_multiplier is not None,
    )
    return BudgetPlan(
        mode=mode,
        mechanism=mechanism,
        epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        num_organizations=n,
        clip_norm=clip,
        noise_multiplier=z,
        rounds_afforded=afforded,
        noise_std=relative * clip,
        relative_noise=relative,
        drowned=drowned,
        advice=advice,
        refusal=refusal,
    )


def _advice(
    *,
    mode: str,
    mechanism: str,
    epsilon: float,
    delta: float,
    rounds: int,
    n: int,
    z: float,
    scale: float,
    relative: float,
    afforded: int,
    steps: int,
    rate: float | None,
    batch_size: int | None,
    fixed: bool,
) -> str:
    head = (
        f"noise std on the averaged update is {relative:.3g} x the clip norm "
        f"(z={z:.4g}, {n} organizations, {mode} mode, epsilon={epsilon:g}, delta={delta:g}, "
        f"{afforded} round(s) afforded of {rounds})"
    )
    if afforded == 0:
        head = f"{head}; the budget affords no round at this z"
    if relative <= DROWNED_THRESHOLD:
        return f"{head}: workable (threshold {DROWNED_THRESHOLD:g} x)."
    # z at which the ratio is exactly the threshold.
    z_ok = DROWNED_THRESHOLD * _ratio_divisor(mode, n, batch_size) / scale
    options = []
    # 1. More organizations (same z).
    if mode == "organization":
        options.append(f">= {math.ceil(z * scale / DROWNED_THRESHOLD)} organizations")
    elif mode == "release":
        options.append(f">= {math.ceil((z * scale / DROWNED_THRESHOLD) ** 2)} organizations")
    else:
        options.append(f"an expected batch size >= {math.ceil(z / (DROWNED_THRESHOLD * math.sqrt(n)))}")
    # 2. More epsilon for the same rounds; 3. fewer rounds for the same epsilon.
    if mechanism == "laplace":
        options.append(f"z <= {z_ok:.4g}, i.e. epsilon >= {_round_up(rounds / z_ok):.4g} for {rounds} rounds")
        fewer = math.floor(epsilon * z_ok)
    else:
        needed = _epsilon_for(z_ok, steps=rounds * steps, delta=delta, sample_rate=rate)
        options.append(f"z <= {z_ok:.4g}, i.e. epsilon >= {_round_up(needed):.4g} for {rounds} rounds")
        fewer = (
            rounds_affordable(
                epsilon=epsilon,
                delta=delta,
                noise_multiplier=z_ok,
                sample_rate=rate,
                max_rounds=rounds * steps,
            )
            // steps
        )
    if fewer >= 1 and not fixed:
        options.append(f"at most {fewer} round(s) at epsilon={epsilon:g}")
    workable = ", or ".join(options)
    return f"{head}: DROWNED (threshold {DROWNED_THRESHOLD:g} x). Workable with {workable}."
