"""Updates sealed to the coordinator's key: only its holder opens them, under their binding."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure.sealed import SEAL_OVERHEAD, open_sealed, seal, sealing_context

CONTEXT = sealing_context(organization_id="org_a", round=3, model_version="1.0.2")


def test_round_trip_and_overhead() -> None:
    key = X25519PrivateKey.generate()
    blob = seal(b"update bytes", key.public_key().public_bytes_raw(), context=CONTEXT)
    assert len(blob) == len(b"update bytes") + SEAL_OVERHEAD
    assert open_sealed(blob, key, context=CONTEXT) == b"update bytes"
    again = seal(b"update bytes", key.public_key().public_bytes_raw(), context=CONTEXT)
    assert again != blob  # a fresh ephemeral key and nonce each time


@pytest.mark.parametrize(
    "other",
    [
        sealing_context(organization_id="org_b", round=3, model_version="1.0.2"),
        sealing_context(organization_id="org_a", round=4, model_version="1.0.2"),
        sealing_context(organization_id="org_a", round=3, model_version="1.0.3"),
    ],
)
def test_another_binding_does_not_open(other: bytes) -> None:
    key = X25519PrivateKey.generate()
    blob = seal(b"x" * 100, key.public_key().public_bytes_raw(), context=CONTEXT)
    with pytest.raises(ProtocolViolation):
        open_sealed(blob, key, context=other)


def test_tampering_another_key_and_short_blobs_are_refused() -> None:
    key = X25519PrivateKey.generate()
    blob = bytearray(seal(b"x" * 100, key.public_key().public_bytes_raw(), context=CONTEXT))
    blob[-1] ^= 1
    with pytest.raises(ProtocolViolation):
        open_sealed(bytes(blob), key, context=CONTEXT)
    with pytest.raises(ProtocolViolation):
        open_sealed(bytes(blob), X25519PrivateKey.generate(), context=CONTEXT)
    with pytest.raises(ProtocolViolation):
        open_sealed(b"\x01" * (SEAL_OVERHEAD - 1), key, context=CONTEXT)
    with pytest.raises(ProtocolViolation):  # a low-order recipient key is refused
        seal(b"x", bytes(32), context=CONTEXT)
