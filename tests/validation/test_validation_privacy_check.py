"""privacy_check: sample count plausible; declared DP parameters match the policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from oneliac_flwr.validation import DeclaredPrivacy, ValidationPolicy, privacy_check

def declared(**changes: object) -> DeclaredPrivacy:
    fields = {"clip_norm": 1.0, "noise_multiplier": 0.8, "mechanism": "gaussian", "epsilon_spent": 2.0}
    fields.update(changes)
    return DeclaredPrivacy(**fields)  # type: ignore[arg-type]


def test_matching_declaration_passes(make_submission, policy) -> None:
    result = privacy_check(make_submission(), policy)
    assert result.passed, result.reason
    assert result.check == "privacy_check"
    assert result.details["num_examples"] == 100


@pytest.mark.parametrize("count", [0, -5])
def test_non_positive_num_examples_fails(make_submission, policy, count: int) -> None:
    result = privacy_check(make_submission(num_examples=count), policy)
    assert not result.passed
    assert result.reason == f"num_examples: expected > 0, got {count}"


@pytest.mark.parametrize("count", [10.0, True, "10", None])
def test_non_integer_num_examples_fails(make_submission, policy, count: object) -> None:
    result = privacy_check(make_submission(num_examples=count), policy)
    assert not result.passed
    assert result.reason.startswith("num_examples: expected an integer")
    json.dumps(result.to_dict(), allow_nan=False)


def test_numpy_integer_num_examples_is_accepted(make_submission, policy) -> None:
    assert privacy_check(make_submission(num_examples=np.int64(7)), policy).passed


def test_num_examples_at_max_passes_and_above_fails(make_submission, policy) -> None:
    assert privacy_check(make_submission(num_examples=1000), policy).passed
    result = privacy_check(make_submission(num_examples=1001), policy)
    assert not result.passed
    assert result.details["max_num_examples"] == 1000
    assert "exceeds max_num_examples 1000" in result.reason


def test_missing_declaration_fails_when_policy_requires_dp(make_submission, policy) -> None:
    result = privacy_check(make_submission(declared=None), policy)
    assert not result.passed
    assert result.reason == "no privacy declaration; the policy requires one"


def test_declaration_of_wrong_type_fails(make_submission, policy) -> None:
    result = privacy_check(make_submission(declared={"clip_norm": 1.0}), policy)
    assert not result.passed
    assert "expected DeclaredPrivacy, got dict" in result.reason


def test_no_declaration_needed_when_policy_sets_no_dp(make_submission) -> None:
    result = privacy_check(make_submission(declared=None), ValidationPolicy(max_num_examples=500))
    assert result.passed, result.reason


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"clip_norm": 0.5}, "clip_norm"),
        ({"clip_norm": None}, "clip_norm"),
        ({"clip_norm": math.nan}, "clip_norm"),
        ({"clip_norm": "1.0"}, "clip_norm"),
        ({"noise_multiplier": 0.7}, "noise_multiplier"),
        ({"noise_multiplier": None}, "noise_multiplier"),
        ({"mechanism": "laplace"}, "mechanism"),
        ({"mechanism": None}, "mechanism"),
    ],
)
def test_declared_mismatch_fails_naming_the_field(make_submission, policy, change: dict, field: str) -> None:
    result = privacy_check(make_submission(declared=declared(**change)), policy)
    assert not result.passed
    assert f"declared {field}" in result.reason
    assert f"expected_{field}" in result.details
    json.dumps(result.to_dict(), allow_nan=False)


def test_float_compare_is_tight(make_submission, policy) -> None:
    within = declared(clip_norm=1.0 * (1 + 5e-7), noise_multiplier=float(np.float32(0.8)))
    outside = declared(clip_norm=1.0 * (1 + 5e-6))
    assert privacy_check(make_submission(declared=within), policy).passed
    assert not privacy_check(make_submission(declared=outside), policy).passed


def test_zero_noise_multiplier_must_be_exactly_zero(make_submission) -> None:
    policy = ValidationPolicy(noise_multiplier=0.0)
    assert privacy_check(make_submission(declared=declared(noise_multiplier=0.0)), policy).passed
    assert not privacy_check(make_submission(declared=declared(noise_multiplier=1e-12)), policy).passed


def test_mechanism_compare_ignores_case_and_spaces(make_submission, policy) -> None:
    assert privacy_check(make_submission(declared=declared(mechanism=" Gaussian")), policy).passed


def test_epsilon_at_budget_passes_and_above_fails(make_submission, policy) -> None:
    assert privacy_check(make_submission(declared=declared(epsilon_spent=5.0)), policy).passed
    result = privacy_check(make_submission(declared=declared(epsilon_spent=np.nextafter(5.0, 6.0))), policy)
    assert not result.passed
    assert result.details["epsilon_budget"] == 5.0
    assert "epsilon_spent" in result.reason


@pytest.mark.parametrize("spent", [None, math.nan, -0.1, math.inf])
def test_implausible_epsilon_spent_fails(make_submission, policy, spent: object) -> None:
    result = privacy_check(make_submission(declared=declared(epsilon_spent=spent)), policy)
    assert not result.passed
    assert "declared_epsilon_spent" in result.details
    json.dumps(result.to_dict(), allow_nan=False)


def test_fields_the_policy_does_not_set_are_not_checked(make_submission) -> None:
    policy = ValidationPolicy(clip_norm=1.0)
    odd = DeclaredPrivacy(clip_norm=1.0, noise_multiplier=-3.0, mechanism="anything", epsilon_spent=1e9)
    assert privacy_check(make_submission(declared=odd), policy).passed


def test_all_problems_are_reported_together(make_submission, policy) -> None:
    submission = make_submission(num_examples=0, declared=declared(clip_norm=2.0, mechanism="laplace"))
    result = privacy_check(submission, policy)
    assert result.reason.count(";") == 2
