r"""Distributed DP: each client noises its own update before secure-sum masking.

The coordinator only ever sees the masked sum, which already carries the noise
of every honest client: it never sees an un-noised sum.

Noise shares
------------
With ``t`` = ``min_contributors`` honest clients each adding Gaussian noise of
std ``z * C / sqrt(t)``, the honest noise in the sum has std ``>= z * C``
(:func:`client_noise_std`). Pick ``t`` as the number of contributors you trust
to add their share: the secure-sum threshold minus the clients that may
collude with the coordinator.

Quantization, and the bound we account for
------------------------------------------
Secure sum works on fixed-point integers with ``f`` fractional bits: the grid
``gamma * Z^d`` with ``gamma = 2**-f``. Let ``Q`` round each coordinate to the
nearest grid point, halves up: ``Q(y) = gamma * floor(y / gamma + 1/2)``. Then
``Q(y + v) = Q(y) + v`` for every grid vector ``v``.

A client's share is ``s_i = Q(x_i) + Q(n_i)`` (:func:`distributed_noise_share`)
where ``x_i`` is its clipped update (``||x_i|| <= C``) and
``n_i ~ N(0, sigma^2 I)``, ``sigma = z C / sqrt(t)``. The sum is exact (no
overflow, enforced by the secure-sum encoding). Rounding the noisy value
``x_i + n_i`` directly would *not* be analysable this way; round the update
first.

*Neighbouring runs* differ in one honest organization's update, replaced by
the zero vector (add/remove at organization level; its client still sends a
noise share). The difference of the sums is then ``v = Q(x_j)``, a grid vector
with ``||v|| <= Delta_q = C + sqrt(d) * gamma / 2``.

*Claim.* For any ``m`` in ``1..t`` the sum is a post-processing of a Gaussian
mechanism with ``mu**2 = (t/m) * Delta_q**2 / (z C)**2 + d * t * m * gamma**2
/ (4 (z C)**2)``, i.e. a Gaussian mechanism with L2 sensitivity

    C' = sqrt((t/m) * Delta_q**2 + d * t * m * gamma**2 / 4)

and noise std ``z * C``; accounted noise multiplier ``z * C / C'``.

*Proof.* Split ``v`` over ``m`` honest clients into grid vectors ``v_1..v_m``
with ``sum v_i = v``: per coordinate, in grid units ``V = m q + r``
(``0 <= r < m``), give ``q + 1`` to ``r`` clients and ``q`` to the others
(:func:`lattice_split`). Then ``sum_i v_i^2 = V^2/m + r(m-r)/m <= V^2/m + m/4``,
so ``sum_i ||v_i||^2 <= ||v||^2 / m + d m gamma^2 / 4``. Because ``Q``
commutes with grid shifts, ``sum_i Q(n_i) + v = sum_i Q(n_i + v_i)``: the sum
on the neighbouring input is the same function ``G`` of the shifted Gaussian
vector ``(n_i + v_i)_i`` as it is of ``(n_i)_i`` on the other input (all other
terms do not depend on these noises). By post-processing, the privacy loss is
at most that of a Gaussian mechanism in dimension ``m d`` with per-coordinate
std ``sigma`` and sensitivity ``sqrt(sum_i ||v_i||^2)``:
``mu^2 <= (||v||^2/m + d m gamma^2/4) * t / (z C)^2``. Any ``m <= t`` works (the
other honest clients' noise is independent post-processing);
:func:`effective_sensitivity` takes the best one. With ``m = t`` this is
``C'^2 = Delta_q^2 + d t^2 gamma^2 / 4``. []

It is conservative and exact in its assumptions: only the honest shares are
counted, neighbouring is organization-level add/remove (replace-one doubles
``Delta_q``), updates are summed with weight 1 (public weights must be folded
into ``C``), and sampling is continuous-Gaussian then rounded (floating-point
attacks on samplers are out of scope). For ``f >= 16`` and models up to ~1e6
parameters the inflation is small (see :func:`effective_sensitivity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    make_rng,
    require_non_negative,
    require_positive,
    require_positive_int,
    require_probability,
)
from oneliac_flwr.privacy.events import ExactRelease, GaussianRelease

__all__ = [
    "central_secure_sum_release",
    "client_noise_std",
    "distributed_noise_share",
    "distributed_release",
    "effective_sensitivity",
    "lattice_split",
    "quantize",
    "quantized_sensitivity",
    "share_bound",
    "share_bound_failure_probability",
    "share_failure_release",
]

_MAX_FRACTIONAL_BITS = 52


def client_noise_std(*, noise_multiplier: float, clip_norm: float, min_contributors: int) -> float:
    """Standard deviation of each client's noise share, ``z * C / sqrt(t)``.

    The sum of ``>= t`` independent honest shares has std ``>= z * C``.

    Parameters
    ----------
    noise_multiplier : float
        ``z`` (> 0).
    clip_norm : float
        ``C``: the L2 sensitivity to cover (> 0). Pass
        :func:`effective_sensitivity` here to make the accounted noise
        multiplier exactly ``z`` despite quantization.
    min_contributors : int
        ``t``: fewest honest clients whose noise ends up in the sum (>= 1).

    Returns
    -------
    float
        Per-client noise std.
    """
    z = require_positive("noise_multiplier", noise_multiplier)
    clip = require_positive("clip_norm", clip_norm)
    t = require_positive_int("min_contributors", min_contributors)
    return z * clip / math.sqrt(t)


def _grid_step(fractional_bits: int) -> float:
    bits = require_positive_int("fractional_bits", fractional_bits, minimum=0)
    if bits > _MAX_FRACTIONAL_BITS:
        raise PrivacyConfigError("fractional_bits", f"must be <= {_MAX_FRACTIONAL_BITS}, got {bits}")
    return math.ldexp(1.0, -bits)


def quantized_sensitivity(*, clip_norm: float, dimension: int, fractional_bits: int) -> float:
    """L2 norm bound of a rounded clipped update: ``Delta_q = C + sqrt(d) * 2**-(f+1)``.

    ``Q`` moves each coordinate by at most ``gamma/2``, so
    ``||Q(x)||^2 <= sum_k (|x_k| + gamma/2)^2 <= (||x|| + sqrt(d) gamma/2)^2``
    (Cauchy-Schwarz on ``||x||_1 <= sqrt(d) ||x||``). This is the sensitivity
    of the exact secure sum of rounded updates under organization-level
    add/remove.

    Parameters
    ----------
    clip_norm : float
        ``C`` (>= 0).
    dimension : int
        ``d`` (>= 1).
    fractional_bits : int
        ``f`` (0..52).

    Returns
    -------
    float
        ``Delta_q >= C``.
    """
    clip = require_non_negative("clip_norm", clip_norm)
    d = require_positive_int("dimension", dimension)
    gamma = _grid_step(fractional_bits)
    return clip + math.sqrt(d) * gamma / 2.0


def central_secure_sum_release(
    *, noise_multiplier: float, clip_norm: float, dimension: int, fractional_bits: int, count: int = 1
) -> GaussianRelease:
    """Ledger event for central noise added by the coordinator to a secure sum.

    The secure-sum encoding rounds each coordinate of every clipped update to
    the grid *before* the coordinator adds ``N(0, (z C)^2 I)`` to the decoded
    sum, so the sum's sensitivity is :func:`quantized_sensitivity`
    ``S = C + sqrt(d) 2**-(f+1)``, not ``C``. The release is therefore a
    Gaussian with noise multiplier ``z C / S`` (slightly below ``z``). To keep
    exactly ``z``, add noise of std ``z * S`` instead and record
    ``GaussianRelease(z)``.

    Parameters
    ----------
    noise_multiplier : float
        ``z``: the coordinator adds noise of std ``z * C`` (> 0).
    clip_norm : float
        ``C`` (> 0).
    dimension, fractional_bits
        ``d`` and ``f`` of the secure-sum encoding.
    count : int
        Number of identical rounds.

    Returns
    -------
    GaussianRelease
        Noise multiplier ``z * C / S``.
    """
    z = require_positive("noise_multiplier", noise_multiplier)
    clip = require_positive("clip_norm", clip_norm)
    sensitivity = quantized_sensitivity(clip_norm=clip, dimension=dimension, fractional_bits=fractional_bits)
    return GaussianRelease(z * clip / sensitivity, count)


def effective_sensitivity(
    *, clip_norm: float, dimension: int, fractional_bits: int, min_contributors: int
) -> float:
    """L2 sensitivity to account for after quantization (see module docstring).

    ``C' = min over m in 1..t of sqrt((t/m) Delta_q^2 + d t m gamma^2 / 4)``
    with ``Delta_q = C + sqrt(d) gamma / 2`` and ``gamma = 2**-f``; at ``m = t``,
    ``C' = sqrt(Delta_q^2 + d t^2 gamma^2 / 4)``.

    Parameters
    ----------
    clip_norm : float
        ``C``, the clipping norm of each update (>= 0).
    dimension : int
        ``d``, number of coordinates summed (>= 1).
    fractional_bits : int
        ``f``, fractional bits of the fixed-point encoding (0..52).
    min_contributors : int
        ``t``, fewest honest clients whose noise share ends up in the sum (>= 1).

    Returns
    -------
    float
        ``C' >= C``; account the round as a Gaussian with noise multiplier
        ``z * C / C'`` (:func:`distributed_release`).
    """
    delta_q = quantized_sensitivity(clip_norm=clip_norm, dimension=dimension, fractional_bits=fractional_bits)
    d = require_positive_int("dimension", dimension)
    gamma = _grid_step(fractional_bits)
    t = require_positive_int("min_contributors", min_contributors)

    def squared(m: int) -> float:
        return (t / m) * delta_q**2 + d * t * m * gamma**2 / 4.0

    best = 2.0 * delta_q / (math.sqrt(d) * gamma)
    candidates = {1, t, min(t, max(1, math.floor(best))), min(t, max(1, math.ceil(best)))}
    return math.sqrt(min(squared(m) for m in candidates))


def quantize(values: NDArray[np.floating], *, fractional_bits: int) -> NDArray[np.float64]:
    """Round to the grid ``2**-f * Z``, halves up (commutes with grid shifts).

    Returns float64 values that are exact multiples of ``2**-f``
    (``values * 2**f`` are exact integers for magnitudes below ``2**(52-f)``).
    """
    gamma = _grid_step(fractional_bits)
    scaled = np.asarray(values, dtype=np.float64) / gamma
    return np.floor(scaled + 0.5) * gamma


def share_bound(
    *,
    clip_norm: float,
    noise_std: float,
    dimension: int,
    fractional_bits: int,
    failure_probability: float = 1e-12,
) -> float:
    """Per-coordinate bound that a share ``Q(x) + Q(n)`` exceeds with probability <= ``p``.

    ``|Q(x)_j| <= C + gamma/2`` (``||x|| <= C``) and, by the union bound over
    ``d`` coordinates, ``max_j |n_j| > sigma * Phi^-1(1 - p/(2d))`` with
    probability <= ``p``; ``Q(n)`` adds ``gamma/2``. Size the secure-sum
    ``clip_bound`` with it: a client whose share is out of range must not send
    it (it drops out), an event of probability <= ``p`` per client and round
    that the run's delta must absorb.

    Parameters
    ----------
    clip_norm : float
        ``C`` (>= 0).
    noise_std : float
        Per-client noise std (>= 0).
    dimension : int
        ``d`` (>= 1).
    fractional_bits : int
        ``f``.
    failure_probability : float
        ``p``, in (0, 1).

    Returns
    -------
    float
        ``C + gamma + sigma * Phi^-1(1 - p / (2 d))``.
    """
    from scipy.special import ndtri

    clip = require_non_negative("clip_norm", clip_norm)
    std = require_non_negative("noise_std", noise_std)
    d = require_positive_int("dimension", dimension)
    gamma = _grid_step(fractional_bits)
    p = require_probability("failure_probability", failure_probability)
    # -ndtri(p / 2d) == ndtri(1 - p / 2d), without 1 - p / 2d rounding to 1 (and the bound to inf).
    return clip + gamma - std * float(ndtri(p / (2.0 * d)))


def share_bound_failure_probability(
    *,
    bound: float,
    clip_norm: float,
    noise_std: float,
    dimension: int,
    fractional_bits: int,
) -> float:
    """Probability that one client's share has a coordinate beyond ``bound`` (per round).

    Inverse of :func:`share_bound`: a coordinate of ``Q(x) + Q(n)`` exceeds
    ``B`` only if ``|n_j| > B - C - gamma``, so by the union bound over ``d``
    coordinates the probability is at most
    ``d * erfc((B - C - gamma) / (sigma sqrt 2))`` (capped at 1). This event
    depends on the noise only, so a client can test it without looking at its
    data. Account for it with :func:`share_failure_release`.

    Parameters
    ----------
    bound : float
        ``B``, the secure-sum per-coordinate bound (> 0).
    clip_norm : float
        ``C`` (>= 0).
    noise_std : float
        Per-client noise std ``sigma`` (>= 0).
    dimension : int
        ``d`` (>= 1).
    fractional_bits : int
        ``f``.

    Returns
    -------
    float
        ``p`` in [0, 1]; 0 when ``sigma = 0`` and ``B >= C + gamma``.
    """
    from scipy.special import erfc

    limit = require_positive("bound", bound)
    clip = require_non_negative("clip_norm", clip_norm)
    std = require_non_negative("noise_std", noise_std)
    d = require_positive_int("dimension", dimension)
    gamma = _grid_step(fractional_bits)
    margin = limit - clip - gamma
    if margin <= 0:
        return 1.0
    if std == 0:
        return 0.0
    return min(1.0, d * float(erfc(margin / (std * math.sqrt(2.0)))))


def share_failure_release(
    *, failure_probability: float, clients: int, epsilon_budget: float, count: int = 1
) -> ExactRelease:
    """The delta a round must absorb for shares that may fall outside the bound.

    Let ``M`` be the round as analysed (Gaussian shares, nobody drops) and
    ``M'`` the real one, where a client whose noise is out of range does not
    send. Coupled on the same noise, they differ only on the event ``F`` that
    some client's noise is out of range, ``P(F) <= beta = min(1, n p)``
    whatever the data. Then for every output set ``S`` and neighbours
    ``D, D'``: ``P[M'(D) in S] <= P[M(D) in S] + beta
    <= e^eps P[M(D') in S] + delta + beta <= e^eps P[M'(D') in S] + delta
    + (1 + e^eps) beta``. So ``M'`` costs ``delta_extra = (1 + e^eps) beta``
    more, with ``eps`` at most the budget. Recording
    ``ExactRelease(0, delta_extra)`` next to the round's Gaussian event adds
    (at least) ``delta_extra`` to the ledger's delta at the same epsilon.

    Parameters
    ----------
    failure_probability : float
        ``p`` per client and round (:func:`share_bound_failure_probability`), in [0, 1).
    clients : int
        ``n``, clients sending noise shares in the round (>= 1).
    epsilon_budget : float
        Largest epsilon the ledger may reach (its budget), > 0.
    count : int
        Number of identical rounds.

    Returns
    -------
    ExactRelease
        ``ExactRelease(0.0, (1 + e^eps) * min(1, n p), count)``.

    Raises
    ------
    PrivacyConfigError
        If ``delta_extra`` is 1 or more (the bound is far too tight).
    """
    p = require_probability("failure_probability", failure_probability, allow_zero=True)
    n = require_positive_int("clients", clients)
    epsilon = require_positive("epsilon_budget", epsilon_budget)
    extra = (1.0 + math.exp(epsilon)) * min(1.0, n * p)
    if extra >= 1.0:
        raise PrivacyConfigError(
            "failure_probability", f"gives delta_extra={extra:.3g} >= 1: raise the share bound"
        )
    return ExactRelease(0.0, extra, count)


def distributed_noise_share(
    update: NDArray[np.floating] | Sequence[NDArray[np.floating]],
    *,
    noise_std: float,
    fractional_bits: int,
    rng: np.random.Generator | None = None,
) -> NDArray[np.float64] | list[NDArray[np.float64]]:
    """A client's share ``Q(x) + Q(n)``: quantized clipped update plus quantized noise.

    Parameters
    ----------
    update : ndarray or list of ndarray
        The already clipped update ``x``.
    noise_std : float
        Per-client std (:func:`client_noise_std`), >= 0.
    fractional_bits : int
        ``f`` of the secure-sum fixed-point encoding.
    rng : numpy.random.Generator or None
        Noise source; None seeds one from OS entropy.

    Returns
    -------
    ndarray or list of ndarray
        float64 values that are exact multiples of ``2**-f`` (whatever the
        input dtype), same structure and shapes as ``update``: pass them to
        the masking step as they are (casting to float32 would move them off
        the grid) and encode them exactly as integers ``value * 2**f``.
    """
    std = require_non_negative("noise_std", noise_std)
    generator = make_rng(rng)
    single = isinstance(update, np.ndarray)
    arrays = [np.asarray(update)] if single else [np.asarray(item) for item in update]
    shares = [
        np.asarray(
            quantize(array, fractional_bits=fractional_bits)
            + quantize(generator.normal(0.0, std, size=array.shape), fractional_bits=fractional_bits),
            dtype=np.float64,
        )
        for array in arrays
    ]
    return shares[0] if single else shares


def distributed_release(
    *,
    noise_std: float,
    clip_norm: float,
    dimension: int,
    fractional_bits: int,
    min_contributors: int,
    count: int = 1,
) -> GaussianRelease:
    """Ledger event for a distributed-DP round.

    Parameters
    ----------
    noise_std : float
        Std of each client's noise share, as drawn (> 0).
    clip_norm : float
        ``C``, the clipping norm of each update (> 0).
    dimension, fractional_bits, min_contributors
        As in :func:`effective_sensitivity`.
    count : int
        Number of identical rounds.

    Returns
    -------
    GaussianRelease
        With noise multiplier ``noise_std * sqrt(t) / C'``. With
        ``noise_std = client_noise_std(noise_multiplier=z, clip_norm=C', ...)``
        this is exactly ``z``.
    """
    std = require_positive("noise_std", noise_std)
    t = require_positive_int("min_contributors", min_contributors)
    sensitivity = effective_sensitivity(
        clip_norm=require_positive("clip_norm", clip_norm),
        dimension=dimension,
        fractional_bits=fractional_bits,
        min_contributors=t,
    )
    return GaussianRelease(std * math.sqrt(t) / sensitivity, count)


def lattice_split(vector: NDArray[np.floating], *, parts: int, fractional_bits: int) -> NDArray[np.float64]:
    """Split a grid vector into ``parts`` grid vectors that sum to it, as evenly as possible.

    Used in the proof of :func:`effective_sensitivity`; exposed so the bound
    ``sum ||v_i||^2 <= ||v||^2/m + d m gamma^2/4`` can be checked.

    Returns
    -------
    ndarray
        Shape ``(parts, *vector.shape)``.
    """
    m = require_positive_int("parts", parts)
    gamma = _grid_step(fractional_bits)
    units = np.asarray(vector, dtype=np.float64) / gamma
    integers = np.rint(units)
    if not np.array_equal(integers, units):
        raise PrivacyConfigError("vector", f"must lie on the grid 2**-{fractional_bits} * Z")
    quotient = np.floor_divide(integers, m)
    remainder = integers - quotient * m
    index = np.arange(m).reshape((m,) + (1,) * integers.ndim)
    return np.asarray((quotient + (index < remainder)) * gamma, dtype=np.float64)
