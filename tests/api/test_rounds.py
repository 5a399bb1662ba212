"""Plain (sealed fedavg) training rounds over REST, against a real uvicorn process."""

from __future__ import annotations

from datetime import UTC, datetime

import concurrent.futures
import signal
import time

import httpx
import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load

from oneliac_flwr.api.rounds import encode_arrays
from oneliac_flwr.coordinator import RoundCore, plain_aggregate
from oneliac_flwr.secure.sealed import seal, sealing_context

from conftest import PREFIX, hospital, wait_until

ROUNDS = ["aggregation_config.aggregation_method=fedavg", "strategy=fedavg", "privacy_budget=none"]


def settings(*, min_participants: int = 2, timeout_minutes: float = 5.0, max_rounds: int = 3) -> list[str]:
    return ROUNDS + [
        f"aggregation_config.min_participants={min_participants}",
        f"aggregation_config.timeout_minutes={timeout_minutes}",
        f"aggregation_config.max_rounds={max_rounds}",
    ]


pytestmark = pytest.mark.usefixtures("task_identity")  # the reference strategies build Flower messages


def register(service, n: int) -> list[dict]:
    with service.client() as admin:
        return [admin.post(f"{PREFIX}/organizations", json=hospital(f"Hospital {i}", i)).json() for i in range(n)]


def model(client: httpx.Client, version: str | None = None) -> tuple[list[str], list[np.ndarray], dict]:
    meta = client.get(f"{PREFIX}/model", params={"version": version} if version else None).json()
    tensors = safetensors_load(bytes.fromhex(meta["weights"][2:]))
    names = sorted(tensors)
    return names, [tensors[n] for n in names], meta


def local_model(arrays: list[np.ndarray], org_index: int, round_: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 * round_ + org_index)
    return [(a + 0.01 * rng.standard_normal(a.shape)).astype(a.dtype) for a in arrays]


def body(client: httpx.Client, org: dict, round_: int, version: str, arrays_fn, sample_count: int) -> dict:  # noqa: ANN001
    names, arrays, _ = model(client, version)
    key = bytes.fromhex(client.get(f"{PREFIX}/coordinator-key").json()["public_key"][2:])
    context = sealing_context(organization_id=org["organization_id"], round=round_, model_version=version)
    sealed = seal(encode_arrays(names, arrays_fn(arrays)), key, context=context)
    return {"organization_id": org["organization_id"], "round": round_, "gradients_encrypted": "0x" + sealed.hex(),
            "model_version": version, "sample_count": sample_count}  # fmt: skip


def status(client: httpx.Client, **params) -> dict:
    response = client.get(f"{PREFIX}/rounds/current", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_three_organizations_three_rounds_match_flower_fedavg(start_service) -> None:
    from flwr.serverapp.strategy import FedAvg

    from oneliac_flwr.flower.inner import InnerStrategyUpdate

    service = start_service(extra=settings(min_participants=3))
    orgs = register(service, 3)
    weights = [100, 300, 600]
    reference = RoundCore(min_participants=3, server_update=InnerStrategyUpdate(FedAvg()), rng=np.random.default_rng(0))
    clients = [service.client(token=o["api_key"]) for o in orgs]
    try:
        names, expected, meta = model(clients[0])
        assert meta["model_version"] == "1.0.0"
        for round_ in (1, 2, 3):
            state = wait_until(lambda: (s := status(clients[0]))["status"] == "open" and s["round"] == round_ and s)
            assert state["next_action"] == "submit" and state["roster_size"] == 3
            version = state["model_version"]
            for i, (client, org) in enumerate(zip(clients, orgs, strict=True)):
                payload = body(client, org, round_, version, lambda a, i=i, r=round_: local_model(a, i, r), weights[i])
                first = client.post(f"{PREFIX}/gradients", json=payload)
                assert first.status_code == 200, first.text
                if i == 0:  # the same body again: the same receipt; another body: 409
                    again = client.post(f"{PREFIX}/gradients", json=payload)
                    assert again.json()["receipt"] == first.json()["receipt"] and again.json()["replayed"] is True
                    other = body(client, org, round_, version, lambda a: a, weights[i])
                    assert client.post(f"{PREFIX}/gradients", json=other).status_code == 409
                    assert status(client)["next_action"] == "wait"
            _, _, meta = wait_until(lambda: (m := model(clients[0]))[2]["training_round"] == round_ and m)
            assert meta["model_version"] == f"1.0.{round_}" and meta["organizations_contributed"] == 3
            aggregate = plain_aggregate(
                participants=[0, 1, 2],
                arrays=[local_model(expected, i, round_) for i in range(3)],
                weights=[float(w) for w in weights],
                metrics=[{}, {}, {}],
                global_arrays=expected,
            )
            outcome = reference.complete(round_, aggregate, expected)
            expected = outcome.arrays
            _, served, _ = model(clients[0])
            for a, b in zip(served, expected, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        final = status(clients[0])
        assert final["round"] == 3 and final["status"] == "ok" and final["next_action"] == "finished"
        time.sleep(2.5)  # max_rounds reached: no round 4 opens
        assert status(clients[0])["round"] == 3
        assert model(clients[0], "1.0.1")[2]["training_round"] == 1  # kept versions
    finally:
        for client in clients:
            client.close()


def _flower_strategy(name: str):  # noqa: ANN202
    from flwr.serverapp.strategy import FedAdam, FedAvgM

    from oneliac_flwr.config import StrategyConfig

    settings_ = StrategyConfig(name="fedavgm", server_momentum=0.9) if name == "fedavgm" else StrategyConfig(name=name)
    if name == "fedavgm":
        return FedAvgM(server_learning_rate=settings_.server_learning_rate, server_momentum=settings_.server_momentum)
    return FedAdam(eta=settings_.eta, eta_l=settings_.eta_l, tau=settings_.tau)


@pytest.mark.parametrize("strategy", ["fedadam", "fedavgm"])
def test_server_optimizer_state_survives_sigkill_and_two_processes(start_service, database_url: str, strategy: str) -> None:
    """FedAdam / FedAvgM over REST equal Flower's own strategy bit for bit over 3 rounds,
    with the coordinator SIGKILLed after round 1 and two processes serving rounds 2 and 3."""
    from oneliac_flwr.api.store import Database, ModelVersion, Submission
    from oneliac_flwr.flower.inner import InnerStrategyUpdate

    extra = [*settings(min_participants=3), f"strategy={strategy}"]
    first = start_service(extra=extra)
    orgs = register(first, 3)
    weights = [100, 300, 600]
    reference = RoundCore(min_participants=3, server_update=InnerStrategyUpdate(_flower_strategy(strategy)),
                          rng=np.random.default_rng(0))  # fmt: skip
    with first.client() as admin:
        names, expected, _ = model(admin)
    services = {1: [first], 2: [], 3: []}
    for round_ in (1, 2, 3):
        if round_ == 2:  # SIGKILL after round 1 closed; two fresh processes on the same database
            first.stop(signal.SIGKILL)
            services[2] = services[3] = [start_service(extra=extra), start_service(extra=extra)]
        serving = services[round_]
        with serving[0].client(token=orgs[0]["api_key"]) as c:
            version = wait_until(lambda r=round_, c=c: (s := status(c))["status"] == "open" and s["round"] == r and s)["model_version"]
        for i, org in enumerate(orgs):
            with serving[i % len(serving)].client(token=org["api_key"]) as c:
                payload = body(c, org, round_, version, lambda a, i=i, r=round_: local_model(a, i, r), weights[i])
                assert c.post(f"{PREFIX}/gradients", json=payload).status_code == 200
        with serving[-1].client() as admin:
            wait_until(lambda r=round_, a=admin: model(a)[2]["training_round"] == r)
            _, served, _ = model(admin)
        aggregate = plain_aggregate(participants=[0, 1, 2], arrays=[local_model(expected, i, round_) for i in range(3)],
                                    weights=[float(w) for w in weights], metrics=[{}, {}, {}], global_arrays=expected)  # fmt: skip
        fedavg_model = [g + u.astype(g.dtype) for g, u in zip(expected, aggregate.mean_update, strict=True)]
        outcome = reference.complete(round_, aggregate, expected)
        assert outcome.status == "ok" and outcome.arrays is not None
        expected = outcome.arrays
        for a, b in zip(served, expected, strict=True):
            np.testing.assert_array_equal(a, b)  # bit for bit
    assert not np.allclose(expected[0], fedavg_model[0])  # the server rule really acted: not FedAvg's model
    database = Database(database_url)
    try:
        with database.transaction() as session:
            states = {v.training_round: v.server_state for v in session.query(ModelVersion)}
            assert states[0] is None and all(states[r] for r in (1, 2, 3))  # stored with each version it produced
            assert sorted(safetensors_load(states[3])) == sorted(
                [f"m_t.{i}" for i in range(len(names))] + [f"v_t.{i}" for i in range(len(names))]
                if strategy == "fedadam" else [f"momentum.{i}" for i in range(len(names))])  # fmt: skip
            # retention: every closed round's sealed updates are erased, their receipts kept
            kept = [(s.round, s.receipt, s.payload) for s in session.query(Submission)]
            assert len(kept) == 9 and all(receipt and payload is None for _, receipt, payload in kept)
    finally:
        database.dispose()
    # restarted with another rule on this database: refused at start, naming the field, instead
    # of every later round failing to close (a revealed sum's ledger entry rolled back with it)
    for service in services[3]:
        service.stop()
    other = start_service(extra=[*settings(min_participants=3), "strategy=fedavg"], ready=False)
    assert other.process.wait(timeout=120) != 0
    assert "strategy" in other.log.read_text() and "server-optimizer state" in other.log.read_text()


def test_keep_sealed_updates_keeps_them_after_the_round_closes(start_service, database_url: str) -> None:
    from oneliac_flwr.api.store import Database, Submission

    service = start_service(extra=[*settings(min_participants=2, max_rounds=1), "coordinator.keep_sealed_updates=true"])
    orgs = register(service, 2)
    sent = {}
    with service.client(token=orgs[0]["api_key"]) as client:
        version = wait_until(lambda: (s := status(client))["status"] == "open" and s)["model_version"]
    for i, org in enumerate(orgs):
        with service.client(token=org["api_key"]) as client:
            payload = body(client, org, 1, version, lambda a, i=i: local_model(a, i, 1), 10)
            assert client.post(f"{PREFIX}/gradients", json=payload).status_code == 200
            sent[org["organization_id"]] = bytes.fromhex(payload["gradients_encrypted"][2:])
    with service.client() as admin:
        wait_until(lambda: model(admin)[2]["training_round"] == 1)
    database = Database(database_url)
    try:
        with database.transaction() as session:
            assert {s.organization_id: s.payload for s in session.query(Submission)} == sent
        # restarted without keep_sealed_updates: the closed round's updates are erased at start
        service.stop()
        start_service(extra=settings(min_participants=2, max_rounds=1))
        with database.transaction() as session:
            kept = [(s.receipt, s.payload) for s in session.query(Submission)]
            assert len(kept) == 2 and all(receipt and payload is None for receipt, payload in kept)
    finally:
        database.dispose()


def test_submissions_are_checked_before_anything_is_stored(start_service) -> None:
    service = start_service(extra=settings(min_participants=2))
    a, b = register(service, 2)
    with service.client(token=a["api_key"]) as client, service.client() as admin:
        state = wait_until(lambda: (s := status(client))["status"] == "open" and s)
        version = state["model_version"]
        good = body(client, a, 1, version, lambda x: local_model(x, 0, 1), 10)
        cases = [
            ({**good, "organization_id": b["organization_id"]}, 403, "organization_id"),
            ({**good, "model_version": "0.9.9"}, 409, "model_version"),
            ({**good, "round": 7}, 409, "round"),
            ({**good, "gradients_encrypted": "0xzz"}, 422, "gradients_encrypted"),
            ({**good, "gradients_encrypted": good["gradients_encrypted"][:-2] + ("00" if good["gradients_encrypted"][-2:] != "00" else "01")}, 422, "gradients_encrypted"),
            ({**good, "sample_count": "many"}, 422, "sample_count"),
            (body(client, b, 1, version, lambda x: x, 10) | {"organization_id": a["organization_id"]}, 422, "gradients_encrypted"),
        ]
        for payload, code, field in cases:
            response = client.post(f"{PREFIX}/gradients", json=payload)
            assert response.status_code == code, (field, response.text)
            assert response.json()["field"] == field
        nan = body(client, a, 1, version, lambda x: [np.full_like(v, np.nan) for v in x], 10)
        refused = client.post(f"{PREFIX}/gradients", json=nan)
        assert refused.status_code == 422 and refused.json()["type"].endswith("validation_nan_check")
        assert admin.post(f"{PREFIX}/gradients", json=good).status_code == 403
        assert status(client)["next_action"] == "submit"  # nothing was stored
        assert client.post(f"{PREFIX}/gradients", json=good).status_code == 200


def test_a_missing_hospital_becomes_a_dropout_at_the_deadline_and_too_few_skip(start_service) -> None:
    service = start_service(extra=settings(min_participants=2, timeout_minutes=0.05, max_rounds=2))
    orgs = register(service, 3)
    clients = [service.client(token=o["api_key"]) for o in orgs]
    try:
        state = wait_until(lambda: (s := status(clients[0]))["status"] == "open" and s)
        accepted = []
        for i in (0, 1):
            payload = body(clients[i], orgs[i], 1, state["model_version"], lambda a, i=i: local_model(a, i, 1), 50)
            answer = clients[i].post(f"{PREFIX}/gradients", json=payload)
            assert answer.status_code == 200
            accepted.append((payload, answer.json()["receipt"]))
        # no request is needed for the deadline to pass: wait, then look
        time.sleep(4.5)
        # the round closed and its sealed updates were erased: a re-submission still gets its receipt
        again = clients[0].post(f"{PREFIX}/gradients", json=accepted[0][0])
        assert again.status_code == 200 and again.json()["receipt"] == accepted[0][1] and again.json()["replayed"] is True
        other = body(clients[0], orgs[0], 1, "1.0.0", lambda a: a, 50)
        assert clients[0].post(f"{PREFIX}/gradients", json=other).status_code == 409
        with service.client() as admin:
            rounds = admin.get(f"{PREFIX}/rounds").json()
            one, unknown = admin.get(f"{PREFIX}/rounds/1"), admin.get(f"{PREFIX}/rounds/99")
        assert one.status_code == 200 and one.json() == rounds[0]  # GET /rounds/{round}: one entry of the list
        assert unknown.status_code == 404 and unknown.json()["type"].endswith("unknown_round")
        assert rounds[0]["status"] == "ok" and rounds[0]["contributors"] == 2
        assert rounds[0]["dropouts"] == [orgs[2]["organization_id"]]
        assert model(clients[0])[2]["model_version"] == "1.0.1"
        late = body(clients[2], orgs[2], 1, "1.0.0", lambda a: local_model(a, 2, 1), 50)
        answer = clients[2].post(f"{PREFIX}/gradients", json=late)
        assert answer.status_code == 409 and answer.json()["type"].endswith("round_not_open")
        # round 2: one submission < min_participants -> skipped, model unchanged
        state = wait_until(lambda: (s := status(clients[0]))["round"] == 2 and s)
        payload = body(clients[0], orgs[0], 2, state["model_version"], lambda a: local_model(a, 0, 2), 50)
        assert clients[0].post(f"{PREFIX}/gradients", json=payload).status_code == 200
        changed = status(clients[0], wait_seconds=10, after_round=2, after_status="open")  # long poll
        assert changed["status"] == "skipped" and "min_participants=2" in changed["reason"]
        assert model(clients[0])[2]["model_version"] == "1.0.1"
    finally:
        for client in clients:
            client.close()


def test_sigkill_mid_round_loses_nothing_accepted(start_service) -> None:
    first = start_service(extra=settings(min_participants=3))
    orgs = register(first, 3)
    with first.client(token=orgs[0]["api_key"]) as client:
        version = wait_until(lambda: (s := status(client))["status"] == "open" and s)["model_version"]
        payloads = [body(client, o, 1, version, lambda a, i=i: local_model(a, i, 1), 10 + i) for i, o in enumerate(orgs)]
    receipts = []
    for org, payload in zip(orgs[:2], payloads[:2], strict=True):
        with first.client(token=org["api_key"]) as client:
            receipts.append(client.post(f"{PREFIX}/gradients", json=payload).json()["receipt"])
    first.stop(signal.SIGKILL)
    second = start_service(extra=settings(min_participants=3))
    with second.client(token=orgs[0]["api_key"]) as client:
        assert client.post(f"{PREFIX}/gradients", json=payloads[0]).json()["receipt"] == receipts[0]
        assert status(client)["round"] == 1 and status(client)["status"] == "open"
    with second.client(token=orgs[2]["api_key"]) as client:
        assert client.post(f"{PREFIX}/gradients", json=payloads[2]).status_code == 200
        meta = wait_until(lambda: (m := model(client)[2])["training_round"] == 1 and m)
    assert meta["organizations_contributed"] == 3


def test_twenty_concurrent_submissions_through_two_processes(start_service) -> None:
    extra = [*settings(min_participants=20, max_rounds=1), "federation.num_organizations=20"]  # opens once all 20 exist
    services = [start_service(extra=extra), start_service(extra=extra)]
    orgs = register(services[0], 20)
    with services[1].client(token=orgs[0]["api_key"]) as client:
        version = wait_until(lambda: (s := status(client))["status"] == "open" and s["roster_size"] == 20 and s)["model_version"]
        payloads = [body(client, o, 1, version, lambda a, i=i: local_model(a, i, 1), 10 + i) for i, o in enumerate(orgs)]

    def submit(i: int) -> int:
        with services[i % 2].client(token=orgs[i]["api_key"]) as c:
            return c.post(f"{PREFIX}/gradients", json=payloads[i]).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(submit, range(20)))
    assert codes == [200] * 20
    with services[0].client() as admin:
        meta = wait_until(lambda: (m := model(admin)[2])["training_round"] == 1 and m)
        assert meta["organizations_contributed"] == 20
        rounds = admin.get(f"{PREFIX}/rounds").json()
        assert [r["round"] for r in rounds] == [1] and rounds[0]["contributors"] == 20
        opened = [e for e in admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json() if e["action"].startswith("round.")]
        assert sorted(e["action"] for e in opened) == ["round.ok", "round.opened"]  # each transition exactly once


def test_rounds_unavailable_names_each_missing_piece() -> None:
    from oneliac_flwr.api.rounds import rounds_unavailable
    from oneliac_flwr.config import ExperimentConfig

    assert rounds_unavailable(ExperimentConfig()) is None
    for name in ("fedadam", "fedavgm", "fedyogi", "fedadagrad"):  # server-optimizer state is kept in the database
        assert rounds_unavailable(ExperimentConfig.from_dict({"strategy": {"name": name}})) is None
    secure = ExperimentConfig.from_dict({"aggregation_config": {"aggregation_method": "secure_sum"}})
    assert rounds_unavailable(secure) is None  # secure-sum rounds run over REST
    malicious = ExperimentConfig.from_dict({"aggregation_config": {"aggregation_method": "secure_sum"},
                                            "secure_sum": {"mode": "malicious"}})  # fmt: skip
    assert rounds_unavailable(malicious) is None  # the consistency stage runs over REST (test_rest_secure_malicious.py)


def test_a_long_poll_wakes_when_another_process_changes_the_round(database_url: str) -> None:
    """Two engines on one database (two processes): a long poll waiting in the first wakes
    when the second opens a round, through the first's watcher (one read for all its long polls)."""
    import threading

    from oneliac_flwr.api.app import _ensure_initial_model
    from oneliac_flwr.api.rounds import RoundEngine
    from oneliac_flwr.api.serve import load_settings
    from oneliac_flwr.api.store import Database, Organization

    _, experiment = load_settings(settings(min_participants=2))
    databases = [Database(database_url), Database(database_url)]
    try:
        databases[0].migrate()
        _ensure_initial_model(databases[0], experiment)
        waiting, other = (RoundEngine(d, experiment) for d in databases)
        with databases[1].transaction() as session:
            for i in range(2):
                session.add(Organization(id=f"org_{i}", name=f"Hospital {i}", endpoint="https://h.example.org/f",
                                         encryption_key=bytes(32), identity_key=None, api_key_hash=f"{i:064x}",
                                         active=True, created_at=datetime.now(UTC)))  # fmt: skip
        with databases[0].read() as session:
            assert waiting.position(session, with_stage=False) == (None, "waiting", None)
        def long_poll() -> tuple[threading.Thread, int, list[int]]:
            seen, woken = waiting.generation(), []
            thread = threading.Thread(target=lambda: woken.append(waiting.wait_for_change(seen, 60.0)), daemon=True)
            thread.start()
            wait_until(lambda: waiting._waiting == 1)  # noqa: SLF001 - it waits now
            return thread, seen, woken

        first, _, _ = long_poll()
        waiting.watch()  # the watcher's first read after an idle spell wakes its waiters once
        first.join(timeout=20)
        assert not first.is_alive()
        second, seen, woken = long_poll()
        for _ in range(3):  # nothing moved: the watcher reads, and lets the long poll sleep
            waiting.watch()
        assert second.is_alive() and not woken
        other.advance()  # the other process opens round 1 (its own long polls are woken directly)
        waiting.watch()
        second.join(timeout=20)
        assert not second.is_alive(), "the watcher did not wake the long poll"
        assert woken and woken[0] != seen
        with databases[0].read() as session:
            assert waiting.position(session, with_stage=False) == (1, "open", None)
    finally:
        for database in databases:
            database.dispose()


def test_status_skips_advance_only_while_the_open_round_is_before_its_deadline(database_url: str) -> None:
    """``maybe_due`` (the read paths' pre-check): due with no round, not due while the open
    round is before its deadline, due again once the deadline has passed (the ticker's case)."""
    from datetime import timedelta

    from oneliac_flwr.api.app import _ensure_initial_model
    from oneliac_flwr.api.rounds import RoundEngine
    from oneliac_flwr.api.serve import load_settings
    from oneliac_flwr.api.store import Database, Organization

    _, experiment = load_settings(settings(min_participants=2))
    database = Database(database_url)
    try:
        database.migrate()
        _ensure_initial_model(database, experiment)
        engine = RoundEngine(database, experiment)
        now = datetime.now(UTC)
        with database.read() as session:
            assert engine.maybe_due(session, now)  # no round yet: the full check decides
        with database.transaction() as session:
            for i in range(2):
                session.add(Organization(id=f"org_{i}", name=f"Hospital {i}", endpoint="https://h.example.org/f",
                                         encryption_key=bytes(32), identity_key=None, api_key_hash=f"{i:064x}",
                                         active=True, created_at=now))  # fmt: skip
        engine.advance_if_due()  # opens round 1
        with database.read() as session:
            assert engine.position(session, with_stage=False) == (1, "open", None)
            assert not engine.maybe_due(session, datetime.now(UTC))
            assert engine.maybe_due(session, datetime.now(UTC) + engine.timeout + timedelta(seconds=1))
    finally:
        database.dispose()


def test_a_woken_wait_trusts_only_this_processs_own_moves_and_never_a_stale_one(database_url: str) -> None:
    """``RoundEngine.known_move``: where this process's own commits left a round, when they
    explain every change since the waiter's counter; a move published late (after a later
    one of the same round) is not taken; any other change means a database read."""
    from oneliac_flwr.api.rounds import RoundEngine
    from oneliac_flwr.api.serve import load_settings
    from oneliac_flwr.api.store import Database

    _, experiment = load_settings(settings(min_participants=2))
    database = Database(database_url)
    try:
        engine = RoundEngine(database, experiment)
        seen = engine.generation()
        engine.changed(moved=(1, ("open", "masking", 1)))
        assert engine.known_move(1, seen) == ("open", "masking", 1)
        assert engine.known_move(2, seen) is None  # no move of round 2 known: read
        later = engine.generation()
        engine.changed(moved=(1, ("open", "unmasking", 1)))
        engine.changed(moved=(1, ("open", "masking", 1)))  # published after a later state of round 1
        assert engine.known_move(1, later) == ("open", "unmasking", 1)
        engine.changed(moved=(1, ("ok", "done", 1)))
        assert engine.known_move(1, later) == ("ok", "done", 1)
        assert engine.known_move(1, engine.generation()) is None  # nothing since
        engine.changed()  # the ticker's, or another process's change noticed by the watcher
        assert engine.known_move(1, later) is None
    finally:
        database.dispose()
