"""A round's aggregate: the plain weighted mean, and the secure sum after unmasking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneliac_flwr.errors import ConfigError, PrivacyError, RoundFailed
from oneliac_flwr.masked_statistics import unpack_statistics
from oneliac_flwr.validation import aggregate_norm_bound, check_aggregate
from oneliac_flwr.validation.aggregate import NAME as AGGREGATE_CHECK
from oneliac_flwr.validation.result import CheckResult

__all__ = ["Aggregate", "SecureSumOutcome", "plain_aggregate", "project_onto_ball", "publishable_check",
           "secure_sum_aggregate", "weighted_mean_metrics"]


@dataclass(frozen=True, kw_only=True)
class Aggregate:
    """A round's aggregate as the aggregator hands it back.

    Parameters
    ----------
    mean_update : list of numpy.ndarray
        The (weighted) mean model update of the counted organizations.
    total_weight : float
        Sum of their weights.
    counted : list of int
        Ids of the participants whose updates are in the aggregate.
    metrics : dict
        Weighted-mean training metrics.
    """

    mean_update: list[np.ndarray]
    total_weight: float
    counted: list[int]
    metrics: dict[str, float]


def weighted_mean_metrics(metrics: Sequence[dict[str, float]], weights: np.ndarray) -> dict[str, float]:
    """Weighted mean of the metrics every submission carries (``num-examples`` left out)."""
    keys = set.intersection(*(set(m) for m in metrics)) if metrics else set()
    keys.discard("num-examples")
    return {k: float(np.average([m[k] for m in metrics], weights=weights)) for k in sorted(keys)}


def plain_aggregate(
    *,
    participants: Sequence[int],
    arrays: Sequence[Sequence[np.ndarray]],
    weights: Sequence[float],
    metrics: Sequence[dict[str, float]],
    global_arrays: Sequence[np.ndarray],
) -> Aggregate:
    """Weighted mean of the updates ``arrays[i] - global_arrays`` (the coordinator sees each one).

    Parameters
    ----------
    participants : sequence of int
        Id of each submission's sender, in the order of ``arrays``.
    arrays : sequence of list of numpy.ndarray
        Each participant's full local model (not the difference).
    weights : sequence of float
        Each participant's weight (sample count, or 1 under organization-level DP).
    metrics : sequence of dict
        Each participant's training metrics.
    global_arrays : sequence of numpy.ndarray
        The global model the round started from.
    """
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise RoundFailed("the weights of the submissions are not positive and finite")
    mean_update = []
    for index, current in enumerate(global_arrays):
        stacked = np.stack([a[index].astype(np.float64) - current for a in arrays])
        mean_update.append(np.tensordot(w / w.sum(), stacked, axes=1))
    return Aggregate(
        mean_update=mean_update,
        total_weight=float(w.sum()),
        counted=list(participants),
        metrics=weighted_mean_metrics(metrics, w),
    )


@dataclass(frozen=True, kw_only=True)
class SecureSumOutcome:
    """What the unmasked secure sum gives the round.

    Parameters
    ----------
    aggregate : Aggregate
        The mean update and training statistics.
    check : CheckResult
        The aggregate's bounds check. Under central noise it is not run on the sum: the mean
        is projected onto the bound instead, and the check says so with public numbers only.
    label_distribution : list of float or None
        Aggregate label fractions (only when statistics rode in the masked vector).
    failure : str or None
        Why the round must fail (bounds check, weight), ``None`` when the aggregate is usable;
        on failure ``aggregate.mean_update`` is empty. Never set from the sum's values under
        central noise.
    central_noise : bool
        Whether the sum was treated as un-noised (central DP noise is added later).
    """

    aggregate: Aggregate
    check: CheckResult
    label_distribution: list[float] | None
    failure: str | None
    central_noise: bool


def project_onto_ball(vector: np.ndarray, *, radius: float) -> np.ndarray:
    """The point of the closed L2 ball of ``radius`` around 0 nearest to ``vector``.

    ``vector * radius / max(||vector||, radius)``: the identity inside the ball, a rescaling
    onto its surface outside. A projection onto a closed convex set is 1-Lipschitz
    (``||P(a) - P(b)|| <= ||a - b||``), so it never raises the sensitivity of what it is
    applied to.
    """
    norm = float(np.linalg.norm(vector))
    return vector * (radius / max(norm, radius))


def secure_sum_aggregate(
    weighted_sum: np.ndarray,
    *,
    counted: Sequence[int],
    global_arrays: Sequence[np.ndarray],
    statistics_slots: int,
    clip_bound: float,
    frac_bits: int,
    noise_std: float,
    central_noise: bool,
) -> SecureSumOutcome:
    """Turn the unmasked weighted sum into the round's mean update, checked against its bound.

    The vector holds the flattened weighted update followed by ``statistics_slots``
    coordinates of masked statistics (:mod:`oneliac_flwr.masked_statistics`); with no
    slots (under DP) every update weighs 1. A failed check is returned, not raised, so the
    caller can record what was learnt before failing the round.

    With ``central_noise`` (organization-level DP, noise added by the coordinator after this
    function) nothing here may depend on the sum's values in a way that shows: a pass or a
    fail of the bounds check would be one bit about the un-noised sum outside the ledger,
    and a hospital that shapes its own masked input could place the sum at the bound to read
    it. So the check is not run; the mean is projected onto the L2 ball of the radius the
    check enforces (:func:`~oneliac_flwr.validation.aggregate_norm_bound` with the ring's
    clip bound and rounding allowance), which leaves an honest mean unchanged and bounds a
    poisoned one as the check did, and the outcome is the same whatever the sum
    (docs/privacy.md, "Central noise under secure sum").

    Raises
    ------
    ConfigError
        If ``central_noise`` is combined with ``statistics_slots`` (statistics would travel
        un-noised; under DP they are off).
    """
    num_parameters = sum(int(a.size) for a in global_arrays)
    if central_noise and statistics_slots:
        raise ConfigError("statistics_slots", f"expected 0 under central DP noise (un-noised statistics), got {statistics_slots}")
    update_sum = weighted_sum[:num_parameters]
    metrics: dict[str, float] = {}
    label_distribution: list[float] | None = None
    if statistics_slots:
        stats = unpack_statistics(weighted_sum[num_parameters:], bound=clip_bound)
        total_weight = stats.total_weight
        metrics = {"train_loss": stats.train_loss, "train_accuracy": stats.train_accuracy}
        if stats.eval_accuracy is not None and stats.eval_loss is not None:
            metrics |= {"received_eval_loss": stats.eval_loss, "received_eval_accuracy": stats.eval_accuracy}
        label_distribution = [round(f, 6) for f in stats.label_fractions]
    else:
        total_weight = float(len(counted))
    if central_noise:
        check = _projection_check(dimension=num_parameters, counted=len(counted), clip_bound=clip_bound,
                                  frac_bits=frac_bits, noise_std=noise_std)  # fmt: skip
    else:
        check = check_aggregate(
            update_sum,
            total_weight=total_weight,
            n_participants=len(counted),
            clip_norm=clip_bound,
            noise_std=noise_std,
            quantization_step=2.0 ** (-frac_bits),
        )
    if not check.passed:
        failure: str | None = f"aggregate_bounds_check: {check.reason}"
    elif total_weight <= 0:
        failure = "the unmasked total weight is not positive"
    else:
        failure = None
    mean_update: list[np.ndarray] = []
    if failure is None:
        flat_mean = update_sum / total_weight
        if central_noise:
            flat_mean = project_onto_ball(flat_mean, radius=float(check.details["bound"]))  # type: ignore[arg-type]
        offset = 0
        for array in global_arrays:
            mean_update.append(flat_mean[offset : offset + array.size].reshape(array.shape))
            offset += array.size
    aggregate = Aggregate(mean_update=mean_update, total_weight=total_weight, counted=list(counted), metrics=metrics)
    return SecureSumOutcome(aggregate=aggregate, check=check, label_distribution=label_distribution, failure=failure,
                            central_noise=central_noise)  # fmt: skip


def _projection_check(*, dimension: int, counted: int, clip_bound: float, frac_bits: int, noise_std: float) -> CheckResult:
    """The bounds check under central noise: enforced by projection, from public numbers only."""
    weight = float(counted)
    if counted <= 0 or dimension <= 0:
        return CheckResult(passed=False, check=AGGREGATE_CHECK, reason=f"{counted} counted update(s) of {dimension} values",
                           details={"dimension": dimension, "n_participants": counted})  # fmt: skip
    bound = aggregate_norm_bound(dimension=dimension, total_weight=weight, clip_norm=clip_bound, noise_std=noise_std,
                                 rounding_error=counted * 2.0 ** (-frac_bits) / 2.0)  # fmt: skip
    return CheckResult(
        passed=True,
        check=AGGREGATE_CHECK,
        reason=f"central noise: the un-noised mean is projected onto the L2 ball of radius {bound:.6g} before the "
               "noise, not checked (a pass or fail would be a release outside the ledger)",
        details={"enforced_by": "projection", "bound": bound, "dimension": dimension, "n_participants": counted,
                 "total_weight": weight},
    )  # fmt: skip


def publishable_check(outcome: SecureSumOutcome, *, unnoised: bool) -> tuple[dict[str, Any], str | None]:
    """The aggregate check and failure reason a coordinator may store and publish.

    Under central DP noise (``unnoised``) the outcome must come from
    ``secure_sum_aggregate(..., central_noise=True)``: its check and failure then hold public
    numbers only (the projection's radius, the dimension, the count) and are the same for
    every sum, so they are published whole.

    Raises
    ------
    PrivacyError
        If ``unnoised`` but the outcome was built without ``central_noise`` (its check ran on
        the un-noised sum): fails closed rather than publish a bit of it.
    """
    if unnoised and not outcome.central_noise:
        raise PrivacyError(
            "central noise: the secure-sum aggregate was checked on the un-noised sum; build it with "
            "secure_sum_aggregate(..., central_noise=True)"
        )
    return outcome.check.to_dict(), outcome.failure
