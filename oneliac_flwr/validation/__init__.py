"""Validation: named checks on submissions and secure-sum aggregates, and their reports.

A check is a callable ``(submission, policy) -> CheckResult`` registered under a
name. The built-in checks (``nan_check``, ``bounds_check``, ``privacy_check``,
``metadata_check``, ``aggregate_bounds_check``) are registered when this package is
imported. Numpy only: no Flower, no torch.
"""

from oneliac_flwr.validation.aggregate import aggregate_bounds_check, aggregate_norm_bound, check_aggregate
from oneliac_flwr.validation.bounds import bounds_check
from oneliac_flwr.validation.finite import nan_check
from oneliac_flwr.validation.metadata import metadata_check
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.privacy_declaration import privacy_check
from oneliac_flwr.validation.registry import Check, available_checks, get_check, register_check
from oneliac_flwr.validation.result import CheckResult, Details, DetailValue, ValidationReport
from oneliac_flwr.validation.submission import DeclaredPrivacy, Submission
from oneliac_flwr.validation.validate import DEFAULT_CHECKS, require_valid, validate_submission

__all__ = [
    "DEFAULT_CHECKS",
    "Check",
    "CheckResult",
    "DeclaredPrivacy",
    "DetailValue",
    "Details",
    "Submission",
    "ValidationPolicy",
    "ValidationReport",
    "aggregate_bounds_check",
    "aggregate_norm_bound",
    "available_checks",
    "bounds_check",
    "check_aggregate",
    "get_check",
    "metadata_check",
    "nan_check",
    "privacy_check",
    "register_check",
    "require_valid",
    "validate_submission",
]
