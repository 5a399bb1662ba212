"""What the hospital reads back: the federation's privacy report and its own data statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oneliac_flwr.data.analysis import LocalDataSummary
from oneliac_flwr.errors import CoordinatorError, FeatureUnavailable
from oneliac_flwr.sdk.transport import CoordinatorClient

__all__ = ["DataStatistics", "PRIVACY_REPORT_PATH", "PrivacyReport", "fetch_privacy_report"]

PRIVACY_REPORT_PATH = "/privacy/report"


@dataclass(frozen=True)
class PrivacyReport:
    """The coordinator's privacy report up to a round.

    Attributes
    ----------
    round : int
        The round reported on.
    total_epsilon : float
        Cumulative epsilon of the federation after that round.
    participants : int
        Organizations whose releases that round counted.
    delta : float
        The delta the epsilon is computed at.
    mechanism : str
        ``gaussian`` or ``laplace``.
    rounds : list of dict
        Per-round figures as the coordinator reports them.
    raw : dict
        The whole answer.
    """

    round: int
    total_epsilon: float
    participants: int
    delta: float
    mechanism: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, round: int) -> PrivacyReport:
        """From the coordinator's answer (``total_epsilon``, ``participants``, ``delta``, ``mechanism``)."""
        try:
            participants = data["participants"]
            return cls(
                round=int(data.get("round", round)),
                total_epsilon=float(data["total_epsilon"]),
                participants=len(participants) if isinstance(participants, list) else int(participants),
                delta=float(data["delta"]),
                mechanism=str(data["mechanism"]),
                rounds=list(data.get("rounds", [])),
                raw=dict(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CoordinatorError(f"the privacy report lacks or mistypes {exc}", problem="privacy_report") from None


def fetch_privacy_report(client: CoordinatorClient, round: int) -> PrivacyReport:
    """``GET /privacy/report?round=`` as a :class:`PrivacyReport`.

    Raises
    ------
    FeatureUnavailable
        If the coordinator has no privacy report endpoint, or differential privacy is off.
    """
    try:
        data = client.get_json(PRIVACY_REPORT_PATH, params={"round": int(round)})
    except CoordinatorError as exc:
        if exc.status == 404 and exc.problem == "privacy_off":
            raise FeatureUnavailable(f"no privacy report: {exc}", status=404, problem="privacy_off") from None
        if exc.status == 404 and exc.problem in ("not_found", ""):
            raise FeatureUnavailable(
                "this coordinator does not publish a privacy report yet (GET /api/v1/federated/privacy/report); "
                "the hospital's own accounting is learner.get_current_epsilon()", status=404, problem="not_found"
            ) from None
        raise
    if isinstance(data, list):  # the coordinator's per-round rows (GET /privacy/report?round=N)
        row = next((r for r in data if isinstance(r, dict) and r.get("round") == int(round)), None)
        if row is None:
            raise CoordinatorError(f"the privacy report has no row for round {round}", problem="privacy_report")
        data = {**row, "total_epsilon": row.get("epsilon_cumulative"), "rounds": data}
    return PrivacyReport.from_json(data, round=round)


@dataclass(frozen=True)
class DataStatistics:
    """A local summary of the hospital's table (computed locally, never sent).

    Attributes
    ----------
    label_distribution : dict of str to int
        Rows per label.
    num_examples : int
        Rows.
    missing_values : dict of str to int
        Missing values per column (features, and ``label`` for labels).
    feature_ranges : dict of str to tuple of float
        ``(min, max)`` of each feature.
    summary : LocalDataSummary
        The full summary (quartiles, means, ...).
    """

    label_distribution: dict[str, int]
    num_examples: int
    missing_values: dict[str, int]
    feature_ranges: dict[str, tuple[float, float]]
    summary: LocalDataSummary = field(repr=False)

    @classmethod
    def from_summary(cls, summary: LocalDataSummary, *, label_column: str) -> DataStatistics:
        """From :func:`oneliac_flwr.data.analysis.analyze_local_data`."""
        missing = {f.name: f.missing_count for f in summary.features}
        missing[label_column] = summary.labels.missing
        return cls(
            label_distribution=dict(summary.labels.counts),
            num_examples=summary.num_examples,
            missing_values=missing,
            feature_ranges={f.name: (f.min, f.max) for f in summary.features},
            summary=summary,
        )
