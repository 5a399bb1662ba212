"""Shamir sharing of 32-byte secrets over the prime field GF(2^256 - 189), vectorised.

A 32-byte secret is read as a big-endian integer ``s < P`` with ``P = 2^256 - 189`` (the
largest prime below 2^256) and shared with one random polynomial of degree ``t - 1``
over GF(P); a share is the polynomial's value at the share index, 32 bytes big-endian.
Shares and secrets keep their 32-byte size. The share of participant ``v`` of round set
``S`` has index ``pos_S(v)``: its 1-based position in ``S`` sorted ascending.

Every secret of a round is processed in one batch: :func:`share_many` evaluates all
polynomials with one matrix product (Vandermonde matrix of the indices times the
coefficient matrix) and :func:`reconstruct_many` combines all secrets that use the same
``t`` indices with one dot product against the Lagrange coefficients at zero, computed
once per index set. The arithmetic uses Python integers in numpy object arrays (exact,
no overflow); coefficients come from :mod:`secrets` (OS entropy). See
``docs/secure-sum.md`` (section 3, *Secret sharing*) for why this field.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import numpy as np

from oneliac_flwr.errors import ProtocolViolation, RoundFailed

__all__ = [
    "FIELD_PRIME",
    "SECRET_BYTES",
    "SharePlaintext",
    "combine_shares",
    "reconstruct_many",
    "share_index",
    "share_many",
    "split_secret",
]

SECRET_BYTES = 32
FIELD_PRIME = 2**256 - 189
"""The prime ``P`` of the field: the largest prime below ``2^256``."""
_CACHE = 64  # index sets / (n, t) pairs remembered: one round uses one or a few
_INDEX = struct.Struct(">I")
_BINDING = struct.Struct(">IIQ")  # threshold, participants, use round


def share_index(node: int, participants: Sequence[int]) -> int:
    """Shamir index of ``node``: its 1-based position in sorted ``participants``.

    Raises
    ------
    ProtocolViolation
        If ``participants`` is not strictly increasing or does not contain ``node``.
    """
    if any(a >= b for a, b in pairwise(participants)):
        raise ProtocolViolation("participants: expected strictly increasing node ids")
    try:
        return participants.index(node) + 1
    except ValueError:
        raise ProtocolViolation(f"participants: node {node} is not a participant") from None


def _to_int(data: bytes, what: str) -> int:
    if not isinstance(data, bytes) or len(data) != SECRET_BYTES:
        raise ProtocolViolation(f"{what}: expected {SECRET_BYTES} bytes")
    value = int.from_bytes(data, "big")
    if value >= FIELD_PRIME:
        # For a uniformly random 32-byte value this happens with probability 189 / 2^256.
        raise ProtocolViolation(f"{what}: not an element of GF(2^256 - 189)")
    return value


def _to_bytes(value: int) -> bytes:
    return int(value).to_bytes(SECRET_BYTES, "big")


@lru_cache(maxsize=_CACHE)
def _vandermonde(n: int, threshold: int) -> np.ndarray:
    """``V[i-1, j] = i^j mod P`` for indices ``i = 1..n`` and powers ``j = 0..t-1``."""
    rows = [[pow(i, j, FIELD_PRIME) for j in range(threshold)] for i in range(1, n + 1)]
    matrix = np.array(rows, dtype=object).reshape(n, threshold)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=_CACHE)
def _lagrange_at_zero(indices: tuple[int, ...]) -> np.ndarray:
    """Lagrange coefficients ``l_i = prod_{j != i} x_j / (x_j - x_i)`` (mod P) at zero."""
    p = FIELD_PRIME
    coefficients = []
    for i in indices:
        num, den = 1, 1
        for j in indices:
            if j != i:
                num = num * j % p
                den = den * (j - i) % p
        coefficients.append(num * pow(den, -1, p) % p)
    vector = np.array(coefficients, dtype=object)
    vector.setflags(write=False)
    return vector


def _check_threshold(threshold: int, n: int) -> None:
    if not isinstance(n, int) or not isinstance(threshold, int) or not 2 <= threshold <= n:
        raise ProtocolViolation(f"threshold: expected 2 <= t <= n = {n}, got {threshold}")
    if n >= 2**32:
        raise ProtocolViolation(f"n: expected fewer than 2^32 shares, got {n}")


def share_many(
    secrets_: Sequence[bytes], *, threshold: int, n: int, indices: Sequence[int] | None = None
) -> list[list[tuple[int, bytes]]]:
    """Split each 32-byte secret into ``n`` shares, any ``threshold`` of which recover it.

    Each secret gets its own random polynomial (coefficients drawn with
    :func:`secrets.randbelow`); all are evaluated at indices ``1..n`` in one matrix product.

    Parameters
    ----------
    secrets_ : sequence of bytes
        32-byte secrets (big-endian integers below :data:`FIELD_PRIME`).
    threshold : int
        Shares needed to reconstruct, ``2 <= threshold <= n``.
    n : int
        Number of shares per secret (without ``indices``), or the largest possible index.
    indices : sequence of int, optional
        Evaluate at these distinct indices in ``1..n`` only (a sparse graph's neighbourhood,
        each holder keeping its index ``pos_S``); default ``1..n``.

    Returns
    -------
    list of list of (int, bytes)
        Per secret, ``(index, 32-byte share)`` for indices ``1..n`` (or ``indices``).

    Raises
    ------
    ProtocolViolation
        If a secret is not 32 bytes (or not below the prime) or the threshold is out of range.
    """
    _check_threshold(threshold, n)
    values = [_to_int(s, f"secret {k}") for k, s in enumerate(secrets_)]
    if not values:
        return []
    coefficients = np.empty((threshold, len(values)), dtype=object)
    coefficients[0, :] = values
    for row in range(1, threshold):
        coefficients[row, :] = [secrets.randbelow(FIELD_PRIME) for _ in values]
    points = list(range(1, n + 1)) if indices is None else list(indices)
    if len(set(points)) != len(points) or not all(isinstance(i, int) and 1 <= i <= n for i in points):
        raise ProtocolViolation(f"indices: expected distinct indices in 1..{n}")
    if len(points) < threshold:
        raise ProtocolViolation(f"threshold: expected t <= {len(points)} shares, got {threshold}")
    vandermonde = _vandermonde(n, threshold)
    if indices is not None:
        vandermonde = vandermonde[[i - 1 for i in points]]
    evaluations = (vandermonde @ coefficients) % FIELD_PRIME  # (shares, secrets)
    return [[(i, _to_bytes(evaluations[row, k])) for row, i in enumerate(points)] for k in range(len(values))]


def split_secret(secret: bytes, *, threshold: int, n: int) -> list[tuple[int, bytes]]:
    """Split a 32-byte secret into ``n`` shares, any ``threshold`` of which recover it.

    Returns
    -------
    list of (int, bytes)
        ``(index, share)`` for indices ``1..n``; each share is 32 bytes.
    """
    return share_many([secret], threshold=threshold, n=n)[0]


def reconstruct_many(
    sharings: Sequence[Sequence[tuple[int, bytes]]], *, threshold: int, what: Sequence[str]
) -> list[bytes]:
    """Recover many 32-byte secrets, each from at least ``threshold`` of its shares.

    Of each secret, exactly ``threshold`` shares are used (those of smallest index).
    Secrets whose chosen indices coincide (the usual case in a round: the same survivors
    hold a share of every secret) are combined in one dot product.

    Parameters
    ----------
    sharings : sequence of sequences of (int, bytes)
        Per secret, ``(index, 32-byte share)`` with distinct indices ``>= 1``.
    threshold : int
        Threshold of the sharings.
    what : sequence of str
        Per secret, a description for error messages (e.g. ``"self-mask seed of node 7"``).

    Returns
    -------
    list of bytes
        The secrets, in the order of ``sharings``.

    Raises
    ------
    RoundFailed
        If a secret has fewer than ``threshold`` shares.
    ProtocolViolation
        If a share is malformed or indices repeat.
    """
    if len(what) != len(sharings):
        raise ProtocolViolation(f"what: expected {len(sharings)} descriptions, got {len(what)}")
    if not isinstance(threshold, int) or threshold < 1:
        raise ProtocolViolation(f"threshold: expected an integer >= 1, got {threshold!r}")
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for k, (shares, name) in enumerate(zip(sharings, what, strict=True)):
        if len(shares) < threshold:
            raise RoundFailed(f"{name}: {len(shares)} of {threshold} shares")
        indices = [i for i, _ in shares]
        if len(set(indices)) != len(indices) or any(not isinstance(i, int) or i < 1 for i in indices):
            raise ProtocolViolation(f"{name}: share indices must be distinct and >= 1, got {indices}")
        chosen = sorted(shares, key=lambda pair: pair[0])[:threshold]
        if any(i >= FIELD_PRIME for i, _ in chosen):
            raise ProtocolViolation(f"{name}: share index out of the field")
        values = [_to_int(s, f"{name}: share {i}") for i, s in chosen]
        groups.setdefault(tuple(i for i, _ in chosen), []).append((k, values))
    out: list[bytes] = [b""] * len(sharings)
    for indices, members in groups.items():
        matrix = np.array([values for _, values in members], dtype=object).reshape(len(members), len(indices))
        combined = (matrix @ _lagrange_at_zero(indices)) % FIELD_PRIME
        for (k, _), value in zip(members, combined, strict=True):
            out[k] = _to_bytes(value)
    return out


def combine_shares(shares: Sequence[tuple[int, bytes]], *, threshold: int, what: str) -> bytes:
    """Recover a 32-byte secret from at least ``threshold`` shares.

    Exactly ``threshold`` shares are used (those of smallest index).

    Parameters
    ----------
    shares : sequence of (int, bytes)
        ``(index, 32-byte share)``, distinct indices.
    threshold : int
        Threshold of the sharing.
    what : str
        Description for error messages (e.g. ``"self-mask seed of node 7"``).

    Raises
    ------
    RoundFailed
        If fewer than ``threshold`` shares are given.
    ProtocolViolation
        If a share is malformed or indices repeat.
    """
    return reconstruct_many([shares], threshold=threshold, what=[what])[0]


@dataclass(frozen=True)
class SharePlaintext:
    """Plaintext of one encrypted share.

    Parameters
    ----------
    index : int
        Shamir index of the recipient (``>= 1``).
    share : bytes
        32-byte share.
    s_pk : bytes or None
        For key shares (kind ``pairwise``): the public key whose private key is shared.
        ``None`` for self-mask shares (kind ``self``).
    threshold, participants : int
        For key shares: the sharing's threshold ``t`` and number of shares ``n``.
    use_round : int
        For key shares: the single round in which the shared key may be used.
    """

    index: int
    share: bytes
    s_pk: bytes | None = None
    threshold: int = 0
    participants: int = 0
    use_round: int = 0

    SELF_BYTES = _INDEX.size + SECRET_BYTES
    KEY_BYTES = _INDEX.size + SECRET_BYTES + 32 + _BINDING.size

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or not 1 <= self.index < 2**32:
            raise ProtocolViolation(f"share index: expected an integer in [1, 2^32), got {self.index!r}")
        if not isinstance(self.share, bytes) or len(self.share) != SECRET_BYTES:
            raise ProtocolViolation(f"share: expected {SECRET_BYTES} bytes")
        if self.s_pk is not None:
            if not isinstance(self.s_pk, bytes) or len(self.s_pk) != 32:
                raise ProtocolViolation("share s_pk: expected 32 bytes")
            if not 2 <= self.threshold <= self.participants < 2**32 or self.index > self.participants:
                raise ProtocolViolation(
                    f"share binding: expected 2 <= threshold <= participants and index <= participants, got "
                    f"t={self.threshold}, n={self.participants}, index={self.index}"
                )
            if not isinstance(self.use_round, int) or not 0 <= self.use_round < 2**64:
                raise ProtocolViolation("share use_round: expected an integer in [0, 2^64)")

    def to_bytes(self) -> bytes:
        """Serialize as ``I32(index) || share || [s_pk || I32(t) || I32(n) || I64(use_round)]``."""
        if self.s_pk is None:
            return _INDEX.pack(self.index) + self.share
        return (
            _INDEX.pack(self.index) + self.share + self.s_pk
            + _BINDING.pack(self.threshold, self.participants, self.use_round)
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, *, with_key: bool) -> SharePlaintext:
        """Parse a plaintext of kind ``pairwise`` (``with_key``) or ``self``."""
        expected = cls.KEY_BYTES if with_key else cls.SELF_BYTES
        if len(data) != expected:
            raise ProtocolViolation(f"share plaintext: expected {expected} bytes, got {len(data)}")
        (index,) = _INDEX.unpack_from(data)
        share = data[_INDEX.size : _INDEX.size + SECRET_BYTES]
        if not with_key:
            return cls(index=index, share=share)
        start = _INDEX.size + SECRET_BYTES
        t, n, use_round = _BINDING.unpack_from(data, start + 32)
        return cls(index=index, share=share, s_pk=data[start : start + 32], threshold=t, participants=n, use_round=use_round)
