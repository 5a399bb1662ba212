"""Secure sum: double-masked secure aggregation with no transport in it.

Specification: ``docs/secure-sum.md``. Modules, one concept each:

- :mod:`.encoding`  fixed-point ring, bit budget, error bound
- :mod:`.keys`      X25519 key agreement, HKDF-SHA256 derivations, fingerprints
- :mod:`.masks`     AES-256-CTR keystream masks
- :mod:`.sharing`   Shamir sharing of 32-byte secrets over GF(2^256 - 189), batched
- :mod:`.envelope`  AES-GCM envelopes of shares
- :mod:`.messages`  wire messages (frozen dataclasses, flat records)
- :mod:`.client`    participant state machine
- :mod:`.server`    coordinator state machine
"""

from __future__ import annotations

from .client import SecureSumClient
from .encoding import RingSpec, decode_sum, encode, error_bound, plan_ring
from .keys import fingerprint
from .messages import AdvertiseKeys, MaskedInput, RoundSetup, UnmaskRequest, UnmaskResponse
from .server import AggregateResult, SecureSumServer

__all__ = [
    "AdvertiseKeys",
    "AggregateResult",
    "MaskedInput",
    "RingSpec",
    "RoundSetup",
    "SecureSumClient",
    "SecureSumServer",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_sum",
    "encode",
    "error_bound",
    "fingerprint",
    "plan_ring",
]
