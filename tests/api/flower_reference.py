"""The Flower path's privacy guard on a configuration a REST coordinator publishes: the
reference the REST tests (``tests/api``, ``tests/sdk``) compare the REST ledger with."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator import Aggregate

PREFIX = "/api/v1/federated"
_T = TypeVar("_T")
PUBLISHED = ("federation", "dataset", "model", "training", "aggregation_config", "secure_sum", "privacy_budget", "validation")


def organization_dp(published: dict[str, Any], *, placement: str, participants: int, max_rounds: int, z: float, delta: float,
                    clip: float, epsilon: float = 10.0, max_participants: int = 6) -> dict[str, Any]:  # fmt: skip
    """``published`` (``GET /config``) turned into an organization-level DP secure-sum federation."""
    out = copy.deepcopy(published)
    out["aggregation_config"] |= {"aggregation_method": "secure_sum", "min_participants": participants, "max_rounds": max_rounds}
    out["secure_sum"] |= {"max_participants": max_participants}
    out["federation"] |= {"num_organizations": participants}
    out["privacy_budget"] |= {"mode": "organization", "noise_placement": placement, "noise_multiplier": z, "delta": delta,
                              "clip_norm": clip, "mechanism": "gaussian", "epsilon": epsilon}  # fmt: skip
    return out


def rest_overrides(*, placement: str, participants: int, max_rounds: int, z: float, delta: float, clip: float,
                   epsilon: float, max_participants: int = 6) -> list[str]:  # fmt: skip
    """The coordinator's command-line overrides of the same federation as :func:`organization_dp`."""
    return ["aggregation_config.aggregation_method=secure_sum", f"secure_sum.max_participants={max_participants}",
            f"aggregation_config.min_participants={participants}", f"aggregation_config.max_rounds={max_rounds}",
            "aggregation_config.timeout_minutes=1", "privacy_budget.mode=organization",
            f"privacy_budget.noise_placement={placement}", f"privacy_budget.noise_multiplier={z}",
            f"privacy_budget.delta={delta}", f"privacy_budget.clip_norm={clip}", "privacy_budget.mechanism=gaussian",
            f"privacy_budget.epsilon={epsilon}"]  # fmt: skip


def afforded_budget(published: dict[str, Any], *, placement: str, participants: int, max_rounds: int, z: float,
                    delta: float, clip: float, afforded: int) -> float:  # fmt: skip
    """An epsilon that affords ``afforded`` rounds of this federation and not one more (Flower guard)."""
    reference = organization_dp(published, placement=placement, participants=participants, max_rounds=max_rounds, z=z,
                                delta=delta, clip=clip)  # fmt: skip
    epsilons = flower_epsilons(reference, afforded + 1, participants=participants)
    if not epsilons[-1] > epsilons[-2] * 1.1:
        raise ValueError(f"rounds {afforded} and {afforded + 1} cost nearly the same: {epsilons[-2:]}")
    return epsilons[-2] * 1.05


def flower_guard(published: dict[str, Any]):  # noqa: ANN201 - the Flower path's LedgerGuard
    """The guard the Flower path builds (``build_strategy``) for the published configuration."""
    from oneliac_flwr.flower.components import build_strategy

    config = ExperimentConfig.from_dict({group: published[group] for group in PUBLISHED})
    return build_strategy(config, rng=np.random.default_rng(0), run_id=1, state_dir=None).privacy


def flower_epsilons(published: dict[str, Any], rounds: int, *, participants: int) -> list[float]:
    """The Flower path's cumulative epsilon after each of ``rounds`` rounds of ``participants``."""
    guard = flower_guard(published)
    out = []
    for r in range(1, rounds + 1):
        if guard.distributed:
            guard.on_reveal(r, participants)  # recorded when the sum of shares is unmasked
        else:
            zeros = Aggregate(mean_update=[np.zeros(1)], total_weight=participants, counted=list(range(participants)), metrics={})
            guard.privatize(r, zeros, np.random.default_rng(0))  # recorded when noised
        out.append(guard.ledger.get_current_epsilon())
    return out


def dp_secure_federation(start_service, register: Callable[[Any], _T], *, placement: str, participants: int,  # noqa: ANN001
                         max_rounds: int, afforded: int, z: float, delta: float, clip: float) -> tuple[Any, _T]:  # fmt: skip
    """Register the organizations (``register(service)``) before any round can open, then serve
    an organization-DP secure-sum federation on the same database whose budget affords
    ``afforded`` rounds and not one more (:func:`afforded_budget`)."""
    setup = start_service(extra=["aggregation_config.min_participants=100", "federation.num_organizations=100"])
    registered = register(setup)
    with setup.client() as admin:
        published = admin.get(f"{PREFIX}/config").json()
    setup.stop()
    shape = {"placement": placement, "participants": participants, "max_rounds": max_rounds, "z": z, "delta": delta, "clip": clip}
    epsilon = afforded_budget(published, afforded=afforded, **shape)
    return start_service(extra=rest_overrides(epsilon=epsilon, **shape)), registered
