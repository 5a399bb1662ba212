"""Privacy of the wire and of the coordinator's view.

A *curious coordinator* here is test code that uses everything the coordinator
legitimately received (the transcript): masked vectors, revealed shares, and the keys
of dropped nodes it reconstructs. Each attack has a positive control that gives the
attacker one more secret and shows the attack code then recovers the input exactly,
so a negative result is meaningful.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare

from oneliac_flwr.secure import encode, plan_ring
from oneliac_flwr.secure.keys import load_private_key, pairwise_mask_key, public_bytes, self_mask_key
from oneliac_flwr.secure.masks import apply_masks, pairwise_sign
from oneliac_flwr.secure.sharing import combine_shares

RUN = 11


def byte_uniformity_p(values: np.ndarray) -> float:
    counts = np.bincount(np.ascontiguousarray(values).view(np.uint8), minlength=256)
    return float(chisquare(counts).pvalue)


@pytest.mark.parametrize("bits", [32, 64])
def test_masked_vector_is_not_the_encoding_and_looks_uniform(bits: int, federation_cls: Any) -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=4, bits=bits)
    length = 1 << 15
    fed = federation_cls([1, 2, 3], spec=spec, length=length)
    for n in (1, 2, 3):
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=1))
    setup = fed.server.round_setup(round=1, participants=[1, 2, 3], threshold=2)
    rng = np.random.default_rng(1234)  # fixed plaintext: small, highly structured values
    x = np.round(rng.normal(0.0, 0.01, size=length), 3)
    enc = encode(x, weight=3.0, spec=spec)
    assert byte_uniformity_p(enc) < 1e-9  # the test has power: the plaintext is far from uniform
    masked = fed.clients[1].mask(x, weight=3.0, setup=setup).masked
    assert masked.dtype == spec.dtype and masked.nbytes == length * bits // 8
    assert np.mean(masked == enc) < 1e-3
    assert byte_uniformity_p(masked) > 0.001


def curious_residual(
    *, y: np.ndarray, node: int, round: int, b_seed: bytes, known_keys: dict[int, Any], s_pks: dict[int, bytes]
) -> np.ndarray:
    """``y - PRG(b) - sum_{v with known key} sign * PRG(k_{node,v})`` as the attacker computes it."""
    residual = np.array(y)
    masks = [(self_mask_key(b_seed, run_id=RUN, round=round, node=node), -1)]
    for peer, sk in known_keys.items():
        key = pairwise_mask_key(sk, s_pks[node], run_id=RUN, round=round, me=peer, peer=node)
        masks.append((key, -pairwise_sign(node, peer)))
    apply_masks(residual, masks)
    return residual


def revealed_self_seed(tr: Any, owner: int) -> bytes:
    shares = [
        (i, s)
        for resp in tr.responses.values()
        for w, i, s in zip(resp.self_share_owners, resp.self_share_indices, resp.self_shares, strict=True)
        if w == owner
    ]
    return combine_shares(shares, threshold=tr.setup.threshold, what=f"b of {owner}")


def revealed_mask_key(tr: Any, owner: int, threshold: int) -> Any:
    shares = [
        (i, s)
        for resp in tr.responses.values()
        for d, i, s in zip(resp.key_share_owners, resp.key_share_indices, resp.key_shares, strict=True)
        if d == owner
    ]
    return load_private_key(combine_shares(shares, threshold=threshold, what=f"s_sk of {owner}"))


def test_coordinator_cannot_unmask_a_counted_input(federation_cls: Any, inputs_factory: Any) -> None:
    ids = [1, 2, 3, 4]
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=4)
    length = 1 << 14
    fed = federation_cls(ids, spec=spec, length=length, run_id=RUN)
    fed.run_round(1, inputs=inputs_factory(ids, length=length, spec=spec, seed=1), threshold=3)
    inputs = inputs_factory(ids, length=length, spec=spec, seed=2)
    fed.persist = False
    res = fed.run_round(2, inputs=inputs, threshold=3, drop_m=[4])
    # White-box, for the control only: the round keys of nodes 2 and 3 (never revealed).
    hidden = {n: load_private_key(fed.clients[n].state_dict()["round_s_sk"]) for n in (2, 3)}
    tr = fed.transcripts[2]
    s_pks = dict(zip(tr.setup.participants, tr.setup.s_pks, strict=True))
    assert res.counted == (1, 2, 3)

    # What the coordinator may see: self-mask seeds of counted nodes, the key of node 4.
    key_of_4 = revealed_mask_key(tr, 4, threshold=3)
    assert public_bytes(key_of_4) == s_pks[4]
    for resp in tr.responses.values():  # never a key share of a counted node, nor b of a dropped one
        assert set(resp.key_share_owners) <= {4} and 4 not in resp.self_share_owners

    target = 1
    enc = encode(inputs[target][0], weight=inputs[target][1], spec=spec)
    b1 = revealed_self_seed(tr, target)
    y = tr.masked[target].masked
    residual = curious_residual(y=y, node=target, round=2, b_seed=b1, known_keys={4: key_of_4}, s_pks=s_pks)
    # enc(x_1) + PRG(k_12) - PRG(k_13): consistent with any x_1, uniform-looking.
    assert np.mean(residual == enc) < 1e-3
    assert byte_uniformity_p(residual) > 0.001
    # Control: with the two secrets the coordinator never gets, the same code finds x_1.
    full = curious_residual(y=y, node=target, round=2, b_seed=b1, known_keys={4: key_of_4, **hidden}, s_pks=s_pks)
    np.testing.assert_array_equal(full, enc)


def test_revealed_key_does_not_unmask_earlier_rounds(federation_cls: Any, inputs_factory: Any) -> None:
    """Single-use mask keys: the key of a node dropped in round 2 says nothing about round 1."""
    ids = [1, 2, 3, 4]
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=4)
    length = 1 << 14
    fed = federation_cls(ids, spec=spec, length=length, run_id=RUN)
    fed.persist = False
    in1 = inputs_factory(ids, length=length, spec=spec, seed=1)
    fed.run_round(1, inputs=in1, threshold=3)
    key_of_4_round_1 = load_private_key(fed.clients[4].state_dict()["round_s_sk"])  # white-box, control only
    fed.run_round(2, inputs=inputs_factory(ids, length=length, spec=spec, seed=2), threshold=3, drop_m=[4])

    tr1, tr2 = fed.transcripts[1], fed.transcripts[2]
    key_of_4 = revealed_mask_key(tr2, 4, threshold=3)  # legitimately reconstructed in round 2
    assert public_bytes(key_of_4) == dict(zip(tr2.setup.participants, tr2.setup.s_pks, strict=True))[4]
    s_pks1 = dict(zip(tr1.setup.participants, tr1.setup.s_pks, strict=True))
    b4 = revealed_self_seed(tr1, 4)  # node 4 was counted in round 1
    enc = encode(in1[4][0], weight=in1[4][1], spec=spec)

    def attack(key: Any) -> np.ndarray:
        residual = np.array(tr1.masked[4].masked)
        masks = [(self_mask_key(b4, run_id=RUN, round=1, node=4), -1)]
        for v in (1, 2, 3):
            k = pairwise_mask_key(key, s_pks1[v], run_id=RUN, round=1, me=4, peer=v)
            masks.append((k, -pairwise_sign(4, v)))
        apply_masks(residual, masks)
        return residual

    leaked = attack(key_of_4)
    assert np.mean(leaked == enc) < 1e-3
    assert byte_uniformity_p(leaked) > 0.001
    # Control: had node 4 kept one mask key for both rounds (a long-lived key), the key
    # revealed in round 2 would have unmasked its round-1 update exactly.
    np.testing.assert_array_equal(attack(key_of_4_round_1), enc)
