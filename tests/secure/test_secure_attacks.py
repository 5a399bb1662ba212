"""The security review's attacks, scripted as a coordinator would run them.

Each attack is test code holding everything a (lying) coordinator holds, plus, where
the attack needs them, the secrets of colluding hospitals. Where it makes sense a
*positive control* disables the one client check that stops the attack and shows that
the attack code then recovers the victim's update exactly, so that the refusal is what
makes the difference (on v1 code, which had none of these checks, each attack succeeded).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure import (
    AdvertiseKeys,
    Identity,
    MaskedInput,
    PinnedTrust,
    RoundSetup,
    SecureSumClient,
    TofuTrust,
    decode_sum,
    plan_ring,
)
from oneliac_flwr.secure.envelope import open_share
from oneliac_flwr.secure.keys import load_private_key, pairwise_mask_key, private_bytes, public_bytes, self_mask_key
from oneliac_flwr.secure.masks import apply_masks, pairwise_sign
from oneliac_flwr.secure.sharing import SharePlaintext, combine_shares

LENGTH = 12
SPEC = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=16)
#: Low-order X25519 points (u = 0 and u = 1): every shared secret with them is all zero.
LOW_ORDER = (bytes(32), b"\x01" + bytes(31))


def _unmask_one(y: np.ndarray, *, node: int, round: int, run: int, b_seed: bytes, s_sk: bytes,
                peers: dict[int, bytes]) -> np.ndarray:  # fmt: skip
    """What the attacker computes: ``y - PRG(b) - sum_v sign PRG(k_{node,v})``, decoded."""
    residual = np.array(y)
    sk = load_private_key(s_sk)
    masks = [(self_mask_key(b_seed, run_id=run, round=round, node=node), -1)]
    for v, pk in peers.items():
        if v != node:
            masks.append((pairwise_mask_key(sk, pk, run_id=run, round=round, me=node, peer=v), -pairwise_sign(node, v)))
    apply_masks(residual, masks)
    return decode_sum(residual, spec=SPEC)


def _b_seed_from_stage_u(responses: Any, owner: int, threshold: int) -> bytes:
    shares = []
    for resp in responses:
        for w, i, share in zip(resp.self_share_owners, resp.self_share_indices, resp.self_shares, strict=True):
            if w == owner:
                shares.append((i, share))
    return combine_shares(shares, threshold=threshold, what="b")


def _colluder_share(fed: Any, *, colluder: int, owner: int, env: bytes, made_in: int) -> SharePlaintext:
    """A colluding hospital opens the key-share envelope it holds for ``owner``."""
    c_sk = load_private_key(fed.clients[colluder]._c_sk)
    setup = fed.transcripts[made_in].setup
    plain = open_share(
        env, recipient_c_sk=c_sk, sender_c_pk=setup.c_pks[setup.participants.index(owner)], run_id=fed.run_id,
        round=made_in, sender=owner, recipient=colluder, kind="pairwise",
    )  # fmt: skip
    return SharePlaintext.from_bytes(plain, with_key=True)


def _mask_all(fed: Any, setup: RoundSetup, inputs: dict[int, tuple[np.ndarray, float]]) -> dict[int, MaskedInput]:
    out = {}
    for n in setup.participants:
        out[n] = fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=setup)
        fed.server.receive_masked(n, out[n])
    return out


# ---------------------------------------------------------------------------- 1. carried-key threshold
def _carried_key_scenario(fed: Any, inputs_factory: Any) -> tuple[RoundSetup, dict[int, Any]]:
    """Round 1 of 3 nodes (t = 2); round 2 of 7 nodes where the coordinator asks t = 4."""
    small, ids = [1, 2, 3], sorted(fed.clients)
    fed.run_round(1, inputs=inputs_factory(small, length=LENGTH, spec=SPEC, seed=1), threshold=2)
    for n in fed.server.needs_keys(ids, round=2):  # only 4..7: 1, 2, 3 carry keys shared with t = 2
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=2))
    # The honest server re-keys nodes whose key was shared with t = 2 before a round of t = 4 ...
    assert fed.server.needs_keys(ids, round=2, threshold=4) == [1, 2, 3]
    with pytest.raises(ProtocolViolation, match=r"nodes \[1, 2, 3\] have no key usable in round 2 with threshold 4"):
        fed.server.round_setup(round=2, participants=ids, threshold=4)
    # ... so the attacker sets the round up with t = 2 and tells the clients t = 4.
    setup = dataclasses.replace(fed.server.round_setup(round=2, participants=ids, threshold=2), threshold=4)
    return setup, inputs_factory(ids, length=LENGTH, spec=SPEC, seed=2)


def test_carried_key_with_lower_threshold_is_refused_by_its_owner(federation_cls: Any, inputs_factory: Any) -> None:
    fed = federation_cls(range(1, 8), spec=SPEC, length=LENGTH)
    setup, inputs = _carried_key_scenario(fed, inputs_factory)
    before = fed.clients[1].state_dict()
    with pytest.raises(ProtocolViolation, match="key_threshold_check: this node's mask key was shared with threshold 2"):
        fed.clients[1].mask(inputs[1][0], weight=inputs[1][1], setup=setup)
    assert fed.clients[1].state_dict() == before  # nothing sent, nothing consumed


def test_carried_key_attack_positive_control(
    federation_cls: Any, inputs_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the owner's check, coordinator + 2 colluders (< t = 4) recover node 1's update."""
    fed = federation_cls(range(1, 8), spec=SPEC, length=LENGTH)
    setup, inputs = _carried_key_scenario(fed, inputs_factory)
    monkeypatch.setattr(SecureSumClient, "_check_key_binding", lambda self, setup: None)
    masked = _mask_all(fed, setup, inputs)
    # Honest stage U: node 1 counted, its self-mask seed revealed as the protocol intends.
    responses = [fed.clients[n].unmask(req) for n, req in fed.server.unmask_requests().items()]
    b_seed = _b_seed_from_stage_u(responses, owner=1, threshold=4)
    round1 = fed.transcripts[1].masked[1]  # node 1's key shares for round 2, t = 2 among {1, 2, 3}
    shares = [
        _colluder_share(fed, colluder=c, owner=1, env=round1.key_share_ciphertexts[c - 1], made_in=1) for c in (2, 3)
    ]
    s_sk = combine_shares([(s.index, s.share) for s in shares], threshold=2, what="s_sk of 1")
    x = _unmask_one(masked[1].masked, node=1, round=2, run=fed.run_id, b_seed=b_seed, s_sk=s_sk,
                    peers=dict(zip(setup.participants, setup.s_pks, strict=True)))  # fmt: skip
    x1, w1 = inputs[1]
    assert np.max(np.abs(x - x1 * w1)) <= 2.0 ** -SPEC.frac_bits  # recovered exactly


# ---------------------------------------------------------------------------- 2. inconsistent dropout sets
def test_inconsistent_dropout_sets_reveal_nothing_more(
    federation_cls: Any, inputs_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tell {4..7} that node 1 is counted and {2, 3} that it dropped: no colluding client.

    Even with the owners' round-setup check bypassed (so that the round happens), the
    holders of node 1's key shares refuse them: the sharing's threshold (2) is below the
    round's t (4). The positive control shows they would otherwise unmask node 1.
    """
    fed = federation_cls(range(1, 8), spec=SPEC, length=LENGTH)
    setup, inputs = _carried_key_scenario(fed, inputs_factory)
    monkeypatch.setattr(SecureSumClient, "_check_key_binding", lambda self, setup: None)
    masked = _mask_all(fed, setup, inputs)
    honest = fed.server.unmask_requests()
    others = tuple(n for n in setup.participants if n != 1)
    round1 = fed.transcripts[1].masked[1]

    def lie_to(holder: int) -> Any:
        req = honest[holder]
        keep = [i for i, w in enumerate(req.self_share_owners) if w != 1]
        return dataclasses.replace(
            req, counted=others, dropped=(1,), self_share_owners=tuple(req.self_share_owners[i] for i in keep),
            self_share_ciphertexts=tuple(req.self_share_ciphertexts[i] for i in keep), key_share_owners=(1,),
            key_share_rounds=(1,), key_share_ciphertexts=(round1.key_share_ciphertexts[holder - 1],),
        )  # fmt: skip

    saved = {h: fed.clients[h].state_dict() for h in (2, 3)}
    lies = {h: fed.clients[h].unmask(lie_to(h)) for h in (2, 3)}
    assert all(r.key_share_owners == () and r.key_shares == () for r in lies.values())  # refused: dropped peer

    # Positive control: without the holders' threshold check, the two shares give s_sk of node 1.
    original = SecureSumClient._open_key_share

    def lax(self: SecureSumClient, st: Any, *args: Any) -> SharePlaintext:
        real, st.sharing_threshold = st.sharing_threshold, 2  # the round's sharing threshold
        try:
            return original(self, st, *args)
        finally:
            st.sharing_threshold = real

    monkeypatch.setattr(SecureSumClient, "_open_key_share", lax)
    for h in (2, 3):
        fed.clients[h] = SecureSumClient.from_state_dict(saved[h], identity=fed.identities[h])
    lies = {h: fed.clients[h].unmask(lie_to(h)) for h in (2, 3)}
    shares = [(r.key_share_indices[0], r.key_shares[0]) for r in lies.values()]
    s_sk = combine_shares(shares, threshold=2, what="s_sk of 1")
    assert public_bytes(load_private_key(s_sk)) == setup.s_pks[0]
    assert masked[1].masked.shape == (LENGTH,)


# ---------------------------------------------------------------------------- 3. mask-key substitution
def _substitution(setup: RoundSetup, victim: int) -> tuple[RoundSetup, dict[int, bytes]]:
    fakes: dict[int, bytes] = {}
    s_pks, ids = list(setup.s_pks), list(setup.identity_pks)
    sigs, c_sigs = list(setup.s_pk_signatures), list(setup.c_pk_signatures)
    for i, v in enumerate(setup.participants):
        if v == victim:
            continue
        attacker = Identity.generate()  # the coordinator's own identity for this peer
        fakes[v] = private_bytes(X25519PrivateKey.generate())
        s_pks[i], ids[i] = public_bytes(load_private_key(fakes[v])), attacker.public_bytes
        sign = {"federation": "default", "organization": setup.organizations[i], "run_id": setup.run_id}
        sigs[i] = attacker.sign_key(kind="mask", round=setup.round, public_key=s_pks[i], **sign)
        c_sigs[i] = attacker.sign_key(kind="envelope", round=2**64 - 1, public_key=setup.c_pks[i], **sign)
    fake = dataclasses.replace(setup, s_pks=tuple(s_pks), identity_pks=tuple(ids), s_pk_signatures=tuple(sigs),
                               c_pk_signatures=tuple(c_sigs))  # fmt: skip
    return fake, fakes


IDS5 = [10, 20, 30, 40, 50]


def test_mask_key_substitution_is_refused_with_pins(federation_cls: Any, inputs_factory: Any, tmp_path: Any) -> None:
    fed = federation_cls(IDS5, spec=SPEC, length=LENGTH)
    fed.run_round(1, inputs=inputs_factory(IDS5, length=LENGTH, spec=SPEC, seed=1), threshold=3)
    setup = fed.server.round_setup(round=2, participants=IDS5, threshold=3)
    pins = PinnedTrust({c.organization: c.identity_fingerprint for c in fed.clients.values()})
    victim, x = fed.clients[10], np.zeros(LENGTH)
    # Substituted mask keys under the peers' own identities: the signatures do not verify.
    plain = dataclasses.replace(setup, s_pks=(setup.s_pks[0], *(public_bytes(X25519PrivateKey.generate())
                                                               for _ in IDS5[1:])))  # fmt: skip
    with pytest.raises(ProtocolViolation, match="signature_check: the mask key of organization 'org-20'"):
        victim.mask(x, weight=1.0, setup=plain, trust=pins)
    # Re-signed under identities the coordinator made: the pins refuse them.
    fake, _ = _substitution(setup, 10)
    with pytest.raises(ProtocolViolation, match="pin_check: organization 'org-20' presents identity"):
        victim.mask(x, weight=1.0, setup=fake, trust=pins)
    # Without pins, trust on first use: the identities were recorded in round 1's view.
    tofu = TofuTrust(tmp_path / "known.json")
    for c in fed.clients.values():
        tofu.check(federation="default", organization=c.organization, fingerprint=c.identity_fingerprint)
    with pytest.raises(ProtocolViolation, match="tofu_check: organization 'org-20' changed its identity"):
        victim.mask(x, weight=1.0, setup=fake, trust=tofu)
    assert victim.mask(x, weight=1.0, setup=setup, trust=pins).round == 2  # the honest setup passes


def test_mask_key_substitution_positive_control(federation_cls: Any, inputs_factory: Any) -> None:
    """With no trust anchor at all, the substituted (re-signed) setup unmasks the victim."""
    fed = federation_cls(IDS5, spec=SPEC, length=LENGTH)
    fed.run_round(1, inputs=inputs_factory(IDS5, length=LENGTH, spec=SPEC, seed=1), threshold=3)
    setup = fed.server.round_setup(round=2, participants=IDS5, threshold=3)
    inputs = inputs_factory(IDS5, length=LENGTH, spec=SPEC, seed=2)
    fake, fakes = _substitution(setup, 10)
    masked = {10: fed.clients[10].mask(inputs[10][0], weight=inputs[10][1], setup=fake, trust=None)}
    for n in IDS5[1:]:
        masked[n] = fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=setup)
    for n, m in masked.items():
        fed.server.receive_masked(n, m)
    responses = [fed.clients[n].unmask(req) for n, req in fed.server.unmask_requests().items()]
    b_seed = _b_seed_from_stage_u(responses, owner=10, threshold=3)
    residual = np.array(masked[10].masked)
    masks = [(self_mask_key(b_seed, run_id=fed.run_id, round=2, node=10), -1)]
    for v, sk in fakes.items():
        key = pairwise_mask_key(load_private_key(sk), setup.s_pks[0], run_id=fed.run_id, round=2, me=v, peer=10)
        masks.append((key, -pairwise_sign(10, v)))
    apply_masks(residual, masks)
    x10, w10 = inputs[10]
    assert np.max(np.abs(decode_sum(residual, spec=SPEC) - x10 * w10)) <= 2.0 ** -SPEC.frac_bits


# ---------------------------------------------------------------------------- 4. re-listed mask key
def test_relisted_mask_key_is_refused_by_peers_and_holders(federation_cls: Any, inputs_factory: Any) -> None:
    """Node 10's round-2 key listed again in round 4 (node 10 'dropped') to get its shares revealed."""
    fed = federation_cls(IDS5, spec=SPEC, length=LENGTH)
    for r in (1, 2):
        fed.run_round(r, inputs=inputs_factory(IDS5, length=LENGTH, spec=SPEC, seed=r), threshold=3)
    rest = IDS5[1:]
    fed.run_round(3, inputs=inputs_factory(rest, length=LENGTH, spec=SPEC, seed=3), threshold=3)
    used = fed.transcripts[2].setup  # node 10 masked round 2 with used.s_pks[0]
    for n in fed.server.needs_keys(IDS5, round=4, threshold=3):
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=4))
    setup = fed.server.round_setup(round=4, participants=IDS5, threshold=3)
    relisted = dataclasses.replace(setup, s_pks=(used.s_pks[0], *setup.s_pks[1:]),
                                   s_pk_signatures=(used.s_pk_signatures[0], *setup.s_pk_signatures[1:]))  # fmt: skip
    with pytest.raises(ProtocolViolation, match="signature_check: the mask key of organization 'org-10'"):
        fed.clients[20].mask(np.zeros(LENGTH), weight=1.0, setup=relisted)
    # Defence in depth: even with a signature for round 4, the holders refuse to reveal
    # shares of a key bound to round 2.
    sig = fed.identities[10].sign_key(federation="default", organization="org-10", run_id=fed.run_id, kind="mask",
                                      round=4, public_key=used.s_pks[0])  # fmt: skip
    relisted = dataclasses.replace(relisted, s_pk_signatures=(sig, *setup.s_pk_signatures[1:]))
    inputs = inputs_factory(IDS5, length=LENGTH, spec=SPEC, seed=4)
    for n in rest:
        fed.server.receive_masked(n, fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=relisted))
    requests = fed.server.unmask_requests()
    made_in_1 = fed.transcripts[1].masked[10]  # node 10's shares of its round-2 key
    for n in rest:
        req = dataclasses.replace(requests[n], key_share_owners=(10,), key_share_rounds=(1,),
                                  key_share_ciphertexts=(made_in_1.key_share_ciphertexts[IDS5.index(n)],),
                                  seed_requests=())  # fmt: skip
        resp = fed.clients[n].unmask(req)
        assert resp.key_share_owners == () and resp.key_shares == ()
        share = _colluder_share(fed, colluder=n, owner=10, env=req.key_share_ciphertexts[0], made_in=1)
        assert share.s_pk == used.s_pks[0] and share.use_round == 2  # what v1 holders would have revealed
    fed.server.abort_round()


# ---------------------------------------------------------------------------- 5. low threshold
def test_low_threshold_is_refused_by_every_client(federation_cls: Any) -> None:
    ids = list(range(1, 8))
    fed = federation_cls(ids, spec=SPEC, length=LENGTH)
    for n in ids:
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=1))
    setup = fed.server.round_setup(round=1, participants=ids, threshold=2)
    for n in ids:
        with pytest.raises(ProtocolViolation, match="threshold_check: t = 2 is not a majority of the 7 participants"):
            fed.clients[n].mask(np.zeros(LENGTH), weight=1.0, setup=setup)
    # A hospital's own minimum applies on top of the majority.
    strict = SecureSumClient(node_id=1, run_id=fed.run_id, identity=fed.identities[1], organization="org-1",
                             min_threshold=5)  # fmt: skip
    with pytest.raises(ProtocolViolation, match="threshold_check: t = 4 is below this hospital's minimum 5"):
        strict.mask(np.zeros(LENGTH), weight=1.0, setup=dataclasses.replace(setup, threshold=4))
    fed.server.abort_round()


# ---------------------------------------------------------------------------- 6. low-order keys
@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_key_drops_that_peer_not_the_round(
    point: bytes, federation_cls: Any, inputs_factory: Any, exact: Any
) -> None:
    exact_sum, max_error, _ = exact
    fed = federation_cls(IDS5, spec=SPEC, length=LENGTH)
    bad = fed.clients[50]
    advert = bad.advertise_keys(round=1)  # node 50 announces a signed low-order mask key
    sig = fed.identities[50].sign_key(federation="default", organization="org-50", run_id=fed.run_id, kind="mask",
                                      round=1, public_key=point)  # fmt: skip
    record = {**advert.to_record(), "s_pk": point, "s_pk_signature": sig}
    with pytest.raises(ProtocolViolation, match=r"public_key_check: secure_sum/v2/advertise_keys\.s_pk is a low-order X25519 point"):
        AdvertiseKeys.from_record(record)  # the coordinator leaves node 50 out at stage K
    rest = IDS5[:-1]
    inputs = inputs_factory(rest, length=LENGTH, spec=SPEC, seed=1)
    res = fed.run_round(1, inputs=inputs, threshold=3)
    assert res.counted == tuple(rest)
    assert max_error(res.weighted_sum, exact_sum(inputs, rest)) <= res.error_bound
    # A low-order next key in a masked input rejects that input only (the node counts as dropped).
    m = fed.transcripts[1].masked[10]
    with pytest.raises(ProtocolViolation, match=r"public_key_check: secure_sum/v2/masked_input\.next_s_pk is a low-order"):
        MaskedInput.from_record({**m.to_record(), "next_s_pk": point}, masked=np.array(m.masked))
