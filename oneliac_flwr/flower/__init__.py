"""Flower adapters: the strategy wrapper, the ClientApp and the ServerApp.

The names below are imported on first use: each ``flwr-clientapp`` process of a real
deployment imports :mod:`oneliac_flwr.flower.clientapp` for every message, and must not
pay for the ServerApp's plotting and strategy modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_client_app": "oneliac_flwr.flower.clientapp",
    "build_strategy": "oneliac_flwr.flower.components",
    "new_model": "oneliac_flwr.flower.components",
    "WEIGHTED_MEAN_STRATEGIES": "oneliac_flwr.flower.inner",
    "build_inner_strategy": "oneliac_flwr.flower.inner",
    "PlainAggregator": "oneliac_flwr.flower.plain",
    "build_server_app": "oneliac_flwr.flower.serverapp",
    "run_federation": "oneliac_flwr.flower.serverapp",
    "Aggregate": "oneliac_flwr.flower.strategy",
    "OneliacStrategy": "oneliac_flwr.flower.strategy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
