"""Reply parsing never raises and keeps error reasons readable."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from oneliac_flwr.flower.records import INFO, METRICS, parse_evaluate_reply, parse_train_reply, reply_info
from oneliac_flwr.results import Rejection


def _instruction() -> Message:
    return Message(content=RecordDict(), dst_node_id=9, message_type=MessageType.TRAIN)


def test_engine_tracebacks_are_reduced_to_their_last_line_without_colours() -> None:
    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m\n"
        "  File \"x.py\", line 3, in run\n"
        "ValueError: update: expected shape (62,), got (64,)"
    )
    parsed = parse_train_reply(Message(error=Error(code=1, reason=reason), reply_to=_instruction()))
    assert isinstance(parsed, Rejection)
    assert parsed.check == "error_reply"
    assert parsed.reason == "client error: ValueError: update: expected shape (62,), got (64,)"
    assert "\x1b" not in parsed.reason


def test_client_refusal_keeps_its_check_and_never_a_detail() -> None:
    # Even a (modified) client that sends a detail: the record keeps the check name only.
    info = reply_info(organization="h1", status="rejected", check="nan_check", reason="nan_check: 3 non-finite values")
    parsed = parse_train_reply(Message(content=RecordDict({INFO: info}), reply_to=_instruction()))
    assert isinstance(parsed, Rejection)
    assert (parsed.organization, parsed.check) == ("h1", "nan_check")
    assert parsed.reason == "refused by the client"


def test_wrong_record_types_are_malformed_not_fatal() -> None:
    content = RecordDict(
        {
            "arrays": ConfigRecord({"not": "arrays"}),
            METRICS: MetricRecord({"num-examples": 5}),
            INFO: reply_info(organization="h2"),
        }
    )
    parsed = parse_train_reply(Message(content=content, reply_to=_instruction()))
    assert isinstance(parsed, Rejection) and parsed.check == "malformed_reply"
    assert "not an ArrayRecord" in parsed.reason


def test_well_formed_replies_parse() -> None:
    import numpy as np

    content = RecordDict(
        {
            "arrays": ArrayRecord(numpy_ndarrays=[np.ones(3, np.float32)]),
            METRICS: MetricRecord({"num-examples": 5, "train_loss": 0.3}),
            INFO: reply_info(organization="h3"),
        }
    )
    parsed = parse_train_reply(Message(content=content, reply_to=_instruction()))
    assert not isinstance(parsed, Rejection)
    assert parsed.num_examples == 5 and parsed.metrics["train_loss"] == 0.3 and parsed.organization == "h3"
    evaluation = parse_evaluate_reply(Message(content=RecordDict({METRICS: MetricRecord({"num-examples": 2, "eval_accuracy": 1.0}), INFO: reply_info(organization="h3")}), reply_to=_instruction()))
    assert not isinstance(evaluation, Rejection) and evaluation.metrics["eval_accuracy"] == 1.0


def test_a_data_check_refusal_keeps_the_file_and_column_the_client_names() -> None:
    info = reply_info(organization="h3", status="rejected", check="data_check", reason="/data/h3.csv: column 'age': feature column not found")
    parsed = parse_train_reply(Message(content=RecordDict({INFO: info}), reply_to=_instruction()))
    assert isinstance(parsed, Rejection) and (parsed.organization, parsed.check) == ("h3", "data_check")
    assert parsed.reason == "refused by the client: /data/h3.csv: column 'age': feature column not found"


def test_the_superlinks_error_reply_is_rejected_in_the_name_of_the_node_addressed() -> None:
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

    reply = Message(error=Error(code=int(ErrorCode.NODE_UNAVAILABLE), reason="Error: Node Unavailable"), reply_to=_instruction())
    reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    parsed = parse_train_reply(reply, addressed_node=9)
    assert isinstance(parsed, Rejection)
    assert (parsed.node_id, parsed.organization, parsed.check) == (9, "node-9", "node_unavailable")
    assert parsed.reason == "SuperLink: Error: Node Unavailable"
    other = Message(error=Error(code=0, reason="boom"), reply_to=_instruction())
    other.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    assert parse_train_reply(other, addressed_node=9).check == "superlink_error"  # type: ignore[union-attr]
    own = parse_train_reply(Message(error=Error(code=0, reason="boom"), reply_to=_instruction()), addressed_node=9)
    assert isinstance(own, Rejection) and own.check == "error_reply" and own.node_id == 9
