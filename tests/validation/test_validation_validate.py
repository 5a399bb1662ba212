"""validate_submission, ValidationReport and require_valid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oneliac_flwr.errors import ConfigError, ValidationFailed
from oneliac_flwr.validation import (
    DEFAULT_CHECKS,
    CheckResult,
    Submission,
    ValidationPolicy,
    ValidationReport,
    register_check,
    require_valid,
    validate_submission,
)


def test_valid_submission_passes_the_default_checks(make_submission, policy) -> None:
    report = validate_submission(make_submission(), policy=policy)
    assert report.passed
    assert [r.check for r in report.results] == list(DEFAULT_CHECKS)
    assert report.failures == ()
    assert report.reasons() == []
    require_valid(report)  # does not raise


def test_bad_submission_fails_with_every_reason(make_submission, policy) -> None:
    arrays = [np.full((2, 3), np.nan, np.float32), np.zeros(4, np.float64)]
    report = validate_submission(make_submission(arrays=arrays, num_examples=-1), policy=policy)
    assert not report.passed
    assert [r.check for r in report.failures] == ["nan_check", "bounds_check", "privacy_check"]
    reasons = report.reasons()
    assert reasons[0].startswith("nan_check: 6 non-finite")
    assert reasons[2] == "privacy_check: num_examples: expected > 0, got -1"
    with pytest.raises(ValidationFailed) as info:
        require_valid(report)
    assert str(info.value) == "; ".join(reasons)


def test_report_to_dict_is_strict_json(make_submission, policy) -> None:
    report = validate_submission(make_submission(arrays=[np.array([np.inf])]), policy=policy)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False
    assert data["reasons"] == report.reasons()
    assert [r["check"] for r in data["results"]] == list(DEFAULT_CHECKS)


def test_garbage_never_raises(policy) -> None:
    junk = Submission(
        arrays="not arrays", num_examples="many", declared=3.0, round="x", model_version=7  # type: ignore[arg-type]
    )
    report = validate_submission(
        junk, policy=policy, checks=("nan_check", "bounds_check", "privacy_check", "metadata_check")
    )
    assert not report.passed
    assert len(report.failures) == 3  # metadata_check expects nothing under this policy
    json.dumps(report.to_dict(), allow_nan=False)


def test_a_check_that_raises_becomes_a_failed_result(make_submission, policy) -> None:
    @register_check("test_validate_raises")
    def raises(submission: Submission, policy: ValidationPolicy) -> CheckResult:
        raise ZeroDivisionError("boom")

    report = validate_submission(make_submission(), policy=policy, checks=("test_validate_raises", "nan_check"))
    assert [r.passed for r in report.results] == [False, True]
    assert report.reasons() == ["test_validate_raises: check raised ZeroDivisionError: boom"]


def test_a_check_returning_something_else_becomes_a_failed_result(make_submission, policy) -> None:
    register_check("test_validate_returns_bool")(lambda submission, policy: True)
    report = validate_submission(make_submission(), policy=policy, checks=("test_validate_returns_bool",))
    assert report.reasons() == ["test_validate_returns_bool: check returned bool, expected CheckResult"]


def test_config_error_from_a_check_propagates(make_submission) -> None:
    with pytest.raises(ConfigError, match="max_l2_norm"):
        validate_submission(make_submission(), policy=ValidationPolicy(), checks=("aggregate_bounds_check",))


def test_unknown_check_raises_before_running_anything(make_submission, policy) -> None:
    calls: list[str] = []

    @register_check("test_validate_counts_calls")
    def counts(submission: Submission, policy: ValidationPolicy) -> CheckResult:
        calls.append("ran")
        return CheckResult(passed=True, check="test_validate_counts_calls", reason="ok")

    with pytest.raises(ConfigError, match="available checks: .*nan_check"):
        validate_submission(make_submission(), policy=policy, checks=("test_validate_counts_calls", "bogus"))
    assert calls == []


@pytest.mark.parametrize(("checks", "message"), [("nan_check", "got the string"), ((), "at least one check")])
def test_checks_argument_is_validated(make_submission, policy, checks, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_submission(make_submission(), policy=policy, checks=checks)


def test_empty_report_passes_vacuously() -> None:
    report = ValidationReport(())
    assert report.passed
    assert report.to_dict() == {"passed": True, "reasons": [], "results": []}


def test_check_result_from_problems() -> None:
    ok = CheckResult.from_problems(check="c", problems=[], details={"n": 1}, ok_reason="fine")
    bad = CheckResult.from_problems(check="c", problems=["a", "b"], details={}, ok_reason="fine")
    assert (ok.passed, ok.reason, ok.details) == (True, "fine", {"n": 1})
    assert (bad.passed, bad.reason) == (False, "a; b")
