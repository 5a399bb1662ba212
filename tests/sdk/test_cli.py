"""The hospital command line: three hospital processes, each with its own CSV, for two rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sdk_helpers import PREFIX, breast_cancer_frames, fedavg_settings

ROOT = Path(__file__).resolve().parents[2]


def sdk(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "oneliac_flwr.sdk", *args], env=environment, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_init_then_three_hospital_processes_take_part(start_service, tmp_path: Path) -> None:  # noqa: ANN001
    service = start_service(extra=fedavg_settings(min_participants=3, max_rounds=2))
    frames, _ = breast_cancer_frames(3)
    hospitals = []
    with service.client() as admin:
        for i, frame in enumerate(frames):
            state = tmp_path / f"h{i}"
            init = sdk("init", "--state-dir", str(state), "--json")
            out, err = init.communicate(timeout=120)
            assert init.returncode == 0, err
            keys = json.loads(out)
            assert oct(state.stat().st_mode & 0o777) == "0o700"
            body = {"organization_name": f"CLI hospital {i}", "endpoint": f"https://h{i}.example.org/federated",
                    "encryption_key": keys["encryption_key"], "identity_key": keys["identity_key"]}  # fmt: skip
            created = admin.post(f"{PREFIX}/organizations", json=body).json()
            assert created["encryption_key_fingerprint"] == keys["encryption_key_fingerprint"]
            csv = tmp_path / f"h{i}.csv"
            frame.to_csv(csv, index=False)
            hospitals.append((created, state, csv))
    processes = [
        sdk("participate", "--csv", str(csv), "--rounds", "2", "--epochs", "1", "--state-dir", str(state),
            env={"ONELIAC_URL": service.base_url, "ONELIAC_API_KEY": org["api_key"],
                 "ONELIAC_ORGANIZATION_ID": org["organization_id"]})  # fmt: skip
        for org, state, csv in hospitals
    ]
    try:
        outputs = [p.communicate(timeout=400) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(x["round"], x["status"], x["model_version"]) for x in lines[:2]] == [(1, "ok", "1.0.1"), (2, "ok", "1.0.2")]
        assert lines[2] == {"epsilon_spent": 0.0}
        assert "round 1: submission accepted" in err  # progress on stderr
    with service.client() as admin:
        assert admin.get(f"{PREFIX}/model").json()["organizations_contributed"] == 3
