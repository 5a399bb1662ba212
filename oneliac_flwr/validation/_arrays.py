"""Array helpers shared by the checks; every one tolerates malformed input."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from oneliac_flwr.validation._values import type_name
from oneliac_flwr.validation.result import Details

__all__ = ["MAX_REPORTED", "EntryReview", "flat_l2_norm", "non_finite_summary", "review_entries"]

MAX_REPORTED = 5
"""How many offending indices or entries a check reports at most."""

_NUMERIC_KINDS = frozenset("biufc")


@dataclass(frozen=True)
class EntryReview:
    """What :func:`review_entries` found in a submission's ``arrays``.

    Attributes
    ----------
    is_list : bool
        Whether ``arrays`` was a list or tuple at all.
    entries : sequence
        The entries (empty if ``arrays`` was not a list or tuple).
    numeric : list of (int, numpy.ndarray)
        The entries that are numeric numpy arrays, with their index.
    problems : list of str
        One sentence per problem found (not a list, empty, non-arrays, non-numeric).
    details : dict
        ``num_arrays`` and, per problem, the first offending ``[index, type]`` pairs.
    """

    is_list: bool
    entries: Sequence[object]
    numeric: list[tuple[int, np.ndarray]]
    problems: list[str]
    details: Details


def review_entries(arrays: object) -> EntryReview:
    """Review the container and the entry types of untrusted ``arrays``."""
    if not isinstance(arrays, (list, tuple)):
        return EntryReview(False, (), [], [f"arrays: expected a list of numpy arrays, got {type_name(arrays)}"], {})
    problems: list[str] = []
    details: Details = {"num_arrays": len(arrays)}
    if not arrays:
        problems.append("no arrays submitted")
    not_arrays = [[i, type_name(a)] for i, a in enumerate(arrays) if not isinstance(a, np.ndarray)]
    if not_arrays:
        index, kind = not_arrays[0]
        problems.append(f"{len(not_arrays)} entries are not numpy arrays (first: entry {index} is {kind})")
        details["not_arrays"] = not_arrays[:MAX_REPORTED]
    non_numeric = [[i, str(a.dtype)] for i, a in enumerate(arrays) if isinstance(a, np.ndarray) and not _numeric(a)]
    if non_numeric:
        index, dtype = non_numeric[0]
        problems.append(f"{len(non_numeric)} arrays are not numeric (first: array {index} has dtype {dtype})")
        details["non_numeric"] = non_numeric[:MAX_REPORTED]
    numeric = [(i, a) for i, a in enumerate(arrays) if isinstance(a, np.ndarray) and _numeric(a)]
    return EntryReview(True, arrays, numeric, problems, details)


def non_finite_summary(array: np.ndarray, *, limit: int = MAX_REPORTED) -> tuple[int, list[int]]:
    """Count the NaN and infinite values of a numeric array.

    Returns
    -------
    count : int
        Number of non-finite values.
    first_indices : list of int
        Flat (C-order) indices of the first ``limit`` of them.
    """
    if array.dtype.kind in "biu":
        return 0, []
    bad = ~np.isfinite(array).ravel()
    count = int(np.count_nonzero(bad))
    first = np.flatnonzero(bad)[:limit].tolist() if count else []
    return count, first


def flat_l2_norm(arrays: Iterable[np.ndarray]) -> float:
    """L2 norm of numeric ``arrays`` flattened and concatenated, computed in float64.

    Any NaN or infinite value gives a non-finite result, and so do finite values so
    large that their squares overflow; callers look for non-finite values first.
    """
    norms = []
    with np.errstate(over="ignore", invalid="ignore"):  # reported through the result, not warned
        for array in arrays:
            flat = np.abs(array).ravel() if array.dtype.kind == "c" else array.ravel()
            norms.append(float(np.linalg.norm(flat.astype(np.float64, copy=False))))
    return math.hypot(*norms)


def _numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in _NUMERIC_KINDS
