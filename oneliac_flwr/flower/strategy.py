"""``OneliacStrategy``: our guarantees wrapped around any weighted-mean Flower strategy.

The inner strategy (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, ...) keeps
sampling nodes and its own server-side update rule. The wrapper adds, per round:

- reply sanitising: error replies, missing or extra records and wrong keys become
  recorded rejections instead of ending the run (Flower raises
  ``InconsistentMessageReplies`` there);
- validation checks on every submission it can see (:mod:`oneliac_flwr.validation`);
- an aggregator: plain weighted mean, or secure sum (the inner strategy then sees only
  the unmasked aggregate, as a single synthetic reply);
- differential privacy accounting and a budget checked before each round;
- a record of every round (:class:`~oneliac_flwr.results.RoundRecord`).

No hook raises: a round that cannot be aggregated is recorded as skipped or failed and
leaves the model unchanged, both under :meth:`OneliacStrategy.start` and under Flower's
own ``Strategy.start``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from oneliac_flwr.coordinator import Aggregate, PrivacyGuard, RoundCore
from oneliac_flwr.flower.exchange import send_and_receive
from oneliac_flwr.flower.inner import server_update_for
from oneliac_flwr.flower.records import (
    NUM_EXAMPLES,
    PRIVACY,
    EvalReply,
    TrainReply,
    parse_evaluate_reply,
    parse_train_reply,
)
from oneliac_flwr.results import Rejection, RoundRecord

__all__ = ["Aggregate", "Aggregator", "OneliacStrategy", "PrivacyGuard", "SubmissionValidator"]

logger = logging.getLogger("oneliac_flwr")


class SubmissionValidator(Protocol):
    """Checks one plain submission; returns a rejection or ``None`` when it passes."""

    def __call__(self, reply: TrainReply, global_arrays: list[np.ndarray], server_round: int) -> Rejection | None: ...


class Aggregator(Protocol):
    """Turns accepted replies into one aggregate (plain mean or secure sum)."""

    def prepare(
        self, server_round: int, node_ids: list[int], grid: Grid, timeout: float
    ) -> tuple[list[int], dict[str, ConfigRecord]]:
        """Return the node ids that take part and the records to add to their messages."""
        ...

    def aggregate(
        self,
        server_round: int,
        replies: list[TrainReply],
        global_arrays: list[np.ndarray],
        grid: Grid,
        timeout: float,
        record: RoundRecord,
    ) -> Aggregate:
        """Aggregate the accepted replies (raise to fail the round; the model stays)."""
        ...

    def organization_of(self, node: int) -> str | None:
        """The organization a node named in the aggregator's own exchanges, or ``None``."""
        ...


class OneliacStrategy(Strategy):
    """Wrap a weighted-mean Flower strategy with our aggregation, checks and accounting.

    Parameters
    ----------
    inner : flwr.serverapp.strategy.Strategy
        A weighted-mean strategy (it must aggregate replies as a weighted mean of their
        arrays; FedAvg and its derivatives do).
    aggregator : Aggregator
        Plain weighted mean or secure sum.
    min_participants : int
        Fewest accepted submissions with which a round may be aggregated.
    validator : SubmissionValidator, optional
        Server-side checks on each plain submission.
    privacy : PrivacyGuard, optional
        Differential-privacy budget, noise and accounting.
    rng : numpy.random.Generator
        Source of coordinator-side randomness (noise).
    on_round_end : callable, optional
        Called with each finished :class:`RoundRecord` (progress, checkpoints).
    evaluate_in_training : bool
        The organizations evaluate the model they receive inside the training message
        (plain aggregation without DP): :meth:`start` then runs the separate evaluate
        exchange only after the last round, whose model no training message evaluates.
        Round ``r``'s federated evaluation is filled in by round ``r + 1``.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        aggregator: Aggregator,
        min_participants: int,
        rng: np.random.Generator,
        validator: SubmissionValidator | None = None,
        privacy: PrivacyGuard | None = None,
        on_round_end: Callable[[RoundRecord], None] | None = None,
        evaluate_in_training: bool = False,
    ) -> None:
        self.inner = inner
        self.evaluate_in_training = evaluate_in_training
        self.aggregator = aggregator
        self.min_participants = min_participants
        self.validator = validator
        self.privacy = privacy
        self.rng = rng
        self.on_round_end = on_round_end
        self.core = RoundCore(
            min_participants=min_participants,
            server_update=server_update_for(inner),
            rng=rng,
            privacy=privacy,
        )
        self.records: dict[int, RoundRecord] = {}
        self.stopped_reason: str = "max_rounds_reached"
        self.stop_detail: str | None = None
        self._grid: Grid | None = None
        self._timeout: float = 3600.0
        self._global: dict[int, list[np.ndarray]] = {}
        self._organizations: dict[int, str] = {}
        self._sites: dict[str, dict[str, list]] = {}
        self._sampled: dict[int, list[int]] = {}
        self._outgoing: dict[int, list[Message]] = {}
        self._sent_at: dict[int, float] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def _array_key(self) -> str:
        return str(getattr(self.inner, "arrayrecord_key", "arrays"))

    def record(self, server_round: int) -> RoundRecord:
        """The record of ``server_round`` (created on first use)."""
        if server_round not in self.records:
            self.records[server_round] = RoundRecord(round=server_round)
        return self.records[server_round]

    def _fail(self, record: RoundRecord, status: str, reason: str) -> tuple[None, None]:
        record.status = status  # type: ignore[assignment]
        record.failure_reason = reason
        logger.warning("round %d %s: %s", record.round, status, reason)
        return None, None

    # ------------------------------------------------------------------ Strategy hooks
    def summary(self) -> None:
        """Log the wrapped strategy and our settings."""
        logger.info(
            "OneliacStrategy around %s: aggregator=%s, min_participants=%d, validation=%s, privacy=%s",
            type(self.inner).__name__,
            type(self.aggregator).__name__,
            self.min_participants,
            self.validator is not None,
            self.privacy is not None,
        )
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let the inner strategy sample and configure, then add our round settings."""
        record = self.record(server_round)
        self._grid = grid
        try:
            self._global[server_round] = arrays.to_numpy_ndarrays()
            messages = list(self.inner.configure_train(server_round, arrays, config, grid))
            if not messages:
                return []
            node_ids = [m.metadata.dst_node_id for m in messages]
            participants, extra = self.aggregator.prepare(server_round, node_ids, grid, self._timeout)
            if self.privacy is not None:
                extra = {**extra, PRIVACY: ConfigRecord(self.privacy.client_config())}
            self._sampled[server_round] = sorted(participants)
            kept = [m for m in messages if m.metadata.dst_node_id in set(participants)]
            for message in kept:
                for key, value in extra.items():
                    message.content[key] = value
            # The grid sets each message's id when it sends it: replies are matched to the
            # node addressed, also when the SuperLink itself answers for that node.
            self._outgoing[server_round] = kept
            self._sent_at[server_round] = time.monotonic()
            return kept
        except Exception as exc:  # noqa: BLE001 - a failed setup skips the round, never the run
            self._fail(record, "failed", f"configure_train: {type(exc).__name__}: {exc}")
            logger.debug(traceback.format_exc())
            return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sanitise and check replies, aggregate, privatize, then let the inner strategy update."""
        record = self.record(server_round)
        try:
            if record.status == "failed":
                return None, None
            try:
                return self._aggregate_train(server_round, list(replies), record)
            except Exception as exc:  # noqa: BLE001 - nothing in a round may end the run
                logger.debug(traceback.format_exc())
                return self._fail(record, "failed", f"aggregate_train: {type(exc).__name__}: {exc}")
        finally:
            self._name_nodes(server_round, record)
            if self.privacy is not None:
                self.privacy.end_round(server_round, record)

    def _aggregate_train(
        self, server_round: int, replies: list[Message], record: RoundRecord
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        global_arrays = self._global.get(server_round)
        if global_arrays is None:
            return self._fail(record, "failed", "aggregate_train called without configure_train for this round")
        accepted: list[TrainReply] = []
        answered: set[int] = set()
        if self.privacy is not None:
            # A release is counted the moment it arrives, before validation can drop it.
            arrived = sum(1 for m in replies if not m.has_error() and m.has_content() and self._array_key in m.content)
            self.privacy.on_receipt(server_round, arrived)
        addressed = {m.metadata.message_id: m.metadata.dst_node_id for m in self._outgoing.get(server_round, []) if m.metadata.message_id}
        for message in replies:
            node = addressed.get(message.metadata.reply_to_message_id, message.metadata.src_node_id)
            answered.add(node)
            parsed = parse_train_reply(message, array_key=self._array_key, addressed_node=node)
            if isinstance(parsed, Rejection):
                record.rejected.append(parsed)
                continue
            self._organizations[parsed.node_id] = parsed.organization
            self._remember_site(parsed)
            rejection = self.validator(parsed, global_arrays, server_round) if self.validator else None
            if rejection is not None:
                record.rejected.append(rejection)
                continue
            accepted.append(parsed)
        elapsed = time.monotonic() - self._sent_at.get(server_round, time.monotonic())
        for node in self._sampled.get(server_round, []):
            if node in answered:
                continue
            if elapsed >= self._timeout:  # only a deadline that really passed is a timeout
                record.rejected.append(Rejection(node, self.name_of(node), "timeout", f"no reply within the {self._timeout:.0f} s deadline"))
            else:
                record.rejected.append(
                    Rejection(
                        node, self.name_of(node), "no_reply",
                        f"no reply; the exchange ended after {elapsed:.1f} s, before the {self._timeout:.0f} s deadline",
                    )
                )  # fmt: skip
        self._attribute_received_per_organization(server_round, accepted)
        short = self.core.enough(len(accepted), "accepted submission(s)")
        if short is not None:
            return self._fail(record, "skipped", short)
        aggregate = self.aggregator.aggregate(server_round, accepted, global_arrays, self._grid, self._timeout, record)  # type: ignore[arg-type]
        outcome = self.core.complete(server_round, aggregate, global_arrays)
        self._attribute_received_evaluation(server_round, outcome.received_evaluation)
        if outcome.status != "ok" or outcome.arrays is None:
            return self._fail(record, outcome.status, outcome.reason or "round not completed")
        by_node = {r.node_id: r for r in accepted}
        record.participants = [by_node[n].organization for n in aggregate.counted if n in by_node]
        metrics = MetricRecord(outcome.metrics) if outcome.metrics is not None else None
        if outcome.metrics is not None:
            record.train_loss = _maybe(outcome.metrics.get("train_loss"))
            record.train_accuracy = _maybe(outcome.metrics.get("train_accuracy"))
        record.status = "ok"
        return ArrayRecord(numpy_ndarrays=outcome.arrays), metrics

    def _last_completed_before(self, server_round: int) -> RoundRecord | None:
        done = [r for r in sorted(self.records) if r < server_round and self.records[r].status == "ok"]
        return self.records[done[-1]] if done else None

    def _attribute_received_per_organization(self, server_round: int, accepted: list[TrainReply]) -> None:
        """Plain aggregation: each organization's evaluation of the model it received, in the
        clear like the evaluate exchange it replaces, recorded on the round that made the model."""
        previous = self._last_completed_before(server_round)
        if previous is None:
            return
        for reply in accepted:
            values = [reply.metrics.get(f"received_eval_{k}") for k in ("loss", "accuracy", "examples")]
            if all(v is not None for v in values):
                loss, accuracy, examples = (float(v) for v in values)  # type: ignore[arg-type]
                previous.per_organization[reply.organization] = {
                    "eval_loss": loss,
                    "eval_accuracy": accuracy,
                    "num_examples": examples,
                }

    def name_of(self, node: int) -> str:
        """The organization a node declared in any reply of this run (or in its signed
        secure-sum key advertisement); ``node-<id>`` if it never did."""
        known = self._organizations.get(node)
        if known is None:
            known = self.aggregator.organization_of(node)
        return known if known is not None else f"node-{node}"

    def node_table(self) -> dict[str, list[int]]:
        """The one place node ids appear in a record: organization -> the node ids it used
        (a restarted SuperNode gets a new id)."""
        table: dict[str, list[int]] = {}
        for node in sorted(set(self._organizations) | {n for nodes in self._sampled.values() for n in nodes}):
            table.setdefault(self.name_of(node), []).append(int(node))
        return table

    def _name_nodes(self, server_round: int, record: RoundRecord) -> None:
        """Name every node of the round's record by its organization (node ids stay in :meth:`node_table`)."""
        record.sampled = [self.name_of(n) for n in self._sampled.get(server_round, [])]
        record.rejected = [
            replace(r, organization=self.name_of(r.node_id)) if r.organization == f"node-{r.node_id}" else r
            for r in record.rejected
        ]
        if record.secure_sum is not None:
            for key in ("dropped", "recovered_from_seeds", "silent_in_unmask"):
                values = record.secure_sum.get(key)
                if isinstance(values, list):
                    record.secure_sum[key] = [self.name_of(v) if isinstance(v, int) else v for v in values]
        self._outgoing.pop(server_round, None)

    def _attribute_received_evaluation(self, server_round: int, values: dict[str, float]) -> None:
        """Without DP each organization evaluates the model it *received* inside the training
        round: that is the model of the last completed round, so record it there."""
        if "received_eval_accuracy" not in values:
            return
        previous = self._last_completed_before(server_round)
        if previous is None:
            return
        previous.federated_accuracy = _maybe(values.get("received_eval_accuracy"))
        previous.federated_loss = _maybe(values.get("received_eval_loss"))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the inner strategy (never raises)."""
        try:
            return list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        except Exception as exc:  # noqa: BLE001
            logger.warning("round %d: configure_evaluate failed: %s", server_round, exc)
            return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Weighted-mean federated evaluation over well-formed replies; per-organization metrics recorded."""
        record = self.record(server_round)
        try:
            good: list[EvalReply] = []
            for message in replies:
                parsed = parse_evaluate_reply(message)
                if isinstance(parsed, Rejection):
                    logger.info("round %d: evaluation reply left out: %s", server_round, parsed.reason)
                    continue
                good.append(parsed)
                record.per_organization[parsed.organization] = {
                    "eval_loss": parsed.metrics.get("eval_loss", float("nan")),
                    "eval_accuracy": parsed.metrics.get("eval_accuracy", float("nan")),
                    "num_examples": float(parsed.num_examples),
                }
            if not good:
                return None
            weights = np.array([r.num_examples for r in good], dtype=np.float64)
            keys = set.intersection(*(set(r.metrics) for r in good)) - {NUM_EXAMPLES}
            mean = {k: float(np.average([r.metrics[k] for r in good], weights=weights)) for k in sorted(keys)}
            record.federated_loss = _maybe(mean.get("eval_loss"))
            record.federated_accuracy = _maybe(mean.get("eval_accuracy"))
            return MetricRecord({**mean, NUM_EXAMPLES: int(weights.sum())})
        except Exception as exc:  # noqa: BLE001
            logger.warning("round %d: aggregate_evaluate failed: %s", server_round, exc)
            return None

    def _remember_site(self, reply: TrainReply) -> None:
        counts = reply.info.get("label-counts")
        if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            total = sum(counts)
            self._sites[reply.organization] = {
                "label_counts": [int(c) for c in counts],
                "label_fractions": [c / total if total else 0.0 for c in counts],
            }

    def organization_summaries(self) -> dict[str, dict[str, object]]:
        """Per organization: rounds counted, rejections, and its declared training-label
        counts (counts and label distribution only, never a feature value or a row)."""
        summary: dict[str, dict[str, object]] = {}

        def entry(org: str) -> dict[str, object]:
            return summary.setdefault(org, {"rounds_counted": 0, "rejections": 0, **self._sites.get(org, {})})

        for record in self.records.values():
            for org in record.participants:
                entry(org)["rounds_counted"] += 1  # type: ignore[operator]
            for rejection in record.rejected:
                entry(rejection.organization)["rejections"] += 1  # type: ignore[operator]
        return summary

    # ------------------------------------------------------------------ run loop
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run up to ``num_rounds`` rounds; stop early, gracefully, when the budget is spent.

        Same signature and result as Flower's ``Strategy.start``, plus: the privacy budget
        is checked before each round; an exception in any stage of a round is recorded and
        the run goes on; :attr:`records` holds one :class:`RoundRecord` per round and
        :attr:`stopped_reason` says why the run ended.
        """
        self._timeout = float(timeout)
        self.summary()
        result = Result()
        arrays = initial_arrays
        result.arrays = arrays
        if evaluate_fn is not None:
            initial = evaluate_fn(0, arrays)
            if initial is not None:
                result.evaluate_metrics_serverapp[0] = initial
        for server_round in range(1, num_rounds + 1):
            if self.privacy is not None:
                reason = self.privacy.check_round(server_round)
                if reason is not None:
                    self.stopped_reason = "privacy_budget_exhausted"
                    self.stop_detail = reason
                    logger.info("stopping before round %d: %s", server_round, reason)
                    break
            started = time.perf_counter()
            record = self.record(server_round)
            messages = self.configure_train(server_round, arrays, ConfigRecord(dict(train_config or {})), grid)
            replies = send_and_receive(grid, messages, timeout=timeout) if messages else []
            new_arrays, train_metrics = self.aggregate_train(server_round, replies)
            if new_arrays is not None:
                arrays = new_arrays
                result.arrays = arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            evaluate_now = not self.evaluate_in_training or server_round == num_rounds
            eval_config = ConfigRecord(dict(evaluate_config or {}))
            eval_messages = self.configure_evaluate(server_round, arrays, eval_config, grid) if evaluate_now else []
            eval_replies = send_and_receive(grid, eval_messages, timeout=timeout) if eval_messages else []
            eval_metrics = self.aggregate_evaluate(server_round, eval_replies)
            if eval_metrics is not None:
                result.evaluate_metrics_clientapp[server_round] = eval_metrics
            if evaluate_fn is not None:
                central = evaluate_fn(server_round, arrays)
                if central is not None:
                    result.evaluate_metrics_serverapp[server_round] = central
                    record.centralized_accuracy = _maybe(central.get("accuracy"))
                    record.centralized_loss = _maybe(central.get("loss"))
            record.wall_seconds = time.perf_counter() - started
            logger.info(
                "round %d/%d %s: participants=%d rejected=%d centralized_acc=%s federated_acc=%s (%.2f s)",
                server_round,
                num_rounds,
                record.status,
                len(record.participants),
                len(record.rejected),
                _fmt(record.centralized_accuracy),
                _fmt(record.federated_accuracy),
                record.wall_seconds,
            )
            if self.on_round_end is not None:
                self.on_round_end(record)
        return result


def _maybe(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
