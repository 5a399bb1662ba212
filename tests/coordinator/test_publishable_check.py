"""The secure-sum aggregate under central DP noise: the coordinator holds the un-noised sum
until it adds the noise, so nothing it publishes, and nothing it decides (a round's status),
may depend on that sum; the bound is enforced by projecting the mean, not by a check."""

from __future__ import annotations

import numpy as np
import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator import RoundCore
from oneliac_flwr.coordinator.aggregate import project_onto_ball, publishable_check, secure_sum_aggregate
from oneliac_flwr.coordinator.privacy_guard import LedgerGuard
from oneliac_flwr.errors import ConfigError, PrivacyError
from oneliac_flwr.validation import aggregate_norm_bound

COUNTED = [1, 2, 3]
DIMENSION = 8
FRAC_BITS = 16
CLIP = 1.0


def outcome(mean_norm: float, *, central_noise: bool):  # noqa: ANN201
    """The unmasked sum of three updates whose mean has L2 norm ``mean_norm``."""
    base = [np.zeros(DIMENSION, np.float32)]
    flat = np.full(DIMENSION, len(COUNTED) * mean_norm / np.sqrt(DIMENSION))
    return secure_sum_aggregate(flat, counted=COUNTED, global_arrays=base, statistics_slots=0, clip_bound=CLIP,
                                frac_bits=FRAC_BITS, noise_std=0.0, central_noise=central_noise)  # fmt: skip


def radius() -> float:
    """The bound the aggregate check enforces for this ring (clip bound, rounding, no noise)."""
    return aggregate_norm_bound(dimension=DIMENSION, total_weight=len(COUNTED), clip_norm=CLIP,
                                rounding_error=len(COUNTED) * 2.0**-FRAC_BITS / 2)  # fmt: skip


def central_guard() -> LedgerGuard:
    config = ExperimentConfig.from_dict({
        "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": 3, "max_rounds": 5},
        "privacy_budget": {"mode": "organization", "noise_placement": "central", "epsilon": 50.0, "delta": 1e-5,
                           "noise_multiplier": 1.0, "clip_norm": CLIP},
    })  # fmt: skip
    return LedgerGuard(config, dimension=DIMENSION, frac_bits=FRAC_BITS, round_offset=0)


def _mean(averaged, metrics):  # noqa: ANN001, ANN202
    return averaged, metrics


def test_attack_a_sum_at_the_bound_gives_the_same_status_and_check_inside_or_outside() -> None:
    """A hospital shapes its masked input so that the sum sits at the bound: whether the
    others' updates push it just inside or just outside must not show. Both rounds complete
    with the same published check; the outside mean is projected onto the bound."""
    r = radius()
    inside, outside = outcome(r * (1 - 1e-6), central_noise=True), outcome(r * (1 + 1e-6), central_noise=True)
    published = [publishable_check(o, unnoised=True) for o in (inside, outside)]
    assert published[0] == published[1]
    check, failure = published[0]
    assert failure is None and check["passed"] is True and check["details"]["enforced_by"] == "projection"
    assert check["details"]["bound"] == pytest.approx(r, rel=1e-12)
    assert "mean_l2_norm" not in check["details"]
    norms = [float(np.linalg.norm(o.aggregate.mean_update[0])) for o in (inside, outside)]
    assert norms[0] == pytest.approx(r * (1 - 1e-6), rel=1e-12)  # inside: unchanged
    assert norms[1] == pytest.approx(r, rel=1e-12)  # outside: projected onto the bound
    # the rounds themselves: noised by the core guard, same status, the release recorded once each
    statuses = []
    for number, o in enumerate((inside, outside), start=1):
        guard = central_guard()
        core = RoundCore(min_participants=3, server_update=lambda _r, _g, averaged, metrics, _w: _mean(averaged, metrics),
                         rng=np.random.default_rng(number), privacy=guard)  # fmt: skip
        statuses.append(core.complete(number, o.aggregate, [np.zeros(DIMENSION, np.float32)]).status)
        assert guard.recorded(number)
    assert statuses == ["ok", "ok"]


@pytest.mark.parametrize("factor", [1 + 1e-6, 30.0])
def test_without_central_noise_an_out_of_bound_sum_still_fails_the_round(factor: float) -> None:
    """No DP (or distributed noise): the check runs on the sum as before, with its numbers."""
    result = outcome(radius() * factor, central_noise=False)
    check, failure = publishable_check(result, unnoised=False)
    assert check["passed"] is False and failure is not None and "aggregate_bounds_check" in failure
    assert check["details"]["mean_l2_norm"] == pytest.approx(radius() * factor)
    assert result.aggregate.mean_update == []
    assert publishable_check(outcome(radius() * 0.5, central_noise=False), unnoised=False)[1] is None


def test_a_check_run_on_the_unnoised_sum_is_never_published_under_central_noise() -> None:
    with pytest.raises(PrivacyError, match="central_noise=True"):
        publishable_check(outcome(0.5, central_noise=False), unnoised=True)


def test_statistics_are_refused_under_central_noise() -> None:
    with pytest.raises(ConfigError, match="statistics_slots"):
        secure_sum_aggregate(np.zeros(12), counted=COUNTED, global_arrays=[np.zeros(DIMENSION, np.float32)],
                             statistics_slots=4, clip_bound=CLIP, frac_bits=FRAC_BITS, noise_std=0.0,
                             central_noise=True)  # fmt: skip


def test_the_projection_is_the_identity_inside_and_one_lipschitz() -> None:
    rng = np.random.default_rng(7)
    inside = rng.standard_normal(DIMENSION)
    inside *= 0.9 / np.linalg.norm(inside)
    assert np.array_equal(project_onto_ball(inside, radius=1.0), inside)
    assert np.array_equal(project_onto_ball(np.zeros(3), radius=1.0), np.zeros(3))
    for _ in range(200):
        a, b = rng.standard_normal(DIMENSION) * rng.uniform(0, 3), rng.standard_normal(DIMENSION) * rng.uniform(0, 3)
        pa, pb = project_onto_ball(a, radius=1.0), project_onto_ball(b, radius=1.0)
        assert np.linalg.norm(pa) <= 1.0 + 1e-12
        assert np.linalg.norm(pa - pb) <= np.linalg.norm(a - b) + 1e-12


def test_the_flower_strategy_marks_central_noise_over_secure_sum_as_unnoised() -> None:
    from oneliac_flwr.flower.components import build_strategy

    def strategy(placement: str):  # noqa: ANN202
        config = ExperimentConfig.from_dict({
            "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": 3, "max_rounds": 2},
            "privacy_budget": {"mode": "organization", "noise_placement": placement, "epsilon": 8.0, "delta": 1e-5,
                               "noise_multiplier": 1.0, "clip_norm": 1.0},
        })  # fmt: skip
        return build_strategy(config, rng=np.random.default_rng(0), run_id=1, state_dir=None)

    assert strategy("central").aggregator.unnoised is True
    assert strategy("distributed").aggregator.unnoised is False
