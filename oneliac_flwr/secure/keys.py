"""X25519 key agreement and HKDF-SHA256 key derivation with domain separation.

Every derived key is bound to ``(purpose, run, round, a, b)``; see section 3 of
``docs/secure-sum.md``.
"""

from __future__ import annotations

import hashlib
import struct
from functools import lru_cache
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from oneliac_flwr.errors import ProtocolViolation

from ._fields import check_u64_fields

__all__ = [
    "DOMAIN",
    "KEY_BYTES",
    "Purpose",
    "check_public_key",
    "checked_exchange",
    "derive_key",
    "fingerprint",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "pairwise_mask_key",
    "pairwise_mask_key_from_secret",
    "private_bytes",
    "public_bytes",
    "self_mask_key",
    "share_encryption_key",
    "share_encryption_key_from_secret",
    "shared_secret",
]

KEY_BYTES = 32
DOMAIN = b"oneliac-secure-sum/v1|"

Purpose = Literal["pairwise-mask", "share-encryption", "self-mask"]
_PURPOSES: frozenset[str] = frozenset({"pairwise-mask", "share-encryption", "self-mask"})


def generate_private_key() -> X25519PrivateKey:
    """Return a fresh X25519 private key (OS randomness)."""
    return X25519PrivateKey.generate()


def private_bytes(key: X25519PrivateKey) -> bytes:
    """Return the 32 raw bytes of an X25519 private key."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """Return the 32 raw bytes of the public key of ``key``."""
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_private_key(raw: bytes, *, field: str = "private key") -> X25519PrivateKey:
    """Load a raw 32-byte X25519 private key.

    Raises
    ------
    ProtocolViolation
        If ``raw`` is not 32 bytes.
    """
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise ProtocolViolation(f"{field}: expected {KEY_BYTES} bytes")
    return X25519PrivateKey.from_private_bytes(raw)


def load_public_key(raw: bytes, *, field: str = "public key") -> X25519PublicKey:
    """Load a raw 32-byte X25519 public key.

    Raises
    ------
    ProtocolViolation
        If ``raw`` is not 32 bytes.
    """
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise ProtocolViolation(f"{field}: expected {KEY_BYTES} bytes")
    return X25519PublicKey.from_public_bytes(raw)


@lru_cache(maxsize=1)
def _probe_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def check_public_key(raw: bytes, *, field: str = "public key") -> bytes:
    """Validate a received X25519 public key: 32 bytes and not a low-order point.

    A low-order point makes every shared secret with it all-zero; it is detected by an
    exchange with a throw-away key (``cryptography`` refuses an all-zero result). One
    throw-away key serves the whole process: the clamped scalar is a multiple of the
    cofactor 8, so the result is all-zero exactly for the low-order points, whatever the key.

    Raises
    ------
    ProtocolViolation
        Named ``public_key_check`` with ``field``.
    """
    checked_exchange(_probe_key(), raw, field=field)
    return raw


def checked_exchange(private: X25519PrivateKey, raw: bytes, *, field: str) -> bytes:
    """X25519 secret of ``private`` with the received public key ``raw``, validating ``raw``.

    The same check as :func:`check_public_key`, done by the exchange a client needs anyway:
    every clamped X25519 scalar is a multiple of the cofactor 8, so the secret is all-zero
    exactly for the low-order points, whatever ``private`` is.

    Raises
    ------
    ProtocolViolation
        Named ``public_key_check`` with ``field``.
    """
    pub = load_public_key(raw, field=field)
    try:
        secret = private.exchange(pub)
    except ValueError:
        raise ProtocolViolation(f"public_key_check: {field} is a low-order X25519 point") from None
    if secret == bytes(KEY_BYTES):  # pragma: no cover - cryptography raises first
        raise ProtocolViolation(f"public_key_check: {field} is a low-order X25519 point")
    return secret


def fingerprint(*public_keys: bytes) -> str:
    """SHA-256 hex fingerprint of one or more raw public keys (in the given order).

    Parameters
    ----------
    *public_keys : bytes
        Raw 32-byte public keys (pins name organizations' Ed25519 identities: see ``identity.py``).

    Returns
    -------
    str
        64 lowercase hex characters: SHA-256 of the concatenated raw keys (so an
        administrator can compute a pin with ``sha256sum`` on the raw ``c_pk``).
    """
    digest = hashlib.sha256()
    for i, key in enumerate(public_keys):
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ProtocolViolation(f"fingerprint: public key {i} must be {KEY_BYTES} bytes")
        digest.update(key)
    return digest.hexdigest()


def shared_secret(private: X25519PrivateKey, peer_public: bytes, *, peer: int) -> bytes:
    """X25519 shared secret with the peer's raw public key.

    Raises
    ------
    ProtocolViolation
        If the peer's key is malformed or of low order (all-zero shared secret).
    """
    pub = load_public_key(peer_public, field=f"public key of node {peer}")
    try:
        secret = private.exchange(pub)
    except ValueError as exc:  # cryptography refuses an all-zero result
        raise ProtocolViolation(f"public key of node {peer}: invalid X25519 point ({exc})") from exc
    if secret == bytes(KEY_BYTES):
        raise ProtocolViolation(f"public key of node {peer}: low-order X25519 point")
    return secret


def derive_key(ikm: bytes, *, purpose: Purpose, run_id: int, round: int, a: int, b: int) -> bytes:
    """HKDF-SHA256 of ``ikm`` bound to purpose, run, round and an id pair.

    Parameters
    ----------
    ikm : bytes
        Input keying material (an X25519 secret or a 32-byte seed).
    purpose : {"pairwise-mask", "share-encryption", "self-mask"}
        Domain of the key.
    run_id, round, a, b : int
        Integers in ``[0, 2^64)``; ``(a, b)`` is the pair the key belongs to.

    Returns
    -------
    bytes
        32-byte key; ``info = DOMAIN + purpose + b"|" + I64(run) I64(round) I64(a) I64(b)``.
    """
    if purpose not in _PURPOSES:
        raise ProtocolViolation(f"purpose: expected one of {sorted(_PURPOSES)}, got {purpose!r}")
    fields = check_u64_fields(run_id=run_id, round=round, a=a, b=b)
    info = DOMAIN + purpose.encode() + b"|" + struct.pack(">4Q", *fields)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(ikm)


def pairwise_mask_key(
    s_private: X25519PrivateKey, peer_s_public: bytes, *, run_id: int, round: int, me: int, peer: int
) -> bytes:
    """Per-round pairwise mask key ``k_{uv}^r`` (same value on both sides)."""
    secret = shared_secret(s_private, peer_s_public, peer=peer)
    return pairwise_mask_key_from_secret(secret, run_id=run_id, round=round, me=me, peer=peer)


def pairwise_mask_key_from_secret(secret: bytes, *, run_id: int, round: int, me: int, peer: int) -> bytes:
    """:func:`pairwise_mask_key` from the X25519 secret of the two mask keys."""
    lo, hi = (me, peer) if me < peer else (peer, me)
    return derive_key(secret, purpose="pairwise-mask", run_id=run_id, round=round, a=lo, b=hi)


def share_encryption_key(
    c_private: X25519PrivateKey,
    peer_c_public: bytes,
    *,
    run_id: int,
    round: int,
    sender: int,
    recipient: int,
    peer: int,
) -> bytes:
    """AES-256-GCM key for shares from ``sender`` to ``recipient`` in one round."""
    secret = shared_secret(c_private, peer_c_public, peer=peer)
    return share_encryption_key_from_secret(secret, run_id=run_id, round=round, sender=sender, recipient=recipient)


def share_encryption_key_from_secret(secret: bytes, *, run_id: int, round: int, sender: int, recipient: int) -> bytes:
    """:func:`share_encryption_key` from the X25519 secret of the two envelope keys.

    The secret of two envelope keys is the same in every round of a run (envelope keys
    are kept for the run); the key derived from it is bound to one round and one
    direction, so a client may keep the secret per peer and derive each round's keys.
    """
    return derive_key(secret, purpose="share-encryption", run_id=run_id, round=round, a=sender, b=recipient)


def self_mask_key(seed: bytes, *, run_id: int, round: int, node: int) -> bytes:
    """AES key of a node's self mask, expanded from its 32-byte seed ``b_u``."""
    if not isinstance(seed, bytes) or len(seed) != KEY_BYTES:
        raise ProtocolViolation(f"self-mask seed of node {node}: expected {KEY_BYTES} bytes")
    return derive_key(seed, purpose="self-mask", run_id=run_id, round=round, a=node, b=node)
