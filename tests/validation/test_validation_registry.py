"""Registry: built-ins registered by name, custom checks, unknown names."""

from __future__ import annotations

import pytest

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.validation import (
    CheckResult,
    Submission,
    ValidationPolicy,
    available_checks,
    bounds_check,
    get_check,
    nan_check,
    privacy_check,
    register_check,
    validate_submission,
)


def test_builtins_are_registered_by_name() -> None:
    assert {"nan_check", "bounds_check", "privacy_check", "aggregate_bounds_check", "metadata_check"} <= set(
        available_checks()
    )
    assert get_check("nan_check") is nan_check
    assert get_check("bounds_check") is bounds_check
    assert get_check("privacy_check") is privacy_check
    assert list(available_checks()) == sorted(available_checks())


def test_custom_check_is_registered_and_used(make_submission, policy) -> None:
    seen: list[int] = []

    @register_check("test_registry_even_examples")
    def even_examples(submission: Submission, policy: ValidationPolicy) -> CheckResult:
        seen.append(submission.num_examples)
        even = submission.num_examples % 2 == 0
        return CheckResult(passed=even, check="test_registry_even_examples", reason="even" if even else "odd")

    assert "test_registry_even_examples" in available_checks()
    assert get_check("test_registry_even_examples") is even_examples
    report = validate_submission(
        make_submission(num_examples=101), policy=policy, checks=("nan_check", "test_registry_even_examples")
    )
    assert seen == [101]
    assert [r.check for r in report.results] == ["nan_check", "test_registry_even_examples"]
    assert report.reasons() == ["test_registry_even_examples: odd"]


def test_name_taken_by_another_check_is_refused_unless_replace() -> None:
    def first(submission: Submission, policy: ValidationPolicy) -> CheckResult:
        return CheckResult(passed=True, check="test_registry_taken", reason="first")

    def second(submission: Submission, policy: ValidationPolicy) -> CheckResult:
        return CheckResult(passed=True, check="test_registry_taken", reason="second")

    register_check("test_registry_taken")(first)
    register_check("test_registry_taken")(first)  # the same function again is harmless
    with pytest.raises(ConfigError, match="already registered"):
        register_check("test_registry_taken")(second)
    assert get_check("test_registry_taken") is first
    register_check("test_registry_taken", replace=True)(second)
    assert get_check("test_registry_taken") is second


def test_unknown_name_lists_available_checks() -> None:
    with pytest.raises(ConfigError) as info:
        get_check("nan_chek")
    message = str(info.value)
    assert "unknown check 'nan_chek'" in message
    for name in available_checks():
        assert name in message


@pytest.mark.parametrize("name", ["", "  ", None])
def test_empty_name_is_refused(name: object) -> None:
    with pytest.raises(ConfigError, match="non-empty check name"):
        register_check(name)  # type: ignore[arg-type]


def test_non_callable_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected a callable"):
        register_check("test_registry_not_callable")(42)  # type: ignore[arg-type]
    assert "test_registry_not_callable" not in available_checks()
