"""``bounds_check``: structure (number, shapes, dtypes), L2 norm and value range."""

from __future__ import annotations

import math

import numpy as np

from oneliac_flwr.validation._arrays import MAX_REPORTED, EntryReview, flat_l2_norm, review_entries
from oneliac_flwr.validation._values import json_float
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.registry import register_check
from oneliac_flwr.validation.result import CheckResult, Details
from oneliac_flwr.validation.submission import Submission

__all__ = ["bounds_check"]

NAME = "bounds_check"


@register_check(NAME)
def bounds_check(submission: Submission, policy: ValidationPolicy) -> CheckResult:
    """Check the update's structure, L2 norm and values against the policy.

    Each part runs only when the policy sets it:

    - number of arrays equals ``len(policy.expected_shapes)`` (or of
      ``expected_dtypes``), and each array's shape and dtype name match;
    - the L2 norm of all arrays flattened together is at most
      ``policy.norm_bound`` = ``max_l2_norm * (1 + norm_tolerance)``; a non-finite
      norm (NaN or inf in the input) fails;
    - every value lies in the inclusive ``policy.value_range``; NaN is outside
      every range, complex values cannot be compared and fail.

    Malformed input (not a list, no arrays, entries that are not numpy arrays,
    non-numeric dtypes) fails with the problem named; the check never raises on it.

    Parameters
    ----------
    submission : Submission
        The submission to check.
    policy : ValidationPolicy
        The expectations.

    Returns
    -------
    CheckResult
        ``details`` holds what was compared: ``num_arrays``,
        ``expected_num_arrays``, ``shape_mismatches`` / ``dtype_mismatches`` as
        ``[index, got, expected]``, ``l2_norm``, ``l2_bound``,
        ``out_of_range_count`` and ``out_of_range_first`` as
        ``[array, flat index, value]`` (first ``MAX_REPORTED`` of each).
    """
    review = review_entries(submission.arrays)
    problems, details = list(review.problems), dict(review.details)
    _check_structure(review, policy, problems, details)
    _check_norm(review, policy, problems, details)
    _check_range(review, policy, problems, details)
    return CheckResult.from_problems(
        check=NAME,
        problems=problems,
        details=details,
        ok_reason=f"{len(review.entries)} arrays within the policy's structure and bounds",
    )


def _check_structure(review: EntryReview, policy: ValidationPolicy, problems: list[str], details: Details) -> None:
    expected = policy.expected_num_arrays
    if expected is None or not review.is_list:
        return
    details["expected_num_arrays"] = expected
    if len(review.entries) != expected:
        problems.append(f"expected {expected} arrays, got {len(review.entries)}")
    pairs = [(i, e) for i, e in enumerate(review.entries) if isinstance(e, np.ndarray)]
    if policy.expected_shapes is not None:
        shapes = policy.expected_shapes
        wrong = [[i, list(a.shape), list(shapes[i])] for i, a in pairs if i < len(shapes) and a.shape != shapes[i]]
        if wrong:
            i, got, want = wrong[0]
            problems.append(
                f"wrong shape for {len(wrong)} of {len(review.entries)} arrays "
                f"(first: array {i} has shape {tuple(got)}, expected {tuple(want)})"
            )
            details["shape_mismatches"] = wrong[:MAX_REPORTED]
    if policy.expected_dtypes is not None:
        dtypes = policy.expected_dtypes
        wrong = [[i, a.dtype.name, dtypes[i]] for i, a in pairs if i < len(dtypes) and a.dtype.name != dtypes[i]]
        if wrong:
            i, got, want = wrong[0]
            problems.append(
                f"wrong dtype for {len(wrong)} of {len(review.entries)} arrays "
                f"(first: array {i} is {got}, expected {want})"
            )
            details["dtype_mismatches"] = wrong[:MAX_REPORTED]


def _check_norm(review: EntryReview, policy: ValidationPolicy, problems: list[str], details: Details) -> None:
    bound = policy.norm_bound
    if bound is None:
        return
    norm = flat_l2_norm(array for _, array in review.numeric)
    details["l2_norm"] = json_float(norm)
    details["l2_bound"] = bound
    if not math.isfinite(norm):
        problems.append(f"L2 norm is not finite ({norm}: NaN/inf values or overflow); bound {bound:.6g}")
    elif norm > bound:
        problems.append(
            f"L2 norm {norm:.6g} exceeds {bound:.6g} "
            f"(max_l2_norm {policy.max_l2_norm:g} x (1 + norm_tolerance {policy.norm_tolerance:g}))"
        )


def _check_range(review: EntryReview, policy: ValidationPolicy, problems: list[str], details: Details) -> None:
    if policy.value_range is None:
        return
    low, high = policy.value_range
    count = 0
    first: list[list[int | float | str]] = []
    complex_arrays = [i for i, array in review.numeric if array.dtype.kind == "c"]
    for i, array in review.numeric:
        if array.dtype.kind == "c":
            continue
        outside = np.flatnonzero(~((array >= low) & (array <= high)))
        count += int(outside.size)
        first.extend([i, int(j), json_float(array.flat[j])] for j in outside[: MAX_REPORTED - len(first)])
    details["value_range"] = [json_float(low), json_float(high)]
    details["out_of_range_count"] = count
    if count:
        problems.append(f"{count} values outside [{low:g}, {high:g}] (NaN counts as outside)")
        details["out_of_range_first"] = first
    if complex_arrays:
        problems.append(f"value range undefined for complex arrays {complex_arrays[:MAX_REPORTED]}")
        details["complex_arrays"] = complex_arrays[:MAX_REPORTED]
