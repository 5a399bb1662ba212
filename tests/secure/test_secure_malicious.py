"""Malicious mode: the consistency check (Bonawitz et al.): survivors sign ``(C, D)`` and
nobody unmasks without ``t`` signatures on the survivor set it signed itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.errors import ConfigError, ProtocolViolation, RoundFailed
from oneliac_flwr.secure import ConsistencyRequest, ConsistencyResponse, SecureSumServer, plan_ring

SPEC = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=16)
LENGTH = 10
IDS = [1, 2, 3, 4, 5]


def test_malicious_mode_sums_exactly_with_dropouts(federation_cls: Any, inputs_factory: Any, exact: Any) -> None:
    exact_sum, max_error, _ = exact
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH, mode="malicious")
    for r, drop_m, drop_u in ((1, [], []), (2, [5], []), (3, [], [4])):
        inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=r)
        res = fed.run_round(r, inputs=inputs, threshold=3, drop_m=drop_m, drop_u=drop_u)
        counted = [n for n in IDS if n not in drop_m]
        assert list(res.counted) == counted
        assert max_error(res.weighted_sum, exact_sum(inputs, counted)) <= res.error_bound
        if drop_u:
            assert 4 not in fed.transcripts[r].requests  # it did not sign: no unmask request


def _masked_round(fed: Any, inputs_factory: Any, threshold: int) -> Any:
    for n in IDS:
        fed.server.register_keys(n, fed.clients[n].advertise_keys(round=1))
    setup = fed.server.round_setup(round=1, participants=IDS, threshold=threshold)
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1)
    for n in IDS:
        fed.server.receive_masked(n, fed.clients[n].mask(inputs[n][0], weight=inputs[n][1], setup=setup))
    return setup


def test_inconsistent_views_get_too_few_signatures(federation_cls: Any, inputs_factory: Any) -> None:
    """View A (node 1 counted) to {1, 2, 3}, view B (node 1 dropped) to {4, 5}, t = 4."""
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH, mode="malicious")
    _masked_round(fed, inputs_factory, threshold=4)
    honest = fed.server.consistency_requests()
    view_b = {n: dataclasses.replace(honest[n], counted=(2, 3, 4, 5), dropped=(1,)) for n in (4, 5)}
    sig_a = {n: fed.clients[n].confirm_survivors(honest[n]).signature for n in (1, 2, 3)}
    sig_b = {n: fed.clients[n].confirm_survivors(view_b[n]).signature for n in (4, 5)}
    for n in (2, 3):
        fed.server.receive_consistency(n, ConsistencyResponse(run_id=11, round=1, node_id=n, signature=sig_a[n]))
    with pytest.raises(ProtocolViolation, match="signature: does not verify for node 4"):
        fed.server.receive_consistency(4, ConsistencyResponse(run_id=11, round=1, node_id=4, signature=sig_b[4]))
    fed.server.receive_consistency(1, ConsistencyResponse(run_id=11, round=1, node_id=1, signature=sig_a[1]))
    # The honest coordinator would stop here (3 < t signatures); a lying one goes on.
    fed.server._mode = "semi-honest"
    req = dataclasses.replace(fed.server.unmask_requests()[2], consistency_signers=(1, 2, 3),
                              consistency_signatures=(sig_a[1], sig_a[2], sig_a[3]))  # fmt: skip
    with pytest.raises(ProtocolViolation, match="consistency_check: 3 valid survivor signatures on this node's view, "
                                                "below the threshold 4"):  # fmt: skip
        fed.clients[2].unmask(req)
    # Node 4 signed view B: it refuses view A whatever the signatures, and view B has 2.
    with pytest.raises(ProtocolViolation, match="consistency_check: counted/dropped differ"):
        fed.clients[4].unmask(dataclasses.replace(req, node_id=4))
    b_req = dataclasses.replace(req, node_id=4, counted=(2, 3, 4, 5), dropped=(1,), self_share_owners=(),
                                self_share_ciphertexts=(), consistency_signers=(4, 5),
                                consistency_signatures=(sig_b[4], sig_b[5]))  # fmt: skip
    with pytest.raises(ProtocolViolation, match="consistency_check: 2 valid survivor signatures"):
        fed.clients[4].unmask(b_req)
    # Forged or misattributed signatures do not count.
    forged = dataclasses.replace(req, consistency_signers=(1, 2, 3, 5), consistency_signatures=(
        sig_a[1], sig_a[2], sig_a[3], sig_a[3]))  # fmt: skip
    with pytest.raises(ProtocolViolation, match="consistency_check: 3 valid"):
        fed.clients[2].unmask(forged)
    fed.server.abort_round()


def test_malicious_client_never_unmasks_without_signing(federation_cls: Any, inputs_factory: Any) -> None:
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH, mode="malicious")
    _masked_round(fed, inputs_factory, threshold=3)
    creqs = fed.server.consistency_requests()
    for n in IDS:
        fed.server.receive_consistency(n, fed.clients[n].confirm_survivors(creqs[n]))
    requests = fed.server.unmask_requests()
    assert len(requests[1].consistency_signers) == 5
    fresh = type(fed.clients[1]).from_state_dict(fed.clients[1].state_dict(), identity=fed.identities[1])
    assert fresh.unmask(requests[1]).self_share_owners == tuple(IDS)  # signed state survives a reload
    # A node that never signed refuses, even with t signatures of others.
    fed2 = federation_cls(IDS, spec=SPEC, length=LENGTH, mode="malicious")
    _masked_round(fed2, inputs_factory, threshold=3)
    with pytest.raises(ProtocolViolation, match="consistency_check: this node signed no survivor set"):
        fed2.clients[1].unmask(dataclasses.replace(requests[1], run_id=11))
    # Consistency requests are checked like unmask requests.
    creq = fed2.server.consistency_requests()[1]
    with pytest.raises(ProtocolViolation, match="node_check"):
        fed2.clients[1].confirm_survivors(dataclasses.replace(creq, node_id=2))
    with pytest.raises(ProtocolViolation, match="round_check"):
        fed2.clients[1].confirm_survivors(dataclasses.replace(creq, round=7))
    with pytest.raises(ProtocolViolation, match="threshold_check"):
        fed2.clients[1].confirm_survivors(dataclasses.replace(creq, counted=(1, 2), dropped=(3, 4, 5)))
    with pytest.raises(ProtocolViolation, match="expected a ConsistencyRequest"):
        fed2.clients[1].confirm_survivors("nope")  # type: ignore[arg-type]
    # The server: too few signers fails the round loudly; stray responses are refused.
    with pytest.raises(ProtocolViolation, match="no consistency request is open for node 9"):
        fed2.server.receive_consistency(9, ConsistencyResponse(run_id=11, round=1, node_id=9, signature=bytes(64)))
    with pytest.raises(ProtocolViolation, match="run, round or node do not match"):
        fed2.server.receive_consistency(1, ConsistencyResponse(run_id=11, round=2, node_id=1, signature=bytes(64)))
    with pytest.raises(ProtocolViolation, match="expected ConsistencyResponse"):
        fed2.server.receive_consistency(1, creq)  # type: ignore[arg-type]
    fed2.server.receive_consistency(1, fed2.clients[1].confirm_survivors(creq))
    with pytest.raises(RoundFailed, match="consistency check: 1 survivors signed the survivor set, below the threshold 3"):
        fed2.server.unmask_requests()
    assert fed2.server.stage == "idle"
    with pytest.raises(ConfigError, match="secure_sum.mode"):
        SecureSumServer(run_id=1, spec=SPEC, length=3, mode="paranoid")
    rec = creq.to_record()
    assert ConsistencyRequest.from_record(rec) == creq
    assert isinstance(np.zeros(1), np.ndarray)
