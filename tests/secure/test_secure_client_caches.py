"""What a client keeps between rounds to save work, and the attacks that must still fail.

A client remembers, for the run, the X25519 secret of its envelope key with each peer's
and the envelope-key announcements it verified; a process remembers signature triples
that verified. None of it may let a changed key or signature through.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure import Identity, plan_ring
from oneliac_flwr.secure.identity import ANY_ROUND, key_statement, verify_key_signature
from oneliac_flwr.secure.keys import public_bytes

LENGTH = 8
SPEC = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=16)
IDS = [10, 20, 30, 40, 50]
# A low-order X25519 point (u = 0): every exchange with it is all-zero.
LOW_ORDER = bytes(32)


def _after_round_one(federation_cls: Any, inputs_factory: Any) -> Any:
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH)
    fed.run_round(1, inputs=inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1), threshold=3)
    return fed


def _with_envelope_key(setup: Any, position: int, c_pk: bytes, signature: bytes) -> Any:
    c_pks, sigs = list(setup.c_pks), list(setup.c_pk_signatures)
    c_pks[position], sigs[position] = c_pk, signature
    return dataclasses.replace(setup, c_pks=tuple(c_pks), c_pk_signatures=tuple(sigs))


def test_a_verified_envelope_key_is_not_reverified_but_a_substituted_one_is(federation_cls: Any, inputs_factory: Any) -> None:
    fed = _after_round_one(federation_cls, inputs_factory)
    victim = fed.clients[10]
    assert victim.state_dict()["verified_envelope_keys"], "round 1 recorded the verified announcements"
    setup = fed.server.round_setup(round=2, participants=IDS, threshold=3)
    # The coordinator substitutes peer 20's envelope key, keeping its (now wrong) signature.
    forged = _with_envelope_key(setup, 1, public_bytes(X25519PrivateKey.generate()), setup.c_pk_signatures[1])
    with pytest.raises(ProtocolViolation, match="signature_check: the envelope key of organization 'org-20'"):
        victim.mask(np.zeros(LENGTH), weight=1.0, setup=forged)
    # The same key with a signature made for it by another identity: refused as well.
    other = Identity.generate().sign_key(
        federation="default", organization="org-20", run_id=fed.run_id, kind="envelope", round=ANY_ROUND,
        public_key=forged.c_pks[1],
    )  # fmt: skip
    with pytest.raises(ProtocolViolation, match="signature_check"):
        victim.mask(np.zeros(LENGTH), weight=1.0, setup=_with_envelope_key(setup, 1, forged.c_pks[1], other))
    assert victim.mask(np.zeros(LENGTH), weight=1.0, setup=setup).round == 2  # the honest setup passes


def test_a_low_order_envelope_key_signed_by_its_owner_is_refused_in_a_later_round(
    federation_cls: Any, inputs_factory: Any
) -> None:
    """Key validation is not skipped for an envelope key the client has not seen verified."""
    fed = _after_round_one(federation_cls, inputs_factory)
    setup = fed.server.round_setup(round=2, participants=IDS, threshold=3)
    signed = fed.identities[20].sign_key(
        federation="default", organization="org-20", run_id=fed.run_id, kind="envelope", round=ANY_ROUND,
        public_key=LOW_ORDER,
    )  # fmt: skip
    with pytest.raises(ProtocolViolation, match="public_key_check: envelope key of node 20"):
        fed.clients[10].mask(np.zeros(LENGTH), weight=1.0, setup=_with_envelope_key(setup, 1, LOW_ORDER, signed))


def test_a_low_order_mask_key_is_refused_by_the_masking_exchange(federation_cls: Any, inputs_factory: Any) -> None:
    fed = _after_round_one(federation_cls, inputs_factory)
    setup = fed.server.round_setup(round=2, participants=IDS, threshold=3)
    signed = fed.identities[30].sign_key(
        federation="default", organization="org-30", run_id=fed.run_id, kind="mask", round=2, public_key=LOW_ORDER
    )
    s_pks, sigs = list(setup.s_pks), list(setup.s_pk_signatures)
    s_pks[2], sigs[2] = LOW_ORDER, signed
    bad = dataclasses.replace(setup, s_pks=tuple(s_pks), s_pk_signatures=tuple(sigs))
    with pytest.raises(ProtocolViolation, match="public_key_check: mask key of node 30"):
        fed.clients[10].mask(np.zeros(LENGTH), weight=1.0, setup=bad)


def test_kept_secrets_survive_a_reload_and_a_new_envelope_key_drops_them(federation_cls: Any, inputs_factory: Any) -> None:
    fed = _after_round_one(federation_cls, inputs_factory)  # the harness reloads every client after each stage
    state = fed.clients[10].state_dict()
    assert len(state["c_secrets"]) == len(state["c_secret_peer_keys"]) == 32 * len(IDS)
    # The next rounds still unmask exactly with the kept secrets (mask -> reload -> unmask).
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    result = fed.run_round(2, inputs=inputs, threshold=3)
    assert sorted(result.counted) == IDS
    client = fed.clients[10]
    client.advertise_keys(round=3, rotate_envelope_key=True)
    assert client.state_dict()["c_secrets"] == b"", "secrets of the old envelope key are dropped"


def test_the_verification_memo_never_remembers_a_failure() -> None:
    identity = Identity.generate()
    key = public_bytes(X25519PrivateKey.generate())
    common = {"federation": "f", "organization": "o", "run_id": 1, "kind": "mask", "round": 2, "public_key": key}
    good = identity.sign_key(**common)  # type: ignore[arg-type]
    bad = bytes([good[0] ^ 1]) + good[1:]
    for _ in range(2):
        with pytest.raises(ProtocolViolation, match="signature_check"):
            verify_key_signature(bad, identity_pk=identity.public_bytes, **common)  # type: ignore[arg-type]
    verify_key_signature(good, identity_pk=identity.public_bytes, **common)  # type: ignore[arg-type]
    verify_key_signature(good, identity_pk=identity.public_bytes, **common)  # type: ignore[arg-type] # remembered
    # A remembered success says nothing about another statement, key or identity.
    with pytest.raises(ProtocolViolation, match="signature_check"):
        verify_key_signature(good, identity_pk=identity.public_bytes, **{**common, "round": 3})  # type: ignore[arg-type]
    with pytest.raises(ProtocolViolation, match="signature_check"):
        verify_key_signature(good, identity_pk=Identity.generate().public_bytes, **common)  # type: ignore[arg-type]
    assert key_statement(**common) != key_statement(**{**common, "round": 3})  # type: ignore[arg-type]
