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
    "PrivacyPolicyRefused",
    "SecureAggregationError",
    "ProtocolViolation",
    "RoundFailed",
    "ValidationFailed",
    "CoordinatorError",
    "AuthenticationFailed",
    "RoundClosed",
    "StaleModelVersion",
    "SubmissionRejected",
    "CoordinatorBudgetExhausted",
    "RoundNotAggregated",
    "CoordinatorUnavailable",
    "FeatureUnavailable",
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


class PrivacyPolicyRefused(PrivacyError):
    """The coordinator's published privacy policy is weaker than the hospital's own: it does not take part."""


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
    """A submission failed one or more validation checks.

    Parameters
    ----------
    message : str
        What failed (by convention it starts with the check's name).
    check : str, optional
        The name of the (first) failed check, e.g. ``"nan_check"``.
    """

    def __init__(self, message: str, *, check: str | None = None) -> None:
        super().__init__(message)
        self.check = check


class CoordinatorError(OneliacError):
    """The coordinator refused a request, or could not be reached (SDK side).

    Built at the HTTP boundary from the coordinator's problem document
    (``{type, title, status, detail, field}``); ``str(error)`` is its ``detail``.

    Parameters
    ----------
    detail : str
        The coordinator's message.
    status : int or None
        HTTP status (``None``: no answer at all).
    problem : str
        The problem's short name (``type`` without ``urn:oneliac:problem:``).
    field : str or None
        The request field at fault.
    """

    def __init__(self, detail: str, *, status: int | None = None, problem: str = "", field: str | None = None) -> None:
        OneliacError.__init__(self, detail)
        self.detail, self.status, self.problem, self.field = detail, status, problem, field


class AuthenticationFailed(CoordinatorError):
    """Wrong, revoked or missing API key, or an organization id that is not the key's."""


class RoundClosed(CoordinatorError):
    """The round is not open (late, or already closed), or was already answered differently."""


class StaleModelVersion(RoundClosed):
    """The update was trained on an older model than the open round's (``current_version``)."""

    def __init__(self, detail: str, *, current_version: str | None = None, status: int | None = None,
                 problem: str = "", field: str | None = None) -> None:  # fmt: skip
        super().__init__(detail, status=status, problem=problem, field=field)
        self.current_version = current_version


class SubmissionRejected(CoordinatorError, ValidationFailed):
    """The coordinator refused a submission or stage message (422, 413): ``check`` names the failed
    check (``nan_check``, ...) or the field at fault."""

    def __init__(self, detail: str, *, check: str | None = None, status: int | None = None, problem: str = "",
                 field: str | None = None) -> None:  # fmt: skip
        CoordinatorError.__init__(self, detail, status=status, problem=problem, field=field)
        self.check = check


class RoundNotAggregated(CoordinatorError):
    """The round closed without a new model (too few accepted submissions, or it failed)."""


class CoordinatorBudgetExhausted(CoordinatorError, PrivacyBudgetExhausted):
    """The coordinator's privacy budget for the federation is exhausted."""


class CoordinatorUnavailable(CoordinatorError):
    """The coordinator cannot be reached, times out, or fails (5xx) after retries."""


class FeatureUnavailable(CoordinatorUnavailable):
    """The coordinator does not offer this yet (501, or an endpoint it does not have)."""
