"""What a run reports: per-round records, final metrics and the files of its output folder.

This module knows nothing of Flower. The adapter fills a :class:`RunResults`, and
:func:`write_run_outputs` writes ``results.json`` (atomically), ``model.pt`` and plots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from oneliac_flwr.atomic_files import write_json_atomic

__all__ = ["OUTPUT_MODE", "Rejection", "RoundRecord", "RunResults", "write_json_atomic"]

#: Mode of every file of a run's output folder (results.json, model.pt, plots): readable by
#: all. Outputs hold aggregates, counts and reasons, never a patient row or one hospital's
#: update, and are meant to be shared with the consortium; secrets (keys, ledger key,
#: hospitals' privacy state) are 0600 and live elsewhere (``docs/deployment.md``).
OUTPUT_MODE = 0o644

StoppedReason = Literal[
    "running", "max_rounds_reached", "privacy_budget_exhausted", "no_round_completed", "too_many_failed_rounds", "error"
]


@dataclass(frozen=True)
class Rejection:
    """One submission left out of a round, with the check that rejected it and why.

    ``node_id`` is for the adapter's bookkeeping only: ``results.json`` names the
    organization and keeps node ids in its one ``nodes`` table.
    """

    node_id: int
    organization: str
    check: str
    reason: str


@dataclass
class RoundRecord:
    """Everything recorded about one round."""

    round: int
    status: Literal["ok", "skipped", "failed"] = "ok"
    failure_reason: str | None = None
    sampled: list[str] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    train_loss: float | None = None
    train_accuracy: float | None = None
    centralized_accuracy: float | None = None
    centralized_loss: float | None = None
    federated_accuracy: float | None = None
    federated_loss: float | None = None
    per_organization: dict[str, dict[str, float]] = field(default_factory=dict)
    secure_sum: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    wall_seconds: float = 0.0

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """Count of rejections per check name."""
        counts: dict[str, int] = {}
        for item in self.rejected:
            counts[item.check] = counts.get(item.check, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for rejection in data["rejected"]:
            rejection.pop("node_id", None)  # node ids live in RunResults.nodes only
        data["accepted"] = len(self.participants)
        data["rejected_count"] = len(self.rejected)
        data["rejected_by_reason"] = self.rejected_by_reason
        return _finite(data)


@dataclass
class RunResults:
    """The whole run: config, rounds, final block and privacy report."""

    config: dict[str, Any]
    rounds: list[RoundRecord] = field(default_factory=list)
    initial_centralized_accuracy: float | None = None
    initial_centralized_loss: float | None = None
    stopped_reason: StoppedReason = "max_rounds_reached"
    stop_detail: str | None = None
    organizations: dict[str, dict[str, Any]] = field(default_factory=dict)
    privacy_report: dict[str, Any] | None = None
    privacy_plan: dict[str, Any] | None = None
    nodes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def rounds_completed(self) -> int:
        """Rounds whose aggregate updated the model."""
        return sum(1 for r in self.rounds if r.status == "ok")

    def final(self) -> dict[str, Any]:
        """The ``final`` block: metrics of the last evaluated model and why the run stopped."""
        trained = self.rounds_completed > 0  # the initial model is never reported as the result
        last = next((r for r in reversed(self.rounds) if r.status == "ok" and r.centralized_accuracy is not None), None)
        last_fed = next((r for r in reversed(self.rounds) if r.status == "ok" and r.federated_accuracy is not None), None)
        accuracy = last.centralized_accuracy if last and trained else None
        loss = last.centralized_loss if last and trained else None
        return _finite(
            {
                "accuracy": accuracy if accuracy is not None else (last_fed.federated_accuracy if last_fed else None),
                "loss": loss if loss is not None else (last_fed.federated_loss if last_fed else None),
                "centralized_accuracy": accuracy,
                "centralized_loss": loss,
                "federated_accuracy": last_fed.federated_accuracy if last_fed else None,
                "federated_loss": last_fed.federated_loss if last_fed else None,
                "rounds_completed": self.rounds_completed,
                "rounds_attempted": len(self.rounds),
                "stopped_reason": self.stopped_reason,
                "stop_detail": self.stop_detail,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        per_org: dict[str, list[dict[str, float]]] = {}
        for record in self.rounds:
            for org, metrics in record.per_organization.items():
                per_org.setdefault(org, []).append({"round": record.round, **metrics})
        return _finite(
            {
                "config": self.config,
                "initial": {
                    "centralized_accuracy": self.initial_centralized_accuracy,
                    "centralized_loss": self.initial_centralized_loss,
                },
                "rounds": [r.to_dict() for r in self.rounds],
                "final": self.final(),
                "stopped_reason": self.stopped_reason,
                "organizations": self.organizations,
                "nodes": self.nodes,
                "per_organization_evaluation": per_org,
                "privacy_plan": self.privacy_plan,
                "privacy_report": self.privacy_report,
            }
        )


def _finite(value: Any) -> Any:
    """Replace NaN/inf by None so the JSON is standard (``allow_nan=False``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
