"""Multi-round behaviour: keys carried forward, dropout recovery, forced re-keying."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.errors import ProtocolViolation, RoundFailed
from oneliac_flwr.secure import SecureSumClient, fingerprint, plan_ring

IDS = [101, 7, 2**63 + 5, 42, 3000]
LENGTH = 300


@pytest.fixture
def fed(federation_cls: Any) -> Any:
    spec = plan_ring(clip_bound=1.0, weight_bound=1000.0, max_participants=10)
    return federation_cls(IDS, spec=spec, length=LENGTH)


def check_sum(res: Any, inputs: Any, exact: Any) -> None:
    _, _, ld_sum = exact
    reference = ld_sum(inputs, res.counted)
    err = np.max(np.abs(res.weighted_sum.astype(np.longdouble) - reference))
    assert float(err) <= res.error_bound


def test_keys_carried_forward_and_dropout_recovered_with_key_shares(fed: Any, inputs_factory: Any, exact: Any) -> None:
    spec, ids = fed.spec, sorted(IDS)
    assert fed.server.needs_keys(ids) == ids  # round 1: everybody runs stage K

    in1 = inputs_factory(ids, length=LENGTH, spec=spec, seed=1)
    res1 = fed.run_round(1, inputs=in1, threshold=3)
    assert set(fed.transcripts[1].keys) == set(ids)
    check_sum(res1, in1, exact)

    # Round 2: no stage K (keys announced with the round-1 inputs); node 42 drops at M.
    assert fed.server.needs_keys(ids) == []
    for node in ids:
        assert len(fed.server.key_share_holders(node)) == len(ids)
    in2 = inputs_factory(ids, length=LENGTH, spec=spec, seed=2)
    res2 = fed.run_round(2, inputs=in2, threshold=3, drop_m=[42])
    assert fed.transcripts[2].keys == {}
    assert res2.dropped == (42,)
    assert res2.recovered_dropouts == 1
    assert res2.recovered_from_seeds == ()  # recovered from key shares, no seeds needed
    assert all(42 in r.key_share_owners and not r.seed_requests for r in fed.transcripts[2].requests.values())
    check_sum(res2, in2, exact)

    # The dropped node's key was reconstructed: it must re-key; the others need not.
    assert fed.server.needs_keys(ids) == [42]

    # Node 42 refuses to reuse its round-2 key even if a coordinator asked it to.
    stale = dataclasses.replace(fed.transcripts[2].setup, round=3)
    with pytest.raises(ProtocolViolation, match="already used in round 2"):
        fed.clients[42].mask(in2[42][0], weight=in2[42][1], setup=stale)

    # Round 3: only node 42 runs stage K; everybody is counted again.
    in3 = inputs_factory(ids, length=LENGTH, spec=spec, seed=3)
    res3 = fed.run_round(3, inputs=in3, threshold=3)
    assert set(fed.transcripts[3].keys) == {42}
    assert res3.dropped == ()
    check_sum(res3, in3, exact)


def test_peers_refuse_a_revealed_key(fed: Any, inputs_factory: Any) -> None:
    spec, ids = fed.spec, sorted(IDS)
    fed.run_round(1, inputs=inputs_factory(ids, length=LENGTH, spec=spec, seed=1), threshold=3)
    fed.run_round(2, inputs=inputs_factory(ids, length=LENGTH, spec=spec, seed=2), threshold=3, drop_m=[7])
    old_s_pk = fed.transcripts[2].setup.s_pks[ids.index(7)]
    revealed = fingerprint(old_s_pk)
    assert all(revealed in fed.clients[v].revealed_fingerprints for v in ids if v != 7)

    # A coordinator that skipped the invalidation would list node 7's revealed key again.
    fed.stage_k(ids, fed.transcripts[2], round=3)
    setup = fed.server.round_setup(round=3, participants=ids, threshold=3)
    pos = ids.index(7)
    s_pks = list(setup.s_pks)
    s_pks[pos] = old_s_pk
    sigs = list(setup.s_pk_signatures)
    sigs[pos] = fed.transcripts[2].setup.s_pk_signatures[pos]
    bad = dataclasses.replace(setup, s_pks=tuple(s_pks), s_pk_signatures=tuple(sigs))
    x = np.zeros(LENGTH)
    # Its signature names round 2 only: refused.
    with pytest.raises(ProtocolViolation, match="signature_check: the mask key of organization 'org-7'"):
        fed.clients[101].mask(x, weight=1.0, setup=bad)
    # Even if node 7 had signed it again for round 3, peers remember what they revealed.
    sigs[pos] = fed.identities[7].sign_key(
        federation="default", organization="org-7", run_id=fed.run_id, kind="mask", round=3, public_key=old_s_pk
    )
    with pytest.raises(ProtocolViolation, match="revealed_key_check: node 7's mask key"):
        fed.clients[101].mask(x, weight=1.0, setup=dataclasses.replace(bad, s_pk_signatures=tuple(sigs)))
    fed.server.abort_round()


def test_stage_u_dropout_still_counted_and_participant_changes(fed: Any, inputs_factory: Any, exact: Any) -> None:
    spec, ids = fed.spec, sorted(IDS)
    fed.run_round(1, inputs=inputs_factory(ids, length=LENGTH, spec=spec, seed=1), threshold=3)
    # Node 3000 is counted but silent in stage U: its self mask comes from the others' shares.
    in2 = inputs_factory(ids, length=LENGTH, spec=spec, seed=2)
    res = fed.run_round(2, inputs=in2, threshold=3, drop_u=[3000])
    assert 3000 in res.counted and res.silent_in_unmask == (3000,)
    check_sum(res, in2, exact)
    # Round 3 with a subset (node 101 not selected) and node 7 dropping at M: node 7's
    # key shares were made in round 2 for all five (threshold 3); three holders remain.
    subset = [7, 42, 3000, 2**63 + 5]
    in3 = inputs_factory(subset, length=LENGTH, spec=spec, seed=3)
    res3 = fed.run_round(3, inputs=in3, threshold=3, drop_m=[7])
    assert res3.dropped == (7,) and res3.recovered_from_seeds == ()
    check_sum(res3, in3, exact)
    # Node 101's key was bound to round 3, in which it was not selected: it is re-keyed.
    assert fed.server.needs_keys(ids, round=4, threshold=3) == [7, 101]


def test_first_round_dropout_needs_seeds_from_every_counted_node(fed: Any, inputs_factory: Any, exact: Any) -> None:
    spec, ids = fed.spec, sorted(IDS)
    inputs = inputs_factory(ids, length=LENGTH, spec=spec, seed=5)
    res = fed.run_round(1, inputs=inputs, threshold=3, drop_m=[101])
    assert res.recovered_from_seeds == (101,)
    check_sum(res, inputs, exact)
    # The documented gap: seeds need every counted node alive in stage U.
    inputs = inputs_factory(ids, length=LENGTH, spec=spec, seed=6)
    with pytest.raises(RoundFailed, match=r"dropped node 101: no seed from counted nodes \[42\]"):
        fed.run_round(2, inputs=inputs, threshold=3, drop_k=[], drop_m=[101], drop_u=[42])


def test_below_threshold_fails_loudly_and_next_round_recovers(fed: Any, inputs_factory: Any, exact: Any) -> None:
    spec, ids = fed.spec, sorted(IDS)
    fed.run_round(1, inputs=inputs_factory(ids, length=LENGTH, spec=spec, seed=1), threshold=3)
    with pytest.raises(RoundFailed, match=r"2 of 5 masked inputs accepted, below the threshold 3"):
        fed.run_round(2, inputs=inputs_factory(ids, length=LENGTH, spec=spec, seed=2), threshold=3, drop_m=[7, 42, 101])
    assert fed.server.stage == "idle"
    assert fed.server.needs_keys(ids) == [7, 42, 101]
    # Counted but too few answers in stage U.
    with pytest.raises(RoundFailed, match=r"self-mask seed of counted node \d+: 2 of 3 shares"):
        fed.run_round(3, inputs=inputs_factory(ids, length=LENGTH, spec=spec, seed=3), threshold=3, drop_u=[7, 42, 101])
    # Keys of counted nodes moved on; the federation keeps working.
    in4 = inputs_factory(ids, length=LENGTH, spec=spec, seed=4)
    res = fed.run_round(4, inputs=in4, threshold=3)
    check_sum(res, in4, exact)


def test_client_state_dict_round_trip(fed: Any, inputs_factory: Any) -> None:
    ids = sorted(IDS)
    fed.run_round(1, inputs=inputs_factory(ids, length=LENGTH, spec=fed.spec, seed=1), threshold=3)
    client = fed.clients[42]
    state = client.state_dict()
    again = SecureSumClient.from_state_dict(state, identity=fed.identities[42])
    assert again.state_dict() == state
    assert again.identity_fingerprint == client.identity_fingerprint
    broken = dict(state, round_s_sk=b"short")
    with pytest.raises(ProtocolViolation, match=r"client_state\.round_s_sk"):
        SecureSumClient.from_state_dict(broken, identity=fed.identities[42])
    missing = {k: v for k, v in state.items() if k != "c_sk"}
    with pytest.raises(ProtocolViolation, match=r"client_state\.c_sk: missing"):
        SecureSumClient.from_state_dict(missing, identity=fed.identities[42])
