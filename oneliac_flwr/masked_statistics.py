"""Statistics that travel inside the secure-sum vector, so the coordinator sees only sums.

Under secure sum without differential privacy, an organization's training loss and
accuracy, its evaluation of the model it received and its label distribution are
data-dependent: sent in the clear they would tell the coordinator about one hospital.
They are appended to the clipped model update as a few extra coordinates, weighted and
masked like the update, so the coordinator unmasks only their weighted sums.

Layout (``S = slots(num_classes)`` coordinates after the update, each scaled to
``[0, bound]`` so it fits the ring's per-coordinate bound):

====================  =========================================================
slot                  value (times ``bound``)
====================  =========================================================
0                     1 (the weight indicator: its sum is the total weight)
1, 2                  training loss (``min(loss, LOSS_CAP) / LOSS_CAP``), accuracy
3                     1 if the organization evaluated the received model, else 0
4, 5                  evaluation loss (capped as above), accuracy of that model
6 .. 6 + K - 1        fraction of training labels in each of the K classes
====================  =========================================================

Under differential privacy nothing is appended: those statistics would be releases the
ledger does not account, so they are not sent at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LOSS_CAP", "MaskedStatistics", "pack_statistics", "slots", "unpack_statistics"]

LOSS_CAP = 10.0
_FIXED = 6


def slots(num_classes: int) -> int:
    """Number of coordinates appended for ``num_classes`` classes."""
    return _FIXED + int(num_classes)


@dataclass(frozen=True, kw_only=True)
class MaskedStatistics:
    """One organization's statistics (client side) or their weighted means (coordinator side).

    Parameters
    ----------
    train_loss, train_accuracy : float
        Training loss (capped at :data:`LOSS_CAP`) and accuracy.
    eval_loss, eval_accuracy : float or None
        Evaluation of the received global model on local validation rows (``None``: none).
    label_fractions : tuple of float
        Fraction of training labels per class (client), or of all counted weight
        (coordinator, where the sum over organizations is the label distribution).
    total_weight : float
        Coordinator side: the sum of the counted weights; client side: 1.
    """

    train_loss: float
    train_accuracy: float
    eval_loss: float | None
    eval_accuracy: float | None
    label_fractions: tuple[float, ...]
    total_weight: float = 1.0


def _unit(value: float, cap: float = 1.0) -> float:
    if not math.isfinite(value):
        return 1.0
    return min(max(value, 0.0), cap) / cap


def pack_statistics(stats: MaskedStatistics, *, bound: float) -> np.ndarray:
    """The float64 coordinates to append to a client's clipped update."""
    evaluated = stats.eval_loss is not None and stats.eval_accuracy is not None
    values = [
        1.0,
        _unit(stats.train_loss, LOSS_CAP),
        _unit(stats.train_accuracy),
        1.0 if evaluated else 0.0,
        _unit(stats.eval_loss, LOSS_CAP) if evaluated else 0.0,  # type: ignore[arg-type]
        _unit(stats.eval_accuracy) if evaluated else 0.0,  # type: ignore[arg-type]
        *(_unit(f) for f in stats.label_fractions),
    ]
    return np.asarray(values, dtype=np.float64) * float(bound)


def unpack_statistics(weighted_sum: np.ndarray, *, bound: float) -> MaskedStatistics:
    """Weighted means from the unmasked sum of the appended coordinates."""
    values = np.asarray(weighted_sum, dtype=np.float64) / float(bound)
    total = float(values[0])
    if total <= 0:
        return MaskedStatistics(
            train_loss=math.nan, train_accuracy=math.nan, eval_loss=None, eval_accuracy=None, label_fractions=(), total_weight=0.0
        )
    evaluated = float(values[3])
    return MaskedStatistics(
        train_loss=float(values[1]) / total * LOSS_CAP,
        train_accuracy=float(values[2]) / total,
        eval_loss=float(values[4]) / evaluated * LOSS_CAP if evaluated > 0.5 else None,
        eval_accuracy=float(values[5]) / evaluated if evaluated > 0.5 else None,
        label_fractions=tuple(float(v) / total for v in values[_FIXED:]),
        total_weight=total,
    )
