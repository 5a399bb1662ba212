"""The hospital SDK: ``FederatedLearner`` and ``DifferentialPrivacy`` over the REST coordinator.

The documented import paths are ``from oneliac.federated import FederatedLearner`` and
``from oneliac.encryption import DifferentialPrivacy`` (the ``oneliac`` package re-exports
this one). See ``docs/hospital-sdk.md``.
"""

from oneliac_flwr.errors import (
    AuthenticationFailed,
    CoordinatorBudgetExhausted,
    CoordinatorError,
    CoordinatorUnavailable,
    FeatureUnavailable,
    PrivacyBudgetExhausted,
    PrivacyPolicyRefused,
    RoundClosed,
    RoundNotAggregated,
    StaleModelVersion,
    SubmissionRejected,
    ValidationFailed,
)
from oneliac_flwr.sdk.checks import ValidationResults
from oneliac_flwr.sdk.dp import DifferentialPrivacy
from oneliac_flwr.sdk.learner import FederatedLearner
from oneliac_flwr.sdk.local_training import LocalModel
from oneliac_flwr.sdk.model import GlobalModel
from oneliac_flwr.sdk.reports import DataStatistics, PrivacyReport
from oneliac_flwr.sdk.submission import Receipt, RoundStatus
from oneliac_flwr.sdk.update import ModelUpdate, Release

__all__ = [
    "AuthenticationFailed",
    "CoordinatorBudgetExhausted",
    "CoordinatorError",
    "CoordinatorUnavailable",
    "DataStatistics",
    "DifferentialPrivacy",
    "FeatureUnavailable",
    "FederatedLearner",
    "GlobalModel",
    "LocalModel",
    "ModelUpdate",
    "PrivacyBudgetExhausted",
    "PrivacyPolicyRefused",
    "PrivacyReport",
    "Receipt",
    "Release",
    "RoundClosed",
    "RoundNotAggregated",
    "RoundStatus",
    "StaleModelVersion",
    "SubmissionRejected",
    "ValidationFailed",
    "ValidationResults",
]
