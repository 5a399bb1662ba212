"""AES-256-GCM envelopes carrying one share from its owner to one recipient.

The key is ``HKDF(X25519(c_sk_sender, c_pk_recipient), "share-encryption", run, round,
sender, recipient)``; the associated data binds run, round, sender, recipient and kind,
so an envelope opened under any other binding fails.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from oneliac_flwr.errors import ProtocolViolation

from ._fields import check_u64_fields
from .keys import DOMAIN, share_encryption_key

__all__ = [
    "NONCE_BYTES", "TAG_BYTES", "ShareKind", "associated_data", "open_share", "open_share_with_key", "seal_share",
    "seal_share_with_key", "seal_shares_with_key",
]  # fmt: skip

ShareKind = Literal["self", "pairwise"]
NONCE_BYTES = 12
TAG_BYTES = 16
_KINDS: frozenset[str] = frozenset({"self", "pairwise"})


def associated_data(*, run_id: int, round: int, sender: int, recipient: int, kind: ShareKind) -> bytes:
    """Associated data ``DOMAIN + b"share|" + kind + b"|" + I64(run, round, sender, recipient)``."""
    if kind not in _KINDS:
        raise ProtocolViolation(f"kind: expected 'self' or 'pairwise', got {kind!r}")
    ids = check_u64_fields(run_id=run_id, round=round, sender=sender, recipient=recipient)
    return DOMAIN + b"share|" + kind.encode() + b"|" + struct.pack(">4Q", *ids)


def seal_share(
    plaintext: bytes,
    *,
    sender_c_sk: X25519PrivateKey,
    recipient_c_pk: bytes,
    run_id: int,
    round: int,
    sender: int,
    recipient: int,
    kind: ShareKind,
) -> bytes:
    """Encrypt ``plaintext`` from ``sender`` to ``recipient``.

    Returns
    -------
    bytes
        ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``.
    """
    key = share_encryption_key(
        sender_c_sk, recipient_c_pk, run_id=run_id, round=round, sender=sender, recipient=recipient, peer=recipient
    )
    return seal_share_with_key(plaintext, key=key, run_id=run_id, round=round, sender=sender, recipient=recipient, kind=kind)


def seal_share_with_key(
    plaintext: bytes, *, key: bytes, run_id: int, round: int, sender: int, recipient: int, kind: ShareKind
) -> bytes:
    """:func:`seal_share` with the share-encryption key already derived.

    ``key`` must be :func:`~oneliac_flwr.secure.keys.share_encryption_key` of the same
    ``(run_id, round, sender, recipient)``: a sender seals both kinds of share to one
    recipient under that one key (each with its own random nonce and associated data),
    so it derives the key once per recipient and round.
    """
    return seal_shares_with_key([(kind, plaintext)], key=key, run_id=run_id, round=round, sender=sender, recipient=recipient)[0]


def seal_shares_with_key(
    items: Sequence[tuple[ShareKind, bytes]], *, key: bytes, run_id: int, round: int, sender: int, recipient: int
) -> list[bytes]:
    """:func:`seal_share_with_key` of several ``(kind, plaintext)`` to one recipient.

    One AES-256-GCM object serves them all; each envelope has its own random nonce and
    the associated data of its kind (a sender seals at most one share of each kind to a
    recipient in a round).
    """
    aead = AESGCM(key)
    out = []
    for kind, plaintext in items:
        ad = associated_data(run_id=run_id, round=round, sender=sender, recipient=recipient, kind=kind)
        nonce = os.urandom(NONCE_BYTES)
        out.append(nonce + aead.encrypt(nonce, plaintext, ad))
    return out


def open_share(
    envelope: bytes,
    *,
    recipient_c_sk: X25519PrivateKey,
    sender_c_pk: bytes,
    run_id: int,
    round: int,
    sender: int,
    recipient: int,
    kind: ShareKind,
) -> bytes:
    """Decrypt an envelope addressed to ``recipient``.

    Raises
    ------
    ProtocolViolation
        If the envelope was tampered with, or was made for another run, round, sender,
        recipient or kind (the message names all of them).
    """
    if not isinstance(envelope, bytes) or len(envelope) < NONCE_BYTES + TAG_BYTES:
        raise ProtocolViolation(f"share envelope (run {run_id}, round {round}, {kind} share from node {sender} to node {recipient}): too short")
    key = share_encryption_key(
        recipient_c_sk, sender_c_pk, run_id=run_id, round=round, sender=sender, recipient=recipient, peer=sender
    )
    return open_share_with_key(envelope, key=key, run_id=run_id, round=round, sender=sender, recipient=recipient, kind=kind)


def open_share_with_key(
    envelope: bytes, *, key: bytes, run_id: int, round: int, sender: int, recipient: int, kind: ShareKind
) -> bytes:
    """:func:`open_share` with the share-encryption key already derived.

    Raises
    ------
    ProtocolViolation
        As :func:`open_share`.
    """
    binding = f"(run {run_id}, round {round}, {kind} share from node {sender} to node {recipient})"
    if not isinstance(envelope, bytes) or len(envelope) < NONCE_BYTES + TAG_BYTES:
        raise ProtocolViolation(f"share envelope {binding}: too short")
    ad = associated_data(run_id=run_id, round=round, sender=sender, recipient=recipient, kind=kind)
    try:
        return AESGCM(key).decrypt(envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], ad)
    except InvalidTag:
        raise ProtocolViolation(
            f"share envelope {binding}: authentication failed (tampered, or made for another binding)"
        ) from None
