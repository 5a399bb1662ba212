"""Shamir sharing of 32-byte secrets (pycryptodome, GF(2^128)) and share plaintexts.

A 32-byte secret is shared as two independent 16-byte halves (independent random
polynomials, the same indices). The share of participant ``v`` of round set ``S`` has
index ``pos_S(v)``: its 1-based position in ``S`` sorted ascending.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from Crypto.Protocol.SecretSharing import Shamir

from oneliac_flwr.errors import ProtocolViolation, RoundFailed

__all__ = [
    "SECRET_BYTES",
    "SharePlaintext",
    "combine_shares",
    "share_index",
    "split_secret",
]

SECRET_BYTES = 32
_HALF = 16
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


def split_secret(secret: bytes, *, threshold: int, n: int) -> list[tuple[int, bytes]]:
    """Split a 32-byte secret into ``n`` shares, any ``threshold`` of which recover it.

    Returns
    -------
    list of (int, bytes)
        ``(index, share)`` for indices ``1..n``; each share is 32 bytes (lo || hi).
    """
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ProtocolViolation(f"secret: expected {SECRET_BYTES} bytes")
    if not 2 <= threshold <= n:
        raise ProtocolViolation(f"threshold: expected 2 <= t <= n = {n}, got {threshold}")
    low = Shamir.split(threshold, n, secret[:_HALF], ssss=False)
    high = Shamir.split(threshold, n, secret[_HALF:], ssss=False)
    return [(i, lo + hi) for (i, lo), (_, hi) in zip(low, high, strict=True)]


def combine_shares(shares: Sequence[tuple[int, bytes]], *, threshold: int, what: str) -> bytes:
    """Recover a 32-byte secret from at least ``threshold`` shares.

    Exactly ``threshold`` shares are used (those of smallest index), as pycryptodome asks.

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
    if len(shares) < threshold:
        raise RoundFailed(f"{what}: {len(shares)} of {threshold} shares")
    indices = [i for i, _ in shares]
    if len(set(indices)) != len(indices) or any(i < 1 for i in indices):
        raise ProtocolViolation(f"{what}: share indices must be distinct and >= 1, got {indices}")
    chosen = sorted(shares)[:threshold]
    if any(not isinstance(s, bytes) or len(s) != SECRET_BYTES for _, s in chosen):
        raise ProtocolViolation(f"{what}: every share must be {SECRET_BYTES} bytes")
    low = Shamir.combine([(i, s[:_HALF]) for i, s in chosen], ssss=False)
    high = Shamir.combine([(i, s[_HALF:]) for i, s in chosen], ssss=False)
    return low + high


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
