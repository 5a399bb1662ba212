"""The outcome of one validation check, and the report that combines several."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckResult", "DetailValue", "Details", "ValidationReport"]

DetailValue = float | int | str | list[Any]
"""A value in :attr:`CheckResult.details`: JSON-serialisable, small."""

Details = dict[str, DetailValue]


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """What one check concluded about one submission.

    Parameters
    ----------
    passed : bool
        Whether the submission passed the check.
    check : str
        Name of the check (as registered).
    reason : str
        One human-readable sentence: why it failed, or what was verified.
    details : dict
        The offending values (e.g. the norm and the bound, the first bad indices),
        JSON-serialisable (non-finite floats are given as the strings ``"nan"``,
        ``"inf"``, ``"-inf"``) and kept small.
    """

    passed: bool
    check: str
    reason: str
    details: Details = field(default_factory=dict)

    @classmethod
    def from_problems(cls, *, check: str, problems: list[str], details: Details, ok_reason: str) -> CheckResult:
        """Build a result that fails if ``problems`` is not empty.

        Parameters
        ----------
        check : str
            Name of the check.
        problems : list of str
            One sentence per problem found; joined by ``"; "`` into the reason.
        details : dict
            The details, as in :class:`CheckResult`.
        ok_reason : str
            The reason when there is no problem.

        Returns
        -------
        CheckResult
        """
        if problems:
            return cls(passed=False, check=check, reason="; ".join(problems), details=details)
        return cls(passed=True, check=check, reason=ok_reason, details=details)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dictionary."""
        return {
            "check": self.check,
            "passed": self.passed,
            "reason": self.reason,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class ValidationReport:
    """The results of every check run on one submission.

    Parameters
    ----------
    results : tuple of CheckResult
        One result per check, in the order the checks ran.
    """

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed (``True`` for a report with no results)."""
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The results of the checks that failed, in order."""
        return tuple(result for result in self.results if not result.passed)

    def reasons(self) -> list[str]:
        """Return ``"<check>: <reason>"`` for every failed check."""
        return [f"{result.check}: {result.reason}" for result in self.failures]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dictionary."""
        return {
            "passed": self.passed,
            "reasons": self.reasons(),
            "results": [result.to_dict() for result in self.results],
        }
