"""The one exception hierarchy of oneliac-flwr.

Every error raised on purpose by the package derives from :class:`OneliacError`.
Errors that describe bad input also derive from :class:`ValueError`, so callers
that only know the standard library still catch them.
"""

from __future__ import annotations

__all__ = [
    "OneliacError",
    "ConfigError",
    "DataError",
    "PrivacyError",
    "PrivacyBudgetExhausted",
    "SecureAggregationError",
    "ProtocolViolation",
    "RoundFailed",
    "ValidationFailed",
    "CoordinatorError",
    "AuthenticationFailed",
    "RoundClosed",
    "StaleModelVersion",
    "SubmissionRejected",
    "BudgetExhausted",
    "CoordinatorUnavailable",
]


class OneliacError(Exception):
    """Base class of every error raised by oneliac-flwr."""


class ConfigError(OneliacError, ValueError):
    """A setting is missing, unknown or out of range.

    The message names the field (dotted path, e.g. ``privacy_budget.epsilon``)
    and what was expected.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DataError(OneliacError, ValueError):
    """A data file or partition cannot be used (names the file and column).

    Parameters
    ----------
    message : str
        The full message, for the log of whoever owns the data (may hold counts).
    file, column, problem : str, optional
        The file, the column and the kind of problem (``"not found"``, ``"not numeric"``,
        ``"has missing values (NaN)"``...): names and kinds only, never a value or a count
        from the table, so :attr:`public_reason` may leave the hospital.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None, problem: str | None = None) -> None:
        self.file = file
        self.column = column
        self.problem = problem
        super().__init__(message)

    @property
    def public_reason(self) -> str:
        """File, column and kind of problem (no data-dependent detail); ``""`` if not given."""
        if self.file is None or self.problem is None:
            return ""
        where = f"column {self.column!r}: " if self.column is not None else ""
        return f"{self.file}: {where}{self.problem}"


class PrivacyError(OneliacError):
    """A differential-privacy parameter or accounting step is invalid."""


class PrivacyBudgetExhausted(PrivacyError):
    """The next release would exceed the privacy budget."""


class SecureAggregationError(OneliacError):
    """Base class for errors of the secure-sum protocol."""


class ProtocolViolation(SecureAggregationError):
    """A party asked for, or sent, something the protocol forbids.

    Raised, for instance, when a client is asked to reveal both the self-mask
    share and the pairwise-secret share of the same peer, when a payload has
    the wrong length or ring, or when a pinned key fingerprint does not match.
    """


class RoundFailed(SecureAggregationError):
    """A round cannot be completed (e.g. fewer than ``t`` survivors)."""


class ValidationFailed(OneliacError):
    """A submission failed one or more validation checks."""


class CoordinatorError(OneliacError):
    """A REST coordinator refused a request or could not be reached (hospital side).

    Parameters
    ----------
    message : str
        What happened (the coordinator's problem detail).
    status : int or None
        HTTP status, ``None`` when no answer came.
    problem : str or None
        The problem's short name (``urn:oneliac:problem:<name>``).
    field : str or None
        The request field the coordinator named.
    """

    def __init__(self, message: str, *, status: int | None = None, problem: str | None = None,
                 field: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.problem, self.field = status, problem, field


class AuthenticationFailed(CoordinatorError):
    """The API key is unknown or revoked, or it speaks for another organization (401/403)."""


class RoundClosed(CoordinatorError):
    """The round or stage no longer takes this message (409)."""


class StaleModelVersion(RoundClosed):
    """The update was trained on a model that is not the round's (409)."""


class SubmissionRejected(CoordinatorError):
    """The coordinator refused a message (422/413); ``check`` names the failed check or field."""

    @property
    def check(self) -> str:
        """The failed check (``bounds_check``, ...) or the field at fault."""
        problem = self.problem or ""
        return problem.removeprefix("validation_") if problem.startswith("validation_") else (self.field or problem)


class BudgetExhausted(CoordinatorError):
    """The federation's privacy budget is exhausted: no more rounds (409)."""


class CoordinatorUnavailable(CoordinatorError):
    """No usable answer: connection failure, timeout or a 5xx."""
