"""Exact (epsilon, delta) curve of the Gaussian mechanism (mu-GDP).

A Gaussian mechanism with L2 sensitivity ``D`` and noise standard deviation
``s`` is mu-GDP with ``mu = D / s`` (Dong, Roth and Su, 2019). ``T`` adaptive
Gaussian releases with noise multiplier ``z`` (``s = z * D``) compose exactly to
``mu = sqrt(T) / z``. The privacy profile is exact (Balle and Wang, 2018,
Theorem 8)::

    delta(eps) = Phi(-eps/mu + mu/2) - exp(eps) * Phi(-eps/mu - mu/2)

The inverses are found by bisection. Each returns the end of the final
bracket that satisfies the privacy condition, so results are never optimistic
(up to floating-point rounding of ``Phi``): ``gdp_epsilon`` is rounded up and
``gdp_mu`` is rounded down.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy.special import log_ndtr

from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    require_non_negative,
    require_positive,
    require_positive_int,
    require_probability,
)

__all__ = [
    "gaussian_delta",
    "gaussian_full_participation_epsilon",
    "gdp_epsilon",
    "gdp_mu",
]

_RELATIVE_TOLERANCE = 1e-13
_MAX_ITERATIONS = 400


def gaussian_delta(*, mu: float, epsilon: float) -> float:
    """Smallest delta for which a mu-GDP mechanism is (epsilon, delta)-DP.

    Parameters
    ----------
    mu : float
        GDP parameter, ``sensitivity / noise_std`` (>= 0).
    epsilon : float
        Target epsilon (>= 0).

    Returns
    -------
    float
        ``Phi(-eps/mu + mu/2) - exp(eps) * Phi(-eps/mu - mu/2)``, computed in
        log space.
    """
    mu = require_non_negative("mu", mu)
    epsilon = require_non_negative("epsilon", epsilon)
    if mu == 0:
        return 0.0
    log_first = float(log_ndtr(-epsilon / mu + mu / 2))
    log_second = epsilon + float(log_ndtr(-epsilon / mu - mu / 2))
    if log_second >= log_first:
        return 0.0
    return math.exp(log_first) * -math.expm1(log_second - log_first)


def _bisect(predicate: Callable[[float], bool], low: float, high: float) -> tuple[float, float]:
    """Shrink ``[low, high]`` where ``predicate(low)`` is False and ``predicate(high)`` True."""
    for _ in range(_MAX_ITERATIONS):
        if high - low <= _RELATIVE_TOLERANCE * max(high, 1e-300):
            break
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if predicate(middle):
            high = middle
        else:
            low = middle
    return low, high


def gdp_epsilon(*, mu: float, delta: float) -> float:
    """Epsilon of a mu-GDP mechanism at ``delta`` (exact, rounded up).

    Parameters
    ----------
    mu : float
        GDP parameter (>= 0). For ``T`` full-participation Gaussian releases
        with noise multiplier ``z``, ``mu = sqrt(T) / z``.
    delta : float
        Target delta, in (0, 1).

    Returns
    -------
    float
        The smallest epsilon >= 0 with ``gaussian_delta(mu, epsilon) <= delta``
        (within a relative 1e-13, never below it).
    """
    mu = require_non_negative("mu", mu)
    delta = require_probability("delta", delta)
    if mu == 0 or gaussian_delta(mu=mu, epsilon=0.0) <= delta:
        return 0.0

    def satisfied(eps: float) -> bool:
        return gaussian_delta(mu=mu, epsilon=eps) <= delta

    low, high = 0.0, 1.0
    while not satisfied(high):
        low, high = high, 2.0 * high
        if math.isinf(high):
            return math.inf
    return _bisect(satisfied, low, high)[1]


def gdp_mu(*, epsilon: float, delta: float) -> float:
    """Largest mu for which a mu-GDP mechanism is (epsilon, delta)-DP (rounded down).

    Parameters
    ----------
    epsilon : float
        Target epsilon (> 0).
    delta : float
        Target delta, in (0, 1).

    Returns
    -------
    float
        ``mu`` with ``gaussian_delta(mu, epsilon) <= delta``, within a relative
        1e-13 of the largest such value.
    """
    epsilon = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)

    def violated(mu: float) -> bool:
        return gaussian_delta(mu=mu, epsilon=epsilon) > delta

    low, high = 0.0, 1.0
    while not violated(high):
        low, high = high, 2.0 * high
        if math.isinf(high):  # pragma: no cover - needs delta -> 1
            raise PrivacyConfigError("delta", f"too large to bound mu, got {delta!r}")
    return _bisect(violated, low, high)[0]


def gaussian_full_participation_epsilon(*, noise_multiplier: float, rounds: int, delta: float) -> float:
    """Exact epsilon after ``rounds`` full-participation Gaussian releases.

    Parameters
    ----------
    noise_multiplier : float
        ``z``: noise standard deviation divided by the L2 sensitivity (> 0).
    rounds : int
        Number of releases ``T`` (>= 0).
    delta : float
        Target delta, in (0, 1).

    Returns
    -------
    float
        ``gdp_epsilon(mu=sqrt(T)/z, delta=delta)``.
    """
    noise_multiplier = require_positive("noise_multiplier", noise_multiplier)
    rounds = require_positive_int("rounds", rounds, minimum=0)
    return gdp_epsilon(mu=math.sqrt(rounds) / noise_multiplier, delta=delta)
