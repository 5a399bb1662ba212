"""The hospital driver's reading of a stage message's answer (oneliac_flwr/api/participant.py)."""

from __future__ import annotations

import httpx
import pytest

from oneliac_flwr.api.participant import _round_status, _waiting

GOOD = {"round": 3, "status": "open", "next_action": "unmask", "in_roster": True, "record": {"kind": "x"}}


def test_a_well_formed_round_status_of_the_same_round_is_taken() -> None:
    assert _round_status({"receipt": "rcpt_1", "round_status": GOOD}, 3) == GOOD
    assert _round_status({"receipt": "rcpt_1", "round_status": {**GOOD, "record": None}}, 3) is not None


@pytest.mark.parametrize("answer", [
    None, [], "text", {"receipt": "rcpt_1"}, {"round_status": None}, {"round_status": []},
    {"round_status": {**GOOD, "round": 4}},  # another round: never acted on
    {"round_status": {**GOOD, "round": None}},
    {"round_status": {k: v for k, v in GOOD.items() if k != "next_action"}},
    {"round_status": {k: v for k, v in GOOD.items() if k != "in_roster"}},
    {"round_status": {**GOOD, "status": 1}}, {"round_status": {**GOOD, "in_roster": "yes"}},
    {"round_status": {**GOOD, "record": "0x00"}},
])  # fmt: skip
def test_a_missing_or_malformed_round_status_means_asking_again(answer: object) -> None:
    assert _round_status(answer, 3) is None  # the driver then long-polls GET /rounds/{round}


def test_a_waiting_request_reads_for_longer_than_the_clients_timeout() -> None:
    with httpx.Client(timeout=httpx.Timeout(5.0, read=20.0)) as http:
        timeout = _waiting(http, 10.0)
    assert timeout.read == 30.0 and timeout.connect == 5.0 and timeout.write == 5.0
    with httpx.Client(timeout=None) as http:
        assert _waiting(http, 10.0).read is None
