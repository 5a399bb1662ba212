"""Shared fixtures for the validation tests: a policy and submissions that satisfy it.

Session-scoped: both are immutable (the factory builds fresh arrays on every call), so
hypothesis tests may use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.validation import DeclaredPrivacy, Submission, ValidationPolicy


@pytest.fixture(scope="session")
def policy() -> ValidationPolicy:
    """A policy that sets every expectation."""
    return ValidationPolicy(
        expected_shapes=((2, 3), (3,)),
        expected_dtypes=("float32", "float32"),
        max_l2_norm=1.0,
        norm_tolerance=0.01,
        value_range=(-1.0, 1.0),
        max_num_examples=1000,
        clip_norm=1.0,
        noise_multiplier=0.8,
        mechanism="gaussian",
        epsilon_budget=5.0,
    )


@pytest.fixture(scope="session")
def make_submission() -> Callable[..., Submission]:
    """Factory of submissions valid under ``policy``; keyword overrides replace fields."""

    def make(**overrides: Any) -> Submission:
        fields: dict[str, Any] = {
            "arrays": [np.full((2, 3), 0.1, dtype=np.float32), np.array([0.2, -0.3, 0.0], dtype=np.float32)],
            "num_examples": 100,
            "declared": DeclaredPrivacy(clip_norm=1.0, noise_multiplier=0.8, mechanism="gaussian", epsilon_spent=2.0),
            "round": 3,
            "model_version": "v3",
        }
        fields.update(overrides)
        return Submission(**fields)

    return make
