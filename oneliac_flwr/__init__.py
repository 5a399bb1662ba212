"""oneliac-flwr: privacy-preserving federated learning for hospitals, on Flower.

The public surface is small and re-exported here; everything else is internal.
"""

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import (
    ConfigError,
    DataError,
    OneliacError,
    PrivacyBudgetExhausted,
    PrivacyError,
    ProtocolViolation,
    RoundFailed,
    SecureAggregationError,
    ValidationFailed,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "OneliacError",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "ProtocolViolation",
    "RoundFailed",
    "SecureAggregationError",
    "ValidationFailed",
    "__version__",
]
