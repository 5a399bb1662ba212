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
