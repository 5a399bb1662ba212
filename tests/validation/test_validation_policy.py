"""ValidationPolicy: normalisation, derived values, and validation of the policy itself."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.validation import ValidationPolicy


def test_defaults_check_nothing() -> None:
    policy = ValidationPolicy()
    assert policy.expected_num_arrays is None
    assert policy.norm_bound is None
    assert not policy.requires_dp
    assert policy.norm_tolerance == 0.01


def test_normalises_shapes_dtypes_numbers_and_mechanism() -> None:
    policy = ValidationPolicy(
        expected_shapes=[[2, 3], (4,)],
        expected_dtypes=["f4", np.float64],
        max_l2_norm=2,
        value_range=[-1, 1],
        mechanism=" Gaussian ",
    )
    assert policy.expected_shapes == ((2, 3), (4,))
    assert policy.expected_dtypes == ("float32", "float64")
    assert policy.max_l2_norm == 2.0 and isinstance(policy.max_l2_norm, float)
    assert policy.value_range == (-1.0, 1.0)
    assert policy.mechanism == "gaussian"
    assert policy.expected_num_arrays == 2


def test_norm_bound_is_clip_times_one_plus_tolerance() -> None:
    assert ValidationPolicy(max_l2_norm=2.0, norm_tolerance=0.5).norm_bound == 3.0
    assert ValidationPolicy(max_l2_norm=2.0, norm_tolerance=0).norm_bound == 2.0


@pytest.mark.parametrize("field", ["clip_norm", "noise_multiplier", "mechanism", "epsilon_budget"])
def test_any_privacy_expectation_requires_dp(field: str) -> None:
    value = "gaussian" if field == "mechanism" else 1.0
    assert ValidationPolicy(**{field: value}).requires_dp


def test_expected_num_arrays_from_dtypes_alone() -> None:
    assert ValidationPolicy(expected_dtypes=("float32",) * 3).expected_num_arrays == 3


def test_for_arrays_copies_shapes_and_dtypes() -> None:
    reference = [np.zeros((2, 2), dtype=np.float32), np.zeros(5, dtype=np.float64)]
    policy = ValidationPolicy.for_arrays(reference, max_l2_norm=3.0)
    assert policy.expected_shapes == ((2, 2), (5,))
    assert policy.expected_dtypes == ("float32", "float64")
    assert policy.max_l2_norm == 3.0


def test_policy_is_frozen() -> None:
    policy = ValidationPolicy(max_l2_norm=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_l2_norm = 2.0  # type: ignore[misc]


def test_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ValidationPolicy(((2,),))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"max_l2_norm": -1.0}, "max_l2_norm"),
        ({"max_l2_norm": 0.0}, "max_l2_norm"),
        ({"max_l2_norm": math.inf}, "max_l2_norm"),
        ({"max_l2_norm": math.nan}, "max_l2_norm"),
        ({"max_l2_norm": "1.0"}, "max_l2_norm"),
        ({"norm_tolerance": -0.01}, "norm_tolerance"),
        ({"norm_tolerance": None}, "norm_tolerance"),
        ({"value_range": (1.0, -1.0)}, "value_range"),
        ({"value_range": (0.0, math.nan)}, "value_range"),
        ({"value_range": (0.0,)}, "value_range"),
        ({"max_num_examples": 0}, "max_num_examples"),
        ({"max_num_examples": 10.5}, "max_num_examples"),
        ({"max_num_examples": True}, "max_num_examples"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"noise_multiplier": -0.1}, "noise_multiplier"),
        ({"epsilon_budget": 0.0}, "epsilon_budget"),
        ({"mechanism": ""}, "mechanism"),
        ({"mechanism": 3}, "mechanism"),
        ({"privacy_rel_tol": 1.0}, "privacy_rel_tol"),
        ({"privacy_rel_tol": -1e-9}, "privacy_rel_tol"),
        ({"expected_round": -1}, "expected_round"),
        ({"expected_model_version": ""}, "expected_model_version"),
        ({"expected_shapes": ((2, -1),)}, "expected_shapes[0]"),
        ({"expected_shapes": (3,)}, "expected_shapes[0]"),
        ({"expected_shapes": 3}, "expected_shapes"),
        ({"expected_dtypes": ("float32", "not-a-dtype")}, "expected_dtypes[1]"),
        ({"expected_dtypes": (None,)}, "expected_dtypes[0]"),
        ({"expected_dtypes": "float32"}, "expected_dtypes"),
        ({"expected_shapes": ((2,),), "expected_dtypes": ("float32", "float32")}, "expected_dtypes"),
    ],
)
def test_invalid_policy_raises_config_error_naming_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ValidationPolicy(**settings)
    assert info.value.field == f"validation_policy.{field}"
    assert str(info.value).startswith(f"validation_policy.{field}: expected")
