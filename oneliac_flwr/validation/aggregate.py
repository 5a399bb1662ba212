"""``aggregate_bounds_check``: the unmasked secure-sum aggregate is plausible.

Under secure sum the coordinator never sees an individual update, only the
weighted sum of the participants' clipped updates (plus noise, plus decoding
error). This module checks what can be checked on that sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.validation._arrays import MAX_REPORTED, flat_l2_norm, non_finite_summary, review_entries
from oneliac_flwr.validation._values import as_count, config_count, config_real, json_float
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.registry import register_check
from oneliac_flwr.validation.result import CheckResult
from oneliac_flwr.validation.submission import Submission

__all__ = ["aggregate_bounds_check", "aggregate_norm_bound", "check_aggregate"]

NAME = "aggregate_bounds_check"

DEFAULT_FALSE_ALARM_PROBABILITY = 1e-9
"""Probability that honest Gaussian noise alone pushes the norm over the bound."""

_FIELD = "aggregate"


def aggregate_norm_bound(
    *,
    dimension: int,
    total_weight: float,
    clip_norm: float,
    noise_std: float = 0.0,
    norm_tolerance: float = 0.01,
    rounding_error: float = 0.0,
    false_alarm_probability: float = DEFAULT_FALSE_ALARM_PROBABILITY,
) -> float:
    r"""Largest plausible L2 norm of the weighted mean ``weighted_sum / total_weight``.

    With updates :math:`x_i` of norm :math:`\|x_i\| \le C`, weights
    :math:`w_i \ge 0`, :math:`W = \sum_i w_i`, Gaussian noise
    :math:`N \sim \mathcal N(0, \sigma^2 I_d)` added to the sum and a decoding error
    :math:`E` with :math:`|E_j| \le e`, the mean is
    :math:`m = \sum_i (w_i / W) x_i + (N + E) / W`. A convex combination of vectors
    of norm at most :math:`C` has norm at most :math:`C`;
    :math:`\|E\| \le e\sqrt d`; and by Gaussian concentration (:math:`\|N\|` is
    :math:`\sigma`-Lipschitz in a standard normal vector and
    :math:`\mathbb E\|N\| \le \sigma\sqrt d`),
    :math:`P(\|N\| > \sigma(\sqrt d + \sqrt{2\ln(1/\alpha)})) \le \alpha`. Hence,
    except with probability at most :math:`\alpha`,

    .. math::

        \|m\| \le C (1 + \tau)
                 + \frac{\sigma\,(\sqrt d + \sqrt{2 \ln(1/\alpha)}) + e\sqrt d}{W}

    where :math:`\tau` is ``norm_tolerance`` (float rounding and slack).

    Parameters
    ----------
    dimension : int
        :math:`d`, number of coordinates of the sum (>= 0).
    total_weight : float
        :math:`W`, sum of the participants' weights (> 0).
    clip_norm : float
        :math:`C`, the clip bound of each update (> 0).
    noise_std : float, default 0.0
        :math:`\sigma`, per-coordinate standard deviation of the total noise in the
        *sum* (central noise, or the sum of all clients' noise shares).
    norm_tolerance : float, default 0.01
        :math:`\tau`, relative slack on :math:`C`.
    rounding_error : float, default 0.0
        :math:`e`, bound on the absolute decoding error of each coordinate of the sum.
    false_alarm_probability : float, default 1e-9
        :math:`\alpha`, in (0, 1).

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        If a parameter is out of range; the message names it (``aggregate.<name>``).
    """
    d = config_count(f"{_FIELD}.dimension", dimension, minimum=0)
    weight = config_real(f"{_FIELD}.total_weight", total_weight, positive=True)
    clip = config_real(f"{_FIELD}.clip_norm", clip_norm, positive=True)
    sigma = config_real(f"{_FIELD}.noise_std", noise_std, positive=False)
    tol = config_real(f"{_FIELD}.norm_tolerance", norm_tolerance, positive=False)
    error = config_real(f"{_FIELD}.rounding_error", rounding_error, positive=False)
    alpha = config_real(f"{_FIELD}.false_alarm_probability", false_alarm_probability, positive=True)
    if alpha >= 1.0:
        raise ConfigError(f"{_FIELD}.false_alarm_probability", f"expected a number in (0, 1), got {alpha!r}")
    root_d = math.sqrt(d)
    noise = sigma * (root_d + math.sqrt(2.0 * math.log(1.0 / alpha)))
    return clip * (1.0 + tol) + (noise + error * root_d) / weight


def check_aggregate(
    weighted_sum: Sequence[np.ndarray] | np.ndarray,
    *,
    total_weight: float,
    n_participants: int,
    clip_norm: float,
    noise_std: float = 0.0,
    norm_tolerance: float = 0.01,
    quantization_step: float = 0.0,
    false_alarm_probability: float = DEFAULT_FALSE_ALARM_PROBABILITY,
) -> CheckResult:
    """Check that an unmasked weighted sum of clipped updates is plausible.

    Passes if the sum is not empty, every value is finite, and the L2 norm of
    ``weighted_sum / total_weight`` is at most :func:`aggregate_norm_bound` with
    ``rounding_error = n_participants * quantization_step / 2`` (each summand
    rounded to the nearest multiple of the step). An honest round fails only with
    probability ``false_alarm_probability`` (noise).

    What it cannot do: a client that lies (skips clipping) is detected only if its
    excess norm, divided by ``total_weight``, exceeds the slack the others leave;
    its influence is bounded only by the range of the fixed-point encoding.

    Parameters
    ----------
    weighted_sum : numpy.ndarray or sequence of numpy.ndarray
        The unmasked, decoded sum of :math:`w_i x_i` (plus noise), one array or one
        per layer.
    total_weight : float
        Sum of the weights :math:`w_i` (> 0).
    n_participants : int
        Number of summands (>= 1).
    clip_norm : float
        Clip bound of each update (> 0).
    noise_std : float, default 0.0
        Per-coordinate standard deviation of the total noise in the sum.
    norm_tolerance : float, default 0.01
        Relative slack on ``clip_norm``.
    quantization_step : float, default 0.0
        Fixed-point step of each summand, in units of the sum (if the encoder
        multiplies by the weight after rounding, pass ``step * max_weight``).
    false_alarm_probability : float, default 1e-9
        Probability, in (0, 1), that honest noise alone fails the check.

    Returns
    -------
    CheckResult
        Named ``aggregate_bounds_check``; ``details`` holds ``mean_l2_norm``,
        ``bound``, ``dimension``, ``total_weight``, ``n_participants`` and, if any,
        ``non_finite_count`` with the first ``[array, flat index]`` pairs.

    Raises
    ------
    ConfigError
        If a parameter (not the data) is out of range.
    """
    n = config_count(f"{_FIELD}.n_participants", n_participants, minimum=1)
    step = config_real(f"{_FIELD}.quantization_step", quantization_step, positive=False)
    return _check(
        [weighted_sum] if isinstance(weighted_sum, np.ndarray) else weighted_sum,
        total_weight=total_weight,
        n_participants=n,
        clip_norm=clip_norm,
        noise_std=noise_std,
        norm_tolerance=norm_tolerance,
        rounding_error=n * step / 2.0,
        false_alarm_probability=false_alarm_probability,
    )


@register_check(NAME)
def aggregate_bounds_check(submission: Submission, policy: ValidationPolicy) -> CheckResult:
    """Registered form of :func:`check_aggregate`, for an aggregate wrapped as a Submission.

    The coordinator wraps the unmasked aggregate as
    ``Submission(arrays=weighted_sum, num_examples=total_weight)``. The bound uses
    ``C = policy.max_l2_norm``, noise ``sigma = policy.noise_multiplier * C`` on
    the sum (the DP-FedAvg convention; no noise when the policy sets no noise
    multiplier), ``policy.norm_tolerance``, and no rounding allowance: call
    :func:`check_aggregate` for a quantization allowance or another noise
    convention.

    Parameters
    ----------
    submission : Submission
        The aggregate: ``arrays`` the weighted sum, ``num_examples`` the total weight.
    policy : ValidationPolicy
        Must set ``max_l2_norm``.

    Returns
    -------
    CheckResult

    Raises
    ------
    ConfigError
        If ``policy.max_l2_norm`` is not set.
    """
    if policy.max_l2_norm is None:
        raise ConfigError("validation_policy.max_l2_norm", f"{NAME} needs the clip bound, got None")
    total_weight = as_count(submission.num_examples)
    if total_weight is None or total_weight <= 0:
        return CheckResult(
            passed=False,
            check=NAME,
            reason=f"num_examples (total weight): expected an integer > 0, got {submission.num_examples!r}",
            details={"num_examples": repr(submission.num_examples)},
        )
    return _check(
        submission.arrays,
        total_weight=total_weight,
        n_participants=None,
        clip_norm=policy.max_l2_norm,
        noise_std=(policy.noise_multiplier or 0.0) * policy.max_l2_norm,
        norm_tolerance=policy.norm_tolerance,
        rounding_error=0.0,
        false_alarm_probability=DEFAULT_FALSE_ALARM_PROBABILITY,
    )


def _check(
    arrays: object,
    *,
    total_weight: float,
    n_participants: int | None,
    clip_norm: float,
    noise_std: float,
    norm_tolerance: float,
    rounding_error: float,
    false_alarm_probability: float,
) -> CheckResult:
    review = review_entries(arrays)
    dimension = sum(int(array.size) for _, array in review.numeric)
    weight = config_real(f"{_FIELD}.total_weight", total_weight, positive=True)
    bound = aggregate_norm_bound(
        dimension=dimension,
        total_weight=weight,
        clip_norm=clip_norm,
        noise_std=noise_std,
        norm_tolerance=norm_tolerance,
        rounding_error=rounding_error,
        false_alarm_probability=false_alarm_probability,
    )
    problems, details = list(review.problems), dict(review.details)
    details.update(dimension=dimension, total_weight=weight, bound=bound)
    if n_participants is not None:
        details["n_participants"] = n_participants
    non_finite = 0
    first: list[list[int]] = []
    for i, array in review.numeric:
        count, indices = non_finite_summary(array)
        non_finite += count
        first.extend([i, j] for j in indices[: MAX_REPORTED - len(first)])
    mean_norm = flat_l2_norm(array for _, array in review.numeric) / weight
    details["mean_l2_norm"] = json_float(mean_norm)
    if non_finite:
        problems.append(f"{non_finite} non-finite values in the aggregate")
        details["non_finite_count"] = non_finite
        details["non_finite_first"] = first
    elif dimension == 0:
        problems.append("the aggregate is empty (0 values)")
    elif not mean_norm <= bound:
        problems.append(f"L2 norm of the weighted mean {mean_norm:.6g} exceeds the bound {bound:.6g}")
    return CheckResult.from_problems(
        check=NAME,
        problems=problems,
        details=details,
        ok_reason=f"aggregate finite; L2 norm of the weighted mean {mean_norm:.6g} <= {bound:.6g}",
    )
