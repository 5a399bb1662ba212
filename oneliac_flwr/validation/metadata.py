"""``metadata_check``: the submission answers this round, from this model version."""

from __future__ import annotations

from oneliac_flwr.validation._values import as_count
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.registry import register_check
from oneliac_flwr.validation.result import CheckResult, Details
from oneliac_flwr.validation.submission import Submission

__all__ = ["metadata_check"]

NAME = "metadata_check"


@register_check(NAME)
def metadata_check(submission: Submission, policy: ValidationPolicy) -> CheckResult:
    """Check ``round`` and ``model_version`` against the policy's expectations.

    Each comparison runs only when the policy sets ``expected_round`` or
    ``expected_model_version``; a submission that omits a checked field fails. Not
    among the default checks of ``validate_submission``: the coordinator builds a
    policy per round (e.g. ``dataclasses.replace(policy, expected_round=r)``) to
    use it.

    Parameters
    ----------
    submission : Submission
        The submission to check.
    policy : ValidationPolicy
        The expectations.

    Returns
    -------
    CheckResult
        ``details`` holds the submitted and expected values that were compared.
    """
    problems: list[str] = []
    details: Details = {}
    if policy.expected_round is not None:
        got_round = as_count(submission.round)
        details["round"] = got_round if got_round is not None else repr(submission.round)
        details["expected_round"] = policy.expected_round
        if got_round != policy.expected_round:
            problems.append(f"round: expected {policy.expected_round}, got {submission.round!r}")
    if policy.expected_model_version is not None:
        version = submission.model_version
        details["model_version"] = version if isinstance(version, str) else repr(version)
        details["expected_model_version"] = policy.expected_model_version
        if not isinstance(version, str) or version != policy.expected_model_version:
            problems.append(f"model_version: expected {policy.expected_model_version!r}, got {version!r}")
    return CheckResult.from_problems(
        check=NAME, problems=problems, details=details, ok_reason="round and model version as expected"
    )
