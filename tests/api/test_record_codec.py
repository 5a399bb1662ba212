"""The one JSON codec of secure-sum records at the HTTP boundary."""

from __future__ import annotations

import json

import pytest

from oneliac_flwr.api.records import record_from_json, record_to_json
from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure import AdvertiseKeys, Identity, SecureSumClient


def test_a_message_record_survives_json() -> None:
    client = SecureSumClient(node_id=7, run_id=9, identity=Identity.generate(), organization="org_a")
    message = client.advertise_keys(round=3)
    wire = json.loads(json.dumps(record_to_json(message.to_record())))
    assert wire["c_pk"] == "0x" + message.c_pk.hex()
    assert AdvertiseKeys.from_record(record_from_json(wire)) == message


def test_ambiguous_or_malformed_values_name_the_field() -> None:
    with pytest.raises(ProtocolViolation, match=r"record\.federation"):
        record_to_json({"federation": "0xabc"})
    with pytest.raises(ProtocolViolation, match=r"record\.c_pk"):
        record_from_json({"c_pk": "0x123"})
    with pytest.raises(ProtocolViolation, match=r"record\.envelopes\[1\]"):
        record_from_json({"envelopes": ["0x00", "0xzz"]})
    assert record_from_json({"n": [1, None, "org_a"]}) == {"n": [1, None, "org_a"]}
