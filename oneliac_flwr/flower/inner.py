"""Build the inner weighted-mean Flower strategy from config."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator.round import ServerUpdate
from oneliac_flwr.coordinator.server_opt import ServerAdaptive, ServerMomentum
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.console import synthetic_reply_quiet
from oneliac_flwr.flower.records import METRICS, NUM_EXAMPLES

__all__ = ["WEIGHTED_MEAN_STRATEGIES", "InnerStrategyUpdate", "build_inner_strategy", "server_update_for"]

WEIGHTED_MEAN_STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}


def build_inner_strategy(config: ExperimentConfig) -> Strategy:
    """The Flower strategy named by ``strategy.name``, with our sampling settings.

    Sampling waits for ``aggregation_config.min_participants`` connected nodes and samples
    at least that many for training.
    """
    settings = config.strategy
    cls = WEIGHTED_MEAN_STRATEGIES.get(settings.name)
    if cls is None:
        raise ConfigError("strategy.name", f"expected one of {sorted(WEIGHTED_MEAN_STRATEGIES)}, got {settings.name!r}")
    minimum = config.aggregation_config.min_participants
    common = {
        "fraction_train": settings.fraction_train,
        "fraction_evaluate": config.evaluation_fraction,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": minimum if config.evaluation_fraction > 0 else 0,
        "min_available_nodes": minimum,
    }
    if cls is FedProx:
        return FedProx(**common, proximal_mu=settings.proximal_mu)
    if cls is FedAvgM:
        return FedAvgM(**common, server_learning_rate=settings.server_learning_rate, server_momentum=settings.server_momentum)
    if cls in (FedAdam, FedYogi, FedAdagrad):
        return cls(**common, eta=settings.eta, eta_l=settings.eta_l, tau=settings.tau)
    return FedAvg(**common)


def server_update_for(inner: Strategy) -> ServerUpdate:
    """The core's server update for a Flower strategy, with the strategy's own settings.

    FedAvgM and the FedOpt family (FedAdam, FedYogi, FedAdagrad) get the core's server
    optimizer (:mod:`oneliac_flwr.coordinator.server_opt`), whose state the REST service
    persists too; any other strategy keeps its own rule through :class:`InnerStrategyUpdate`.
    """
    if isinstance(inner, FedAvgM):
        return ServerMomentum(server_learning_rate=float(inner.server_learning_rate),
                              server_momentum=float(inner.server_momentum))  # fmt: skip
    rules = ((FedAdam, "adam"), (FedYogi, "yogi"), (FedAdagrad, "adagrad"))
    for cls, rule in rules:
        if isinstance(inner, cls):
            return ServerAdaptive(rule=rule, eta=float(inner.eta), tau=float(inner.tau),  # type: ignore[arg-type]
                                  beta_1=float(inner.beta_1), beta_2=float(inner.beta_2))  # fmt: skip
    return InnerStrategyUpdate(inner)


class InnerStrategyUpdate:
    """A Flower weighted-mean strategy's server-side update, as the core's ``ServerUpdate``.

    The strategy sees the aggregate as one synthetic reply holding ``global + mean_update``
    with the round's total weight, so its own rule (FedAvg's mean, FedAvgM's momentum,
    FedAdam's moments, ...) is what updates the model. :func:`server_update_for` uses it for
    strategies without a core optimizer (FedAvg, FedProx, others); tests use it as Flower's
    reference for the core's optimizers.

    Parameters
    ----------
    inner : flwr.serverapp.strategy.Strategy
        The weighted-mean strategy (its optimizer state lives in this object).
    """

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def _start_from(self, global_arrays: list[np.ndarray]) -> None:
        """Give a server optimizer the round's starting model, as its ``configure_train``
        does (idempotent after it: FedOpt takes the model each round, FedAvgM only the first)."""
        if isinstance(self.inner, FedOpt):
            record = ArrayRecord(numpy_ndarrays=global_arrays)
            self.inner.current_arrays = {k: a.numpy() for k, a in record.items()}
        elif isinstance(self.inner, FedAvgM) and self.inner.current_arrays is None:
            self.inner.current_arrays = ArrayRecord(numpy_ndarrays=global_arrays)

    def __call__(
        self,
        server_round: int,
        global_arrays: list[np.ndarray],
        averaged: list[np.ndarray],
        metrics: dict[str, float],
        total_weight: float,
    ) -> tuple[list[np.ndarray] | None, dict[str, float] | None]:
        """Run the inner strategy's ``aggregate_train`` on the synthetic reply."""
        self._start_from(global_arrays)
        array_key = str(getattr(self.inner, "arrayrecord_key", "arrays"))
        weight_key = str(getattr(self.inner, "weighted_by_key", NUM_EXAMPLES))
        content = RecordDict(
            {
                array_key: ArrayRecord(numpy_ndarrays=averaged),
                METRICS: MetricRecord({**metrics, weight_key: float(total_weight)}),
            }
        )
        reply = Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)
        with synthetic_reply_quiet():  # Flower would log 'Received 1 results': the synthetic reply, not the organizations
            arrays, new_metrics = self.inner.aggregate_train(server_round, [reply])
        if arrays is None:
            return None, None
        return arrays.to_numpy_ndarrays(), (dict(new_metrics) if new_metrics is not None else None)
