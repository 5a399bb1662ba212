"""``nan_check``: every value of the update is finite."""

from __future__ import annotations

from oneliac_flwr.validation._arrays import MAX_REPORTED, non_finite_summary, review_entries
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.registry import register_check
from oneliac_flwr.validation.result import CheckResult
from oneliac_flwr.validation.submission import Submission

__all__ = ["nan_check"]

NAME = "nan_check"


@register_check(NAME)
def nan_check(submission: Submission, policy: ValidationPolicy) -> CheckResult:
    """Check that every value of every array is finite (no NaN, no infinity).

    The policy is not used. A submission with no arrays, an entry that is not a
    numpy array, or an array of non-numeric dtype fails too (finiteness cannot be
    established). Zero-size arrays are vacuously finite.

    Parameters
    ----------
    submission : Submission
        The submission to check.
    policy : ValidationPolicy
        Unused; part of the check signature.

    Returns
    -------
    CheckResult
        ``details`` holds ``num_arrays``, ``non_finite_count`` (total) and, when it
        is not zero, ``non_finite``: per offending array ``{"array": i, "count": c,
        "first_indices": [...]}`` with the first flat (C-order) indices; at most
        ``MAX_REPORTED`` arrays and indices per array are listed.
    """
    review = review_entries(submission.arrays)
    problems, details = list(review.problems), dict(review.details)
    offending = []
    total = 0
    for i, array in review.numeric:
        count, first = non_finite_summary(array)
        if count:
            total += count
            offending.append({"array": i, "count": count, "first_indices": first})
    details["non_finite_count"] = total
    if offending:
        problems.append(f"{total} non-finite values (NaN or inf) in {len(offending)} arrays")
        details["non_finite"] = offending[:MAX_REPORTED]
    return CheckResult.from_problems(
        check=NAME,
        problems=problems,
        details=details,
        ok_reason=f"all values of {len(review.entries)} arrays are finite",
    )
