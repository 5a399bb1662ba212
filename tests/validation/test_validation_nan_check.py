"""nan_check: every value finite; malformed input reported, never raised."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oneliac_flwr.validation import ValidationPolicy, nan_check

POLICY = ValidationPolicy()


def test_finite_update_passes(make_submission) -> None:
    result = nan_check(make_submission(), POLICY)
    assert result.passed, result.reason
    assert result.check == "nan_check"
    assert result.details["non_finite_count"] == 0
    assert result.details["num_arrays"] == 2


def test_nan_is_reported_with_array_and_first_indices(make_submission) -> None:
    second = np.zeros((2, 3), dtype=np.float32)
    second[1, 0] = np.nan  # flat index 3
    arrays = [np.zeros(4, dtype=np.float32), second]
    result = nan_check(make_submission(arrays=arrays), POLICY)
    assert not result.passed
    assert result.details["non_finite_count"] == 1
    assert result.details["non_finite"] == [{"array": 1, "count": 1, "first_indices": [3]}]
    assert "1 non-finite" in result.reason


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_each_kind_of_non_finite_fails(make_submission, bad: float) -> None:
    result = nan_check(make_submission(arrays=[np.array([0.0, bad, 1.0])]), POLICY)
    assert not result.passed
    assert result.details["non_finite"] == [{"array": 0, "count": 1, "first_indices": [1]}]


def test_counts_all_but_lists_first_five_indices(make_submission) -> None:
    array = np.full(20, np.nan)
    result = nan_check(make_submission(arrays=[array]), POLICY)
    assert result.details["non_finite_count"] == 20
    assert result.details["non_finite"][0]["first_indices"] == [0, 1, 2, 3, 4]


def test_complex_with_nan_fails(make_submission) -> None:
    result = nan_check(make_submission(arrays=[np.array([1 + 1j, complex(0, np.nan)])]), POLICY)
    assert not result.passed
    assert result.details["non_finite_count"] == 1


def test_integer_and_bool_arrays_are_finite(make_submission) -> None:
    arrays = [np.arange(5, dtype=np.int64), np.array([True, False])]
    assert nan_check(make_submission(arrays=arrays), POLICY).passed


def test_zero_size_arrays_are_vacuously_finite(make_submission) -> None:
    assert nan_check(make_submission(arrays=[np.zeros((0,), dtype=np.float32)]), POLICY).passed


def test_no_arrays_fails(make_submission) -> None:
    result = nan_check(make_submission(arrays=[]), POLICY)
    assert not result.passed
    assert result.reason == "no arrays submitted"


@pytest.mark.parametrize("arrays", [None, np.zeros(3), "weights", 3.0])
def test_arrays_not_a_list_fails(make_submission, arrays: object) -> None:
    result = nan_check(make_submission(arrays=arrays), POLICY)
    assert not result.passed
    assert result.reason.startswith("arrays: expected a list of numpy arrays")


def test_entries_that_are_not_arrays_or_not_numeric_fail(make_submission) -> None:
    arrays = [[1.0, 2.0], np.array(["a", "b"]), np.array([None], dtype=object), np.zeros(2)]
    result = nan_check(make_submission(arrays=arrays), POLICY)
    assert not result.passed
    assert result.details["not_arrays"] == [[0, "list"]]
    assert result.details["non_numeric"] == [[1, "<U1"], [2, "object"]]


def test_details_are_strict_json(make_submission) -> None:
    arrays = [np.array([np.nan, np.inf]), [1], np.array([object()])]
    result = nan_check(make_submission(arrays=arrays), POLICY)
    json.dumps(result.to_dict(), allow_nan=False)
