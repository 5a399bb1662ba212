"""What a coordinator may keep of the aggregate check when the unmasked sum is not noised yet."""

from __future__ import annotations

import numpy as np
import pytest

from oneliac_flwr.coordinator.aggregate import UNNOISED_FAILURE, publishable_check, secure_sum_aggregate


def outcome(scale: float):  # noqa: ANN201
    base = [np.zeros(8, np.float32)]
    flat = np.full(8, scale / np.sqrt(8))  # the sum of three updates, norm `scale`
    return secure_sum_aggregate(flat, counted=[1, 2, 3], global_arrays=base, statistics_slots=0, clip_bound=1.0,
                                frac_bits=16, noise_std=0.0)  # fmt: skip


@pytest.mark.parametrize("scale", [1.5, 30.0])  # a mean inside the bound, and one far outside it
def test_central_noise_keeps_no_number_of_the_unnoised_sum(scale: float) -> None:
    result = outcome(scale)
    norm = scale / 3
    full, reason = publishable_check(result, unnoised=False)
    assert full["details"]["mean_l2_norm"] == pytest.approx(norm)  # without central noise: everything, as before
    assert (reason is None) == result.check.passed
    kept, failure = publishable_check(result, unnoised=True)
    assert kept == {"check": "aggregate_bounds_check", "passed": result.check.passed}
    assert failure == (None if result.check.passed else UNNOISED_FAILURE)
    assert f"{norm:.3}"[:4] not in (failure or "")


def test_the_flower_strategy_marks_central_noise_over_secure_sum_as_unnoised() -> None:
    from oneliac_flwr.config import ExperimentConfig
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
