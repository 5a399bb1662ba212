"""Start-up budget plan: noise, rounds afforded, drowned verdict, advice, refusal."""

from __future__ import annotations

import math

import pytest

from oneliac_flwr.privacy import budget_plan, rounds_epsilon
from oneliac_flwr.privacy.plan import DROWNED_THRESHOLD

DELTA = 1e-5
COMMON = {"delta": DELTA, "rounds": 10, "num_organizations": 5, "clip_norm": 1.0}


def test_organization_mode_at_epsilon_1_is_drowned_and_says_what_would_work() -> None:
    plan = budget_plan(epsilon=1.0, mode="organization", **COMMON)
    assert plan.noise_multiplier == pytest.approx(11.797, rel=1e-3)
    assert rounds_epsilon(noise_multiplier=plan.noise_multiplier, rounds=10, delta=DELTA) <= 1.0
    assert plan.rounds_afforded == 10
    assert plan.relative_noise == pytest.approx(plan.noise_multiplier / 5)  # z / n
    assert plan.noise_std == pytest.approx(plan.relative_noise * 1.0)
    assert plan.drowned is True
    assert plan.refusal is None
    assert "DROWNED" in plan.advice
    assert ">= 12 organizations" in plan.advice  # ceil(11.8 / 1)
    assert "z <= 5" in plan.advice
    assert "epsilon >= 2.6 for 10 rounds" in plan.advice
    assert "at most 1 round(s) at epsilon=1" in plan.advice
    # The advice is right: with 12 organizations the same z is workable...
    assert not budget_plan(epsilon=1.0, mode="organization", **{**COMMON, "num_organizations": 12}).drowned
    # ...and so is epsilon 2.6 with 5 (2.59 is not: the advice rounds up).
    assert not budget_plan(epsilon=2.6, mode="organization", **COMMON).drowned
    assert budget_plan(epsilon=2.59, mode="organization", **COMMON).drowned


def test_organization_mode_at_epsilon_8_is_workable() -> None:
    plan = budget_plan(epsilon=8.0, mode="organization", **COMMON)
    assert plan.noise_multiplier == pytest.approx(1.898, rel=1e-3)
    assert plan.relative_noise == pytest.approx(0.3796, rel=1e-3)
    assert plan.drowned is False
    assert plan.relative_noise <= DROWNED_THRESHOLD
    assert "workable" in plan.advice


def test_fixed_noise_multiplier_that_affords_no_round_is_refused() -> None:
    plan = budget_plan(epsilon=0.1, mode="organization", noise_multiplier=2.0, **COMMON)
    assert plan.rounds_afforded == 0
    assert plan.refusal is not None
    assert plan.refusal.startswith("privacy_budget.noise_multiplier: z=2 affords no round at epsilon=0.1")


def test_fixed_noise_multiplier_reports_the_rounds_it_affords() -> None:
    plan = budget_plan(epsilon=1.0, mode="organization", noise_multiplier=5.0, **COMMON)
    assert 1 <= plan.rounds_afforded < 10
    assert rounds_epsilon(noise_multiplier=5.0, rounds=plan.rounds_afforded, delta=DELTA) <= 1.0
    assert rounds_epsilon(noise_multiplier=5.0, rounds=plan.rounds_afforded + 1, delta=DELTA) > 1.0
    assert plan.refusal is None
    assert plan.relative_noise == pytest.approx(1.0)
    assert plan.drowned is False  # exactly at the threshold is workable


def test_laplace_release_mode() -> None:
    plan = budget_plan(epsilon=1.0, mode="release", mechanism="laplace", **COMMON)
    assert plan.noise_multiplier == pytest.approx(10.0)  # scale per unit L1: rounds / epsilon
    assert plan.relative_noise == pytest.approx(math.sqrt(2) * 10 / math.sqrt(5))
    assert plan.drowned is True
    assert ">= 201 organizations" in plan.advice  # (sqrt(2) * 10)**2 = 200, rounded up past float error


def test_sample_mode_at_epsilon_0_1() -> None:
    plan = budget_plan(
        epsilon=0.1, mode="sample", sample_rate=32 / 120, batch_size=32, steps_per_round=4, **COMMON
    )
    assert plan.noise_multiplier == pytest.approx(52.04, rel=1e-3)
    assert plan.relative_noise == pytest.approx(plan.noise_multiplier / (32 * math.sqrt(5)))
    assert plan.drowned is False


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="mechanism: 'laplace' is only valid in 'release' mode"):
        budget_plan(epsilon=1.0, mode="organization", mechanism="laplace", **COMMON)
    with pytest.raises(ValueError, match="mode: must be one of"):
        budget_plan(epsilon=1.0, mode="central", **COMMON)
    with pytest.raises(ValueError, match="sample_rate: and batch_size are required"):
        budget_plan(epsilon=1.0, mode="sample", **COMMON)
