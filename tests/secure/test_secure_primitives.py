"""Key derivation, keystream masks, Shamir sharing and share envelopes."""

from __future__ import annotations

import hashlib
import itertools
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from oneliac_flwr.errors import ProtocolViolation, RoundFailed
from oneliac_flwr.secure import fingerprint
from oneliac_flwr.secure.envelope import open_share, seal_share
from oneliac_flwr.secure.keys import (
    derive_key,
    generate_private_key,
    pairwise_mask_key,
    public_bytes,
    self_mask_key,
    shared_secret,
)
from oneliac_flwr.secure.masks import CHUNK_BYTES, apply_masks, keystream, pairwise_sign
from oneliac_flwr.secure.sharing import SharePlaintext, combine_shares, share_index, split_secret


def test_keystream_is_aes_256_ctr_little_endian() -> None:
    key = os.urandom(32)
    raw = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(40))
    np.testing.assert_array_equal(keystream(key, 10, np.uint32), np.frombuffer(raw, "<u4"))
    np.testing.assert_array_equal(keystream(key, 5, np.uint64), np.frombuffer(raw, "<u8"))
    assert not np.array_equal(keystream(os.urandom(32), 10, np.uint32), keystream(key, 10, np.uint32))
    with pytest.raises(ProtocolViolation, match="uint32 or uint64"):
        keystream(key, 3, np.int32)
    with pytest.raises(ProtocolViolation, match="32 bytes"):
        keystream(key[:16], 3, np.uint32)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_apply_masks_across_chunks_equals_keystream_sum(dtype: type) -> None:
    n = CHUNK_BYTES // np.dtype(dtype).itemsize * 2 + 17  # crosses chunk boundaries
    keys = [os.urandom(32) for _ in range(3)]
    signs = [1, -1, 1]
    acc: np.ndarray = np.arange(n, dtype=dtype)
    expected: np.ndarray = np.arange(n, dtype=dtype)
    for key, sign in zip(keys, signs, strict=True):
        stream = keystream(key, n, dtype)
        expected = expected + stream if sign > 0 else expected - stream
    apply_masks(acc, list(zip(keys, signs, strict=True)))
    np.testing.assert_array_equal(acc, expected)


def test_pairwise_masks_cancel() -> None:
    sk_a, sk_b = generate_private_key(), generate_private_key()
    ka = pairwise_mask_key(sk_a, public_bytes(sk_b), run_id=1, round=4, me=10, peer=3)
    kb = pairwise_mask_key(sk_b, public_bytes(sk_a), run_id=1, round=4, me=3, peer=10)
    assert ka == kb
    acc = np.zeros(1000, dtype=np.uint32)
    apply_masks(acc, [(ka, pairwise_sign(10, 3)), (kb, pairwise_sign(3, 10))])
    assert not acc.any()
    assert pairwise_sign(3, 10) == 1 and pairwise_sign(10, 3) == -1


def test_key_derivation_is_domain_separated() -> None:
    ikm = os.urandom(32)
    base = {"purpose": "pairwise-mask", "run_id": 1, "round": 2, "a": 3, "b": 4}
    variants = [
        base,
        {**base, "purpose": "share-encryption"},
        {**base, "purpose": "self-mask"},
        {**base, "run_id": 9},
        {**base, "round": 3},
        {**base, "a": 4, "b": 3},
    ]
    keys = {derive_key(ikm, **v) for v in variants}  # type: ignore[arg-type]
    assert len(keys) == len(variants)
    assert self_mask_key(ikm, run_id=1, round=2, node=3) != self_mask_key(ikm, run_id=1, round=3, node=3)
    with pytest.raises(ProtocolViolation, match=r"round: expected an integer in \[0, 2\^64\)"):
        derive_key(ikm, purpose="self-mask", run_id=1, round=-1, a=0, b=0)


def test_low_order_point_is_refused() -> None:
    with pytest.raises(ProtocolViolation, match="node 5"):
        shared_secret(generate_private_key(), bytes(32), peer=5)


def test_fingerprint_is_sha256_hex() -> None:
    pk = public_bytes(generate_private_key())
    assert fingerprint(pk) == hashlib.sha256(pk).hexdigest()


def test_shamir_any_t_shares_recover_and_fewer_do_not() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, threshold=3, n=5)
    assert [i for i, _ in shares] == [1, 2, 3, 4, 5]
    for subset in itertools.combinations(shares, 3):
        assert combine_shares(list(subset), threshold=3, what="s") == secret
    assert combine_shares(shares, threshold=3, what="s") == secret
    # t-1 shares interpolated as if the threshold were t-1 give an unrelated value.
    assert combine_shares(shares[:2], threshold=2, what="s") != secret
    with pytest.raises(RoundFailed, match="s: 2 of 3 shares"):
        combine_shares(shares[:2], threshold=3, what="s")
    with pytest.raises(ProtocolViolation, match="distinct"):
        combine_shares([shares[0], shares[0], shares[1]], threshold=3, what="s")


def test_share_index_is_position_in_sorted_participants() -> None:
    assert share_index(42, (3, 42, 2**64 - 1)) == 2
    with pytest.raises(ProtocolViolation, match="strictly increasing"):
        share_index(42, (42, 3))
    with pytest.raises(ProtocolViolation, match="not a participant"):
        share_index(7, (3, 42))


def test_envelope_binding() -> None:
    c_u, c_v = generate_private_key(), generate_private_key()
    plain = SharePlaintext(index=2, share=os.urandom(32)).to_bytes()
    binding = {"run_id": 1, "round": 5, "sender": 10, "recipient": 20, "kind": "self"}
    env = seal_share(plain, sender_c_sk=c_u, recipient_c_pk=public_bytes(c_v), **binding)  # type: ignore[arg-type]
    assert open_share(env, recipient_c_sk=c_v, sender_c_pk=public_bytes(c_u), **binding) == plain  # type: ignore[arg-type]
    for field, other in [("run_id", 2), ("round", 4), ("sender", 11), ("recipient", 21), ("kind", "pairwise")]:
        wrong = {**binding, field: other}
        with pytest.raises(ProtocolViolation, match="authentication failed"):
            open_share(env, recipient_c_sk=c_v, sender_c_pk=public_bytes(c_u), **wrong)  # type: ignore[arg-type]
    tampered = env[:-1] + bytes([env[-1] ^ 1])
    with pytest.raises(ProtocolViolation, match="authentication failed"):
        open_share(tampered, recipient_c_sk=c_v, sender_c_pk=public_bytes(c_u), **binding)  # type: ignore[arg-type]
    # Another recipient cannot open it.
    with pytest.raises(ProtocolViolation):
        open_share(env, recipient_c_sk=generate_private_key(), sender_c_pk=public_bytes(c_u), **binding)  # type: ignore[arg-type]
