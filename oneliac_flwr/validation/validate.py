"""Run named checks on a submission; turn a failed report into an error."""

from __future__ import annotations

from collections.abc import Sequence

from oneliac_flwr.errors import ConfigError, ValidationFailed
from oneliac_flwr.validation._values import type_name
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.registry import Check, get_check
from oneliac_flwr.validation.result import CheckResult, ValidationReport
from oneliac_flwr.validation.submission import Submission

__all__ = ["DEFAULT_CHECKS", "require_valid", "validate_submission"]

DEFAULT_CHECKS: tuple[str, ...] = ("nan_check", "bounds_check", "privacy_check")
"""The checks a client runs before sending, and the coordinator on plain updates."""


def validate_submission(
    submission: Submission,
    *,
    policy: ValidationPolicy,
    checks: Sequence[str] = DEFAULT_CHECKS,
) -> ValidationReport:
    """Run the named checks on one submission and collect their results.

    Bad data never raises: it is a failed check. A check that raises anything
    other than :class:`~oneliac_flwr.errors.ConfigError` is recorded as failed,
    with the exception named, so that a malformed reply cannot kill a run.

    Parameters
    ----------
    submission : Submission
        The (untrusted) submission.
    policy : ValidationPolicy
        The expectations.
    checks : sequence of str, default ("nan_check", "bounds_check", "privacy_check")
        Registered check names, run in this order; each stands alone.

    Returns
    -------
    ValidationReport

    Raises
    ------
    ConfigError
        If ``checks`` is empty, a single string, or names an unknown check (the
        message lists the available ones), or if a check finds the policy unusable.
    """
    if isinstance(checks, str):
        raise ConfigError("checks", f"expected a sequence of check names, got the string {checks!r}")
    resolved = [(name, get_check(name)) for name in checks]
    if not resolved:
        raise ConfigError("checks", "expected at least one check name, got none")
    return ValidationReport(tuple(_run(name, check, submission, policy) for name, check in resolved))


def require_valid(report: ValidationReport) -> None:
    """Raise if the report has a failed check.

    Raises
    ------
    ValidationFailed
        With every failure reason, ``"<check>: <reason>"``, joined by ``"; "``.
    """
    if not report.passed:
        raise ValidationFailed("; ".join(report.reasons()))


def _run(name: str, check: Check, submission: Submission, policy: ValidationPolicy) -> CheckResult:
    try:
        result = check(submission, policy)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed reply must never kill the run
        return CheckResult(
            passed=False,
            check=name,
            reason=f"check raised {type_name(exc)}: {exc}",
            details={"exception": type_name(exc)},
        )
    if not isinstance(result, CheckResult):
        return CheckResult(
            passed=False,
            check=name,
            reason=f"check returned {type_name(result)}, expected CheckResult",
            details={"returned": type_name(result)},
        )
    return result
