"""Flower adapters: the strategy wrapper, the ClientApp and the ServerApp."""

from oneliac_flwr.flower.clientapp import build_client_app
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.flower.inner import WEIGHTED_MEAN_STRATEGIES, build_inner_strategy
from oneliac_flwr.flower.plain import PlainAggregator
from oneliac_flwr.flower.serverapp import build_server_app, run_federation
from oneliac_flwr.flower.strategy import Aggregate, OneliacStrategy

__all__ = [
    "WEIGHTED_MEAN_STRATEGIES",
    "Aggregate",
    "OneliacStrategy",
    "PlainAggregator",
    "build_client_app",
    "build_inner_strategy",
    "build_server_app",
    "build_strategy",
    "new_model",
    "run_federation",
]
