"""The wire format between our ClientApp and our strategy, and its parsers.

Parsing never raises on a malformed reply: it returns a :class:`~oneliac_flwr.results.Rejection`
that says what was wrong, so one bad reply cannot end the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.constant import ErrorCode

from oneliac_flwr.results import Rejection

__all__ = [
    "ARRAYS",
    "CONFIG",
    "INFO",
    "MASKED",
    "METRICS",
    "NUM_EXAMPLES",
    "PRIVACY",
    "SECURE_SUM",
    "EvalReply",
    "TrainReply",
    "organization_of",
    "parse_evaluate_reply",
    "parse_train_reply",
    "reply_info",
]

ARRAYS = "arrays"
MASKED = "masked"
CONFIG = "config"
METRICS = "metrics"
INFO = "oneliac"
PRIVACY = "privacy"
SECURE_SUM = "secure-sum"
NUM_EXAMPLES = "num-examples"


@dataclass(frozen=True)
class TrainReply:
    """A well-formed training reply."""

    node_id: int
    organization: str
    num_examples: int
    arrays: list[np.ndarray]
    metrics: dict[str, float]
    info: ConfigRecord
    message: Message


@dataclass(frozen=True)
class EvalReply:
    """A well-formed evaluation reply."""

    node_id: int
    organization: str
    num_examples: int
    metrics: dict[str, float]


def reply_info(
    *,
    organization: str,
    status: str = "ok",
    check: str = "",
    reason: str = "",
) -> ConfigRecord:
    """The ``oneliac`` ConfigRecord every reply of our ClientApp carries."""
    return ConfigRecord({"organization-id": organization, "status": status, "check": check, "reason": reason})


def organization_of(message: Message) -> str:
    """The organization id a reply declares, or ``node-<id>`` when it declares none."""
    node = message.metadata.src_node_id
    if message.has_error() or not message.has_content():
        return f"node-{node}"
    info = message.content.get(INFO)
    if isinstance(info, ConfigRecord) and isinstance(info.get("organization-id"), str):
        return str(info["organization-id"])
    return f"node-{node}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_REASON = 500


def _readable(reason: str) -> str:
    """An error reason fit for a record: no terminal colours; the engine's wrapper trimmed."""
    text = _ANSI.sub("", str(reason)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # The simulation engine wraps client exceptions in a traceback: keep its last line.
    last = lines[-1] if lines else text
    return last if len(last) <= _MAX_REASON else last[: _MAX_REASON - 3] + "..."


#: Checks for the SuperLink's own error replies (sent in the name of a node it could not reach).
_INFRASTRUCTURE_CHECKS = {
    int(ErrorCode.NODE_UNAVAILABLE): "node_unavailable",
    int(ErrorCode.REPLY_MESSAGE_UNAVAILABLE): "reply_expired",
    int(ErrorCode.MESSAGE_UNAVAILABLE): "message_expired",
}


def _common(message: Message, addressed_node: int | None = None) -> tuple[int, str, ConfigRecord, MetricRecord, int] | Rejection:
    node = message.metadata.src_node_id
    organization = organization_of(message)
    if addressed_node is not None and node != addressed_node:
        # Not the node's reply: the SuperLink answered for it (e.g. Node Unavailable). The
        # rejection belongs to the node addressed, with the SuperLink's reason.
        node, organization = addressed_node, f"node-{addressed_node}"
        if message.has_error():
            check = _INFRASTRUCTURE_CHECKS.get(int(message.error.code), "superlink_error")
            return Rejection(node, organization, check, f"SuperLink: {_readable(message.error.reason)}")
        return Rejection(node, organization, "malformed_reply", f"reply sent by node {message.metadata.src_node_id}, not by the node addressed")
    if message.has_error():
        return Rejection(node, organization, "error_reply", f"client error: {_readable(message.error.reason)}")
    if not message.has_content():
        return Rejection(node, organization, "malformed_reply", "reply has no content")
    content = message.content
    info = content.get(INFO)
    if not isinstance(info, ConfigRecord):
        return Rejection(node, organization, "malformed_reply", f"missing ConfigRecord {INFO!r}")
    if info.get("status") == "rejected":
        check = str(info.get("check") or "client_check")
        # The record keeps the check's name only; for a data error, also the file, column and
        # kind of problem the client names (DataError.public_reason). Any other detail can
        # depend on the hospital's data and stays in its log, even if a client sends it.
        public = info.get("reason") if check == "data_check" else None
        reason = f"refused by the client: {public}" if isinstance(public, str) and public else "refused by the client"
        return Rejection(node, organization, check, _readable(reason))
    metrics = content.get(METRICS)
    if not isinstance(metrics, MetricRecord):
        return Rejection(node, organization, "malformed_reply", f"missing MetricRecord {METRICS!r}")
    num_examples = metrics.get(NUM_EXAMPLES)
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, float)):
        return Rejection(node, organization, "malformed_reply", f"{METRICS}.{NUM_EXAMPLES} missing or not a number")
    if not float(num_examples).is_integer() or num_examples <= 0:
        return Rejection(node, organization, "malformed_reply", f"{METRICS}.{NUM_EXAMPLES} must be a positive integer, got {num_examples}")
    return node, organization, info, metrics, int(num_examples)


def _scalar_metrics(metrics: MetricRecord) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def parse_train_reply(message: Message, *, array_key: str = ARRAYS, addressed_node: int | None = None) -> TrainReply | Rejection:
    """Parse a training reply; a reply carrying plain arrays needs ``array_key``.

    Replies of the secure-sum path carry their masked payload in ``masked`` instead; the
    arrays list is then empty and the secure-sum adapter reads the payload.
    ``addressed_node`` is the node the instruction was sent to: a reply from anyone else
    (the SuperLink's own error reply, such as Node Unavailable) is rejected in that node's
    name with the SuperLink's reason (check ``node_unavailable``, ``reply_expired``,
    ``message_expired`` or ``superlink_error``).
    """
    parsed = _common(message, addressed_node)
    if isinstance(parsed, Rejection):
        return parsed
    node, organization, info, metrics, num_examples = parsed
    record = message.content.get(array_key)
    arrays: list[np.ndarray] = []
    if record is not None:
        if not isinstance(record, ArrayRecord):
            return Rejection(node, organization, "malformed_reply", f"{array_key!r} is not an ArrayRecord")
        try:
            arrays = record.to_numpy_ndarrays()
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a malformed reply
            return Rejection(node, organization, "malformed_reply", f"arrays cannot be decoded: {exc}")
    elif message.content.get(MASKED) is None:
        return Rejection(node, organization, "malformed_reply", f"missing ArrayRecord {array_key!r}")
    return TrainReply(node, organization, num_examples, arrays, _scalar_metrics(metrics), info, message)


def parse_evaluate_reply(message: Message) -> EvalReply | Rejection:
    """Parse an evaluation reply."""
    parsed = _common(message)
    if isinstance(parsed, Rejection):
        return parsed
    node, organization, _info, metrics, num_examples = parsed
    return EvalReply(node, organization, num_examples, _scalar_metrics(metrics))
