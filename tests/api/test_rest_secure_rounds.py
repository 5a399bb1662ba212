"""Secure-sum rounds over REST, against real uvicorn processes and the core secure-sum client."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load

from oneliac_flwr.api.participant import masked_vector, secure_node, take_part_in_secure_round
from oneliac_flwr.api.records import record_from_json, record_to_json
from oneliac_flwr.masked_statistics import MaskedStatistics
from oneliac_flwr.secure import ConsistencyRequest, Identity, RoundSetup, SecureSumClient, UnmaskRequest, plan_ring
from oneliac_flwr.secure.encoding import error_bound

from conftest import PREFIX, hospital
from conftest import wait_until as poll_until

MAX_PARTICIPANTS = 6


def settings(*, min_participants: int = 3, timeout_minutes: float = 1.0, max_rounds: int = 3,
             mode: str = "semi-honest") -> list[str]:  # fmt: skip
    return [
        "aggregation_config.aggregation_method=secure_sum", "strategy=fedavg", "privacy_budget=none",
        f"secure_sum.mode={mode}",
        f"secure_sum.max_participants={MAX_PARTICIPANTS}", f"aggregation_config.min_participants={min_participants}",
        f"aggregation_config.timeout_minutes={timeout_minutes}", f"aggregation_config.max_rounds={max_rounds}",
    ]  # fmt: skip


SPEC = plan_ring(clip_bound=1.0, weight_bound=1000, max_participants=MAX_PARTICIPANTS)


@dataclass
class Hospital:
    """One organization: its registration, its core secure-sum client, its HTTP client per service."""

    org: dict[str, Any]
    identity: Identity = field(default_factory=Identity.generate)
    client: SecureSumClient | None = None

    @property
    def id(self) -> str:
        return self.org["organization_id"]

    def http(self, service) -> httpx.Client:  # noqa: ANN001
        return service.client(token=self.org["api_key"])

    def join(self, service, mode: str = "semi-honest") -> None:  # noqa: ANN001
        with self.http(service) as http:
            node = secure_node(http)
        self.client = SecureSumClient(node_id=node.node_id, run_id=node.run_id, identity=self.identity,
                                      organization=self.id, mode=mode)  # fmt: skip


def register(service, n: int) -> list[Hospital]:  # noqa: ANN001
    with service.client() as admin:
        return [Hospital(admin.post(f"{PREFIX}/organizations", json=hospital(f"Hospital {i}", i)).json()) for i in range(n)]


def model(http: httpx.Client, version: str | None = None) -> tuple[list[np.ndarray], dict]:
    meta = http.get(f"{PREFIX}/model", params={"version": version} if version else None).json()
    tensors = safetensors_load(bytes.fromhex(meta["weights"][2:]))
    return [tensors[n] for n in sorted(tensors)], meta


def status(http: httpx.Client, **params: Any) -> dict:
    response = http.get(f"{PREFIX}/rounds/current", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(predicate: Callable[[], Any]) -> Any:
    """The shared poll, with this module's longer wait (secure rounds have more stages)."""
    return poll_until(predicate, timeout=90.0, interval=0.2)


def update_of(arrays: list[np.ndarray], index: int, round_: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 * round_ + index)
    return [0.01 * rng.standard_normal(a.shape) for a in arrays]


def statistics(index: int) -> MaskedStatistics:
    return MaskedStatistics(train_loss=0.5, train_accuracy=0.8, eval_loss=0.4, eval_accuracy=0.6 + 0.1 * index,
                            label_fractions=(0.5, 0.5))  # fmt: skip


def drive(services: list, h: Hospital, round_: int, update: list[np.ndarray], weight: float, *,  # noqa: ANN001
          stop_at: str | None = None, stop_after: str | None = None, stats: MaskedStatistics | None = None) -> dict:  # fmt: skip
    """Raw HTTP: act on round ``round_`` until it closes (or stop before ``stop_at``, or right after
    ``stop_after``); on a transport error, go on through the next service."""
    assert h.client is not None
    attempt = 0
    stage = None
    while True:
        service = services[attempt % len(services)]
        try:
            with h.http(service) as http:
                while True:
                    params = {"wait_seconds": 5, "after_round": round_, "after_status": "open", "after_stage": stage} if stage else {}
                    state = status(http, **params)
                    stage = state.get("stage")
                    if state["round"] is None or state["round"] < round_:
                        stage = None
                        time.sleep(0.2)
                        continue
                    if state["round"] > round_ or state["status"] != "open":
                        return state
                    action = state["next_action"]
                    if action == stop_at:
                        return state
                    if action == "advertise_keys":
                        message = h.client.advertise_keys(round=round_)
                        answer = http.post(f"{PREFIX}/rounds/{round_}/keys",
                                           json={"organization_id": h.id, "record": record_to_json(message.to_record())})  # fmt: skip
                        assert answer.status_code == 200, answer.text
                    elif action == "submit":
                        setup = RoundSetup.from_record(record_from_json(http.get(f"{PREFIX}/rounds/{round_}/setup").json()["record"]))
                        masked = h.client.mask(masked_vector(update, setup=setup, statistics=stats), weight=weight, setup=setup)
                        answer = http.post(f"{PREFIX}/gradients", json=masked_body(h, round_, state["model_version"], masked))
                        assert answer.status_code == 200, answer.text
                    elif action == "confirm_survivors":  # stage C (secure_sum.mode: malicious)
                        got = http.get(f"{PREFIX}/rounds/{round_}/consistency-request").json()
                        signed = h.client.confirm_survivors(ConsistencyRequest.from_record(record_from_json(got["record"])))
                        answer = http.post(f"{PREFIX}/rounds/{round_}/consistency-response",
                                           json={"organization_id": h.id, "record": record_to_json(signed.to_record())})  # fmt: skip
                        assert answer.status_code == 200, answer.text
                    elif action == "unmask":
                        got = http.get(f"{PREFIX}/rounds/{round_}/unmask-request").json()
                        response = h.client.unmask(UnmaskRequest.from_record(record_from_json(got["record"])))
                        answer = http.post(f"{PREFIX}/rounds/{round_}/unmask-response",
                                           json={"organization_id": h.id, "record": record_to_json(response.to_record())})  # fmt: skip
                        assert answer.status_code == 200, answer.text
                    else:
                        continue
                    if action == stop_after:
                        return state
                    stage = None  # look again at once
        except httpx.TransportError:
            attempt += 1
            time.sleep(0.5)


def masked_body(h: Hospital, round_: int, version: str, masked: Any) -> dict:
    wire = np.ascontiguousarray(masked.masked, dtype=np.dtype(masked.masked.dtype).newbyteorder("<"))
    return {"organization_id": h.id, "round": round_, "gradients_encrypted": "0x" + wire.tobytes().hex(),
            "model_version": version, "sample_count": 1, "secure_sum": record_to_json(masked.to_record())}  # fmt: skip


def expected_model(base: list[np.ndarray], updates: dict[int, list[np.ndarray]], weights: dict[int, float]) -> list[np.ndarray]:
    total = sum(weights.values())
    out = []
    for k, array in enumerate(base):
        clipped = {}
        for i, update in updates.items():
            norm = float(np.sqrt(sum(float(np.sum(u**2)) for u in update)))
            clipped[i] = update[k] * min(1.0, 1.0 / norm)
        out.append((array + sum(weights[i] * clipped[i] for i in updates) / total).astype(array.dtype))
    return out


def run_round(services: list, hospitals: list[Hospital], round_: int, weights: dict[int, float], *,  # noqa: ANN001
              stop_at: dict[int, str] | None = None, stats: bool = False) -> tuple[dict, list[np.ndarray], dict]:  # fmt: skip
    with hospitals[0].http(services[0]) as http:
        wait_until(lambda: (s := status(http))["round"] == round_ and s["status"] == "open")
        base, meta = model(http)
    updates = {i: update_of(base, i, round_) for i in range(len(hospitals))}
    stop_at = stop_at or {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hospitals)) as pool:
        futures = [pool.submit(drive, services, h, round_, updates[i], weights[i], stop_at=stop_at.get(i),
                               stats=statistics(i) if stats else None) for i, h in enumerate(hospitals)]  # fmt: skip
        for future in futures:
            future.result()
    with hospitals[0].http(services[0]) as http:
        final = wait_until(lambda: (s := status(http, wait_seconds=5, after_round=round_, after_status="open"))["round"] != round_ or s["status"] != "open")
        rounds = {r["round"]: r for r in http.get(f"{PREFIX}/rounds").json()}
    del final
    return rounds[round_], base, updates


def assert_model(http: httpx.Client, base: list[np.ndarray], updates: dict, weights: dict, counted: list[int]) -> None:
    served, _ = model(http)
    expected = expected_model(base, {i: updates[i] for i in counted}, {i: weights[i] for i in counted})
    tolerance = error_bound(SPEC, len(counted)) / sum(weights[i] for i in counted) + 1e-6
    for a, b in zip(served, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance)


def serve_and_join(start_service, n: int, **kwargs: Any) -> tuple[Any, list[Hospital]]:  # noqa: ANN001
    """A service with ``settings(**kwargs)``, ``n`` registered organizations, each with its secure-sum client."""
    service = start_service(extra=settings(**kwargs))
    hospitals = register(service, n)
    for h in hospitals:
        h.join(service)
    return service, hospitals


def register_then_serve(start_service, n: int, **kwargs: Any) -> tuple[Any, list[Hospital]]:  # noqa: ANN001
    """Register ``n`` organizations before any round can open (the roster is fixed at opening);
    their clients run in the federation's ``mode``."""
    setup = start_service(extra=["aggregation_config.min_participants=100", "federation.num_organizations=100"])
    hospitals = register(setup, n)
    setup.stop()
    service = start_service(extra=settings(**kwargs))
    for h in hospitals:
        h.join(service, mode=kwargs.get("mode", "semi-honest"))
    return service, hospitals


def test_three_organizations_three_secure_rounds_give_the_weighted_mean(start_service) -> None:  # noqa: ANN001
    service, hospitals = serve_and_join(start_service, 3, min_participants=3)
    weights = {0: 100.0, 1: 300.0, 2: 600.0}
    for round_ in (1, 2, 3):
        report, base, updates = run_round([service], hospitals, round_, weights, stats=True)
        assert report["status"] == "ok", report
        assert report["contributors"] == 3 and report["dropouts"] == []
        with hospitals[0].http(service) as http:
            assert_model(http, base, updates, weights, [0, 1, 2])
            _, received = model(http, f"1.0.{round_ - 1}")
            expected_accuracy = sum(weights[i] * (0.6 + 0.1 * i) for i in range(3)) / sum(weights.values())
            assert received["accuracy"] == pytest.approx(expected_accuracy, abs=1e-3)
            assert model(http)[1]["accuracy"] is None  # nobody evaluated the newest version yet
    with hospitals[0].http(service) as http:
        assert status(http)["next_action"] == "finished"


def test_participant_driver_takes_part_in_a_round(start_service) -> None:  # noqa: ANN001
    service, hospitals = serve_and_join(start_service, 3, min_participants=3, max_rounds=1)
    with hospitals[0].http(service) as http:
        base, meta = model(http)
    updates = {i: update_of(base, i, 1) for i in range(3)}
    weights = {0: 10.0, 1: 20.0, 2: 30.0}
    seen: list[str] = []

    def take_part(i: int):
        with hospitals[i].http(service) as http:
            return take_part_in_secure_round(
                http, organization_id=hospitals[i].id, secure_client=hospitals[i].client, update=updates[i],
                weight=weights[i], model_version=meta["model_version"], statistics=statistics(i), wait_seconds=5,
                give_up_after=120, progress=seen.append,
            )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        receipts = list(pool.map(take_part, range(3)))
    assert all(r.status == "ok" and r.round == 1 and r.contributors == 3 for r in receipts)
    assert receipts[0].stages == ("keys", "masked", "unmask") and seen
    with hospitals[0].http(service) as http:
        assert_model(http, base, updates, weights, [0, 1, 2])


def test_status_carries_the_next_actions_record_and_a_round_long_poll_waits_for_its_end(start_service) -> None:  # noqa: ANN001
    service, hospitals = serve_and_join(start_service, 3, min_participants=3, max_rounds=2)
    with hospitals[0].http(service) as http:
        wait_until(lambda: status(http)["status"] == "open")
        base, meta = model(http)
    updates = {i: update_of(base, i, 1) for i in range(3)}

    def drive_all(stop_at: str) -> list[dict]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(lambda i: drive([service], hospitals[i], 1, updates[i], 10.0, stop_at=stop_at,
                                                   stats=statistics(i)), range(3)))  # fmt: skip

    for state, h in zip(drive_all("submit"), hospitals, strict=True):  # stage M: the round setup, inline
        assert state["next_action"] == "submit"
        with h.http(service) as http:
            assert state["record"] == http.get(f"{PREFIX}/rounds/1/setup").json()["record"]
    for state, h in zip(drive_all("unmask"), hospitals, strict=True):  # stage U: this organization's own request
        assert state["next_action"] == "unmask"
        with h.http(service) as http:
            assert state["record"] == http.get(f"{PREFIX}/rounds/1/unmask-request").json()["record"]
    assert len({str(s["record"]) for s in drive_all("unmask")}) == 3  # one request per organization
    with hospitals[0].http(service) as http:
        assert status(http)["next_action"] == "unmask"
        for i in (1, 2):  # the others answer; round 1 still waits for organization 0
            drive([service], hospitals[i], 1, updates[i], 10.0, stop_after="unmask", stats=statistics(i))

        def long_poll() -> httpx.Response:
            with hospitals[1].http(service) as other:
                return other.get(f"{PREFIX}/rounds/1",
                                 params={"wait_seconds": 20, "after_status": "open", "after_stage": "unmasking"})  # fmt: skip

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(long_poll)
            time.sleep(0.5)  # the long poll is waiting: round 1 is still open in stage U
            assert not waiting.done()
            drive([service], hospitals[0], 1, updates[0], 10.0, stop_after="unmask", stats=statistics(0))
            ended = waiting.result(timeout=30)
        assert ended.status_code == 200, ended.text
        outcome = ended.json()
        assert outcome["round"] == 1 and outcome["status"] == "ok" and outcome["contributors"] == 3
        assert outcome["record"] is None and outcome["next_action"] == "wait"
        current = status(http)
        assert current["round"] == 2 and current["status"] == "open"  # the next round opened meanwhile
        unknown = http.get(f"{PREFIX}/rounds/9", params={"wait_seconds": 1, "after_status": "open"})
        assert unknown.status_code == 404 and unknown.json()["field"] == "round" and "unknown_round" in unknown.json()["type"]


def test_a_key_advertisement_resent_after_stage_k_closed_is_a_replay(start_service) -> None:  # noqa: ANN001
    service, hospitals = serve_and_join(start_service, 3, min_participants=3, max_rounds=1)
    with hospitals[0].http(service) as http:
        wait_until(lambda: status(http)["next_action"] == "advertise_keys")
    bodies, receipts = [], []
    for h in hospitals:
        with h.http(service) as http:
            body = {"organization_id": h.id, "record": record_to_json(h.client.advertise_keys(round=1).to_record())}
            answer = http.post(f"{PREFIX}/rounds/1/keys", json=body)
            assert answer.status_code == 200, answer.text
            bodies.append(body)
            receipts.append(answer.json()["receipt"])
    with hospitals[0].http(service) as http:
        assert status(http)["stage"] == "masking"  # the third advertisement closed stage K
        again = http.post(f"{PREFIX}/rounds/1/keys", json=bodies[0])  # its answer was lost: the same body again
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True and again.json()["receipt"] == receipts[0]
        other = http.post(f"{PREFIX}/rounds/1/keys", json={**bodies[0], "record": bodies[1]["record"]})
        assert other.status_code == 409 and other.json()["field"] == "round"  # not a replay: stage K is closed


def test_a_stage_message_with_wait_seconds_answers_once_its_stage_moved_on(start_service) -> None:  # noqa: ANN001
    service, hospitals = serve_and_join(start_service, 3, min_participants=3, max_rounds=1)
    with hospitals[0].http(service) as http:
        wait_until(lambda: status(http)["next_action"] == "advertise_keys")
    bodies = [{"organization_id": h.id, "record": record_to_json(h.client.advertise_keys(round=1).to_record())}
              for h in hospitals]  # fmt: skip

    def post_keys(i: int, wait: float) -> httpx.Response:
        with hospitals[i].http(service) as http:
            return http.post(f"{PREFIX}/rounds/1/keys", params={"wait_seconds": wait}, json=bodies[i])

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(post_keys, 0, 20)
        with hospitals[0].http(service) as http:  # stored: organization 0 has nothing left to do in stage K
            wait_until(lambda: status(http)["next_action"] == "wait")
        assert not waiting.done()  # and its message waits for stage K to close
        quick = post_keys(1, 0)  # no wait: the round as the message left it
        assert quick.status_code == 200, quick.text
        assert quick.json()["round_status"]["stage"] == "keys" and quick.json()["round_status"]["next_action"] == "wait"
        assert not waiting.done()
        closing = post_keys(2, 20)  # completes stage K: answered at once with stage M
        first = waiting.result(timeout=30)
    for answer, h in ((first, hospitals[0]), (closing, hospitals[2])):
        assert answer.status_code == 200, answer.text
        seen = answer.json()["round_status"]
        assert seen["round"] == 1 and seen["stage"] == "masking" and seen["next_action"] == "submit"
        with h.http(service) as http:  # the record the next action answers: this round's setup
            assert seen["record"] == http.get(f"{PREFIX}/rounds/1/setup").json()["record"]
    assert first.headers["server-timing"].startswith("wait;dur=")  # the time it waited, in milliseconds
    float(first.headers["server-timing"].split("dur=")[1])
    replay = post_keys(0, 20)  # its answer was lost: the same body again, after stage K closed
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    assert replay.json()["receipt"] == first.json()["receipt"] and replay.json()["round_status"]["stage"] == "masking"
    with hospitals[0].http(service) as http:
        for bad_wait in (-1, 31, "soon"):
            bad = http.post(f"{PREFIX}/rounds/1/keys", params={"wait_seconds": bad_wait}, json=bodies[0])
            assert bad.status_code == 422 and bad.json()["field"] == "wait_seconds", bad.text


@pytest.mark.parametrize("stage", ["advertise_keys", "submit", "unmask"])
def test_a_dropout_at_each_stage_is_recovered(start_service, stage: str) -> None:  # noqa: ANN001
    service, hospitals = register_then_serve(start_service, 4, min_participants=3, timeout_minutes=0.15, max_rounds=2)
    weights = {0: 50.0, 1: 60.0, 2: 70.0, 3: 80.0}
    if stage == "advertise_keys":
        report, base, updates = run_round([service], hospitals, 1, weights, stop_at={3: stage}, stats=True)
    else:  # the dropout happens in round 2, when keys were carried over from round 1
        first, _, _ = run_round([service], hospitals, 1, weights, stats=True)
        assert first["status"] == "ok"
        report, base, updates = run_round([service], hospitals, 2, weights, stop_at={3: stage}, stats=True)
    assert report["status"] == "ok", report
    counted = [0, 1, 2, 3] if stage == "unmask" else [0, 1, 2]
    assert report["contributors"] == len(counted)
    if stage != "unmask":
        assert report["dropouts"] == [hospitals[3].id]
    with hospitals[0].http(service) as http:
        assert_model(http, base, updates, weights, counted)


def test_below_the_threshold_the_round_fails_and_the_model_is_unchanged(start_service) -> None:  # noqa: ANN001
    service, hospitals = register_then_serve(start_service, 4, min_participants=3, timeout_minutes=0.15, max_rounds=1)
    weights = {0: 50.0, 1: 60.0, 2: 70.0, 3: 80.0}
    report, _, _ = run_round([service], hospitals, 1, weights, stop_at={2: "submit", 3: "submit"}, stats=True)
    assert report["status"] == "failed" and "below the threshold" in report["reason"]
    assert sorted(report["dropouts"]) == sorted([hospitals[2].id, hospitals[3].id])
    with hospitals[0].http(service) as http:
        assert model(http)[1]["model_version"] == "1.0.0"


def logged_messages(database_url: str) -> tuple[int, int]:
    """Stage messages not yet folded into the snapshot: (with a record, with a masked vector)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return tuple(connection.execute(text(
                "SELECT count(record), count(masked) FROM secure_messages")).one())  # fmt: skip
    finally:
        engine.dispose()


def test_sigkill_and_restart_mid_secure_round(start_service, database_url: str) -> None:  # noqa: ANN001
    first = start_service(extra=settings(min_participants=3, max_rounds=1, timeout_minutes=5))
    hospitals = register(first, 3)
    for h in hospitals:
        h.join(first)
    with hospitals[0].http(first) as http:
        wait_until(lambda: status(http)["status"] == "open")
        base, _ = model(http)
    updates = {i: update_of(base, i, 1) for i in range(3)}
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    # everyone advertises keys and two upload their masked vectors; then the coordinator dies
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda i: drive([first], hospitals[i], 1, updates[i], weights[i], stop_after="advertise_keys", stats=statistics(i)), range(3)))
    for i in (0, 1):
        drive([first], hospitals[i], 1, updates[i], weights[i], stop_after="submit", stats=statistics(i))
    first.stop(signal.SIGKILL)
    # what the killed process acknowledged is in the message log (two masked vectors, as raw ring elements)
    assert logged_messages(database_url) == (2, 2)
    second = start_service(extra=settings(min_participants=3, max_rounds=1, timeout_minutes=5))
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda i: drive([second], hospitals[i], 1, updates[i], weights[i], stats=statistics(i)), range(3)))
    with hospitals[0].http(second) as http:
        rounds = http.get(f"{PREFIX}/rounds").json()
        assert rounds[0]["status"] == "ok" and rounds[0]["contributors"] == 3
        assert_model(http, base, updates, weights, [0, 1, 2])
    assert logged_messages(database_url) == (0, 0)  # folded into the snapshot: no vector is kept


def test_two_coordinator_processes_serve_one_secure_federation(start_service) -> None:  # noqa: ANN001
    services = [start_service(extra=settings(min_participants=3, max_rounds=2)) for _ in range(2)]
    hospitals = register(services[0], 3)
    for h in hospitals:
        h.join(services[1])
    weights = {0: 5.0, 1: 6.0, 2: 7.0}
    for round_ in (1, 2):
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            with hospitals[0].http(services[0]) as http:
                wait_until(lambda: (s := status(http))["round"] == round_ and s["status"] == "open")
                base, _ = model(http)
            updates = {i: update_of(base, i, round_) for i in range(3)}
            # each hospital alternates between the two processes
            list(pool.map(lambda i: drive(services[i % 2:] + services[: i % 2], hospitals[i], round_, updates[i], weights[i],
                                        stats=statistics(i)), range(3)))
        with hospitals[0].http(services[1]) as http:
            wait_until(lambda: model(http)[1]["training_round"] == round_)
            assert_model(http, base, updates, weights, [0, 1, 2])
    with services[0].client() as admin:
        events = [e["action"] for e in admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json()]
    assert events.count("round.opened") == 2 and events.count("round.ok") == 2  # each transition exactly once


def test_attacks_on_the_secure_stages_are_refused(start_service) -> None:  # noqa: ANN001
    service, hospitals = serve_and_join(start_service, 3, min_participants=3, max_rounds=1)
    a, b, c = hospitals
    with a.http(service) as http:
        wait_until(lambda: status(http)["next_action"] == "advertise_keys")
        version = status(http)["model_version"]
        keys = record_to_json(a.client.advertise_keys(round=1).to_record())
        # A posts as B: 403
        posed = http.post(f"{PREFIX}/rounds/1/keys", json={"organization_id": b.id, "record": keys})
        assert posed.status_code == 403 and posed.json()["field"] == "organization_id"
        # a malformed record field: 422 naming it
        broken = dict(keys, c_pk="0x1234")
        refused = http.post(f"{PREFIX}/rounds/1/keys", json={"organization_id": a.id, "record": broken})
        assert refused.status_code == 422 and refused.json()["field"] == "record.c_pk", refused.text
        bad_hex = dict(keys, s_pk="0xzz")
        refused = http.post(f"{PREFIX}/rounds/1/keys", json={"organization_id": a.id, "record": bad_hex})
        assert refused.status_code == 422 and refused.json()["field"] == "record.s_pk", refused.text
        assert http.post(f"{PREFIX}/rounds/1/keys", json={"organization_id": a.id, "record": keys}).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda h: drive([service], h, 1, [], 1.0, stop_at="submit"), (b, c)))
    with a.http(service) as http:
        wait_until(lambda: status(http)["next_action"] == "submit")
        base, _ = model(http)
        setup = RoundSetup.from_record(record_from_json(http.get(f"{PREFIX}/rounds/1/setup").json()["record"]))
        masked = a.client.mask(masked_vector(update_of(base, 0, 1), setup=setup, statistics=statistics(0)), weight=3.0, setup=setup)
        good = masked_body(a, 1, version, masked)
        stale = http.post(f"{PREFIX}/gradients", json=dict(good, model_version="0.9.9"))
        assert stale.status_code == 409 and stale.json()["field"] == "model_version"
        wrong = http.post(f"{PREFIX}/gradients", json=dict(good, secure_sum=dict(good["secure_sum"], run_id=5)))
        assert wrong.status_code == 422 and wrong.json()["field"] == "secure_sum.run_id", wrong.text
        first = http.post(f"{PREFIX}/gradients", json=good)
        assert first.status_code == 200, first.text
        again = http.post(f"{PREFIX}/gradients", json=good)  # the replay: the same receipt
        assert again.json() == {**first.json(), "replayed": True}
        altered_hex = good["gradients_encrypted"][:-2] + ("00" if good["gradients_encrypted"][-2:] != "00" else "01")
        altered = http.post(f"{PREFIX}/gradients", json=dict(good, gradients_encrypted=altered_hex))
        assert altered.status_code == 409 and altered.json()["type"].endswith("conflicting_resubmission")
    with b.http(service) as http:  # B replays A's masked input under its own name: refused, nothing stored
        replayed = http.post(f"{PREFIX}/gradients", json=dict(good, organization_id=b.id))
        assert replayed.status_code == 422 and replayed.json()["field"] == "secure_sum.node_id"
        assert status(http)["next_action"] == "submit"


def test_release_mode_dp_with_secure_sum_checks_declarations_and_accounts_on_unmasking(start_service) -> None:  # noqa: ANN001
    from oneliac_flwr.privacy import rounds_epsilon

    z, delta = 2.0, 1e-5
    dp = ["privacy_budget.mode=release", f"privacy_budget.noise_multiplier={z}", f"privacy_budget.delta={delta}",
          "privacy_budget.clip_norm=1.0", "privacy_budget.mechanism=gaussian",
          f"privacy_budget.epsilon={rounds_epsilon(noise_multiplier=z, rounds=2, delta=delta) * 1.01}"]  # fmt: skip
    service = start_service(extra=[*settings(min_participants=3, max_rounds=1), *dp])
    hospitals = register(service, 3)
    for h in hospitals:
        h.join(service)
    with hospitals[0].http(service) as http:
        policy = http.get(f"{PREFIX}/privacy/policy").json()
        base, meta = model(http)
    declaration = {"mechanism": "gaussian", "clip_norm": 1.0, "noise_multiplier": float(policy["noise-multiplier"])}
    updates = {i: update_of(base, i, 1) for i in range(3)}

    # hospital 0 advertises its keys, then uploads a masked vector without a declaration: refused, nothing stored
    def first_keys() -> dict:
        return drive([service], hospitals[0], 1, updates[0], 1.0, stop_at="submit")

    def take_part(i: int):
        with hospitals[i].http(service) as http:
            return take_part_in_secure_round(http, organization_id=hospitals[i].id, secure_client=hospitals[i].client,
                                             update=updates[i], weight=1.0, model_version=meta["model_version"],
                                             privacy=declaration, wait_seconds=5, give_up_after=120)  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        others = [pool.submit(take_part, i) for i in (1, 2)]
        state = first_keys()
        assert state["next_action"] == "submit" and state["aggregation_method"] == "secure_sum"
        with hospitals[0].http(service) as http:
            setup = RoundSetup.from_record(record_from_json(http.get(f"{PREFIX}/rounds/1/setup").json()["record"]))
            masked = hospitals[0].client.mask(masked_vector(updates[0], setup=setup, statistics=None), weight=1.0, setup=setup)
            body = masked_body(hospitals[0], 1, meta["model_version"], masked)
            bare = http.post(f"{PREFIX}/gradients", json=body)
            assert bare.status_code == 422 and bare.json()["type"].endswith("validation_privacy_check")
            assert bare.json()["field"] == "privacy" and "no privacy declaration" in bare.json()["detail"]
            weak = http.post(f"{PREFIX}/gradients", json={**body, "privacy": {**declaration, "noise_multiplier": z / 2}})
            assert weak.status_code == 422 and "noise_multiplier" in weak.json()["detail"]
            assert status(http)["next_action"] == "submit"  # nothing was stored
            assert http.get(f"{PREFIX}/privacy/epsilon").json()["epsilon_spent"] == 0.0
            accepted = http.post(f"{PREFIX}/gradients", json={**body, "privacy": declaration})
            assert accepted.status_code == 200, accepted.text
        rest = pool.submit(drive, [service], hospitals[0], 1, updates[0], 1.0)  # hospital 0's unmask answer
        receipts = [f.result() for f in others]
        final = rest.result()
    assert all(r.status == "ok" and r.contributors == 3 and r.receipt.startswith("rcpt_") for r in receipts)
    assert final["status"] == "ok"
    with hospitals[0].http(service) as http:
        (row,) = http.get(f"{PREFIX}/privacy/report").json()
        spent = http.get(f"{PREFIX}/privacy/epsilon").json()["epsilon_spent"]
        assert model(http)[1]["epsilon_spent"] == pytest.approx(spent, rel=1e-12)
        assert_model(http, base, updates, {0: 1.0, 1: 1.0, 2: 1.0}, [0, 1, 2])  # every update weighs 1
    assert row["round"] == 1 and row["participants"] == 3 and row["recorded"] == "when unmasked"
    assert spent == pytest.approx(rounds_epsilon(noise_multiplier=z, rounds=1, delta=delta), rel=1e-6)


def test_fedadam_over_secure_sum_keeps_its_moments_across_a_sigkill_and_erases_round_state(
    start_service, database_url: str, task_identity: None  # noqa: ANN001
) -> None:
    """FedAdam's server update over secure-sum rounds, SIGKILL between rounds: the model equals
    the core's FedAdam on the exact weighted mean within the quantization error (amplified by
    at most ``eta / tau`` per unit of error), and no masked total or envelope outlives its round."""
    import json

    from flwr.serverapp.strategy import FedAdam

    from oneliac_flwr.api.store import Database, SecureSnapshot
    from oneliac_flwr.coordinator import RoundCore, plain_aggregate
    from oneliac_flwr.flower.inner import InnerStrategyUpdate

    extra = [*settings(min_participants=3), "strategy=fedadam"]
    services = [start_service(extra=extra)]
    hospitals = register(services[0], 3)
    for h in hospitals:
        h.join(services[0])
    weights = {0: 100.0, 1: 300.0, 2: 600.0}
    reference = RoundCore(min_participants=3, server_update=InnerStrategyUpdate(FedAdam(eta=0.1, tau=1e-3)),
                          rng=np.random.default_rng(0))  # fmt: skip
    database = Database(database_url)
    try:
        for round_ in (1, 2, 3):
            if round_ == 2:
                services[0].stop(signal.SIGKILL)
                services = [start_service(extra=extra)]
            report, base, updates = run_round(services, hospitals, round_, weights, stats=True)
            assert report["status"] == "ok", report
            mean = expected_model(base, updates, weights)
            aggregate = plain_aggregate(participants=[0, 1, 2], arrays=[mean] * 3, weights=[1.0] * 3, metrics=[{}] * 3,
                                        global_arrays=base)  # fmt: skip
            expected = reference.complete(round_, aggregate, base).arrays
            with hospitals[0].http(services[0]) as http:
                served, meta = model(http)
            assert meta["training_round"] == round_
            quantization = error_bound(SPEC, 3) / sum(weights.values())  # of the mean, per coordinate
            eta_over_tau = 0.1 / 1e-3  # bound on FedAdam's sensitivity to an error in the mean
            for a, b, m in zip(served, expected, mean, strict=True):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 + quantization * eta_over_tau)
                assert np.abs(a - m).max() > 1e-2  # FedAdam's step, not the plain mean
            with database.transaction() as session:  # the next round may be open, with nothing masked yet
                run = session.get(SecureSnapshot, 1)
                assert run is not None and (run.total is None or not any(run.total))  # the masked total is gone
        with database.transaction() as session:  # max_rounds reached: no round state is left at all
            run = session.get(SecureSnapshot, 1)
            assert run is not None and run.total is None
            assert json.loads(run.state)["round"] is None  # nor the round's envelopes and unmask responses
    finally:
        database.dispose()
