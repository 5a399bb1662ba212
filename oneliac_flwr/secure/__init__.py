"""Secure sum: double-masked secure aggregation with no transport in it.

Specification: ``docs/secure-sum.md``. Modules, one concept each:

- :mod:`.encoding`  fixed-point ring, bit budget, error bound
- :mod:`.keys`      X25519 key agreement, HKDF-SHA256 derivations, fingerprints
- :mod:`.identity`  Ed25519 hospital identities, signed key announcements, pins, TOFU
- :mod:`.masks`     AES-256-CTR keystream masks
- :mod:`.sharing`   Shamir sharing of 32-byte secrets over GF(2^256 - 189), batched
- :mod:`.envelope`  AES-GCM envelopes of shares
- :mod:`.graph`     sparse sharing graphs from public randomness, their security bound
- :mod:`.messages`  wire messages (frozen dataclasses, flat records)
- :mod:`.client`    participant state machine
- :mod:`.server`    coordinator state machine
"""

from __future__ import annotations

from .client import SecureSumClient
from .encoding import RingSpec, decode_sum, encode, error_bound, plan_ring
from .graph import GraphPlan, SharingGraph, plan_graph, sharing_graph
from .identity import Identity, PinnedTrust, TofuTrust, Trust, identity_fingerprint, load_pins
from .keys import fingerprint
from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencyResponse,
    MaskedInput,
    RoundSetup,
    UnmaskRequest,
    UnmaskResponse,
)
from .server import AggregateResult, SecureSumServer

__all__ = [
    "AdvertiseKeys",
    "AggregateResult",
    "ConsistencyRequest",
    "ConsistencyResponse",
    "GraphPlan",
    "Identity",
    "PinnedTrust",
    "TofuTrust",
    "Trust",
    "MaskedInput",
    "RingSpec",
    "RoundSetup",
    "SecureSumClient",
    "SecureSumServer",
    "SharingGraph",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_sum",
    "encode",
    "error_bound",
    "fingerprint",
    "identity_fingerprint",
    "load_pins",
    "plan_graph",
    "plan_ring",
    "sharing_graph",
]
