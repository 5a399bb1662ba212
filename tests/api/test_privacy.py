"""Differential privacy of REST rounds against a real uvicorn process: the ledger in the
database, budget exhaustion, restarts and a tampered ledger."""

from __future__ import annotations

import json
import signal
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from oneliac_flwr.api.rounds import encode_arrays
from oneliac_flwr.coordinator import plain_aggregate
from oneliac_flwr.privacy import DifferentialPrivacy, GaussianRelease, PrivacyLedger, clip_l2, rounds_epsilon
from oneliac_flwr.secure.sealed import seal, sealing_context

from conftest import PREFIX
from test_rounds import local_model, model, register, settings, status, wait_until

Z = 2.0
DELTA = 1e-5


def budget_for(rounds: int) -> float:
    """An epsilon that affords ``rounds`` Gaussian releases of noise multiplier Z, not one more."""
    return rounds_epsilon(noise_multiplier=Z, rounds=rounds, delta=DELTA) * 1.01


def dp_settings(mode: str, *, epsilon: float, min_participants: int, max_rounds: int) -> list[str]:
    return [*settings(min_participants=min_participants, max_rounds=max_rounds), f"privacy_budget.mode={mode}",
            f"privacy_budget.epsilon={epsilon}", f"privacy_budget.delta={DELTA}", f"privacy_budget.noise_multiplier={Z}",
            "privacy_budget.clip_norm=1.0", "privacy_budget.mechanism=gaussian"]  # fmt: skip


def sealed_body(client: httpx.Client, org: dict, round_: int, version: str, local: list[np.ndarray],
                privacy: dict | None) -> dict:  # fmt: skip
    names, _, _ = model(client, version)
    key = bytes.fromhex(client.get(f"{PREFIX}/coordinator-key").json()["public_key"][2:])
    context = sealing_context(organization_id=org["organization_id"], round=round_, model_version=version)
    sealed = seal(encode_arrays(names, local), key, context=context)
    out = {"organization_id": org["organization_id"], "round": round_, "gradients_encrypted": "0x" + sealed.hex(),
           "model_version": version, "sample_count": 50}  # fmt: skip
    if privacy is not None:
        out["privacy"] = privacy
    return out


def released(client: httpx.Client, org: dict, index: int, round_: int, version: str) -> tuple[dict, float]:
    """A hospital's release-mode submission, made as the SDK does: clip, then
    ``DifferentialPrivacy(...).add_noise_to_gradients``, then declare."""
    policy = client.get(f"{PREFIX}/privacy/policy").json()
    assert policy["mode"] == "release"
    _, global_arrays, _ = model(client, version)
    trained = local_model(global_arrays, index, round_)
    clip = float(policy["clip-norm"])
    update, _ = clip_l2([t.astype(np.float64) - g for t, g in zip(trained, global_arrays, strict=True)], clip)
    dp = DifferentialPrivacy(float(policy["release-epsilon"]), float(policy["delta"]), policy["mechanism"])
    noised = dp.add_noise_to_gradients(list(update), sensitivity=clip)
    local = [(g + n).astype(g.dtype) for g, n in zip(global_arrays, noised, strict=True)]
    declaration = {"mechanism": dp.mechanism, "clip_norm": clip, "noise_multiplier": dp.noise_multiplier}
    return sealed_body(client, org, round_, version, local, declaration), dp.noise_multiplier


def open_round(client: httpx.Client, round_: int) -> str:
    return wait_until(lambda: (s := status(client))["status"] == "open" and s["round"] == round_ and s)["model_version"]


def test_release_mode_three_organizations_until_the_budget_is_exhausted(start_service) -> None:
    epsilon = budget_for(2)
    extra = dp_settings("release", epsilon=epsilon, min_participants=3, max_rounds=5)
    service = start_service(extra=extra)
    orgs = register(service, 3)
    declared: dict[int, float] = {}
    clients = [service.client(token=o["api_key"]) for o in orgs]
    try:
        # round 1, with the refusals first: no declaration, and a declaration that is not the policy's
        version = open_round(clients[0], 1)
        payload, noise = released(clients[0], orgs[0], 0, 1, version)
        missing = clients[0].post(f"{PREFIX}/gradients", json={k: v for k, v in payload.items() if k != "privacy"})
        assert missing.status_code == 422 and missing.json()["type"].endswith("validation_privacy_check")
        assert "no privacy declaration" in missing.json()["detail"] and missing.json()["field"] == "privacy"
        weak = clients[0].post(f"{PREFIX}/gradients", json={**payload, "privacy": {**payload["privacy"], "noise_multiplier": noise / 2}})
        assert weak.status_code == 422 and "noise_multiplier" in weak.json()["detail"]
        for i, (client, org) in enumerate(zip(clients, orgs, strict=True)):
            payload, declared[1] = released(client, org, i, 1, version)
            assert client.post(f"{PREFIX}/gradients", json=payload).status_code == 200
        meta = wait_until(lambda: (m := model(clients[0])[2])["training_round"] == 1 and m)
        first = clients[0].get(f"{PREFIX}/privacy/epsilon").json()
        assert first["mode"] == "release" and first["epsilon_spent"] > 0 and not first["budget_exhausted"]
        assert meta["epsilon_spent"] == pytest.approx(first["epsilon_spent"], rel=1e-12)
    finally:
        for client in clients:
            client.close()

    # round 2: two submit, the coordinator is killed, a new process takes over with the same ledger
    with service.client(token=orgs[0]["api_key"]) as client:
        version = open_round(client, 2)
        payloads = [released(client, org, i, 2, version) for i, org in enumerate(orgs)]
    declared[2] = payloads[0][1]
    for org, (payload, _) in zip(orgs[:2], payloads[:2], strict=True):
        with service.client(token=org["api_key"]) as client:
            assert client.post(f"{PREFIX}/gradients", json=payload).status_code == 200
    with service.client() as admin:
        before = admin.get(f"{PREFIX}/privacy/epsilon").json()
    assert before["epsilon_spent"] > first["epsilon_spent"]  # recorded on receipt, before the round closes
    service.stop(signal.SIGKILL)
    service = start_service(extra=extra)
    with service.client(token=orgs[2]["api_key"]) as client:
        assert client.get(f"{PREFIX}/privacy/epsilon").json()["epsilon_spent"] == before["epsilon_spent"]
        assert client.post(f"{PREFIX}/gradients", json=payloads[2][0]).status_code == 200
        meta = wait_until(lambda: (m := model(client)[2])["training_round"] == 2 and m)
        assert meta["organizations_contributed"] == 3
        # round 3 would exceed the budget: the federation stops gracefully
        state = wait_until(lambda: (s := status(client))["status"] == "budget_exhausted" and s)
        assert state["round"] == 3 and state["next_action"] == "finished" and "would raise epsilon" in state["reason"]
        late = {**payloads[2][0], "round": 3, "model_version": meta["model_version"]}
        refused = client.post(f"{PREFIX}/gradients", json=late)
        assert refused.status_code == 409 and refused.json()["type"].endswith("privacy_budget_exhausted")
        assert "privacy budget is exhausted" in refused.json()["detail"] and "1.0.2" in refused.json()["detail"]
        assert model(client)[2]["model_version"] == "1.0.2"  # the last model stays downloadable
        raw = client.get(f"{PREFIX}/model", headers={"Accept": "application/octet-stream"})
        assert raw.status_code == 200 and raw.headers["X-Model-Version"] == "1.0.2"
        now = client.get(f"{PREFIX}/privacy/epsilon").json()
        assert now["budget_exhausted"] is True and "would raise epsilon" in now["reason"]
        report = client.get(f"{PREFIX}/privacy/report").json()
        one = client.get(f"{PREFIX}/privacy/report", params={"round": 2}).json()
        assert client.get(f"{PREFIX}/privacy/report", params={"round": 3}).status_code == 404
        time.sleep(2.5)
        assert status(client)["round"] == 3  # no round opens after the budget stopped the federation

    # the report is what the declarations imply, computed independently with the core ledger
    expected = PrivacyLedger(epsilon_budget=epsilon, delta=DELTA)
    for round_ in (1, 2):
        expected.record([GaussianRelease(declared[round_])], round_number=round_, participants=3)
    rows = expected.report()["rounds"]
    assert [r["round"] for r in report] == [1, 2] and one == [report[1]]
    for got, want in zip(report, rows, strict=True):
        assert got["epsilon_round"] == pytest.approx(want["epsilon_round"], rel=1e-9)
        assert got["epsilon_cumulative"] == pytest.approx(want["epsilon_cumulative"], rel=1e-9)
        assert got["delta"] == DELTA and got["mechanism"] == "gaussian" and got["participants"] == 3
        assert got["noise_multiplier"] == pytest.approx(declared[got["round"]], rel=1e-12)
    assert now["epsilon_spent"] == pytest.approx(rows[-1]["epsilon_cumulative"], rel=1e-9) and now["epsilon_spent"] <= epsilon
    assert meta["epsilon_spent"] == pytest.approx(now["epsilon_spent"], rel=1e-12)


def one_release_round(service) -> dict:  # noqa: ANN001 - Service
    (org,) = register(service, 1)
    with service.client(token=org["api_key"]) as client:
        version = open_round(client, 1)
        payload, _ = released(client, org, 0, 1, version)
        assert client.post(f"{PREFIX}/gradients", json=payload).status_code == 200
        wait_until(lambda: model(client)[2]["training_round"] == 1)
    return org


#: Edits of the stored ledger row, each refused at start; ``None`` deletes the row (last).
TAMPERS = {
    "entry-deleted": lambda d: {**d, "entries": d["entries"][:-1]},
    "z-set-to-1000": lambda d: {**d, "entries": [{**e, "events": [{**ev, "noise_multiplier": 1000.0} for ev in e["events"]]}
                                                 for e in d["entries"]]},  # fmt: skip
    "tag-stripped": lambda d: {k: v for k, v in d.items() if k != "mac"},
    "row-deleted": None,
}


def test_a_tampered_ledger_row_is_refused_at_start(start_service, database_url: str) -> None:  # noqa: ANN001
    """One accounted round, then each edit of the stored row in turn (the original put back
    between them): the restarted coordinator refuses to resume from every one."""
    extra = dp_settings("release", epsilon=budget_for(3), min_participants=1, max_rounds=3)
    service = start_service(extra=extra)
    one_release_round(service)
    service.stop()
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            original = connection.execute(text("SELECT document FROM privacy_ledger")).scalar_one()
        for name, tamper in TAMPERS.items():
            with engine.begin() as connection:
                if tamper is None:
                    connection.execute(text("DELETE FROM privacy_ledger"))
                else:
                    edited = json.dumps(tamper(json.loads(original)))
                    connection.execute(text("UPDATE privacy_ledger SET document = :d"), {"d": edited})
            restarted = start_service(extra=extra, ready=False)
            assert restarted.process.wait(timeout=120) != 0, name
            log = restarted.log.read_text()
            assert "privacy_ledger" in log and ("refusing to resume" in log or "cannot be reset silently" in log), name
            if tamper is not None:
                with engine.begin() as connection:
                    connection.execute(text("UPDATE privacy_ledger SET document = :d"), {"d": original})
    finally:
        engine.dispose()


def test_organization_mode_adds_central_noise_and_reports_epsilon(start_service) -> None:
    extra = dp_settings("organization", epsilon=budget_for(3), min_participants=2, max_rounds=1)
    service = start_service(extra=extra)
    orgs = register(service, 2)
    locals_: list[list[np.ndarray]] = []
    with service.client(token=orgs[0]["api_key"]) as client:
        policy = client.get(f"{PREFIX}/privacy/policy").json()
        assert policy["mode"] == "organization" and policy["noise-multiplier"] == Z
        version = open_round(client, 1)
        _, global_arrays, _ = model(client, version)
    for i, org in enumerate(orgs):
        local = local_model(global_arrays, i, 1)
        locals_.append(local)
        with service.client(token=org["api_key"]) as client:
            payload = sealed_body(client, org, 1, version, local, {"mechanism": "gaussian", "clip_norm": 1.0})
            assert client.post(f"{PREFIX}/gradients", json=payload).status_code == 200, payload["organization_id"]
    with service.client(token=orgs[0]["api_key"]) as client:
        _, served, meta = wait_until(lambda: (m := model(client))[2]["training_round"] == 1 and m)
        epsilon = client.get(f"{PREFIX}/privacy/epsilon").json()
        (row,) = client.get(f"{PREFIX}/privacy/report", params={"round": 1}).json()
    plain = plain_aggregate(participants=[0, 1], arrays=locals_, weights=[1.0, 1.0], metrics=[{}, {}],
                            global_arrays=global_arrays)  # fmt: skip
    mean = [g + u.astype(g.dtype) for g, u in zip(global_arrays, plain.mean_update, strict=True)]
    difference = max(float(np.abs(s - m).max()) for s, m in zip(served, mean, strict=True))
    assert difference > 0.1  # noise of std z * C / 2 = 1 per coordinate on the mean
    assert epsilon["epsilon_spent"] == pytest.approx(rounds_epsilon(noise_multiplier=Z, rounds=1, delta=DELTA), rel=1e-6)
    assert meta["epsilon_spent"] == pytest.approx(epsilon["epsilon_spent"], rel=1e-12)
    assert row["participants"] == 2 and row["mechanism"] == "gaussian" and row["recorded"] == "when noised"


def test_privacy_modes_rest_cannot_run_are_refused_at_start(start_service) -> None:
    service = start_service(extra=[*settings(), "privacy_budget=sample"], ready=False)
    assert service.process.wait(timeout=120) == 2
    assert "privacy_budget.mode" in service.log.read_text()
    # distributed noise shares without secure sum would show the coordinator every noised share's update
    # (organization mode with secure sum runs over REST: tests/api/test_privacy_secure_sum.py)
    plain = [*settings(), "privacy_budget.mode=organization", "privacy_budget.noise_placement=distributed",
             "privacy_budget.epsilon=1.0"]  # fmt: skip
    service = start_service(extra=plain, ready=False)
    assert service.process.wait(timeout=120) == 2
    log = service.log.read_text()
    assert "privacy_budget.noise_placement" in log and "need aggregation_config.aggregation_method=secure_sum" in log


def test_the_cached_ledger_sees_a_row_written_by_another_process(database_url: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Two ``RestPrivacy`` (two coordinator processes) on one database: each caches the ledger
    it verified, and still sees what the other wrote, and an edit of the row."""
    from oneliac_flwr.api.privacy import RestPrivacy
    from oneliac_flwr.api.store import Database, PrivacyLedgerRow
    from oneliac_flwr.config import ExperimentConfig
    from oneliac_flwr.privacy.integrity import StateIntegrityError

    config = ExperimentConfig.from_dict({
        "state_dir": str(tmp_path / "state"),
        "aggregation_config": {"aggregation_method": "fedavg", "max_rounds": 10},
        "privacy_budget": {"mode": "release", "epsilon": budget_for(5), "delta": DELTA, "noise_multiplier": Z,
                           "clip_norm": 1.0, "mechanism": "gaussian"},
    })  # fmt: skip
    database = Database(database_url)
    database.migrate()
    replays: list[int] = []
    verify = PrivacyLedger.from_signed_dict.__func__  # type: ignore[attr-defined]

    def counted(cls, *args, **kwargs):  # noqa: ANN001, ANN202 - counts, then verifies for real
        replays.append(1)
        return verify(cls, *args, **kwargs)

    monkeypatch.setattr(PrivacyLedger, "from_signed_dict", classmethod(counted))
    first, second = RestPrivacy(config, dimension=10), RestPrivacy(config, dimension=10)
    try:
        with database.transaction() as session:
            first.guard(session).on_receipt(1, 1)  # round 1's release, written by the first process
        with database.transaction() as session:
            spent_1 = first.guard(session).ledger.get_current_epsilon()
        assert spent_1 > 0 and replays == []  # the writer's own row: served from its cache
        with database.transaction() as session:
            assert second.guard(session).ledger.get_current_epsilon() == spent_1  # verified once by the other
            second.guard(session).on_receipt(2, 1)  # round 2's release, written by the second process
        assert len(replays) == 1
        with database.transaction() as session:
            spent_2 = first.guard(session).ledger.get_current_epsilon()
        assert spent_2 > spent_1 and len(replays) == 2  # the changed row was seen, verified and replayed
        with database.transaction() as session:  # a rolled-back release leaves the cache consistent with the row
            first.guard(session).on_receipt(3, 1)
            session.rollback()
        with database.transaction() as session:
            assert first.guard(session).ledger.get_current_epsilon() == spent_2
        # an edit behind both processes' backs, tag kept: refused although the tag is the cached one
        with database.transaction() as session:
            row = session.get(PrivacyLedgerRow, 1)
            document = json.loads(row.document)
            document["entries"] = document["entries"][:-1]
            row.document = json.dumps(document, sort_keys=True)
        for process in (first, second):
            with pytest.raises(StateIntegrityError), database.transaction() as session:
                process.guard(session)
    finally:
        database.dispose()
