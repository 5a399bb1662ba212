"""Choose a noise multiplier for a budget, or the rounds a noise multiplier affords.

Results are checked with the accountant the ledger uses as primary
(:class:`~oneliac_flwr.privacy.accountant.PldAccountant`, default settings),
so a run calibrated here is never stopped early by its own ledger: after
``rounds`` releases the ledger's epsilon is <= the target, and within 1% of it.

Full participation starts from the exact mu-GDP answer. With Poisson sampling
the search runs on a coarser PLD grid (fast) and the answer is then checked,
and nudged if needed, with the ledger's own accountant.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy import optimize

from oneliac_flwr.errors import PrivacyError
from oneliac_flwr.privacy._validation import (
    require_positive,
    require_positive_int,
    require_probability,
    require_sample_rate,
)
from oneliac_flwr.privacy.accountant import PldAccountant
from oneliac_flwr.privacy.events import GaussianRelease, PoissonSampling
from oneliac_flwr.privacy.gdp import gdp_mu

__all__ = ["calibrate_noise_multiplier", "rounds_affordable", "rounds_epsilon"]

# Aim this far below the target so that float-level differences between
# equivalent event sequences can never push the ledger over the budget.
_SAFETY = 1e-7
_SEARCH_PRECISION = 2e-3  # relative PLD precision while searching
_SEARCH_TOLERANCE = 1e-5  # relative tolerance on z while searching
_LEDGER_PRECISION = PldAccountant().settings()["relative_precision"]


def _sampling(sample_rate: float | None) -> PoissonSampling | None:
    if sample_rate is None:
        return None
    rate = require_sample_rate("sample_rate", sample_rate)
    return None if rate == 1.0 else PoissonSampling(rate)


def _epsilon(
    noise_multiplier: float, rounds: int, delta: float, sampling: PoissonSampling | None, precision: float
) -> float:
    if rounds == 0:
        return 0.0
    accountant = PldAccountant(relative_precision=precision)
    accountant.compose(GaussianRelease(noise_multiplier, rounds, sampling))
    return accountant.get_epsilon(delta)


def rounds_epsilon(
    *, noise_multiplier: float, rounds: int, delta: float, sample_rate: float | None = None
) -> float:
    """Ledger (PLD) epsilon of ``rounds`` Gaussian releases.

    Parameters
    ----------
    noise_multiplier : float
        ``z`` (> 0).
    rounds : int
        Number of releases (>= 0).
    delta : float
        Target delta, in (0, 1).
    sample_rate : float or None
        Poisson sampling probability of each unit, or None for full participation.

    Returns
    -------
    float
        Epsilon, as the ledger would report it.
    """
    z = require_positive("noise_multiplier", noise_multiplier)
    rounds = require_positive_int("rounds", rounds, minimum=0)
    delta = require_probability("delta", delta)
    return _epsilon(z, rounds, delta, _sampling(sample_rate), _LEDGER_PRECISION)


def _nudge_up(overspends: Callable[[float], bool], value: float) -> float:
    """Smallest tried ``value * (1 + 1e-6 * 4**k)`` that does not overspend."""
    step = 1e-6 * value
    candidate = value
    for _ in range(40):
        if not overspends(candidate):
            return candidate
        candidate = value + step
        step *= 4.0
    raise PrivacyError("epsilon: could not find a noise multiplier within the budget")  # pragma: no cover


def calibrate_noise_multiplier(
    *, epsilon: float, delta: float, rounds: int, sample_rate: float | None = None
) -> float:
    """Noise multiplier ``z`` such that ``rounds`` Gaussian releases spend ``epsilon``.

    Parameters
    ----------
    epsilon : float
        Total epsilon (> 0).
    delta : float
        Delta, in (0, 1).
    rounds : int
        Number of releases ``T`` (>= 1).
    sample_rate : float or None
        Poisson sampling probability; None for full participation (no
        amplification claimed).

    Returns
    -------
    float
        ``z`` with ledger epsilon after ``T`` releases ``<= epsilon`` and
        ``>= 0.99 * epsilon``.

    Notes
    -----
    Full participation: ``z = sqrt(T) / mu(epsilon, delta)`` from the exact
    mu-GDP curve, raised by at most a few parts per million if the
    pessimistic PLD needs it. Poisson sampling: bisection (Brent) between the
    full-participation ``z``, which is enough, and a smaller one that is not.
    """
    epsilon = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)
    rounds = require_positive_int("rounds", rounds)
    sampling = _sampling(sample_rate)
    target = epsilon * (1.0 - _SAFETY)

    def overspends(z: float, with_sampling: PoissonSampling | None) -> bool:
        return _epsilon(z, rounds, delta, with_sampling, _LEDGER_PRECISION) > target

    full = _nudge_up(lambda z: overspends(z, None), math.sqrt(rounds) / gdp_mu(epsilon=target, delta=delta))
    if sampling is None:
        return full

    def coarse_gap(z: float) -> float:
        return _epsilon(z, rounds, delta, sampling, _SEARCH_PRECISION) - target

    high, low = full, full / 2.0
    for _ in range(60):
        if coarse_gap(low) > 0:
            break
        high, low = low, low / 2.0
    else:  # pragma: no cover - would need an absurdly small sample rate
        raise PrivacyError("sample_rate: too small to calibrate a noise multiplier")
    root = float(optimize.brentq(coarse_gap, low, high, xtol=_SEARCH_TOLERANCE * high))
    return min(full, _nudge_up(lambda z: overspends(z, sampling), root))


def rounds_affordable(
    *,
    epsilon: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float | None = None,
    max_rounds: int = 100_000,
) -> int:
    """Largest number of Gaussian releases whose ledger epsilon stays <= ``epsilon``.

    Parameters
    ----------
    epsilon : float
        Budget (> 0).
    delta : float
        Delta, in (0, 1).
    noise_multiplier : float
        ``z`` (> 0).
    sample_rate : float or None
        Poisson sampling probability; None for full participation.
    max_rounds : int
        Search cap (the answer is at most this).

    Returns
    -------
    int
        ``k >= 0`` such that ``k`` releases fit and ``k + 1`` do not (or ``max_rounds``).
    """
    epsilon = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)
    z = require_positive("noise_multiplier", noise_multiplier)
    max_rounds = require_positive_int("max_rounds", max_rounds)
    sampling = _sampling(sample_rate)

    def fits(count: int, precision: float = _LEDGER_PRECISION) -> bool:
        return _epsilon(z, count, delta, sampling, precision) <= epsilon

    if sampling is None:
        guess = min(max_rounds, math.floor((gdp_mu(epsilon=epsilon, delta=delta) * z) ** 2))
    else:
        # Coarse search: exponential then binary.
        low, high = 0, 1
        while high < max_rounds and fits(high, _SEARCH_PRECISION):
            low, high = high, min(max_rounds, 2 * high)
        if fits(high, _SEARCH_PRECISION):
            low = high
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle, _SEARCH_PRECISION):
                low = middle
            else:
                high = middle
        guess = low
    # Settle with the ledger's accountant.
    while guess > 0 and not fits(guess):
        guess -= 1
    while guess < max_rounds and fits(guess + 1):
        guess += 1
    return guess
