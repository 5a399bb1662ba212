"""Plain weighted-mean aggregation (``aggregation_method: fedavg``): the comparison baseline."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from oneliac_flwr.flower.records import TrainReply
from oneliac_flwr.flower.strategy import Aggregate
from oneliac_flwr.results import RoundRecord

__all__ = ["PlainAggregator", "weighted_mean_metrics"]


def weighted_mean_metrics(replies: list[TrainReply], weights: np.ndarray) -> dict[str, float]:
    """Weighted mean of the metrics every reply carries."""
    keys = set.intersection(*(set(r.metrics) for r in replies)) if replies else set()
    keys.discard("num-examples")
    return {k: float(np.average([r.metrics[k] for r in replies], weights=weights)) for k in sorted(keys)}


class PlainAggregator:
    """Weighted mean of the updates (``arrays - global``), the coordinator sees each update.

    Parameters
    ----------
    uniform_weights : bool
        Weight every organization equally (organization-level DP needs a sensitivity that
        does not depend on sample counts); otherwise weight by ``num-examples``.
    """

    def __init__(self, *, uniform_weights: bool = False) -> None:
        self.uniform_weights = uniform_weights

    def prepare(
        self, server_round: int, node_ids: list[int], grid: Grid, timeout: float
    ) -> tuple[list[int], dict[str, ConfigRecord]]:
        """Every sampled node takes part; nothing to add."""
        return list(node_ids), {}

    def aggregate(
        self,
        server_round: int,
        replies: list[TrainReply],
        global_arrays: list[np.ndarray],
        grid: Grid,
        timeout: float,
        record: RoundRecord,
    ) -> Aggregate:
        """Weighted mean of the updates of ``replies``."""
        weights = np.array([1.0 if self.uniform_weights else r.num_examples for r in replies], dtype=np.float64)
        mean_update = []
        for index, current in enumerate(global_arrays):
            stacked = np.stack([r.arrays[index].astype(np.float64) - current for r in replies])
            mean_update.append(np.tensordot(weights / weights.sum(), stacked, axes=1))
        return Aggregate(
            mean_update=mean_update,
            total_weight=float(weights.sum()),
            counted=[r.node_id for r in replies],
            metrics=weighted_mean_metrics(replies, weights),
        )
