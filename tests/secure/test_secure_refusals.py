"""Every branch of ``oneliac_flwr/secure`` that refuses something, one assertion each.

The security-relevant ones (own-key checks, reused peer keys, index and key checks on
shares, a reconstructed key that does not match) are exercised with forged inputs made
from the parties' real keys, as an attacker holding them would.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.errors import ConfigError, ProtocolViolation, RoundFailed
from oneliac_flwr.secure import (
    AdvertiseKeys,
    Identity,
    MaskedInput,
    RoundSetup,
    SecureSumClient,
    SecureSumServer,
    UnmaskRequest,
    UnmaskResponse,
    plan_ring,
)
from oneliac_flwr.secure.envelope import associated_data, open_share, seal_share
from oneliac_flwr.secure.keys import (
    derive_key,
    fingerprint,
    load_private_key,
    load_public_key,
    public_bytes,
    self_mask_key,
)
from oneliac_flwr.secure.masks import apply_masks, keystream, pairwise_sign
from oneliac_flwr.secure.sharing import SharePlaintext, combine_shares, split_secret

SPEC = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=8)
IDS = [5, 9, 13, 21]
LENGTH = 8


@pytest.fixture
def fed(federation_cls: Any, inputs_factory: Any) -> Any:
    """One full round done; keys of every node carried into round 2."""
    f = federation_cls(IDS, spec=SPEC, length=LENGTH)
    f.run_round(1, inputs=inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1), threshold=3)
    return f


def _replace_at(values: tuple, pos: int, value: Any) -> tuple:
    out = list(values)
    out[pos] = value
    return tuple(out)


def test_client_constructor_and_properties(fed: Any) -> None:
    me = Identity.generate()
    with pytest.raises(ProtocolViolation, match="identity: expected an Identity"):
        SecureSumClient(node_id=1, run_id=1, identity="x", organization="o")  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="mode: expected one of"):
        SecureSumClient(node_id=1, run_id=1, identity=me, organization="o", mode="x")  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="organization: expected a non-empty name"):
        SecureSumClient(node_id=1, run_id=1, identity=me, organization="two words")
    client = fed.clients[5]
    assert (client.node_id, client.run_id, client.has_keys, client.organization) == (5, 11, True, "org-5")
    assert not SecureSumClient(node_id=1, run_id=1, identity=me, organization="o").has_keys


def test_client_refuses_bad_setups(fed: Any) -> None:
    setup = fed.server.round_setup(round=2, participants=IDS, threshold=3)
    client, x = fed.clients[5], np.zeros(LENGTH)
    cases = [
        ("x", "setup: expected a RoundSetup"),
        (dataclasses.replace(setup, round=3), "key_round_check: this node's mask key may be used in round 2 only"),
        (dataclasses.replace(setup, organizations=_replace_at(setup.organizations, 0, "org-x")), "own_identity_check"),
        (dataclasses.replace(setup, c_pks=_replace_at(setup.c_pks, 0, setup.c_pks[1])), "own_key_check: the setup lists an envelope key"),
        (dataclasses.replace(setup, s_pks=_replace_at(setup.s_pks, 0, setup.s_pks[1])), "own_key_check: the setup lists for node 5 a mask key it does not hold"),
        (dataclasses.replace(setup, s_pks=_replace_at(setup.s_pks, 0, fed.transcripts[1].setup.s_pks[0])), "own_key_check: .* already used in round 1"),
    ]  # fmt: skip
    for bad, match in cases:
        with pytest.raises(ProtocolViolation, match=match):
            client.mask(x, weight=1.0, setup=bad)  # type: ignore[arg-type]
    # A peer (9) listed with the key it had in round 1, even re-signed by it for round 2.
    old = fed.transcripts[1].setup.s_pks[1]
    sig = fed.identities[9].sign_key(federation="default", organization="org-9", run_id=11, kind="mask", round=2,
                                     public_key=old)  # fmt: skip
    reused = dataclasses.replace(setup, s_pks=_replace_at(setup.s_pks, 1, old),
                                 s_pk_signatures=_replace_at(setup.s_pk_signatures, 1, sig))  # fmt: skip
    with pytest.raises(ProtocolViolation, match="reused_key_check: node 9 reuses the mask key it had in round 1"):
        client.mask(x, weight=1.0, setup=reused)
    # A node that never ran stage K.
    keyless = SecureSumClient(node_id=5, run_id=11, identity=fed.identities[5], organization="org-5")
    with pytest.raises(ProtocolViolation, match="key_check: node 5 holds no keys"):
        keyless.mask(x, weight=1.0, setup=setup)
    fed.server.abort_round()


def _round2(fed: Any, inputs_factory: Any, drop: tuple[int, ...] = ()) -> tuple[Any, dict[int, UnmaskRequest]]:
    setup = fed.server.round_setup(round=2, participants=IDS, threshold=3)
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    for n in IDS:
        m = fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=setup)
        if n not in drop:
            fed.server.receive_masked(n, m)
    return setup, fed.server.unmask_requests()


def test_client_refuses_bad_unmask_requests(fed: Any, inputs_factory: Any) -> None:
    setup, requests = _round2(fed, inputs_factory, drop=(21,))
    client, req = fed.clients[5], requests[5]
    cases = [
        ("x", "request: expected an UnmaskRequest"),
        (dataclasses.replace(req, run_id=12), "run_check: unmask_request.run_id is 12"),
        (dataclasses.replace(req, node_id=9), "node_check: addressed to 9"),
        (dataclasses.replace(req, dropped=()), "partition_check: counted \\+ dropped must be the participants"),
        (dataclasses.replace(req, counted=(9, 13, 21), dropped=(5,), key_share_owners=(), key_share_rounds=(),
                             key_share_ciphertexts=()), "partition_check: counted does not include this node"),
        (dataclasses.replace(req, self_share_owners=(5, 9, 21), key_share_owners=(), key_share_rounds=(),
                             key_share_ciphertexts=()), "partition_check: self-share owners \\[21\\] are not counted"),
        (dataclasses.replace(req, seed_requests=(13,), self_share_owners=(5, 9), self_share_ciphertexts=req.self_share_ciphertexts[:2]),
         "partition_check: key shares / seeds asked for \\[13\\]"),
    ]  # fmt: skip
    for bad, match in cases:
        with pytest.raises(ProtocolViolation, match=match):
            client.unmask(bad)  # type: ignore[arg-type]

    # Forged envelopes made with the owners' real envelope keys: each drops that peer only.
    c_sk_9 = load_private_key(fed.clients[9]._c_sk)
    pos5 = IDS.index(5)
    common = {"sender_c_sk": c_sk_9, "recipient_c_pk": setup.c_pks[pos5], "run_id": 11, "sender": 9, "recipient": 5}
    wrong_index = seal_share(SharePlaintext(2, os.urandom(32)).to_bytes(), round=2, kind="self", **common)
    self_envs = _replace_at(req.self_share_ciphertexts, req.self_share_owners.index(9), wrong_index)
    resp = client.unmask(dataclasses.replace(req, self_share_ciphertexts=self_envs))
    assert 9 not in resp.self_share_owners and len(resp.self_shares) == 2  # share_index_check

    c_sk_21 = load_private_key(fed.clients[21]._c_sk)
    other_key = SharePlaintext(pos5 + 1, os.urandom(32), public_bytes(load_private_key(os.urandom(32))), threshold=3,
                               participants=4, use_round=2)  # fmt: skip
    forged = seal_share(other_key.to_bytes(), sender_c_sk=c_sk_21, recipient_c_pk=setup.c_pks[pos5], run_id=11,
                        round=1, sender=21, recipient=5, kind="pairwise")  # fmt: skip
    client2 = fed.clients[13]
    req13 = requests[13]
    resp = client2.unmask(dataclasses.replace(req13, key_share_ciphertexts=(
        seal_share(other_key.to_bytes(), sender_c_sk=c_sk_21, recipient_c_pk=setup.c_pks[IDS.index(13)], run_id=11,
                   round=1, sender=21, recipient=13, kind="pairwise"),)))  # fmt: skip
    assert resp.key_share_owners == ()  # key_share_key_check: a share of another key
    assert forged  # (made for node 5; node 13's copy is the one used)

    client._c_sk = None
    with pytest.raises(ProtocolViolation, match="key_check: node 5 lost its envelope key"):
        client.unmask(req)
    fed.server.abort_round()


def test_client_state_is_validated(fed: Any) -> None:
    state = fed.clients[5].state_dict()
    ident = fed.identities[5]
    with pytest.raises(ProtocolViolation, match="identity_fingerprint: the state was made with another identity"):
        SecureSumClient.from_state_dict(state, identity=Identity.generate())
    bad = [
        ({"revealed_fingerprints": ["x"]}, "revealed_fingerprints"),
        ({"has_round": 1}, "has_round: expected a bool"),
        ({"round_c_pks": state["round_c_pks"][:-32]}, "parallel lists differ"),
        ({"round_c_pks": state["round_c_pks"][:-1]}, "round_c_pks: expected a multiple of 32 bytes"),
        ({"round_participants": state["round_participants"][:-3]}, "round_participants: expected a multiple of 8 bytes"),
        ({"c_secrets": state["c_secrets"][:-32]}, "c_secrets: expected one secret per peer key"),
        ({"round_fixed": "yes"}, "round_fixed: expected a bool"),
    ]
    for change, match in bad:
        with pytest.raises(ProtocolViolation, match=match):
            SecureSumClient.from_state_dict({**state, **change}, identity=ident)


def test_server_refusals(fed: Any, inputs_factory: Any) -> None:
    srv = fed.server
    with pytest.raises(ConfigError, match="spec"):
        SecureSumServer(run_id=1, spec="x", length=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="run_id"):
        SecureSumServer(run_id=-1, spec=SPEC, length=3)
    with pytest.raises(ConfigError, match="length"):
        SecureSumServer(run_id=1, spec=SPEC, length=0)
    assert srv.spec is SPEC and srv.key_share_holders(5) == (5, 9, 13, 21) and srv.key_share_holders(77) == ()
    with pytest.raises(ProtocolViolation, match="no open round"):
        srv.finalize()
    # Stage K.
    advert = SecureSumClient(node_id=5, run_id=11, identity=fed.identities[5], organization="org-5").advertise_keys(round=2)
    with pytest.raises(ProtocolViolation, match="expected AdvertiseKeys"):
        srv.register_keys(5, "x")  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="run_id: expected 11"):
        srv.register_keys(5, dataclasses.replace(advert, run_id=12))
    with pytest.raises(ProtocolViolation, match="node_id: 5 sent by node 9"):
        srv.register_keys(9, advert)
    impostor = SecureSumClient(node_id=77, run_id=11, identity=Identity.generate(), organization="org-5")
    with pytest.raises(ProtocolViolation, match="organization: 'org-5' is already node 5's"):
        srv.register_keys(77, impostor.advertise_keys(round=2))
    # Round setup.
    with pytest.raises(ConfigError, match="threshold"):
        srv.round_setup(round=2, participants=IDS, threshold=1)
    with pytest.raises(ConfigError, match="max_participants"):
        srv.round_setup(round=2, participants=list(range(100, 109)), threshold=5)
    with pytest.raises(ProtocolViolation, match="round: 1 is not after the last round 1"):
        srv.round_setup(round=1, participants=IDS, threshold=3)
    with pytest.raises(RoundFailed, match="2 participants, below the threshold 3"):
        srv.round_setup(round=2, participants=[5, 9], threshold=3)
    setup = srv.round_setup(round=2, participants=IDS, threshold=3)
    assert srv.stage == "masking"
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    masked = {n: fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=setup) for n in IDS}
    m5 = masked[5]
    with pytest.raises(ProtocolViolation, match="expected MaskedInput"):
        srv.receive_masked(5, "x")  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="node 77 is not a participant"):
        srv.receive_masked(77, m5)
    with pytest.raises(ProtocolViolation, match="share_recipients: expected the participants"):
        srv.receive_masked(5, dataclasses.replace(m5, share_recipients=(5, 9, 13, 22)))
    with pytest.raises(ProtocolViolation, match="next_s_pk: must be a fresh key"):
        srv.receive_masked(5, dataclasses.replace(m5, next_s_pk=setup.s_pks[0]))
    with pytest.raises(ProtocolViolation, match="signature_check"):
        srv.receive_masked(5, dataclasses.replace(m5, next_s_pk_signature=bytes(64)))
    for n in (5, 9, 13):
        srv.receive_masked(n, masked[n])
    with pytest.raises(ProtocolViolation, match="call unmask_requests"):
        srv.finalize()
    requests = srv.unmask_requests()
    assert srv.unmask_requests() == requests and srv.stage == "unmasking"
    # Stage U responses.
    resp = {n: fed.clients[n].unmask(requests[n]) for n in (5, 9, 13)}
    r9 = resp[9]
    assert r9.key_share_owners == (21,)
    bad = [
        ("x", "expected UnmaskResponse"),
        (dataclasses.replace(r9, round=3), "round: expected 2"),
        (dataclasses.replace(r9, self_share_indices=(1, 1, 1)), "self_share_indices: node 9's index is 2"),
        (dataclasses.replace(r9, self_share_owners=(5, 9, 77)), "self_share_owners: not requested"),
        (dataclasses.replace(r9, key_share_owners=(13,)), "key_share_owners: not requested"),
        (dataclasses.replace(r9, key_share_indices=(4,)), "key_share_indices: share of node 21 held by node 9"),
        (dataclasses.replace(r9, seed_peers=(9,), seeds=(bytes(32),)), "seed_peers: not requested"),
    ]
    for message, match in bad:
        with pytest.raises(ProtocolViolation, match=match):
            srv.receive_unmask(9, message)  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="no unmask request was sent to node 21"):
        srv.receive_unmask(21, r9)
    # A wrong key share of dropped node 21: the reconstructed key does not match.
    srv.receive_unmask(9, dataclasses.replace(r9, key_shares=(os.urandom(32),)))
    for n in (5, 13):
        srv.receive_unmask(n, resp[n])
    with pytest.raises(RoundFailed, match="mask key of dropped node 21 reconstructed from key shares does not match"):
        srv.finalize()
    assert srv.stage == "idle"
    assert 5 in srv.key_share_holders(9)
    srv.register_keys(5, fed.clients[5].advertise_keys(round=3, rotate_envelope_key=True))
    assert 5 not in srv.key_share_holders(9)  # envelopes to its old envelope key are dropped
    # The same hospital back under a new node id (restart): the old registration goes.
    again = SecureSumClient(node_id=78, run_id=11, identity=fed.identities[5], organization="org-5")
    srv.register_keys(78, again.advertise_keys(round=3))
    assert srv.needs_keys([5], round=3) == [5] and srv.needs_keys([78], round=3) == []
    srv.forget(78)


def test_primitive_refusals() -> None:
    with pytest.raises(ProtocolViolation, match="expected 32 bytes"):
        load_private_key(b"x")
    with pytest.raises(ProtocolViolation, match="expected 32 bytes"):
        load_public_key(b"x")
    with pytest.raises(ProtocolViolation, match="public key 0 must be 32 bytes"):
        fingerprint(b"x")
    with pytest.raises(ProtocolViolation, match="purpose: expected one of"):
        derive_key(bytes(32), purpose="other", run_id=1, round=1, a=1, b=2)  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="self-mask seed of node 3"):
        self_mask_key(b"x", run_id=1, round=1, node=3)
    with pytest.raises(ProtocolViolation, match="n: expected an integer >= 0"):
        keystream(bytes(32), -1, np.uint32)
    with pytest.raises(ProtocolViolation, match="with itself"):
        pairwise_sign(3, 3)
    acc = np.zeros(4, dtype=np.uint32)
    with pytest.raises(ProtocolViolation, match="acc: expected a writable"):
        apply_masks(acc[::2], [(bytes(32), 1)])
    with pytest.raises(ProtocolViolation, match="mask sign"):
        apply_masks(acc, [(bytes(32), 2)])
    apply_masks(acc, [])
    assert not acc.any()
    with pytest.raises(ProtocolViolation, match="secret( 0)?: expected 32 bytes"):
        split_secret(b"x", threshold=2, n=3)
    with pytest.raises(ProtocolViolation, match="threshold: expected 2 <= t <= n"):
        split_secret(bytes(32), threshold=4, n=3)
    with pytest.raises(ProtocolViolation, match="share 1: expected 32 bytes"):
        combine_shares([(1, b"x"), (2, b"y")], threshold=2, what="s")
    share = os.urandom(32)
    for kwargs, match in [
        ({"index": 0, "share": share}, "share index"),
        ({"index": 1, "share": b"x"}, "share: expected 32 bytes"),
        ({"index": 1, "share": share, "s_pk": b"x"}, "share s_pk: expected 32 bytes"),
        ({"index": 5, "share": share, "s_pk": share, "threshold": 2, "participants": 4}, "share binding"),
        ({"index": 1, "share": share, "s_pk": share, "threshold": 2, "participants": 4, "use_round": -1}, "use_round"),
    ]:
        with pytest.raises(ProtocolViolation, match=match):
            SharePlaintext(**kwargs)
    with pytest.raises(ProtocolViolation, match="share plaintext: expected 84 bytes"):
        SharePlaintext.from_bytes(b"x" * 36, with_key=True)
    with pytest.raises(ProtocolViolation, match="kind: expected 'self' or 'pairwise'"):
        associated_data(run_id=1, round=1, sender=1, recipient=2, kind="other")  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="too short"):
        open_share(b"x", recipient_c_sk=load_private_key(bytes(32)), sender_c_pk=bytes(32), run_id=1, round=1,
                   sender=1, recipient=2, kind="self")  # fmt: skip


def test_message_refusals(fed: Any) -> None:
    setup = fed.transcripts[1].setup
    advert = fed.transcripts[1].keys[5]
    rec = setup.to_record()
    cases = [
        (lambda: RoundSetup.from_record({**rec, "organizations": [1, 2, 3, 4]}), "expected a list of non-empty strings"),
        (lambda: RoundSetup.from_record({**rec, "organizations": ["a", "a", "b", "c"]}), "expected distinct organizations"),
        (lambda: RoundSetup.from_record({**rec, "identity_pks": [rec["identity_pks"][0]] * 4}), "same identity"),
        (lambda: RoundSetup.from_record({**rec, "max_participants": 3}), "expected 2 to 3 nodes"),
        (lambda: RoundSetup.from_record({**rec, "clip_bound": -1.0}), "clip_bound: expected a finite float > 0"),
        (lambda: RoundSetup.from_record({**rec, "participants": "x" * 200}), r"participants: expected a list of integers, got 'x+\.\.\."),
        (lambda: RoundSetup.from_record({**rec, "participants": [5, 5, 13, 21]}), "distinct node ids"),
        (lambda: RoundSetup.from_record("x"), "expected a mapping"),  # type: ignore[arg-type]
        (lambda: AdvertiseKeys.from_record({**advert.to_record(), "s_pk": advert.c_pk}), "s_pk: must differ from c_pk"),
    ]  # fmt: skip
    for make, match in cases:
        with pytest.raises(ProtocolViolation, match=match):
            make()
    m = fed.transcripts[1].masked[5]
    mrec = m.to_record()
    with pytest.raises(ProtocolViolation, match="must include the sender 5"):
        MaskedInput.from_record({**mrec, "share_recipients": [6, 9, 13, 21]}, masked=np.array(m.masked))
    with pytest.raises(ProtocolViolation, match="expected a numpy array"):
        MaskedInput.from_record(mrec, masked=[1, 2])  # type: ignore[arg-type]
    req = fed.transcripts[1].requests[5].to_record()
    with pytest.raises(ProtocolViolation, match="key_share_rounds: expected a list of integers"):
        UnmaskRequest.from_record({**req, "key_share_rounds": "x"})
    assert UnmaskResponse.from_record(fed.transcripts[1].responses[5].to_record()) == fed.transcripts[1].responses[5]


def test_too_few_key_shares_of_a_dropped_node_fail_the_round(fed: Any, inputs_factory: Any) -> None:
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    with pytest.raises(RoundFailed, match=r"mask key of dropped node 21: 2 of 3 key shares"):
        fed.run_round(2, inputs=inputs, threshold=3, drop_m=[21], drop_u=[13])
    with pytest.raises(ConfigError, match="ring: needs"):
        plan_ring(clip_bound=1e12, weight_bound=1e6, max_participants=50, bits=32)
