"""Shamir sharing over GF(2^256 - 189): agreement with pycryptodome, thresholds, secrecy."""

from __future__ import annotations

import itertools
import os
import random

import numpy as np
import pytest
from Crypto.Protocol.SecretSharing import Shamir
from scipy.stats import chi2_contingency, chisquare

from oneliac_flwr.errors import ProtocolViolation, RoundFailed
from oneliac_flwr.secure.sharing import (
    FIELD_PRIME,
    SECRET_BYTES,
    combine_shares,
    reconstruct_many,
    share_many,
    split_secret,
)


def _pycryptodome_split(secret: bytes, threshold: int, n: int) -> list[tuple[int, bytes]]:
    """The former scheme: two GF(2^128) sharings of the 16-byte halves."""
    low = Shamir.split(threshold, n, secret[:16], ssss=False)
    high = Shamir.split(threshold, n, secret[16:], ssss=False)
    return [(i, lo + hi) for (i, lo), (_, hi) in zip(low, high, strict=True)]


def _pycryptodome_combine(shares: list[tuple[int, bytes]]) -> bytes:
    return Shamir.combine([(i, s[:16]) for i, s in shares], ssss=False) + Shamir.combine(
        [(i, s[16:]) for i, s in shares], ssss=False
    )


def test_prime_is_the_documented_one() -> None:
    assert FIELD_PRIME == 2**256 - 189
    # Fermat and Miller-Rabin witnesses: a composite would fail one of these.
    for base in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        assert pow(base, FIELD_PRIME - 1, FIELD_PRIME) == 1


def test_agrees_with_pycryptodome_on_same_secrets_and_indices() -> None:
    threshold, n = 4, 7
    secrets_ = [os.urandom(SECRET_BYTES) for _ in range(5)] + [bytes(32), bytes(31) + b"\x01"]
    ours = share_many(secrets_, threshold=threshold, n=n)
    for secret, shares in zip(secrets_, ours, strict=True):
        theirs = _pycryptodome_split(secret, threshold, n)
        assert [i for i, _ in shares] == [i for i, _ in theirs] == list(range(1, n + 1))
        for subset in itertools.combinations(range(n), threshold):
            mine = combine_shares([shares[k] for k in subset], threshold=threshold, what="s")
            reference = _pycryptodome_combine([theirs[k] for k in subset])
            assert mine == reference == secret


def test_any_t_shares_recover_in_one_batch_with_mixed_index_sets() -> None:
    threshold, n = 3, 6
    rng = random.Random(7)
    secrets_ = [os.urandom(SECRET_BYTES) for _ in range(40)]
    sharings = share_many(secrets_, threshold=threshold, n=n)
    subsets = [rng.sample(shares, rng.randint(threshold, n)) for shares in sharings]
    recovered = reconstruct_many(subsets, threshold=threshold, what=[f"s{k}" for k in range(40)])
    assert recovered == secrets_
    assert [split_secret(s, threshold=2, n=2)[0][0] for s in secrets_[:2]] == [1, 1]


def test_fewer_than_t_shares_do_not_recover() -> None:
    secret = os.urandom(SECRET_BYTES)
    shares = split_secret(secret, threshold=5, n=9)
    assert combine_shares(shares[:4], threshold=4, what="s") != secret
    with pytest.raises(RoundFailed, match=r"seed of node 3: 4 of 5 shares"):
        reconstruct_many([shares, shares[:4]], threshold=5, what=["seed of node 2", "seed of node 3"])


def test_fresh_polynomial_per_secret() -> None:
    secret = os.urandom(SECRET_BYTES)
    first, second = share_many([secret, secret], threshold=3, n=4)
    assert first != second  # equal only if every random coefficient repeats
    assert first[0][1] != secret


def test_malformed_inputs_are_refused() -> None:
    too_big = (FIELD_PRIME + 1).to_bytes(32, "big")
    with pytest.raises(ProtocolViolation, match="not an element"):
        split_secret(too_big, threshold=2, n=3)
    with pytest.raises(ProtocolViolation, match="expected 32 bytes"):
        split_secret(b"short", threshold=2, n=3)
    with pytest.raises(ProtocolViolation, match="threshold"):
        split_secret(bytes(32), threshold=4, n=3)
    shares = split_secret(os.urandom(32), threshold=2, n=3)
    with pytest.raises(ProtocolViolation, match="not an element"):
        combine_shares([shares[0], (2, too_big)], threshold=2, what="s")
    with pytest.raises(ProtocolViolation, match="distinct"):
        combine_shares([shares[0], shares[0]], threshold=2, what="s")
    with pytest.raises(ProtocolViolation, match="descriptions"):
        reconstruct_many([shares], threshold=2, what=[])


def _top_bits_cells(sharings: list[list[tuple[int, bytes]]], indices: tuple[int, ...], bits: int) -> np.ndarray:
    """Joint histogram of the top ``bits`` bits of the shares at ``indices``."""
    cells = np.zeros((2**bits) ** len(indices), dtype=np.int64)
    for shares in sharings:
        by_index = dict(shares)
        cell = 0
        for i in indices:
            cell = cell * 2**bits + (by_index[i][0] >> (8 - bits))
        cells[cell] += 1
    return cells


def test_t_minus_one_shares_are_uniform_and_independent_of_the_secret() -> None:
    threshold, n, count, bits = 3, 5, 6400, 3
    held = (2, 5)  # t - 1 shares, as a coalition below the threshold holds them
    secret_a = bytes(32)
    secret_b = (FIELD_PRIME - 1).to_bytes(32, "big")
    cells_a = _top_bits_cells(share_many([secret_a] * count, threshold=threshold, n=n), held, bits)
    cells_b = _top_bits_cells(share_many([secret_b] * count, threshold=threshold, n=n), held, bits)
    assert cells_a.sum() == cells_b.sum() == count
    # Goodness of fit to uniform over the 64 joint cells, for each secret.
    assert chisquare(cells_a).pvalue > 1e-5
    assert chisquare(cells_b).pvalue > 1e-5
    # Homogeneity: the two secrets' share distributions are the same.
    assert chi2_contingency(np.vstack([cells_a, cells_b])).pvalue > 1e-5
    # Control: the same test rejects uniformity when the held shares determine the
    # secret (a threshold-2 sharing: shares 2 and 5 lie on one line through the secret).
    control = _top_bits_cells(share_many([secret_a] * count, threshold=2, n=n), held, bits)
    assert chisquare(control).pvalue < 1e-5
