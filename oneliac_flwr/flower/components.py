"""Assemble a run's parts from config: model, inner strategy, aggregator, checks, privacy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data import num_features
from oneliac_flwr.flower.checks import ServerValidator
from oneliac_flwr.flower.inner import build_inner_strategy
from oneliac_flwr.flower.plain import PlainAggregator
from oneliac_flwr.flower.strategy import OneliacStrategy
from oneliac_flwr.models import build_model
from oneliac_flwr.results import RoundRecord

__all__ = ["build_strategy", "new_model"]


def new_model(config: ExperimentConfig) -> torch.nn.Module:
    """The run's model with its seeded initial weights (the same on every party)."""
    return build_model(
        config.model.name,
        num_features=num_features(config),
        num_classes=config.dataset.num_classes,
        hidden_sizes=config.model.hidden_sizes,
        generator=torch.Generator().manual_seed(config.seed),
    )


def build_strategy(
    config: ExperimentConfig,
    *,
    rng: np.random.Generator,
    on_round_end: Callable[[RoundRecord], None] | None = None,
) -> OneliacStrategy:
    """The wrapped strategy a run uses, as the config describes it."""
    return OneliacStrategy(
        build_inner_strategy(config),
        aggregator=PlainAggregator(),
        validator=ServerValidator(config),
        min_participants=config.aggregation_config.min_participants,
        rng=rng,
        on_round_end=on_round_end,
    )
