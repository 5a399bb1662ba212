"""A scripted Grid for unit tests of the strategy (no simulation engine)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.clientapp import build_client_app
from oneliac_flwr.flower.records import ARRAYS, INFO, METRICS, reply_info

Behaviour = Callable[[int, Message], RecordDict | Error | None]


@pytest.fixture(autouse=True, scope="session")
def secure_home(tmp_path_factory: pytest.TempPathFactory) -> Iterable[None]:
    """Hospital identities and trust stores of the test session live in a temp folder."""
    import os

    saved = os.environ.get("ONELIAC_SECURE_HOME")
    os.environ["ONELIAC_SECURE_HOME"] = str(tmp_path_factory.mktemp("secure-home"))
    yield
    if saved is None:
        os.environ.pop("ONELIAC_SECURE_HOME", None)
    else:
        os.environ["ONELIAC_SECURE_HOME"] = saved


@pytest.fixture(autouse=True, scope="session")
def task_identity() -> Iterable[None]:
    """Messages need a run identity outside a real run."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


class ScriptedGrid:
    """Nodes answer according to ``behaviour(node_id, message)``.

    The behaviour returns a RecordDict (a reply), an Error (an error reply) or None (no
    reply within the timeout). Every exchange is recorded in ``exchanges``.
    """

    def __init__(self, node_ids: list[int], behaviour: Behaviour) -> None:
        self.node_ids = node_ids
        self.behaviour = behaviour
        self.exchanges: list[list[str]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        self.exchanges.append([m.metadata.message_type for m in messages])
        replies = []
        for message in messages:
            answer = self.behaviour(message.metadata.dst_node_id, message)
            if answer is None:
                continue
            if isinstance(answer, Error):
                replies.append(Message(error=answer, reply_to=message))
            else:
                replies.append(Message(content=answer, reply_to=message))
        return replies


def train_reply(arrays: list[np.ndarray], num_examples: int, organization: str, **metrics: float) -> RecordDict:
    """A well-formed training reply of our ClientApp."""
    return RecordDict(
        {
            ARRAYS: ArrayRecord(numpy_ndarrays=arrays),
            METRICS: MetricRecord({"num-examples": num_examples, "train_loss": 0.5, "train_accuracy": 0.8, **metrics}),
            INFO: reply_info(organization=organization),
        }
    )


def eval_reply(num_examples: int, organization: str, accuracy: float) -> RecordDict:
    """A well-formed evaluation reply of our ClientApp."""
    return RecordDict(
        {
            METRICS: MetricRecord({"num-examples": num_examples, "eval_loss": 1 - accuracy, "eval_accuracy": accuracy}),
            INFO: reply_info(organization=organization),
        }
    )


RUN_ID = 1
NODES = [101, 202, 303, 404]

# (node, message_type, round) -> True to drop the message (no reply)
DropRule = Callable[[int, str, int], bool]
Tamper = Callable[[int, Message], None]


class AppGrid:
    """Delivers messages to the real ClientApp (one Context per node); drops or tampers as scripted."""

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        drop: DropRule | None = None,
        tamper: Tamper | None = None,
        outgoing: Tamper | None = None,
        on_reply: Callable[[int, str, Message], None] | None = None,
        nodes: list[int] | None = None,
        node_config: dict[int, dict] | None = None,
        run_id: int = RUN_ID,
    ) -> None:
        self.app = build_client_app(config)
        self.nodes = list(nodes or NODES)
        extra = node_config or {}
        self.contexts = {
            node: Context(
                run_id=run_id,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": len(self.nodes), **extra.get(node, {})},
                state=RecordDict(),
                run_config={},
            )
            for i, node in enumerate(self.nodes)
        }
        self.outgoing = outgoing
        self.on_reply = on_reply
        self.drop = drop or (lambda node, kind, rnd: False)
        self.tamper = tamper
        self.round = 0
        self.exchanges: list[str] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if not messages:
            return []
        kind = messages[0].metadata.message_type
        if kind == "train" or kind == "train.secure_keys":
            self.round += kind == "train.secure_keys" or not self.exchanges or self.exchanges[-1] != "train.secure_keys"
        self.exchanges.append(kind)
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if self.drop(node, kind, self.round):
                continue
            if self.outgoing is not None:
                self.outgoing(node, message)
            try:
                reply = self.app(message, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - the engine turns client exceptions into error replies
                reply = Message(error=Error(code=1, reason=str(exc)), reply_to=message)
            if self.tamper is not None and kind == "train":
                self.tamper(node, reply)
            if self.on_reply is not None:
                self.on_reply(node, kind, reply)
            replies.append(reply)
        return replies


