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
from oneliac_flwr.flower.secure_sum import SecureSumAggregator
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


# Checks the coordinator can still run when it only sees metadata (secure sum).
METADATA_CHECKS = ("privacy_check", "metadata_check")


def build_strategy(
    config: ExperimentConfig,
    *,
    rng: np.random.Generator,
    run_id: int,
    on_round_end: Callable[[RoundRecord], None] | None = None,
) -> OneliacStrategy:
    """The wrapped strategy a run uses, as the config describes it.

    With ``aggregation_method: secure_sum`` the coordinator sees no individual update, so
    its per-submission checks are those on metadata only; per-update checks run on each
    client before masking, and the unmasked aggregate is checked against its bound.
    """
    aggregator: PlainAggregator | SecureSumAggregator
    if config.aggregation_config.aggregation_method == "secure_sum":
        num_parameters = sum(p.numel() for p in new_model(config).state_dict().values())
        aggregator = SecureSumAggregator(config, run_id=run_id, num_parameters=num_parameters)
        checks = tuple(c for c in config.validation.checks if c in METADATA_CHECKS)
        validator = ServerValidator(config, checks=checks) if checks else None
    else:
        aggregator = PlainAggregator()
        validator = ServerValidator(config)
    return OneliacStrategy(
        build_inner_strategy(config),
        aggregator=aggregator,
        validator=validator,
        min_participants=config.aggregation_config.min_participants,
        rng=rng,
        on_round_end=on_round_end,
    )
