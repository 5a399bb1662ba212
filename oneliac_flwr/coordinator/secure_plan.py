"""Parameter choices of a secure-sum round, shared by the Flower adapter and the REST service.

Both transports run the same protocol with the same ring, threshold and sharing graph:
they call these functions (transport-free, no Flower or HTTP import).
"""

from __future__ import annotations

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.coordinator.privacy_guard import (
    SHARE_FAILURE_PROBABILITY,
    distributed_noise_multiplier,
    distributed_share_std,
)
from oneliac_flwr.masked_statistics import slots
from oneliac_flwr.privacy import share_bound
from oneliac_flwr.secure import RingSpec, plan_ring
from oneliac_flwr.secure.graph import GraphPlan, plan_graph

__all__ = ["graph_for", "participants_source", "ring_for", "secure_ring", "statistics_slots_for", "threshold_for"]


def ring_for(config: ExperimentConfig) -> RingSpec:
    """The ring the run uses, from ``secure_sum.*`` (refused at start-up if impossible).

    It is sized for :meth:`ExperimentConfig.secure_sum_participants` organizations.

    Raises
    ------
    ConfigError
        If no ring fits; the message names ``secure_sum.max_participants`` and the numbers.
    """
    settings = config.secure_sum
    n = config.secure_sum_participants()
    try:
        return plan_ring(
            clip_bound=settings.clip_norm,
            weight_bound=settings.weight_bound,
            max_participants=n,
            bits=settings.bits,
            frac_bits=settings.frac_bits,
        )
    except ConfigError as exc:
        raise ConfigError("secure_sum.max_participants", f"{participants_source(config)}: {exc}") from exc


def secure_ring(config: ExperimentConfig, *, dimension: int) -> RingSpec:
    """The secure-sum ring; under distributed DP it also fits every client's noise share.

    Distributed noise shares are added after clipping, so a coordinate may exceed the
    clip norm: the ring's coordinate bound is then the shares' high-probability bound
    (:func:`oneliac_flwr.privacy.share_bound`), and every update weighs 1.
    """
    budget = config.privacy_budget
    if not (budget.mode == "organization" and budget.noise_placement == "distributed"):
        return ring_for(config)
    settings = config.secure_sum
    frac_bits = settings.frac_bits if settings.frac_bits is not None else 16
    std = distributed_share_std(
        config, noise_multiplier=distributed_noise_multiplier(config, dimension=dimension, frac_bits=frac_bits)
    )
    bound = share_bound(
        clip_norm=budget.clip_norm,
        noise_std=std,
        dimension=dimension,
        fractional_bits=frac_bits,
        failure_probability=SHARE_FAILURE_PROBABILITY,
    )
    return plan_ring(
        clip_bound=bound,
        weight_bound=1,
        max_participants=config.secure_sum_participants(),
        bits=settings.bits,
        frac_bits=frac_bits,
    )


def participants_source(config: ExperimentConfig) -> str:
    """Where the ring's participant bound comes from, for messages."""
    n = config.secure_sum_participants()
    if config.secure_sum.max_participants is None:
        return f"a ring for {n} participants (null: federation.num_organizations = {config.federation.num_organizations})"
    return f"a ring for {n} participants (secure_sum.max_participants)"


def threshold_for(num_participants: int, min_participants: int) -> int:
    """Shamir threshold: a strict majority of the round, never below ``min_participants``."""
    return min(num_participants, max(min_participants, num_participants // 2 + 1, 2))


def graph_for(config: ExperimentConfig, num_participants: int) -> GraphPlan:
    """The round's sharing graph and sharing threshold (``docs/secure-sum.md`` section 12).

    Malicious mode always uses the complete graph; otherwise ``secure_sum.graph`` decides.
    """
    settings, floor = config.secure_sum, config.aggregation_config.min_participants
    t = threshold_for(num_participants, floor)
    if settings.mode == "malicious":
        return GraphPlan(0, t)
    return plan_graph(
        num_participants, complete_threshold=t, graph=settings.graph, colluding_fraction=settings.colluding_fraction,
        dropout_fraction=settings.dropout_fraction, min_threshold=max(floor, 2),
    )  # fmt: skip


def statistics_slots_for(config: ExperimentConfig) -> int:
    """Coordinates of masked statistics appended to each update (0 under DP: none are sent)."""
    return slots(config.dataset.num_classes) if config.privacy_budget.mode == "none" else 0
