"""Secure-sum rounds over REST in ``secure_sum.mode: malicious``: the consistency stage (stage C)
between masking and unmasking, against real uvicorn processes and the core secure-sum client."""

from __future__ import annotations

import concurrent.futures
import json
import signal

import numpy as np
import pytest

from oneliac_flwr.api.participant import take_part_in_secure_round
from oneliac_flwr.api.records import record_from_json, record_to_json
from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure import ConsistencyRequest, ConsistencyResponse, SecureSumClient, UnmaskRequest

from conftest import PREFIX
from test_rest_secure_rounds import (
    assert_model,
    drive,
    logged_messages,
    model,
    register,
    register_then_serve,
    run_round,
    settings,
    statistics,
    status,
    update_of,
    wait_until,
)


def test_two_processes_run_malicious_rounds_with_the_consistency_stage(start_service) -> None:  # noqa: ANN001
    """3 organizations, 2 rounds, each hospital alternating between two coordinator processes on
    one database: every counted organization signs the survivor set, the model moves by the
    weighted mean of the updates (within the ring's quantization bound)."""
    services = [start_service(extra=settings(min_participants=3, max_rounds=2, mode="malicious")) for _ in range(2)]
    hospitals = register(services[0], 3)
    for h in hospitals:
        h.join(services[1], mode="malicious")
    with hospitals[0].http(services[0]) as http:
        assert http.get(f"{PREFIX}/config").json()["secure_sum"]["mode"] == "malicious"  # published
    weights = {0: 100.0, 1: 300.0, 2: 600.0}
    for round_ in (1, 2):
        with hospitals[0].http(services[0]) as http:
            wait_until(lambda: (s := status(http))["round"] == round_ and s["status"] == "open")
            base, _ = model(http)
        updates = {i: update_of(base, i, round_) for i in range(3)}
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:  # each hospital alternates processes
            list(pool.map(lambda i: drive(services[i % 2:] + services[: i % 2], hospitals[i], round_, updates[i],
                                          weights[i], stats=statistics(i)), range(3)))  # fmt: skip
        with hospitals[0].http(services[1]) as http:
            wait_until(lambda: model(http)[1]["training_round"] == round_)
            report = {r["round"]: r for r in http.get(f"{PREFIX}/rounds").json()}[round_]
            assert report["status"] == "ok" and report["contributors"] == 3 and report["dropouts"] == [], report
            assert_model(http, base, updates, weights, [0, 1, 2])
    with services[1].client() as admin:
        events = [e["action"] for e in admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json()]
    assert events.count("secure_sum.consistency") == 6  # 3 signatures per round, each accepted once
    assert events.count("round.opened") == 2 and events.count("round.ok") == 2


def test_a_dropout_at_the_consistency_stage_is_recovered(start_service) -> None:  # noqa: ANN001
    """4 organizations; one uploads its masked vector and never signs the survivor set: it is
    recorded as a dropout of stage C, asked nothing in stage U, and its masked update (in the
    sum since stage M closed) is unmasked with the 3 signers' shares."""
    service, hospitals = register_then_serve(start_service, 4, min_participants=3, timeout_minutes=0.15, max_rounds=1,
                                             mode="malicious")  # fmt: skip
    with hospitals[0].http(service) as http:
        wait_until(lambda: status(http)["status"] == "open")
        base, meta = model(http)
    updates = {i: update_of(base, i, 1) for i in range(4)}
    weights = {0: 50.0, 1: 60.0, 2: 70.0, 3: 80.0}

    def take_part(i: int):
        with hospitals[i].http(service) as http:
            return take_part_in_secure_round(
                http, organization_id=hospitals[i].id, secure_client=hospitals[i].client, update=updates[i],
                weight=weights[i], model_version=meta["model_version"], statistics=statistics(i), wait_seconds=5,
                give_up_after=120,
            )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        receipts = [pool.submit(take_part, i) for i in range(3)]
        silent = pool.submit(drive, [service], hospitals[3], 1, updates[3], weights[3], stop_at="confirm_survivors",
                             stats=statistics(3))  # fmt: skip
        assert silent.result()["stage"] == "consistency"
        receipts = [r.result() for r in receipts]
    assert all(r.status == "ok" and r.stages == ("keys", "masked", "consistency", "unmask") for r in receipts)
    with hospitals[0].http(service) as http:
        report = {r["round"]: r for r in http.get(f"{PREFIX}/rounds").json()}[1]
        assert report["status"] == "ok" and report["dropouts"] == [hospitals[3].id]
        assert report["contributors"] == 4  # its masked update was accepted before stage C
        assert_model(http, base, updates, weights, [0, 1, 2, 3])


def test_below_the_threshold_of_signers_the_round_fails_and_the_model_is_unchanged(start_service) -> None:  # noqa: ANN001
    service, hospitals = register_then_serve(start_service, 4, min_participants=3, timeout_minutes=0.15, max_rounds=1,
                                             mode="malicious")  # fmt: skip
    weights = {0: 50.0, 1: 60.0, 2: 70.0, 3: 80.0}
    report, _, _ = run_round([service], hospitals, 1, weights, stop_at={2: "confirm_survivors", 3: "confirm_survivors"},
                             stats=True)
    assert report["status"] == "failed" and "consistency check: 2 survivors signed" in report["reason"], report
    assert sorted(report["dropouts"]) == sorted([hospitals[2].id, hospitals[3].id])
    with hospitals[0].http(service) as http:
        assert model(http)[1]["model_version"] == "1.0.0"


def test_sigkill_and_restart_in_the_consistency_stage(start_service, database_url: str) -> None:  # noqa: ANN001
    extra = settings(min_participants=3, max_rounds=1, timeout_minutes=5, mode="malicious")
    first = start_service(extra=extra)
    hospitals = register(first, 3)
    for h in hospitals:
        h.join(first, mode="malicious")
    with hospitals[0].http(first) as http:
        wait_until(lambda: status(http)["status"] == "open")
        base, _ = model(http)
    updates = {i: update_of(base, i, 1) for i in range(3)}
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:  # keys and masked uploads, then stage C
        list(pool.map(lambda i: drive([first], hospitals[i], 1, updates[i], weights[i], stop_at="confirm_survivors",
                                      stats=statistics(i)), range(3)))  # fmt: skip
    for i in (0, 1):
        drive([first], hospitals[i], 1, updates[i], weights[i], stop_after="confirm_survivors", stats=statistics(i))
    first.stop(signal.SIGKILL)
    assert logged_messages(database_url) == (2, 0)  # the two acknowledged signatures are in the log
    second = start_service(extra=extra)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda i: drive([second], hospitals[i], 1, updates[i], weights[i], stats=statistics(i)), range(3)))
    with hospitals[0].http(second) as http:
        (report,) = http.get(f"{PREFIX}/rounds").json()
        assert report["status"] == "ok" and report["contributors"] == 3 and report["dropouts"] == []
        assert_model(http, base, updates, weights, [0, 1, 2])


def test_a_malicious_mode_hospital_never_unmasks_when_the_coordinator_skips_the_consistency_stage(
    start_service,  # noqa: ANN001
) -> None:
    """The coordinator runs semi-honest (no stage C) while the hospitals' clients are in malicious
    mode: each refuses its unmask request (``consistency_check``), so nothing is revealed and the
    round fails with the model unchanged."""
    service, hospitals = register_then_serve(start_service, 3, min_participants=3, timeout_minutes=0.15, max_rounds=1)
    for h in hospitals:
        h.join(service, mode="malicious")
    with hospitals[0].http(service) as http:
        base, meta = model(http)

    def take_part(i: int) -> Exception | None:
        with hospitals[i].http(service) as http:
            try:
                take_part_in_secure_round(http, organization_id=hospitals[i].id, secure_client=hospitals[i].client,
                                          update=update_of(base, i, 1), weight=1.0, model_version=meta["model_version"],
                                          statistics=statistics(i), wait_seconds=5, give_up_after=120)  # fmt: skip
            except ProtocolViolation as exc:
                return exc
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        refusals = list(pool.map(take_part, range(3)))
    assert all(r is not None and str(r).startswith("consistency_check: this node signed no survivor set") for r in refusals)
    assert all(h.client.revealed_fingerprints == () for h in hospitals)
    with hospitals[0].http(service) as http:
        closed = http.get(f"{PREFIX}/rounds/1/consistency-request")  # this coordinator has no stage C
        assert closed.status_code == 409 and closed.json()["type"].endswith("stage_closed") and closed.json()["field"] == "round"
        wait_until(lambda: status(http)["status"] == "failed")
        (report,) = http.get(f"{PREFIX}/rounds").json()
        assert "cannot be unmasked" in report["reason"]
        assert model(http)[1]["model_version"] == "1.0.0"


def test_inconsistent_survivor_sets_reveal_nothing(start_service, database_url: str) -> None:  # noqa: ANN001
    """The ATTACK: a coordinator that tells two hospitals that hospital 0 dropped (to get the
    pairwise-mask seeds with it) and the other two that it was counted (to get shares of its
    self-mask seed). The masked inputs come from a real round; the malicious coordinator then
    works from the real coordinator's stored state (everything a coordinator holds). Every
    honest hospital in malicious mode refuses to unmask, so nothing about hospital 0's update
    is revealed; the same request without signatures makes a semi-honest client reveal its
    seed (positive control: the forged requests are otherwise well formed)."""
    from oneliac_flwr.api.store import Database, SecureSnapshot

    service, hospitals = register_then_serve(start_service, 4, min_participants=3, timeout_minutes=5, max_rounds=1,
                                             mode="malicious")  # fmt: skip
    with hospitals[0].http(service) as http:
        wait_until(lambda: status(http)["status"] == "open")
        base, _ = model(http)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:  # stages K and M through the real coordinator
        list(pool.map(lambda i: drive([service], hospitals[i], 1, update_of(base, i, 1), 1.0, stop_at="confirm_survivors",
                                      stats=statistics(i)), range(4)))  # fmt: skip
    real = {}
    for h in hospitals:  # the honest coordinator's consistency requests: everyone counted
        with h.http(service) as http:
            answer = http.get(f"{PREFIX}/rounds/1/consistency-request")
            assert answer.status_code == 200, answer.text
            real[h.id] = ConsistencyRequest.from_record(record_from_json(answer.json()["record"]))
    database = Database(database_url)
    try:
        with database.transaction() as session:
            state = record_from_json(json.loads(session.get(SecureSnapshot, 1).state), field="server_state")
    finally:
        database.dispose()
    nodes = [h.client.node_id for h in hospitals]
    victim, run_id = nodes[0], hospitals[0].client.run_id
    assert all(r.counted == tuple(sorted(nodes)) and r.dropped == () for r in real.values())
    envelopes = {w: dict(map(tuple, recipients)) for w, recipients in state["round"]["self_envelopes"]}
    views = {  # hospital index -> (counted, dropped) the malicious coordinator shows it
        0: (tuple(sorted(nodes)), ()), 3: (tuple(sorted(nodes)), ()),
        1: (tuple(sorted(nodes[1:])), (victim,)), 2: (tuple(sorted(nodes[1:])), (victim,)),
    }  # fmt: skip
    signatures = {}
    for i, (counted, dropped) in views.items():  # each honest hospital signs the one view it was shown
        request = ConsistencyRequest(run_id=run_id, round=1, node_id=nodes[i], counted=counted, dropped=dropped)
        signatures[nodes[i]] = hospitals[i].client.confirm_survivors(request).signature
    other = views[0] if views[1] != views[0] else views[1]
    with pytest.raises(ProtocolViolation, match="consistency_check"):  # one survivor set per round, not a second one
        hospitals[1].client.confirm_survivors(ConsistencyRequest(run_id=run_id, round=1, node_id=nodes[1],
                                                                 counted=other[0], dropped=other[1]))  # fmt: skip
    with hospitals[1].http(service) as http:  # the honest coordinator refuses a signature of another survivor set
        forged = ConsistencyResponse(run_id=run_id, round=1, node_id=nodes[1], signature=signatures[nodes[1]])
        answer = http.post(f"{PREFIX}/rounds/1/consistency-response",
                           json={"organization_id": hospitals[1].id, "record": record_to_json(forged.to_record())})  # fmt: skip
        assert answer.status_code == 422 and answer.json()["field"] == "record.signature", answer.text
    with hospitals[0].http(service) as http:  # hospital 0 was shown the real set: its signature is accepted, once
        genuine = {"organization_id": hospitals[0].id, "record": record_to_json(ConsistencyResponse(
            run_id=run_id, round=1, node_id=nodes[0], signature=signatures[nodes[0]]).to_record())}  # fmt: skip
        first = http.post(f"{PREFIX}/rounds/1/consistency-response", json=genuine)
        assert first.status_code == 200 and not first.json()["replayed"], first.text
        assert http.post(f"{PREFIX}/rounds/1/consistency-response", json=genuine).json() == {**first.json(), "replayed": True}
        assert status(http)["next_action"] == "wait" and status(http)["stage"] == "consistency"

    def unmask_request(i: int, *, signed: bool) -> UnmaskRequest:
        counted, dropped = views[i]
        signers = tuple(sorted(nodes)) if signed else ()  # every signature, whichever view it signed
        return UnmaskRequest(
            run_id=run_id, round=1, node_id=nodes[i], counted=counted, dropped=dropped, self_share_owners=counted,
            self_share_ciphertexts=tuple(envelopes[w][nodes[i]] for w in counted), key_share_owners=(),
            key_share_rounds=(), key_share_ciphertexts=(), seed_requests=dropped,
            consistency_signers=signers, consistency_signatures=tuple(signatures[v] for v in signers),
        )  # fmt: skip

    for i, h in enumerate(hospitals):
        with pytest.raises(ProtocolViolation, match="consistency_check: 2 valid survivor signatures"):
            h.client.unmask(unmask_request(i, signed=True))
        with pytest.raises(ProtocolViolation, match="consistency_check"):  # without signatures, neither
            h.client.unmask(unmask_request(i, signed=False))
        assert h.client.revealed_fingerprints == ()
    # positive control: a semi-honest client shown view A without signatures reveals its seed with the victim
    semi = SecureSumClient.from_state_dict({**hospitals[1].client.state_dict(), "mode": "semi-honest"},
                                           identity=hospitals[1].identity)  # fmt: skip
    revealed = semi.unmask(unmask_request(1, signed=False))
    assert revealed.seed_peers == (victim,) and len(revealed.seeds[0]) == 32
    assert np.all([len(s) > 0 for s in revealed.self_shares])
