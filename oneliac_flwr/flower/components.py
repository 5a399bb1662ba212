"""Assemble a run's parts from config: model, inner strategy, aggregator, checks, privacy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.checks import ServerValidator
from oneliac_flwr.flower.inner import build_inner_strategy
from oneliac_flwr.flower.plain import PlainAggregator
from oneliac_flwr.flower.privacy import LedgerGuard, build_privacy_guard, expected_declaration
from oneliac_flwr.flower.secure_sum import SecureSumAggregator
from oneliac_flwr.flower.strategy import OneliacStrategy
from oneliac_flwr.coordinator.secure_plan import secure_ring, statistics_slots_for
from oneliac_flwr.models import new_model
from oneliac_flwr.results import RoundRecord

__all__ = ["build_strategy", "new_model", "secure_ring"]


# Checks the coordinator can still run when it only sees metadata (secure sum).
METADATA_CHECKS = ("privacy_check", "metadata_check")


def build_strategy(
    config: ExperimentConfig,
    *,
    rng: np.random.Generator,
    run_id: int,
    on_round_end: Callable[[RoundRecord], None] | None = None,
    state_dir: Path | None = None,
) -> OneliacStrategy:
    """The wrapped strategy a run uses, as the config describes it.

    With ``aggregation_method: secure_sum`` the coordinator sees no individual update, so
    its per-submission checks are those on metadata only; per-update checks run on each
    client before masking, and the unmasked aggregate is checked against its bound.
    """
    num_parameters = sum(p.numel() for p in new_model(config).state_dict().values())
    expected = expected_declaration(config)
    uniform = config.privacy_budget.mode in ("organization", "release")
    aggregator: PlainAggregator | SecureSumAggregator
    frac_bits: int | None = None
    ring_bound: float | None = None
    if config.aggregation_config.aggregation_method == "secure_sum":
        spec = secure_ring(config, dimension=num_parameters)
        frac_bits, ring_bound = spec.frac_bits, spec.clip_bound
        slots = statistics_slots_for(config)
        aggregator = SecureSumAggregator(
            config, run_id=run_id, num_parameters=num_parameters, spec=spec, statistics_slots=slots
        )
        checks = tuple(c for c in config.validation.checks if c in METADATA_CHECKS)
        validator = ServerValidator(config, checks=checks, expected=expected) if checks else None
    else:
        aggregator = PlainAggregator(uniform_weights=uniform)
        validator = ServerValidator(config, expected=expected)
    privacy = build_privacy_guard(
        config, dimension=num_parameters, frac_bits=frac_bits, ring_bound=ring_bound, state_dir=state_dir
    )
    if isinstance(aggregator, SecureSumAggregator) and privacy is not None:
        aggregator.on_reveal = privacy.on_reveal
    if isinstance(aggregator, SecureSumAggregator) and isinstance(privacy, LedgerGuard):
        aggregator.unnoised = privacy.noises_centrally
    if isinstance(aggregator, SecureSumAggregator) and isinstance(privacy, LedgerGuard) and privacy.distributed:
        # the sum of at most max_participants shares: its noise std is at most this
        aggregator.noise_std = privacy.sum_noise_std
    return OneliacStrategy(
        build_inner_strategy(config),
        aggregator=aggregator,
        validator=validator,
        privacy=privacy,
        min_participants=config.aggregation_config.min_participants,
        rng=rng,
        on_round_end=on_round_end,
        # without DP the training reply carries the evaluation of the received model (one exchange less)
        evaluate_in_training=config.privacy_budget.mode == "none" and config.strategy.fraction_evaluate is None,
    )
