"""A round's aggregate: the plain weighted mean, and the secure sum after unmasking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneliac_flwr.errors import RoundFailed
from oneliac_flwr.masked_statistics import unpack_statistics
from oneliac_flwr.validation import check_aggregate
from oneliac_flwr.validation.result import CheckResult

__all__ = ["UNNOISED_FAILURE", "Aggregate", "SecureSumOutcome", "plain_aggregate", "publishable_check", "secure_sum_aggregate",
           "weighted_mean_metrics"]


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
        The aggregate's bounds check (it passed, else :class:`RoundFailed` was raised).
    label_distribution : list of float or None
        Aggregate label fractions (only when statistics rode in the masked vector).
    failure : str or None
        Why the round must fail (bounds check, weight), ``None`` when the aggregate is usable;
        on failure ``aggregate.mean_update`` is empty.
    """

    aggregate: Aggregate
    check: CheckResult
    label_distribution: list[float] | None
    failure: str | None


def secure_sum_aggregate(
    weighted_sum: np.ndarray,
    *,
    counted: Sequence[int],
    global_arrays: Sequence[np.ndarray],
    statistics_slots: int,
    clip_bound: float,
    frac_bits: int,
    noise_std: float,
) -> SecureSumOutcome:
    """Turn the unmasked weighted sum into the round's mean update, checked against its bound.

    The vector holds the flattened weighted update followed by ``statistics_slots``
    coordinates of masked statistics (:mod:`oneliac_flwr.masked_statistics`); with no
    slots (under DP) every update weighs 1. A failed check is returned, not raised, so the
    caller can record what was learnt before failing the round.
    """
    num_parameters = sum(int(a.size) for a in global_arrays)
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
        offset = 0
        for array in global_arrays:
            mean_update.append(flat_mean[offset : offset + array.size].reshape(array.shape))
            offset += array.size
    aggregate = Aggregate(mean_update=mean_update, total_weight=total_weight, counted=list(counted), metrics=metrics)
    return SecureSumOutcome(aggregate=aggregate, check=check, label_distribution=label_distribution, failure=failure)


UNNOISED_FAILURE = (
    "aggregate_bounds_check: the unmasked sum is out of bounds (its values are not published under central noise: "
    "they were never noised)"
)


def publishable_check(outcome: SecureSumOutcome, *, unnoised: bool) -> tuple[dict[str, Any], str | None]:
    """The aggregate check and failure reason a coordinator may store and publish.

    Under central DP noise (``unnoised``) the check ran on the sum *before* the noise, so its
    numbers (the mean's norm, the bound it was compared with) are a release outside the
    ledger: only the check's name and outcome are kept, and a failure reason without numbers.
    """
    check = outcome.check.to_dict()
    if not unnoised:
        return check, outcome.failure
    return {"check": check["check"], "passed": check["passed"]}, None if outcome.failure is None else UNNOISED_FAILURE
