"""check_aggregate / aggregate_bounds_check: what the coordinator can check under secure sum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.validation import (
    Submission,
    ValidationPolicy,
    aggregate_norm_bound,
    check_aggregate,
    get_check,
    validate_submission,
)


def clipped_updates(rng: np.random.Generator, n: int, d: int, clip: float) -> np.ndarray:
    """``n`` random updates of dimension ``d``, each clipped to norm ``clip``."""
    raw = rng.normal(scale=3.0, size=(n, d))
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    return raw * np.minimum(1.0, clip / norms)


def test_bound_formula() -> None:
    bound = aggregate_norm_bound(
        dimension=100,
        total_weight=50.0,
        clip_norm=2.0,
        noise_std=3.0,
        norm_tolerance=0.1,
        rounding_error=0.5,
        false_alarm_probability=math.exp(-8.0),  # sqrt(2 ln(1/alpha)) = 4
    )
    assert bound == pytest.approx(2.0 * 1.1 + (3.0 * (10.0 + 4.0) + 0.5 * 10.0) / 50.0)


def test_honest_weighted_sum_passes() -> None:
    rng = np.random.default_rng(0)
    updates = clipped_updates(rng, n=5, d=40, clip=1.0)
    weights = np.array([10.0, 200.0, 35.0, 1.0, 80.0])
    weighted_sum = (weights[:, None] * updates).sum(axis=0)
    result = check_aggregate(
        [weighted_sum[:30], weighted_sum[30:].reshape(2, 5)],
        total_weight=weights.sum(),
        n_participants=5,
        clip_norm=1.0,
    )
    assert result.passed, result.reason
    assert result.check == "aggregate_bounds_check"
    assert result.details["dimension"] == 40
    assert result.details["n_participants"] == 5
    assert result.details["mean_l2_norm"] <= 1.0


def test_one_unclipped_update_that_dominates_fails() -> None:
    rng = np.random.default_rng(1)
    updates = clipped_updates(rng, n=4, d=20, clip=1.0)
    updates[0] *= 50.0  # a client that skipped clipping
    result = check_aggregate(updates.sum(axis=0), total_weight=4.0, n_participants=4, clip_norm=1.0)
    assert not result.passed
    assert "exceeds the bound" in result.reason
    assert result.details["mean_l2_norm"] > result.details["bound"]


def test_mean_exactly_at_bound_passes_and_just_above_fails() -> None:
    bound = 1.0 * (1 + 0.01)  # d = 1, no noise, no rounding
    at = check_aggregate(np.array([4.0 * bound]), total_weight=4.0, n_participants=2, clip_norm=1.0)
    above = check_aggregate(
        np.array([4.0 * np.nextafter(bound, 2.0)]), total_weight=4.0, n_participants=2, clip_norm=1.0
    )
    assert at.details["bound"] == bound
    assert at.passed, at.reason
    assert not above.passed


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8), d=st.integers(1, 300), z=st.floats(0.1, 5.0))
def test_honest_noisy_aggregates_pass(seed: int, n: int, d: int, z: float) -> None:
    rng = np.random.default_rng(seed)
    clip = 0.5
    noise_std = z * clip
    noisy_sum = clipped_updates(rng, n, d, clip).sum(axis=0) + rng.normal(scale=noise_std, size=d)
    result = check_aggregate(noisy_sum, total_weight=n, n_participants=n, clip_norm=clip, noise_std=noise_std)
    assert result.passed, result.reason


def test_noise_allowance_is_needed_for_noisy_sums() -> None:
    rng = np.random.default_rng(2)
    noisy_sum = clipped_updates(rng, 3, 500, 1.0).sum(axis=0) + rng.normal(scale=2.0, size=500)
    assert not check_aggregate(noisy_sum, total_weight=3, n_participants=3, clip_norm=1.0).passed
    assert check_aggregate(noisy_sum, total_weight=3, n_participants=3, clip_norm=1.0, noise_std=2.0).passed


def test_quantization_allowance_scales_with_participants() -> None:
    d = 16
    base = aggregate_norm_bound(dimension=d, total_weight=8.0, clip_norm=1.0)
    result = check_aggregate(
        np.zeros(d), total_weight=8.0, n_participants=4, clip_norm=1.0, quantization_step=0.01
    )
    assert result.details["bound"] == pytest.approx(base + 4 * 0.005 * 4.0 / 8.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_aggregate_fails(bad: float) -> None:
    weighted_sum = [np.zeros(3), np.array([0.0, bad])]
    result = check_aggregate(weighted_sum, total_weight=2.0, n_participants=2, clip_norm=1.0)
    assert not result.passed
    assert result.details["non_finite_count"] == 1
    assert result.details["non_finite_first"] == [[1, 1]]
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("weighted_sum", [np.zeros(0), [], [np.zeros((0, 3))]])
def test_empty_aggregate_fails(weighted_sum) -> None:
    result = check_aggregate(weighted_sum, total_weight=1.0, n_participants=1, clip_norm=1.0)
    assert not result.passed


@pytest.mark.parametrize(
    ("settings_", "field"),
    [
        ({"total_weight": 0.0}, "aggregate.total_weight"),
        ({"n_participants": 0}, "aggregate.n_participants"),
        ({"clip_norm": -1.0}, "aggregate.clip_norm"),
        ({"noise_std": -0.1}, "aggregate.noise_std"),
        ({"norm_tolerance": math.nan}, "aggregate.norm_tolerance"),
        ({"quantization_step": -1e-3}, "aggregate.quantization_step"),
        ({"false_alarm_probability": 1.0}, "aggregate.false_alarm_probability"),
    ],
)
def test_bad_parameters_raise_config_error(settings_: dict, field: str) -> None:
    arguments = {"total_weight": 1.0, "n_participants": 1, "clip_norm": 1.0} | settings_
    with pytest.raises(ConfigError) as info:
        check_aggregate(np.zeros(3), **arguments)
    assert info.value.field == field


def test_registered_form_uses_the_policy() -> None:
    check = get_check("aggregate_bounds_check")
    rng = np.random.default_rng(3)
    policy = ValidationPolicy(max_l2_norm=1.0, noise_multiplier=1.5)
    noisy_sum = clipped_updates(rng, 4, 200, 1.0).sum(axis=0) + rng.normal(scale=1.5, size=200)
    assert check(Submission(arrays=[noisy_sum], num_examples=4), policy).passed
    without_noise = ValidationPolicy(max_l2_norm=1.0)
    assert not check(Submission(arrays=[noisy_sum], num_examples=4), without_noise).passed
    report = validate_submission(
        Submission(arrays=[noisy_sum * 40], num_examples=4), policy=policy, checks=("aggregate_bounds_check",)
    )
    assert not report.passed
    assert report.reasons()[0].startswith("aggregate_bounds_check: L2 norm of the weighted mean")


@pytest.mark.parametrize("total", [0, -3, 2.5, None])
def test_registered_form_fails_on_bad_total_weight(total: object) -> None:
    check = get_check("aggregate_bounds_check")
    submission = Submission(arrays=[np.zeros(2)], num_examples=total)  # type: ignore[arg-type]
    result = check(submission, ValidationPolicy(max_l2_norm=1.0))
    assert not result.passed
    assert result.reason.startswith("num_examples (total weight)")
