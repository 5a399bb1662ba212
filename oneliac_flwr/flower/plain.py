"""Plain weighted-mean aggregation (``aggregation_method: fedavg``): the comparison baseline."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from oneliac_flwr.flower.records import TrainReply
from oneliac_flwr.coordinator import Aggregate, plain_aggregate
from oneliac_flwr.results import RoundRecord

__all__ = ["PlainAggregator"]


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

    def organization_of(self, node: int) -> str | None:
        """Plain aggregation learns no names of its own (``None``)."""
        return None

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
        return plain_aggregate(
            participants=[r.node_id for r in replies],
            arrays=[r.arrays for r in replies],
            weights=[1.0 if self.uniform_weights else float(r.num_examples) for r in replies],
            metrics=[r.metrics for r in replies],
            global_arrays=global_arrays,
        )
