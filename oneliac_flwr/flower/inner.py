"""Build the inner weighted-mean Flower strategy from config."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError

__all__ = ["WEIGHTED_MEAN_STRATEGIES", "build_inner_strategy"]

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
