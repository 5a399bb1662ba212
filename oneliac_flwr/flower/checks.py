"""Validation checks at the Flower boundary: policy from config, client and server sides.

The checks themselves live in :mod:`oneliac_flwr.validation` (numpy only); this module
builds their policy from the run's config and the global model, and turns a failed report
into a recorded rejection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import ConfigRecord

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.records import TrainReply
from oneliac_flwr.results import Rejection
from oneliac_flwr.coordinator.checks import check_update, submission_policy, update_of
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = [
    "ServerValidator",
    "check_update",
    "declared_privacy",
    "declared_privacy_record",
    "submission_policy",
    "update_of",
]

_DECLARED_KEYS = ("clip_norm", "noise_multiplier", "mechanism", "epsilon_spent")


def declared_privacy_record(declared: DeclaredPrivacy | None) -> dict[str, float | str]:
    """Flatten a declaration into ConfigRecord values (absent fields left out)."""
    if declared is None:
        return {}
    values = {f"declared-{k}": getattr(declared, k) for k in _DECLARED_KEYS}
    return {k: v for k, v in values.items() if v is not None}


def declared_privacy(info: ConfigRecord) -> DeclaredPrivacy | None:
    """Read the DP declaration a reply carries (``None`` when it declares nothing)."""
    values = {k: info.get(f"declared-{k}") for k in _DECLARED_KEYS}
    if all(v is None for v in values.values()):
        return None
    return DeclaredPrivacy(
        clip_norm=_number(values["clip_norm"]),
        noise_multiplier=_number(values["noise_multiplier"]),
        mechanism=str(values["mechanism"]) if isinstance(values["mechanism"], str) else None,
        epsilon_spent=_number(values["epsilon_spent"]),
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class ServerValidator:
    """Coordinator-side checks on each plain submission (``aggregation_method: fedavg``).

    Parameters
    ----------
    config : ExperimentConfig
        Names the checks and their bounds.
    expected : DeclaredPrivacy, optional
        DP parameters every submission must declare.
    checks : sequence of str, optional
        The checks to run (default: ``validation.checks``).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        expected: DeclaredPrivacy | None = None,
        checks: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.expected = expected
        self.checks = tuple(checks) if checks is not None else tuple(config.validation.checks)

    def __call__(self, reply: TrainReply, global_arrays: list[np.ndarray], server_round: int) -> Rejection | None:
        """Return a rejection naming the failed checks, or ``None`` when every check passes."""
        report = check_update(
            update_of(reply.arrays, global_arrays),
            num_examples=reply.num_examples,
            policy=submission_policy(self.config, global_arrays, expected=self.expected),
            checks=self.checks,
            declared=declared_privacy(reply.info),
            server_round=server_round,
        )
        if report.passed:
            return None
        failed = [r.check for r in report.failures]
        return Rejection(reply.node_id, reply.organization, ",".join(failed), "; ".join(report.reasons()))
