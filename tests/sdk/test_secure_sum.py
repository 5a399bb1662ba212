"""Secure-sum rounds through the hospital SDK, against a real coordinator process and
hospital PROCESSES (each with its own CSV made from the built-in breast-cancer table)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from oneliac.encryption import DifferentialPrivacy
from oneliac.federated import FederatedLearner
from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data.federated import feature_schema
from oneliac_flwr.errors import AuthenticationFailed, PrivacyBudgetExhausted, RoundClosed, ValidationFailed
from oneliac_flwr.privacy import GaussianRelease, PrivacyLedger, rounds_epsilon
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.sdk.data import local_table

from sdk_helpers import ADMIN, PREFIX, breast_cancer_frames, register

HOSPITAL = Path(__file__).with_name("secure_hospital.py")
ROOT = Path(__file__).resolve().parents[2]
DELTA = 1e-5
EPSILON = 0.1  # the documented per-release epsilon
#: Under secure sum the coordinator never sees an update, so its update-norm bound is only the
#: hospital's own local bounds_check; a noised release at epsilon 0.1 has a norm far above 100.
NORM_BOUND = 100000.0


def documented_noise_multiplier() -> float:
    """The noise multiplier of ``DifferentialPrivacy(epsilon=0.1)`` (the documented release)."""
    noised = DifferentialPrivacy(epsilon=EPSILON).add_noise_to_gradients({"w": np.zeros(2, np.float32)}, sensitivity=1.0)
    return float(noised.release.noise_multiplier)


def federation(*, min_participants: int, max_rounds: int, timeout_minutes: float, dp: bool) -> dict:
    """The federation's groups: the coordinator's overrides are made from these (the hospitals
    read them from the coordinator's published configuration)."""
    groups: dict = {
        "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": min_participants,
                               "max_rounds": max_rounds, "timeout_minutes": timeout_minutes},
        "validation": {"max_update_norm": NORM_BOUND},
        "privacy_budget": {"mode": "none"},
    }  # fmt: skip
    if dp:
        z = documented_noise_multiplier()
        groups["privacy_budget"] = {"mode": "release", "mechanism": "gaussian", "delta": DELTA, "clip_norm": 1.0,
                                    "noise_multiplier": z,
                                    "epsilon": rounds_epsilon(noise_multiplier=z, rounds=max_rounds, delta=DELTA) * 1.01}  # fmt: skip
    return groups


def overrides(groups: dict) -> list[str]:
    out = ["strategy=fedavg", "secure_sum.max_participants=6"]
    if groups["privacy_budget"]["mode"] == "none":
        out.append("privacy_budget=none")
    for group, values in groups.items():
        out += [f"{group}.{key}={value}" for key, value in values.items()]
    return out


def launch(tmp_path: Path, n: int) -> list[tuple]:
    """One process per hospital, started before the coordinator's first round can open: each
    imports its stack, then waits for its settings file. Returns (process, out file, log file)."""
    started = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i in range(n):
        log = tmp_path / f"hospital-{i}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen([sys.executable, str(HOSPITAL), str(tmp_path / f"hospital-{i}.settings.json")],
                                       env=env, stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
        started.append((process, tmp_path / f"hospital-{i}.json", log))
    return started


def hand_over(service, tmp_path: Path, orgs: list[dict], dirs: list[Path], frames: list, groups: dict,  # noqa: ANN001
              *, rounds: int, epsilon: float | None, pause: dict[int, Path] | None = None,
              pause_at: str = "masked upload") -> None:  # fmt: skip
    """Give each waiting hospital process its registration, its own CSV and the federation's settings."""
    for i, (org, folder, frame) in enumerate(zip(orgs, dirs, frames, strict=True)):
        csv = tmp_path / f"hospital-{i}.csv"
        frame.to_csv(csv, index=False)
        settings = {"organization_id": org["organization_id"], "api_key": org["api_key"], "url": service.base_url,
                    "state_dir": str(folder), "csv": str(csv), "rounds": rounds, "epsilon": epsilon,
                    "out": str(tmp_path / f"hospital-{i}.json")}  # fmt: skip
        if pause and i in pause:
            settings["pause_at"] = pause_at
            settings["pause_file"] = str(pause[i])
        partial = tmp_path / f"hospital-{i}.settings.partial"
        partial.write_text(json.dumps(settings))
        partial.rename(tmp_path / f"hospital-{i}.settings.json")


def stop_all(started: list[tuple]) -> None:
    for process, _, _ in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)


def wait_exit(started: list[tuple], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process, _, log in started:
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"hospital still running:\n{log.read_text()[-3000:]}") from None
        assert code == 0, log.read_text()[-3000:]


def held_out_accuracy(model, test, config: ExperimentConfig) -> float:  # noqa: ANN001
    raw = local_table(test, config.dataset)
    scaled = feature_schema(config, raw).scale(raw)
    return float((model.predict(scaled.features) == scaled.labels).mean())


def test_three_hospital_processes_three_secure_rounds_with_local_dp(start_service, hospital_dirs, tmp_path) -> None:  # noqa: ANN001
    # a stage closes as soon as every hospital answered: the deadline only has to cover a
    # hospital's local training (keys are advertised when it submits)
    groups = federation(min_participants=3, max_rounds=3, timeout_minutes=1.0, dp=True)
    started = launch(tmp_path, 3)
    try:
        service = start_service(extra=overrides(groups))
        dirs = hospital_dirs(3)
        orgs = register(service, dirs)
        frames, test = breast_cancer_frames(3)
        hand_over(service, tmp_path, orgs, dirs, frames, groups, rounds=3, epsilon=EPSILON)
        wait_exit(started, timeout=600)
    finally:
        stop_all(started)
    seen = [json.loads(out.read_text()) for _, out, _ in started]
    z = documented_noise_multiplier()
    with service.client() as admin:
        report = admin.get(f"{PREFIX}/privacy/report").json()
        spent = admin.get(f"{PREFIX}/privacy/epsilon").json()
        rounds = admin.get(f"{PREFIX}/rounds").json()
    assert [r["status"] for r in rounds] == ["ok", "ok", "ok"] and all(r["contributors"] == 3 for r in rounds)
    for i, entries in enumerate(seen):
        assert [e["round"] for e in entries] == [1, 2, 3]
        assert [e["model_version"] for e in entries] == ["1.0.1", "1.0.2", "1.0.3"]
        assert all(e["status"] == "ok" and e["contributors"] == 3 and e["receipt"].startswith("rcpt_") for e in entries)
        assert all(e["checks"] == {"bounds_check": True, "nan_check": True, "privacy_check": True} for e in entries)
        assert entries[-1]["downloaded"] == "1.0.3" and entries[-1]["training_round"] == 3
        assert entries[0]["label_distribution"] == {str(k): int(v) for k, v in frames[i]["target"].value_counts().sort_index().items()}
        # each hospital's epsilon is its own accounting: one GaussianRelease(z) per round it released
        own = PrivacyLedger(epsilon_budget=groups["privacy_budget"]["epsilon"], delta=DELTA)
        for entry in entries:
            assert entry["noise_multiplier"] == pytest.approx(z, rel=1e-12)
            own.record([GaussianRelease(entry["noise_multiplier"])], round_number=entry["round"])
            assert entry["current_epsilon"] == pytest.approx(own.get_current_epsilon(), rel=1e-9)
        assert entries[0]["current_epsilon"] == pytest.approx(EPSILON, rel=1e-6)
        # the coordinator's report, as each hospital read it after its round
        for entry, row in zip(entries, report, strict=True):
            assert entry["report_participants"] == 3
            assert entry["report_total_epsilon"] == pytest.approx(row["epsilon_cumulative"], rel=1e-12)
    # the coordinator's report matches the releases declared: one (z, C=1) Gaussian release per
    # round, three participants, the same composition the hospitals computed
    assert [r["round"] for r in report] == [1, 2, 3]
    for row, number in zip(report, (1, 2, 3), strict=True):
        assert row["participants"] == 3 and row["mechanism"] == "gaussian" and row["recorded"] == "when unmasked"
        assert row["noise_multiplier"] == pytest.approx(z, rel=1e-9) and row["clip_norm"] == 1.0
        assert row["epsilon_cumulative"] == pytest.approx(rounds_epsilon(noise_multiplier=z, rounds=number, delta=DELTA), rel=1e-6)
        assert row["epsilon_cumulative"] == pytest.approx(seen[0][number - 1]["current_epsilon"], rel=1e-6)
    assert spent["epsilon_spent"] == pytest.approx(report[-1]["epsilon_cumulative"], rel=1e-12)
    # each new model is the last one plus the mean of the three declared releases, each clipped to
    # the ring's norm (secure_sum.clip_norm) by its hospital: the secure sum aggregated exactly the
    # noised updates the hospitals released, nothing else (the test observes the releases)
    clip = ExperimentConfig.from_dict({**groups, "secure_sum": {"max_participants": 6}}).secure_sum.clip_norm
    with FederatedLearner(orgs[0]["organization_id"], orgs[0]["api_key"], base_url=service.base_url,
                          state_dir=tmp_path / "reader", progress=None) as reader:  # fmt: skip
        versions = [reader.download_model(f"1.0.{r}") for r in range(4)]
        rebuilt = versions[0].arrays()  # the initial model plus the releases, computed here, not downloaded
        for number in (1, 2, 3):
            releases = [dict(np.load(out.with_name(f"{out.stem}-release-{number}.npz"))) for _, out, _ in started]
            scales = [min(1.0, clip / float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in r.values()))))
                      for r in releases]  # fmt: skip
            before, after = versions[number - 1].arrays(), versions[number].arrays()
            assert set(after) == set(releases[0])
            for name in after:
                expected = sum(s * r[name].astype(np.float64) for s, r in zip(scales, releases)) / len(releases)
                np.testing.assert_allclose(after[name] - before[name], expected, rtol=0, atol=1e-4)
                rebuilt[name] = rebuilt[name] + expected.astype(np.float32)
        final = versions[3]
        accuracy, before = held_out_accuracy(final, test, reader.config), held_out_accuracy(versions[0], test, reader.config)
        # the downloaded model's held-out accuracy is the accuracy of the model the releases make
        # (a row may sit within the 1e-4 tolerance of the decision boundary: one row of slack)
        independent = copy.deepcopy(versions[0])
        loaded = independent.module.load_state_dict({n: torch.as_tensor(v) for n, v in rebuilt.items()}, strict=False)
        assert not loaded.unexpected_keys and not set(loaded.missing_keys) & set(rebuilt)
        expected_accuracy = held_out_accuracy(independent, test, reader.config)
        assert abs(accuracy - expected_accuracy) <= 1.0 / len(test) + 1e-12, (accuracy, expected_accuracy)
    print(json.dumps({"held_out_accuracy": accuracy, "initial_accuracy": before, "epsilon_total": spent["epsilon_spent"],
                      "noise_multiplier": z, "hospital_epsilon": [entries[-1]["current_epsilon"] for entries in seen],
                      "coordinator_epsilon_per_round": [row["epsilon_cumulative"] for row in report],
                      "round_seconds": [[round(e["round_seconds"], 1) for e in entries] for entries in seen]}))  # fmt: skip
    assert final.model_version == "1.0.3" and final.epsilon_spent == pytest.approx(spent["epsilon_spent"], rel=1e-12)


#: Measured (docs/hospital-sdk.md): held-out accuracy after 3 rounds varies run to run (0.614,
#: 0.842, 0.061, 0.386, 0.263 seen), from 0.675 for the initial model. At epsilon 0.1 per release the noise
#: (std 30.7 per weight at sensitivity 1, a norm near 240 for 62 weights) swamps every update,
#: and the ring clips it to norm secure_sum.clip_norm: each round moves the model by an
#: essentially random step, so no accuracy floor can hold. What the test pins down instead is
#: that each model is exactly the mean of the declared releases; learning through the SDK's
#: secure sum is shown without DP by the next test (held-out accuracy >= 0.85).


def paused_federation(start_service, hospital_dirs, tmp_path: Path, started: list[tuple], *, hospitals: int,  # noqa: ANN001
                      groups: dict, rounds: int, pause_at: str) -> tuple:  # fmt: skip
    """Hospital processes (appended to ``started``), the coordinator, the hand-over; returns once the
    last hospital paused at the progress line ``pause_at``: (service, orgs, dirs, held-out frame, pause file)."""
    last = hospitals - 1
    pause = tmp_path / f"hospital-{last}.paused"
    started += launch(tmp_path, hospitals)
    service = start_service(extra=overrides(groups))
    dirs = hospital_dirs(hospitals)
    orgs = register(service, dirs)
    frames, test = breast_cancer_frames(hospitals)
    hand_over(service, tmp_path, orgs, dirs, frames, groups, rounds=rounds, epsilon=None, pause={last: pause},
              pause_at=pause_at)  # fmt: skip
    deadline = time.monotonic() + 300
    while not pause.exists():
        assert time.monotonic() < deadline, started[last][2].read_text()[-3000:]
        assert started[last][0].poll() is None, started[last][2].read_text()[-3000:]
        time.sleep(0.2)
    return service, orgs, dirs, test, pause


def test_a_hospital_killed_mid_round_is_recovered(start_service, hospital_dirs, tmp_path) -> None:  # noqa: ANN001
    # the keys stage must cover 4 hospital processes' local training on a loaded 2-core machine
    groups = federation(min_participants=3, max_rounds=1, timeout_minutes=1.0, dp=False)
    started: list[tuple] = []
    try:  # hospital 3 advertised its keys and is about to upload its masked vector
        service, orgs, _, test, _ = paused_federation(start_service, hospital_dirs, tmp_path, started, hospitals=4,
                                                      groups=groups, rounds=1, pause_at="masked upload")  # fmt: skip
        started[3][0].send_signal(signal.SIGKILL)
        started[3][0].wait(timeout=20)
        wait_exit(started[:3], timeout=300)
    finally:
        stop_all(started)
    with service.client() as admin:
        (round_1,) = admin.get(f"{PREFIX}/rounds").json()
    assert round_1["status"] == "ok" and round_1["contributors"] == 3
    assert round_1["dropouts"] == [orgs[3]["organization_id"]]
    for _, out, _ in started[:3]:
        (entry,) = json.loads(out.read_text())
        assert entry["status"] == "ok" and entry["model_version"] == "1.0.1" and entry["contributors"] == 3
    assert not started[3][1].exists()  # the killed hospital never finished its round
    with FederatedLearner(orgs[0]["organization_id"], orgs[0]["api_key"], base_url=service.base_url,
                          state_dir=tmp_path / "reader", progress=None) as reader:  # fmt: skip
        final = reader.download_model()
        received = reader.download_model("1.0.0")
        accuracy = held_out_accuracy(final, test, reader.config)
    print(json.dumps({"held_out_accuracy_after_recovered_round": accuracy}))
    assert final.model_version == "1.0.1" and final.organizations_contributed == 3
    # without DP the hospitals' evaluation of the model they received travels masked: only its mean is known
    assert received.accuracy is not None and 0.0 <= received.accuracy <= 1.0
    assert accuracy >= 0.85


def test_a_hospital_killed_after_its_masked_upload_resumes_the_round_when_restarted(start_service, hospital_dirs,  # noqa: ANN001
                                                                                    tmp_path) -> None:  # noqa: ANN001
    groups = federation(min_participants=3, max_rounds=2, timeout_minutes=1.0, dp=False)
    started: list[tuple] = []
    try:  # hospital 2's masked vector was accepted; it has not unmasked yet
        service, orgs, dirs, _, pause = paused_federation(start_service, hospital_dirs, tmp_path, started, hospitals=3,
                                                          groups=groups, rounds=2, pause_at="masked upload accepted")  # fmt: skip
        kept = dirs[2] / "secure-round.json"
        assert kept.stat().st_mode & 0o777 == 0o600
        assert json.loads(kept.read_text())["round"] == 1
        first_receipt = pause.read_text().rsplit("(", 1)[1].rstrip(")\n")
        started[2][0].send_signal(signal.SIGKILL)
        started[2][0].wait(timeout=20)
        # the same state_dir, a new process
        settings = json.loads((tmp_path / "hospital-2.settings.json").read_text())
        settings.pop("pause_at")
        settings["resume_by_submitting"] = True  # trains again and calls submit_gradients for round 1
        settings["out"] = str(tmp_path / "hospital-2-restarted.json")
        (tmp_path / "restart.settings.json").write_text(json.dumps(settings))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = tmp_path / "hospital-2-restarted.log"
        with log.open("wb") as handle:
            restarted = subprocess.Popen([sys.executable, str(HOSPITAL), str(tmp_path / "restart.settings.json")], env=env,
                                         stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
        started.append((restarted, Path(settings["out"]), log))
        wait_exit([started[0], started[1], started[3]], timeout=400)
    finally:
        stop_all(started)
    with service.client() as admin:
        rounds = admin.get(f"{PREFIX}/rounds").json()
        audit = admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json()
    # the round aggregated with the restarted hospital counted, not dropped; and the next one ran with it
    assert [(r["status"], r["contributors"], r["dropouts"]) for r in rounds] == [("ok", 3, []), ("ok", 3, [])]
    killed = orgs[2]["organization_id"]
    messages = [(e["action"], e["detail"]) for e in audit if e["organization_id"] == killed and e["action"].startswith("secure_sum.")]
    assert messages.count(("secure_sum.masked", "round 1")) == 1  # one masked vector: the kept bytes replayed, not the new update
    assert ("secure_sum.unmask", "round 1") in messages  # answered by the restarted process
    assert ("secure_sum.unmask", "round 2") in messages
    resumed, second = json.loads(Path(started[3][1]).read_text())
    assert resumed == {"round": 1, "resumed": True, "receipt": first_receipt, "status": "ok", "model_version": "1.0.1",
                       "contributors": 3}  # fmt: skip
    assert second["round"] == 2 and second["status"] == "ok" and second["model_version"] == "1.0.2"
    assert second["receipt"].startswith("rcpt_") and second["receipt"] != first_receipt
    assert not (dirs[2] / "secure-round.json").exists()  # forgotten once the round closed
    for _, out, _ in started[:2]:
        assert [e["contributors"] for e in json.loads(out.read_text())] == [3, 3]


def test_typed_errors_in_secure_mode(start_service, hospital_dirs, tmp_path) -> None:  # noqa: ANN001
    groups = federation(min_participants=3, max_rounds=3, timeout_minutes=1.0, dp=True)
    service = start_service(extra=overrides(groups))
    dirs = hospital_dirs(3)
    orgs = register(service, dirs)
    frames, _ = breast_cancer_frames(3)
    org = orgs[0]

    # wrong API key: typed, with the coordinator's message
    with pytest.raises(AuthenticationFailed, match="unknown or revoked API key") as wrong:
        FederatedLearner(org["organization_id"], "sk_live_not-a-key", base_url=service.base_url, state_dir=dirs[0],
                         progress=None).round_status()  # fmt: skip
    assert wrong.value.status == 401

    learner = FederatedLearner(org["organization_id"], org["api_key"], base_url=service.base_url, state_dir=dirs[0],
                               progress=None)  # fmt: skip
    deadline = time.monotonic() + 60
    while (status := learner.round_status()).next_action != "advertise_keys":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status.aggregation_method == "secure_sum" and status.round == 1 and status.stage == "keys"
    local = learner.train_local(frames[0], epochs=1)
    noisy = DifferentialPrivacy(epsilon=EPSILON).add_noise_to_gradients(local.gradients, sensitivity=1.0)

    # NaN gradients: refused locally by nan_check, nothing sent and nothing recorded
    arrays = [np.array(a, copy=True) for a in noisy.arrays()]
    arrays[0].flat[0] = np.nan
    poisoned = noisy.replaced(arrays, release=noisy.release)
    report = learner.validate_submission(poisoned, checks=["bounds_check", "nan_check", "privacy_check"])
    assert not report.passed and "nan_check" in report.failed_checks
    with pytest.raises(ValidationFailed) as nan:
        learner.submit_gradients(poisoned, round=1)
    assert nan.value.check == "nan_check"
    assert learner.get_current_epsilon() == 0.0
    assert learner.round_status().next_action == "advertise_keys"  # the coordinator saw nothing

    # a round that is not the open one
    with pytest.raises(RoundClosed, match="round 2 is not open") as closed:
        learner.submit_gradients(noisy, round=2)
    assert closed.value.status == 409
    assert learner.get_current_epsilon() == 0.0

    # a release above the hospital's own cap: refused before anything is sent or recorded
    capped = FederatedLearner(orgs[1]["organization_id"], orgs[1]["api_key"], base_url=service.base_url,
                              state_dir=dirs[1], progress=None,
                              privacy_policy=HospitalPolicy(unit="release", epsilon=0.05, delta=DELTA))  # fmt: skip
    release = DifferentialPrivacy(epsilon=EPSILON).add_noise_to_gradients(capped.train_local(frames[1], epochs=1).gradients,
                                                                          sensitivity=1.0)  # fmt: skip
    with pytest.raises(PrivacyBudgetExhausted, match="above its cap"):
        capped.submit_gradients(release, round=1)
    assert capped.get_current_epsilon() == 0.0
    assert capped.round_status().next_action == "advertise_keys"
    with service.client(token=ADMIN) as admin:
        assert admin.get(f"{PREFIX}/privacy/epsilon").json()["epsilon_spent"] == 0.0
    for each in (learner, capped):
        each.close()


def test_hospital_processes_run_a_malicious_mode_round_unchanged(start_service, hospital_dirs, tmp_path) -> None:  # noqa: ANN001
    """``secure_sum.mode: malicious``: the documented calls, unchanged, sign the survivor set
    (stage C) before unmasking; each hospital's saved secure-sum client runs in malicious mode,
    taken from the coordinator's published configuration."""
    groups = {**federation(min_participants=3, max_rounds=1, timeout_minutes=1.0, dp=False),
              "secure_sum": {"mode": "malicious"}}  # fmt: skip
    started = launch(tmp_path, 3)
    try:
        service = start_service(extra=overrides(groups))
        dirs = hospital_dirs(3)
        orgs = register(service, dirs)
        frames, _ = breast_cancer_frames(3)
        hand_over(service, tmp_path, orgs, dirs, frames, groups, rounds=1, epsilon=None)
        wait_exit(started, timeout=600)
    finally:
        stop_all(started)
    with service.client() as admin:
        (only,) = admin.get(f"{PREFIX}/rounds").json()
        events = [e["action"] for e in admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json()]
    assert only["status"] == "ok" and only["contributors"] == 3, only
    assert events.count("secure_sum.consistency") == 3
    for (_, out, log), folder in zip(started, dirs, strict=True):
        (entry,) = json.loads(out.read_text())
        assert entry["status"] == "ok" and entry["model_version"] == "1.0.1"
        assert "signing the survivor set" in log.read_text()
        assert json.loads((folder / "secure-sum.json").read_text())["mode"] == "malicious"
