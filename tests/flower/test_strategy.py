"""OneliacStrategy: sanitising, checks, min_participants, and no hook ever ends the run."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.server.superlink.linkstate.utils import NODE_UNAVAILABLE_ERROR_REASON
from flwr.serverapp.strategy import FedAdam, FedAvg, Strategy

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.checks import ServerValidator
from oneliac_flwr.flower.plain import PlainAggregator
from oneliac_flwr.flower.records import INFO, METRICS
from oneliac_flwr.flower.strategy import OneliacStrategy

from conftest import ScriptedGrid, eval_reply, train_reply

NODES = [11, 22, 33, 44]
GLOBAL = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]
WEIGHTS = {11: 10, 22: 30, 33: 60, 44: 100}


def _update(node: int) -> list[np.ndarray]:
    return [np.full((2, 3), node / 100, np.float32), np.full(2, -node / 100, np.float32)]


def _strategy(inner: Strategy | None = None, min_participants: int = 2) -> OneliacStrategy:
    config = ExperimentConfig.from_dict({"validation": {"max_update_norm": 5.0}})
    return OneliacStrategy(
        inner or FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2),
        aggregator=PlainAggregator(),
        validator=ServerValidator(config),
        min_participants=min_participants,
        rng=np.random.default_rng(0),
    )


def _good(node: int, message: Message) -> RecordDict:
    if message.metadata.message_type == "evaluate":
        return eval_reply(WEIGHTS[node], f"h{node}", 0.9)
    return train_reply(_update(node), WEIGHTS[node], f"h{node}")


def _run_round(strategy: OneliacStrategy, grid: ScriptedGrid):
    messages = strategy.configure_train(1, ArrayRecord(numpy_ndarrays=GLOBAL), ConfigRecord(), grid)
    replies = grid.send_and_receive(messages, timeout=1)
    return strategy.aggregate_train(1, replies)


def test_aggregate_is_the_weighted_mean_of_accepted_updates() -> None:
    strategy = _strategy()
    arrays, metrics = _run_round(strategy, ScriptedGrid(NODES, _good))
    total = sum(WEIGHTS.values())
    expected = sum(WEIGHTS[n] * _update(n)[0] for n in NODES) / total
    assert np.allclose(arrays.to_numpy_ndarrays()[0], expected, atol=1e-6)
    record = strategy.records[1]
    assert record.status == "ok" and sorted(record.participants) == ["h11", "h22", "h33", "h44"]
    assert metrics["train_loss"] == pytest.approx(0.5)


def test_malformed_error_and_failing_replies_are_left_out_with_reasons() -> None:
    def behaviour(node: int, message: Message):
        if node == 11:
            return Error(code=1, reason="CUDA out of memory")
        if node == 22:
            bad = _good(node, message)
            del bad[METRICS]
            return bad
        if node == 33:
            poisoned = _update(node)
            poisoned[0][0, 0] = np.nan
            return train_reply(poisoned, WEIGHTS[node], "h33")
        return _good(node, message)

    strategy = _strategy(min_participants=1)
    arrays, _ = _run_round(strategy, ScriptedGrid(NODES, behaviour))
    record = strategy.records[1]
    by_org = {r.organization: r for r in record.rejected}
    assert by_org["node-11"].check == "error_reply" and "CUDA out of memory" in by_org["node-11"].reason
    assert by_org["h22"].check == "malformed_reply" and "MetricRecord" in by_org["h22"].reason
    assert "nan_check" in by_org["h33"].check and "non-finite" in by_org["h33"].reason
    assert record.participants == ["h44"]
    assert np.allclose(arrays.to_numpy_ndarrays()[0], _update(44)[0])


@pytest.mark.parametrize(
    ("mutate", "check", "fragment"),
    [
        (lambda c: c.__setitem__("arrays", ArrayRecord(numpy_ndarrays=[np.zeros(7, np.float32)])), "bounds_check", "shape"),
        (lambda c: c.__setitem__("arrays", ArrayRecord(numpy_ndarrays=[np.full((2, 3), 50, np.float32), np.zeros(2, np.float32)])), "bounds_check", "L2 norm"),
        (lambda c: c.__setitem__("extra", ArrayRecord(numpy_ndarrays=[np.zeros(1)])) or c.__delitem__("arrays"), "malformed_reply", "missing ArrayRecord"),
        (lambda c: c.__delitem__(INFO), "malformed_reply", "oneliac"),
        (lambda c: c[METRICS].__setitem__("num-examples", -3), "malformed_reply", "positive integer"),
        (lambda c: c.__setitem__(METRICS, MetricRecord({"n": 1})), "malformed_reply", "num-examples"),
    ],
)
def test_each_kind_of_bad_reply_is_rejected_not_fatal(mutate, check: str, fragment: str) -> None:
    def behaviour(node: int, message: Message):
        content = _good(node, message)
        if node == 11:
            mutate(content)
        return content

    strategy = _strategy()
    arrays, _ = _run_round(strategy, ScriptedGrid(NODES, behaviour))
    record = strategy.records[1]
    assert arrays is not None and record.status == "ok"
    assert len(record.rejected) == 1
    assert check in record.rejected[0].check and fragment in record.rejected[0].reason
    assert sorted(record.participants) == ["h22", "h33", "h44"]


def test_too_few_accepted_skips_the_round_and_keeps_the_model() -> None:
    def behaviour(node: int, message: Message):
        return _good(node, message) if node == 44 else Error(code=1, reason="down")

    strategy = _strategy(min_participants=2)
    arrays, metrics = _run_round(strategy, ScriptedGrid(NODES, behaviour))
    record = strategy.records[1]
    assert arrays is None and metrics is None
    assert record.status == "skipped"
    assert "1 accepted submission(s) < min_participants=2" in record.failure_reason
    assert len(record.rejected) == 3


def test_a_missing_reply_before_the_deadline_is_not_called_a_timeout() -> None:
    strategy = _strategy()
    _run_round(strategy, ScriptedGrid(NODES, lambda n, m: None if n == 33 else _good(n, m)))
    [missing] = [r for r in strategy.records[1].rejected if r.organization == "node-33"]
    assert missing.check == "no_reply" and "before the 3600 s deadline" in missing.reason


class SlowGrid(ScriptedGrid):
    """Waits out the deadline when a node does not answer, as Flower's grids do."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        if len(replies) < len(list(messages)):
            time.sleep(timeout or 0)
        return replies


def test_a_missing_reply_is_a_timeout_only_once_the_deadline_passed() -> None:
    strategy = _strategy()
    grid = SlowGrid(NODES, lambda n, m: None if n == 33 else _good(n, m))
    strategy.start(grid, ArrayRecord(numpy_ndarrays=GLOBAL), num_rounds=1, timeout=0.2)
    [missing] = [r for r in strategy.records[1].rejected if r.node_id == 33]
    assert missing.check == "timeout" and "0 s deadline" in missing.reason


class RelayGrid(ScriptedGrid):
    """Sets message ids like Flower's grids; the SuperLink answers for node 33 (Node Unavailable)."""

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        replies = []
        for message in messages:
            if message.metadata.dst_node_id == 33 and message.metadata.message_type == "train":
                reply = Message(error=Error(code=int(ErrorCode.NODE_UNAVAILABLE), reason=NODE_UNAVAILABLE_ERROR_REASON), reply_to=message)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID  # what the SuperLink sends
                replies.append(reply)
            else:
                replies.append(Message(content=_good(message.metadata.dst_node_id, message), reply_to=message))
        return replies


def test_the_superlinks_error_reply_is_attributed_to_the_node_addressed_once() -> None:
    strategy = _strategy()
    grid = RelayGrid(NODES, lambda n, m: _good(n, m))
    strategy.start(grid, ArrayRecord(numpy_ndarrays=GLOBAL), num_rounds=1, timeout=30)
    record = strategy.records[1]
    [rejection] = record.rejected
    assert rejection.node_id == 33 and rejection.check == "node_unavailable"
    assert "Node Unavailable" in rejection.reason and "heartbeat" in rejection.reason
    assert rejection.organization == "node-33"  # it never named itself in this run
    assert record.sampled == ["h11", "h22", "node-33", "h44"]
    assert "node-1" not in str(record.to_dict())


def test_a_known_organization_keeps_its_name_when_the_superlink_answers_for_it() -> None:
    strategy = _strategy()
    plain = ScriptedGrid(NODES, lambda n, m: _good(n, m))
    strategy.start(plain, ArrayRecord(numpy_ndarrays=GLOBAL), num_rounds=1, timeout=30)
    relay = RelayGrid(NODES, lambda n, m: _good(n, m))
    messages = strategy.configure_train(2, ArrayRecord(numpy_ndarrays=GLOBAL), ConfigRecord(), relay)
    strategy.aggregate_train(2, relay.send_and_receive(messages, timeout=30))
    record = strategy.records[2]
    assert [(r.organization, r.check) for r in record.rejected] == [("h33", "node_unavailable")]
    assert record.sampled == ["h11", "h22", "h33", "h44"]
    assert sorted(record.participants) == ["h11", "h22", "h44"]
    assert strategy.node_table() == {"h11": [11], "h22": [22], "h33": [33], "h44": [44]}
    serialized = record.to_dict()
    assert all("node_id" not in r for r in serialized["rejected"])


def test_an_exception_inside_aggregation_fails_the_round_not_the_run() -> None:
    class Broken(PlainAggregator):
        def aggregate(self, *args, **kwargs):
            raise RuntimeError("disk full")

    strategy = _strategy()
    strategy.aggregator = Broken()
    arrays, _ = _run_round(strategy, ScriptedGrid(NODES, _good))
    assert arrays is None
    assert strategy.records[1].status == "failed" and "disk full" in strategy.records[1].failure_reason


def test_works_under_flowers_own_start_with_fedadam() -> None:
    """Flower's Strategy.start drives our hooks; bad replies never end the run."""
    strategy = _strategy(inner=FedAdam(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2, eta=0.1))
    behaviour = lambda n, m: Error(code=1, reason="flaky") if n == 22 else _good(n, m)  # noqa: E731
    grid = ScriptedGrid(NODES, behaviour)
    result = Strategy.start(strategy, grid, ArrayRecord(numpy_ndarrays=GLOBAL), num_rounds=3, timeout=1)
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3]
    final = result.arrays.to_numpy_ndarrays()[0]
    assert np.all(final > 0)  # FedAdam moved towards the positive mean update
    assert all(r.status == "ok" and len(r.rejected) == 1 for r in strategy.records.values())


def test_our_start_records_evaluation_and_stops_when_the_guard_says_so() -> None:
    class Guard:
        def check_round(self, server_round: int):
            return "budget spent" if server_round == 3 else None

        def client_config(self):
            return {}

        def on_receipt(self, server_round, releases):
            self.received = releases

        def on_reveal(self, server_round, contributors):
            raise AssertionError("no secure sum on the plain path")

        def privatize(self, server_round, aggregate, rng):
            return aggregate

        def end_round(self, server_round, record):
            record.privacy = {"epsilon_total": float(server_round), "received": self.received}

        def report(self):
            return {}

    strategy = _strategy()
    strategy.privacy = Guard()
    grid = ScriptedGrid(NODES, _good)
    central = lambda rnd, arrays: MetricRecord({"accuracy": 0.5 + rnd / 10, "loss": 1.0})  # noqa: E731
    strategy.start(grid, ArrayRecord(numpy_ndarrays=GLOBAL), num_rounds=5, timeout=1, evaluate_fn=central)
    assert sorted(strategy.records) == [1, 2]
    assert strategy.stopped_reason == "privacy_budget_exhausted" and strategy.stop_detail == "budget spent"
    record = strategy.records[2]
    assert record.federated_accuracy == pytest.approx(0.9)
    assert record.centralized_accuracy == pytest.approx(0.7)
    assert set(record.per_organization) == {"h11", "h22", "h33", "h44"}
    assert record.privacy == {"epsilon_total": 2.0, "received": 4}  # counted on receipt, before validation
    # train + evaluate per round, no extra exchanges on the plain path
    assert grid.exchanges == [["train"] * 4, ["evaluate"] * 4] * 2
