"""Faults: malformed records, wrong length/ring/round, tampering, pins, forbidden requests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure import (
    AdvertiseKeys,
    MaskedInput,
    RoundSetup,
    PinnedTrust,
    UnmaskResponse,
    identity_fingerprint,
    plan_ring,
)

IDS = [5, 9, 13, 21]
LENGTH = 16


@pytest.fixture
def staged(federation_cls: Any, inputs_factory: Any) -> Any:
    """A federation after one full round, with round 2 set up and masked (not yet sent)."""
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=8)
    fed = federation_cls(IDS, spec=spec, length=LENGTH)
    fed.run_round(1, inputs=inputs_factory(IDS, length=LENGTH, spec=spec, seed=1), threshold=3)
    setup = fed.server.round_setup(round=2, participants=IDS, threshold=3)
    inputs = inputs_factory(IDS, length=LENGTH, spec=spec, seed=2)
    masked = {n: fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=setup) for n in IDS}
    return fed, setup, masked, inputs


def test_records_validate_every_field(staged: Any) -> None:
    fed, setup, masked, _ = staged
    rec = setup.to_record()
    assert RoundSetup.from_record(rec) == setup
    with pytest.raises(ProtocolViolation, match=r"round_setup\.threshold: missing"):
        RoundSetup.from_record({k: v for k, v in rec.items() if k != "threshold"})
    with pytest.raises(ProtocolViolation, match=r"round_setup\.round: expected an integer"):
        RoundSetup.from_record({**rec, "round": "2"})
    with pytest.raises(ProtocolViolation, match=r"round_setup\.c_pks\[1\]: expected 32 bytes, got '31 bytes'"):
        RoundSetup.from_record({**rec, "c_pks": [rec["c_pks"][0], b"x" * 31, *rec["c_pks"][2:]]})
    with pytest.raises(ProtocolViolation, match=r"round_setup\.ring: ring: needs"):
        RoundSetup.from_record({**rec, "frac_bits": 40})
    with pytest.raises(ProtocolViolation, match=r"round_setup\.bits: expected 32 or 64"):
        RoundSetup.from_record({**rec, "bits": 48})
    with pytest.raises(ProtocolViolation, match=r"round_setup\.participants: expected node ids sorted"):
        RoundSetup.from_record({**rec, "participants": list(reversed(rec["participants"]))})
    with pytest.raises(ProtocolViolation, match=r"round_setup\.threshold: expected an integer in \[2, 4\]"):
        RoundSetup.from_record({**rec, "threshold": 5})
    with pytest.raises(ProtocolViolation, match=r"message: expected"):
        RoundSetup.from_record({**rec, "message": AdvertiseKeys.TAG})

    m = masked[5]
    mrec = m.to_record()
    assert "masked" not in mrec
    with pytest.raises(
        ProtocolViolation, match=r"masked_input\.masked: expected dtype uint32 for a 32-bit ring, got uint64"
    ):
        MaskedInput.from_record(mrec, masked=m.masked.astype(np.uint64))
    with pytest.raises(ProtocolViolation, match=r"masked_input\.masked: expected shape \(16,\), got \(15,\)"):
        MaskedInput.from_record(mrec, masked=m.masked[:15])
    with pytest.raises(ProtocolViolation, match=r"masked_input\.self_share_ciphertexts\[0\]: expected 64 bytes"):
        MaskedInput.from_record(
            {**mrec, "self_share_ciphertexts": [b"x", *mrec["self_share_ciphertexts"][1:]]}, masked=m.masked
        )
    with pytest.raises(ProtocolViolation, match=r"parallel lists must have equal lengths"):
        MaskedInput.from_record({**mrec, "key_share_ciphertexts": mrec["key_share_ciphertexts"][1:]}, masked=m.masked)
    with pytest.raises(ProtocolViolation, match=r"unmask_response\.seeds: expected a list of bytes"):
        UnmaskResponse.from_record(
            {"message": UnmaskResponse.TAG, "run_id": 1, "round": 1, "node_id": 1, "self_share_owners": [],
             "self_share_indices": [], "self_shares": [], "key_share_owners": [], "key_share_indices": [],
             "key_shares": [], "seed_peers": [], "seeds": b""}
        )  # fmt: skip
    fed.server.abort_round()


def test_server_rejects_wrong_length_ring_and_round(staged: Any) -> None:
    fed, _, masked, _ = staged
    srv, m = fed.server, masked[5]
    short = dataclasses.replace(m, length=LENGTH - 1, masked=m.masked[:-1])
    with pytest.raises(ProtocolViolation, match=r"masked_input\.masked: expected shape \(16,\), got \(15,\)"):
        srv.receive_masked(5, short)
    wide = dataclasses.replace(m, bits=64, masked=m.masked.astype(np.uint64))
    with pytest.raises(ProtocolViolation, match=r"masked_input\.bits: expected 32, got 64"):
        srv.receive_masked(5, wide)
    late = dataclasses.replace(m, round=3)
    with pytest.raises(ProtocolViolation, match=r"masked_input\.round: expected 2, got 3"):
        srv.receive_masked(5, late)
    with pytest.raises(ProtocolViolation, match=r"masked_input\.node_id: expected 9, got 5"):
        srv.receive_masked(9, m)
    srv.receive_masked(5, m)
    with pytest.raises(ProtocolViolation, match="already sent"):
        srv.receive_masked(5, m)
    for n in (9, 13):
        srv.receive_masked(n, masked[n])
    srv.unmask_requests()
    with pytest.raises(ProtocolViolation, match="after stage M closed"):
        srv.receive_masked(21, masked[21])  # late arrival: node 21 stays dropped
    srv.abort_round()
    assert srv.needs_keys(IDS) == [21]


def test_client_refuses_other_round_and_tampered_envelope(staged: Any) -> None:
    fed, _, masked, _ = staged
    for n in IDS:
        fed.server.receive_masked(n, masked[n])
    requests = fed.server.unmask_requests()
    client, req = fed.clients[9], requests[9]
    with pytest.raises(ProtocolViolation, match="did not mask in round 1"):
        client.unmask(dataclasses.replace(req, round=1))
    # A tampered envelope drops that peer only (not the holder's whole reply).
    envs = list(req.self_share_ciphertexts)
    envs[2] = envs[2][:20] + bytes([envs[2][20] ^ 0x40]) + envs[2][21:]
    saved = client.state_dict()
    partial = client.unmask(dataclasses.replace(req, self_share_ciphertexts=tuple(envs)))
    assert partial.self_share_owners == (5, 9, 21) and len(partial.self_shares) == 3
    # Envelopes addressed to another node, relabelled: none opens, nothing is revealed.
    client = fed.clients[9] = type(client).from_state_dict(saved, identity=fed.identities[9])
    swapped = dataclasses.replace(req, self_share_ciphertexts=requests[13].self_share_ciphertexts)
    assert client.unmask(swapped).self_share_owners == ()
    client = fed.clients[9] = type(client).from_state_dict(saved, identity=fed.identities[9])
    assert not client.state_dict()["round_revealed_self"]  # nothing revealed yet
    resp = client.unmask(req)
    fed.server.receive_unmask(9, resp)
    with pytest.raises(ProtocolViolation, match="already answered"):
        fed.server.receive_unmask(9, resp)
    forged = dataclasses.replace(resp, self_share_indices=(1,) * len(resp.self_share_indices))
    with pytest.raises(ProtocolViolation, match=r"self_share_indices: node 13's index is 3"):
        fed.server.receive_unmask(13, dataclasses.replace(forged, node_id=13))
    fed.server.abort_round()


def test_pinned_identity_mismatch_sends_nothing(federation_cls: Any) -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=8)
    fed = federation_cls(IDS, spec=spec, length=LENGTH)
    for n in IDS:
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=1))
    pins = {fed.clients[n].organization: fed.clients[n].identity_fingerprint for n in IDS}
    setup = fed.server.round_setup(round=1, participants=IDS, threshold=3)
    client = fed.clients[5]
    before = client.state_dict()
    bad = dict(pins, **{"org-13": identity_fingerprint(b"\x01" * 32)})
    with pytest.raises(ProtocolViolation, match=r"pin_check: organization 'org-13' presents identity [0-9a-f]{64}, pinned"):
        client.mask(np.zeros(LENGTH), weight=1.0, setup=setup, trust=PinnedTrust(bad))
    missing = {k: v for k, v in pins.items() if k != "org-21"}
    with pytest.raises(ProtocolViolation, match="pin_check: organization 'org-21' has no pin"):
        client.mask(np.zeros(LENGTH), weight=1.0, setup=setup, trust=PinnedTrust(missing))
    assert client.state_dict() == before  # nothing consumed, nothing to send
    msg = client.mask(np.zeros(LENGTH), weight=1.0, setup=setup, trust=PinnedTrust(pins))
    assert msg.round == 1


def test_client_refuses_both_shares_of_one_peer(staged: Any) -> None:
    fed, _, masked, _ = staged
    for n in (5, 9, 13):
        fed.server.receive_masked(n, masked[n])
    requests = fed.server.unmask_requests()  # 21 dropped: key shares of 21 requested
    req = requests[5]
    assert req.dropped == (21,) and req.key_share_owners == (21,)
    # Ask for the key share of a counted peer (13) alongside its self-mask share.
    evil = dataclasses.replace(
        req,
        key_share_owners=(21, 13),
        key_share_rounds=(1, 1),
        key_share_ciphertexts=(req.key_share_ciphertexts[0], req.key_share_ciphertexts[0]),
    )
    with pytest.raises(ProtocolViolation, match=r"refusing to reveal both .* of node\(s\) \[13\] in round 2"):
        fed.clients[5].unmask(evil)
    # Seed of a counted peer.
    with pytest.raises(ProtocolViolation, match=r"refusing to reveal both .* \[9\]"):
        fed.clients[5].unmask(dataclasses.replace(req, seed_requests=(9,)))
    # Across two requests: first the honest one, then one claiming 13 dropped.
    fed.clients[5].unmask(req)
    moved = dataclasses.replace(
        req,
        counted=(5, 9, 21),
        dropped=(13,),
        self_share_owners=(5, 9),
        self_share_ciphertexts=req.self_share_ciphertexts[:2],
        key_share_owners=(),
        key_share_rounds=(),
        key_share_ciphertexts=(),
        seed_requests=(13,),
    )
    with pytest.raises(ProtocolViolation, match=r"refusing to reveal both .* \[13\]"):
        fed.clients[5].unmask(moved)
    # Too few counted nodes: refuse (the sum of one or two inputs would leak them).
    req9 = requests[9]
    tiny = dataclasses.replace(req9, counted=(5, 9), dropped=(13, 21), self_share_owners=(5, 9),
                               self_share_ciphertexts=req9.self_share_ciphertexts[:2])  # fmt: skip
    with pytest.raises(ProtocolViolation, match="below the threshold 3"):
        fed.clients[9].unmask(tiny)
    with pytest.raises(ProtocolViolation, match="both counted and dropped"):
        fed.clients[9].unmask(dataclasses.replace(req9, dropped=(21, 13)))
    fed.server.abort_round()


def test_client_refuses_key_share_of_another_key(staged: Any) -> None:
    fed, _, masked, _ = staged
    for n in (5, 9, 13):
        fed.server.receive_masked(n, masked[n])
    requests = fed.server.unmask_requests()
    req = requests[5]
    # Node 21's *next* key shares (made in round 2, from its lost masked input) may not
    # be revealed for round 2: they are of a key not used yet.
    pos = IDS.index(5)
    next_env = masked[21].key_share_ciphertexts[pos]
    evil = dataclasses.replace(req, key_share_rounds=(2,), key_share_ciphertexts=(next_env,))
    resp = fed.clients[5].unmask(evil)
    assert resp.key_share_owners == () and resp.key_shares == ()  # that peer dropped, nothing revealed
    assert resp.self_share_owners == (5, 9, 13)
    fed.server.abort_round()


def test_client_refuses_setup_problems(federation_cls: Any) -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=8)
    fed = federation_cls(IDS, spec=spec, length=LENGTH)
    client = fed.clients[5]
    for n in IDS:
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=1))
    setup = fed.server.round_setup(round=1, participants=IDS, threshold=3)
    with pytest.raises(ProtocolViolation, match=r"update: expected shape \(16,\), got \(15,\)"):
        client.mask(np.zeros(LENGTH - 1), weight=1.0, setup=setup)
    with pytest.raises(ProtocolViolation, match="run_check: round_setup.run_id is 12, expected 11"):
        client.mask(np.zeros(LENGTH), weight=1.0, setup=dataclasses.replace(setup, run_id=12))
    with pytest.raises(ProtocolViolation, match="not listed"):
        fed.clients[5].mask(
            np.zeros(LENGTH), weight=1.0,
            setup=dataclasses.replace(setup, participants=(9, 13, 21, 22)),
        )  # fmt: skip
    client.mask(np.zeros(LENGTH), weight=1.0, setup=setup)
    with pytest.raises(ProtocolViolation, match="not after the last round this node masked"):
        client.mask(np.zeros(LENGTH), weight=1.0, setup=setup)
    with pytest.raises(ProtocolViolation, match="no key usable in round 2"):
        fed.server.round_setup(round=2, participants=IDS, threshold=3)
