"""bounds_check: number, shapes and dtypes of arrays; L2 norm; value range."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from oneliac_flwr.validation import ValidationPolicy, bounds_check


def test_conforming_update_passes(make_submission, policy) -> None:
    result = bounds_check(make_submission(), policy)
    assert result.passed, result.reason
    assert result.check == "bounds_check"
    assert result.details["l2_norm"] == pytest.approx(math.sqrt(0.19), rel=1e-6)
    assert result.details["l2_bound"] == pytest.approx(1.01)
    assert result.details["out_of_range_count"] == 0


@pytest.mark.parametrize("count", [1, 3])
def test_wrong_number_of_arrays_fails(make_submission, policy, count: int) -> None:
    arrays = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32), np.zeros(1, np.float32)][:count]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert not result.passed
    assert f"expected 2 arrays, got {count}" in result.reason
    assert result.details["expected_num_arrays"] == 2
    assert result.details["num_arrays"] == count


def test_wrong_shape_fails_and_names_it(make_submission, policy) -> None:
    arrays = [np.zeros((3, 2), np.float32), np.zeros(3, np.float32)]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert not result.passed
    assert result.details["shape_mismatches"] == [[0, [3, 2], [2, 3]]]
    assert "array 0 has shape (3, 2), expected (2, 3)" in result.reason


def test_wrong_dtype_fails_and_names_it(make_submission, policy) -> None:
    arrays = [np.zeros((2, 3), np.float32), np.zeros(3, np.float64)]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert not result.passed
    assert result.details["dtype_mismatches"] == [[1, "float64", "float32"]]
    assert "array 1 is float64, expected float32" in result.reason


def test_norm_exactly_at_bound_passes_and_just_above_fails(make_submission) -> None:
    policy = ValidationPolicy(max_l2_norm=1.0, norm_tolerance=0.01)
    bound = 1.0 * (1 + 0.01)
    at = bounds_check(make_submission(arrays=[np.array([bound])]), policy)
    above = bounds_check(make_submission(arrays=[np.array([np.nextafter(bound, 2.0)])]), policy)
    assert at.passed, at.reason
    assert not above.passed
    assert "exceeds" in above.reason


def test_norm_is_flat_over_all_arrays(make_submission) -> None:
    policy = ValidationPolicy(max_l2_norm=5.0, norm_tolerance=0.0)
    # 3 and 4 in separate arrays: each is below 5, together exactly 5.
    assert bounds_check(make_submission(arrays=[np.array([3.0]), np.array([[4.0]])]), policy).passed
    result = bounds_check(make_submission(arrays=[np.array([3.0]), np.array([[4.0, 0.1]])]), policy)
    assert not result.passed
    assert result.details["l2_norm"] == pytest.approx(math.sqrt(25.01))


def test_tolerance_widens_the_bound(make_submission) -> None:
    arrays = [np.array([1.0, 0.1])]  # norm 1.00499
    assert bounds_check(make_submission(arrays=arrays), ValidationPolicy(max_l2_norm=1.0)).passed
    strict = ValidationPolicy(max_l2_norm=1.0, norm_tolerance=0.0)
    assert not bounds_check(make_submission(arrays=arrays), strict).passed
    heavier = [np.array([1.0, 0.15])]  # norm 1.01119 > 1.01
    assert not bounds_check(make_submission(arrays=heavier), ValidationPolicy(max_l2_norm=1.0)).passed


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_fails_without_crashing(make_submission, policy, bad: float) -> None:
    arrays = [np.zeros((2, 3), np.float32), np.array([0.0, bad, 0.0], np.float32)]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert not result.passed
    assert "L2 norm is not finite" in result.reason
    assert result.details["out_of_range_first"] == [[1, 1, str(float(bad))]]
    json.dumps(result.to_dict(), allow_nan=False)


def test_values_exactly_at_range_ends_pass(make_submission) -> None:
    policy = ValidationPolicy(value_range=(-0.5, 0.25))
    assert bounds_check(make_submission(arrays=[np.array([-0.5, 0.0, 0.25])]), policy).passed


def test_values_just_outside_range_fail_with_their_indices(make_submission) -> None:
    policy = ValidationPolicy(value_range=(-0.5, 0.25))
    arrays = [np.array([0.0, np.nextafter(0.25, 1.0)]), np.array([[0.0, np.nextafter(-0.5, -1.0)]])]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert not result.passed
    assert result.details["out_of_range_count"] == 2
    assert result.details["out_of_range_first"] == [[0, 1, np.nextafter(0.25, 1.0)], [1, 1, np.nextafter(-0.5, -1.0)]]


def test_out_of_range_lists_at_most_five(make_submission) -> None:
    result = bounds_check(make_submission(arrays=[np.full(9, 7.0)]), ValidationPolicy(value_range=(0.0, 1.0)))
    assert result.details["out_of_range_count"] == 9
    assert len(result.details["out_of_range_first"]) == 5


def test_complex_values_cannot_be_range_checked(make_submission) -> None:
    result = bounds_check(make_submission(arrays=[np.array([0.1 + 0j])]), ValidationPolicy(value_range=(0.0, 1.0)))
    assert not result.passed
    assert result.details["complex_arrays"] == [0]


def test_empty_list_fails(make_submission, policy) -> None:
    result = bounds_check(make_submission(arrays=[]), policy)
    assert not result.passed
    assert "no arrays submitted" in result.reason
    assert "expected 2 arrays, got 0" in result.reason


def test_zero_size_arrays_pass_when_expected(make_submission) -> None:
    policy = ValidationPolicy(expected_shapes=((0,), (2, 0)), max_l2_norm=1.0, value_range=(0.0, 1.0))
    arrays = [np.zeros((0,)), np.zeros((2, 0))]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert result.passed, result.reason
    assert result.details["l2_norm"] == 0.0


def test_zero_size_array_fails_when_a_shape_is_expected(make_submission, policy) -> None:
    arrays = [np.zeros((0,), np.float32), np.zeros(3, np.float32)]
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert not result.passed
    assert result.details["shape_mismatches"] == [[0, [0], [2, 3]]]


def test_malformed_entries_are_reported(make_submission, policy) -> None:
    result = bounds_check(make_submission(arrays=[[0.1] * 6, np.array(["a", "b", "c"])]), policy)
    assert not result.passed
    assert result.details["not_arrays"] == [[0, "list"]]
    assert result.details["non_numeric"] == [[1, "<U1"]]
    assert result.details["dtype_mismatches"] == [[1, "str32", "float32"]]


def test_policy_without_expectations_accepts_any_numeric_list(make_submission) -> None:
    arrays = [np.full((7, 1), 1e6, dtype=np.int32)]
    assert bounds_check(make_submission(arrays=arrays), ValidationPolicy()).passed


_ANY_ARRAY = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@settings(max_examples=60, deadline=None)
@given(arrays=st.lists(_ANY_ARRAY, min_size=0, max_size=4))
def test_never_raises_and_always_reports_json(make_submission, policy, arrays) -> None:
    result = bounds_check(make_submission(arrays=arrays), policy)
    assert result.check == "bounds_check"
    json.dumps(result.to_dict(), allow_nan=False)
    with np.errstate(over="ignore", invalid="ignore"):
        expected_pass = (
            len(arrays) == 2
            and [a.shape for a in arrays] == [(2, 3), (3,)]
            and all(a.dtype == np.float32 for a in arrays)
            and all(np.all((a >= -1) & (a <= 1)) for a in arrays)
            and math.hypot(*(np.linalg.norm(a.astype(np.float64).ravel()) for a in arrays)) <= policy.norm_bound
        )
    assert result.passed == expected_pass


@settings(max_examples=50, deadline=None)
@given(
    values=hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e3, 1e3)),
    bound=st.floats(1e-3, 1e4),
)
def test_norm_decision_agrees_with_numpy(make_submission, values, bound) -> None:
    policy = ValidationPolicy(max_l2_norm=bound, norm_tolerance=0.0)
    result = bounds_check(make_submission(arrays=[values]), policy)
    norm = float(np.linalg.norm(values))
    assert result.details["l2_norm"] == pytest.approx(norm, rel=1e-12, abs=1e-300)
    assert result.passed == (norm <= bound)
