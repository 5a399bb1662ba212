"""``from oneliac.federated import FederatedLearner`` (see :mod:`oneliac_flwr.sdk`)."""

from oneliac_flwr.sdk import (
    AuthenticationFailed,
    CoordinatorError,
    CoordinatorUnavailable,
    FederatedLearner,
    GlobalModel,
    LocalModel,
    ModelUpdate,
    PrivacyBudgetExhausted,
    PrivacyPolicyRefused,
    PrivacyReport,
    Receipt,
    RoundClosed,
    StaleModelVersion,
    SubmissionRejected,
    ValidationFailed,
)

__all__ = [
    "AuthenticationFailed",
    "CoordinatorError",
    "CoordinatorUnavailable",
    "FederatedLearner",
    "GlobalModel",
    "LocalModel",
    "ModelUpdate",
    "PrivacyBudgetExhausted",
    "PrivacyPolicyRefused",
    "PrivacyReport",
    "Receipt",
    "RoundClosed",
    "StaleModelVersion",
    "SubmissionRejected",
    "ValidationFailed",
]
