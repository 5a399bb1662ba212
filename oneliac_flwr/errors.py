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
    """A data file or partition cannot be used (names the file and column)."""


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
