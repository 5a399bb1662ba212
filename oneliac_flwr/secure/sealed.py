"""Updates sealed to the coordinator's public key (``aggregation_method: fedavg`` over REST).

``seal(plaintext, recipient_pk, context)`` draws an ephemeral X25519 key, derives an
AES-256-GCM key with HKDF-SHA256 from the shared secret (info binds both public keys and
``context``), and returns ``ephemeral_pk || nonce || ciphertext``; ``context`` (organization,
round, model version) is also the associated data, so a sealed update replayed under another
binding does not open. Everything comes from ``cryptography``.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oneliac_flwr.errors import ProtocolViolation

from .keys import DOMAIN, check_public_key

__all__ = ["SEAL_OVERHEAD", "open_sealed", "seal", "sealing_context"]

_NONCE = 12
_KEY = 32
SEAL_OVERHEAD = _KEY + _NONCE + 16
"""Bytes a sealed update adds to its plaintext."""


def sealing_context(*, organization_id: str, round: int, model_version: str) -> bytes:
    """The binding of one submission: organization, round and base model version."""
    return DOMAIN + b"sealed-update|" + f"{organization_id}|{int(round)}|{model_version}".encode()


def _key(shared: bytes, ephemeral_pk: bytes, recipient_pk: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY, salt=None, info=context + ephemeral_pk + recipient_pk).derive(
        shared
    )


def seal(plaintext: bytes, recipient_pk: bytes, *, context: bytes) -> bytes:
    """Seal ``plaintext`` so that only the holder of ``recipient_pk``'s secret opens it.

    Raises
    ------
    ProtocolViolation
        If ``recipient_pk`` is not a usable X25519 public key.
    """
    recipient = X25519PublicKey.from_public_bytes(check_public_key(recipient_pk, field="recipient public key"))
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pk = ephemeral.public_key().public_bytes_raw()
    key = _key(ephemeral.exchange(recipient), ephemeral_pk, recipient_pk, context)
    nonce = os.urandom(_NONCE)
    return ephemeral_pk + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_sealed(blob: bytes, recipient_sk: X25519PrivateKey, *, context: bytes) -> bytes:
    """Open a sealed update.

    Raises
    ------
    ProtocolViolation
        If the blob is too short, its ephemeral key unusable, or it does not open under
        this key and ``context`` (tampered, or sealed for another binding).
    """
    if len(blob) < SEAL_OVERHEAD:
        raise ProtocolViolation(f"sealed update: {len(blob)} bytes is shorter than the {SEAL_OVERHEAD}-byte envelope")
    ephemeral_pk, nonce, ciphertext = blob[:_KEY], blob[_KEY : _KEY + _NONCE], blob[_KEY + _NONCE :]
    try:
        shared = recipient_sk.exchange(X25519PublicKey.from_public_bytes(check_public_key(ephemeral_pk, field="ephemeral key")))
    except ValueError as exc:
        raise ProtocolViolation(f"sealed update: {exc}") from None
    recipient_pk = recipient_sk.public_key().public_bytes_raw()
    try:
        return AESGCM(_key(shared, ephemeral_pk, recipient_pk, context)).decrypt(nonce, ciphertext, context)
    except InvalidTag:
        raise ProtocolViolation("sealed update: does not open (tampered, or sealed for another round, organization or key)") from None
