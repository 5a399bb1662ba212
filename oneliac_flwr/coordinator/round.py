"""From a round's aggregate to the next global model, the same for every transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from oneliac_flwr.coordinator.aggregate import Aggregate
from oneliac_flwr.results import RoundRecord

__all__ = ["PrivacyGuard", "RoundCore", "RoundOutcome", "ServerUpdate", "mean_server_update"]


class PrivacyGuard(Protocol):
    """Differential-privacy hooks: budget check, noise, accounting."""

    def check_round(self, server_round: int) -> str | None:
        """Return a reason to stop before this round, or ``None`` to go on."""
        ...

    def client_config(self) -> dict[str, int | float | str | bool]:
        """Settings the clients need (mode, clip, noise) for this round."""
        ...

    def on_receipt(self, server_round: int, releases: int) -> None:
        """Replies carrying an update arrived (called before any validation)."""
        ...

    def on_reveal(self, server_round: int, contributors: int) -> None:
        """A secure sum was unmasked (called before its checks)."""
        ...

    def privatize(self, server_round: int, aggregate: Aggregate, rng: np.random.Generator) -> Aggregate:
        """Apply coordinator-side noise (if any) to the aggregate."""
        ...

    def end_round(self, server_round: int, record: RoundRecord) -> None:
        """See how the round ended (also when it was skipped); fill ``record.privacy``."""
        ...

    def report(self) -> dict:
        """The full privacy report."""
        ...


class ServerUpdate(Protocol):
    """The inner strategy's server-side update (FedAvg, FedProx, FedAdam, ...).

    It receives the model the round started from (``global_arrays``) and the same model
    with the mean update added (``averaged``, the FedAvg model) and returns the new global model and
    aggregated training metrics; a server optimizer (FedAdam, ...) derives its pseudo
    gradient from the difference.
    """

    def __call__(
        self,
        server_round: int,
        global_arrays: list[np.ndarray],
        averaged: list[np.ndarray],
        metrics: dict[str, float],
        total_weight: float,
    ) -> tuple[list[np.ndarray] | None, dict[str, float] | None]: ...


def mean_server_update(
    server_round: int,
    global_arrays: list[np.ndarray],
    averaged: list[np.ndarray],
    metrics: dict[str, float],
    total_weight: float,
) -> tuple[list[np.ndarray] | None, dict[str, float] | None]:
    """The server rule of FedAvg and FedProx: the new model is the weighted mean itself.

    Stateless, so a coordinator that keeps no state in memory (the REST service) can apply
    it in any process; ``tests/api`` checks it against Flower's ``FedAvg``.
    """
    return averaged, metrics


@dataclass(kw_only=True)
class RoundOutcome:
    """How a round's aggregation ended.

    Parameters
    ----------
    status : {"ok", "skipped", "failed"}
        ``ok``: ``arrays`` is the new global model; otherwise the model is unchanged and
        ``reason`` says why.
    arrays : list of numpy.ndarray or None
        The new global model (model dtypes kept).
    metrics : dict or None
        Aggregated training metrics.
    received_evaluation : dict
        Federated evaluation of the model the organizations *received* (secure sum
        carries it inside the masked vector), keys ``received_eval_*``.
    reason : str or None
        Why the round was skipped or failed.
    """

    status: Literal["ok", "skipped", "failed"]
    arrays: list[np.ndarray] | None = None
    metrics: dict[str, float] | None = None
    received_evaluation: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


class RoundCore:
    """Turn a round's aggregate into the next global model.

    Parameters
    ----------
    min_participants : int
        Fewest counted organizations with which a round may update the model
        (``aggregation_config.min_participants``).
    server_update : ServerUpdate
        The inner strategy's server-side update.
    rng : numpy.random.Generator
        Source of coordinator-side noise (handed to ``privacy.privatize``).
    privacy : PrivacyGuard, optional
        Coordinator-side differential privacy.
    """

    def __init__(
        self,
        *,
        min_participants: int,
        server_update: ServerUpdate,
        rng: np.random.Generator,
        privacy: PrivacyGuard | None = None,
    ) -> None:
        self.min_participants = min_participants
        self.server_update = server_update
        self.rng = rng
        self.privacy = privacy

    def enough(self, count: int, what: str) -> str | None:
        """``None`` when ``count`` reaches ``min_participants``, else the reason to skip."""
        if count < self.min_participants:
            return f"{count} {what} < min_participants={self.min_participants}"
        return None

    def complete(self, server_round: int, aggregate: Aggregate, global_arrays: list[np.ndarray]) -> RoundOutcome:
        """Privatize the aggregate, apply the server update and check the new model.

        Parameters
        ----------
        server_round : int
            The round (1-based).
        aggregate : Aggregate
            The round's aggregate from the plain mean or the secure sum.
        global_arrays : list of numpy.ndarray
            The model the round started from.
        """
        short = self.enough(len(aggregate.counted), "counted submission(s)")
        if short is not None:
            return RoundOutcome(status="skipped", reason=short)
        if self.privacy is not None:
            aggregate = self.privacy.privatize(server_round, aggregate, self.rng)
        metrics = dict(aggregate.metrics)
        received = {k: metrics.pop(k) for k in list(metrics) if k.startswith("received_")}
        averaged = [g + u.astype(g.dtype) for g, u in zip(global_arrays, aggregate.mean_update, strict=True)]
        arrays, new_metrics = self.server_update(server_round, global_arrays, averaged, metrics, aggregate.total_weight)
        if arrays is None:
            return RoundOutcome(status="failed", reason="the inner strategy returned no arrays", received_evaluation=received)
        # Server optimizers (FedAdam, ...) compute in float64: keep the model's own dtypes.
        updated = [np.asarray(a).astype(g.dtype, copy=False) for a, g in zip(arrays, global_arrays, strict=True)]
        if not all(np.isfinite(a).all() for a in updated):
            return RoundOutcome(
                status="failed", reason="the aggregate is not finite; model left unchanged", received_evaluation=received
            )
        return RoundOutcome(status="ok", arrays=updated, metrics=new_metrics, received_evaluation=received)
