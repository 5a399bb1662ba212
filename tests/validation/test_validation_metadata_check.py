"""metadata_check: round and model version as the policy expects."""

from __future__ import annotations

import numpy as np

from oneliac_flwr.validation import ValidationPolicy, metadata_check


def test_passes_when_round_and_version_match(make_submission) -> None:
    policy = ValidationPolicy(expected_round=3, expected_model_version="v3")
    result = metadata_check(make_submission(round=np.int64(3)), policy)
    assert result.passed, result.reason
    assert result.details == {"round": 3, "expected_round": 3, "model_version": "v3", "expected_model_version": "v3"}


def test_stale_round_and_version_fail(make_submission) -> None:
    policy = ValidationPolicy(expected_round=4, expected_model_version="v4")
    result = metadata_check(make_submission(), policy)
    assert not result.passed
    assert result.reason == "round: expected 4, got 3; model_version: expected 'v4', got 'v3'"


def test_missing_metadata_fails_when_expected(make_submission) -> None:
    policy = ValidationPolicy(expected_round=0)
    result = metadata_check(make_submission(round=None), policy)
    assert not result.passed
    assert result.details["round"] == "None"


def test_nothing_expected_passes(make_submission) -> None:
    assert metadata_check(make_submission(round=None, model_version=None), ValidationPolicy()).passed
