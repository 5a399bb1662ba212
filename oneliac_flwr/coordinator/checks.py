"""Coordinator-side checks on a plain model update (no transport): the policy it must
meet and the run of the named checks (:mod:`oneliac_flwr.validation`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.validation import DeclaredPrivacy, Submission, ValidationPolicy, ValidationReport, validate_submission

__all__ = ["check_update", "submission_policy", "update_of"]


def submission_policy(
    config: ExperimentConfig,
    global_arrays: Sequence[np.ndarray],
    *,
    expected: DeclaredPrivacy | None = None,
) -> ValidationPolicy:
    """The policy one organization's model update must meet.

    Parameters
    ----------
    config : ExperimentConfig
        ``validation.*`` gives the norm bound, value range and sample-count ceiling.
    global_arrays : sequence of numpy.ndarray
        The current global model: the update must have its shapes and dtypes.
    expected : DeclaredPrivacy, optional
        The DP parameters every submission must declare (clip, noise, mechanism), and the
        per-organization epsilon budget, when differential privacy is on.
    """
    settings = config.validation
    expected = expected or DeclaredPrivacy()
    return ValidationPolicy(
        expected_shapes=tuple(tuple(a.shape) for a in global_arrays),
        expected_dtypes=tuple(str(a.dtype) for a in global_arrays),
        max_l2_norm=settings.max_update_norm,
        norm_tolerance=settings.norm_tolerance,
        value_range=(-settings.value_range, settings.value_range),
        max_num_examples=settings.max_num_examples,
        clip_norm=expected.clip_norm,
        noise_multiplier=expected.noise_multiplier,
        mechanism=expected.mechanism,
        epsilon_budget=expected.epsilon_spent,
    )


def update_of(arrays: Sequence[np.ndarray], global_arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``arrays - global`` where the shapes agree; the arrays themselves where they do not
    (so that ``bounds_check`` reports the shape mismatch instead of a crash)."""
    if len(arrays) != len(global_arrays) or any(a.shape != g.shape for a, g in zip(arrays, global_arrays, strict=False)):
        return list(arrays)
    return [np.asarray(a) - g.astype(a.dtype, copy=False) for a, g in zip(arrays, global_arrays, strict=True)]


def check_update(
    update: Sequence[np.ndarray],
    *,
    num_examples: int,
    policy: ValidationPolicy,
    checks: Sequence[str],
    declared: DeclaredPrivacy | None = None,
    server_round: int | None = None,
) -> ValidationReport:
    """Run the named checks on one model update."""
    submission = Submission(arrays=list(update), num_examples=num_examples, declared=declared, round=server_round)
    return validate_submission(submission, policy=policy, checks=tuple(checks))
