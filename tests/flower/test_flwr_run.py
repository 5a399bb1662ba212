"""`flwr run .` runs the same apps with the pyproject config (FLWR_HOME in a temp dir).

The test starts the local SuperLink itself (same address `flwr run` probes, with runtime
dependency installation disabled, since everything is already installed), so it knows the
PIDs it must stop, and stops the whole process group afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
LOCAL_PORT = 39091


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{LOCAL_PORT}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture()
def superlink(tmp_path: Path):
    if _healthy():
        pytest.skip(f"something already listens on 127.0.0.1:{LOCAL_PORT}")
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "FLWR_DISABLE_UPDATE_CHECK": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = (tmp_path / "superlink.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(LOCAL_PORT),
            "--database",
            str(tmp_path / "state.db"),
            "--disable-runtime-dependency-installation",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _healthy():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"flower-superlink did not start: {(tmp_path / 'superlink.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()


def test_flwr_run_trains_with_the_pyproject_config(superlink: dict, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, app_dir / name)
    shutil.copytree(ROOT / "oneliac_flwr", app_dir / "oneliac_flwr", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "outputs"
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "flwr"),
            "run",
            str(app_dir),
            "--stream",
            "--federation-config",
            "num-supernodes=3",
            "--run-config",
            f'aggregation_config.max_rounds=2 output_dir="{out}"',
        ],
        env=superlink,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    streamed = completed.stdout + completed.stderr  # the ServerApp's progress and summary reach --stream
    assert "round 1/2 ok" in streamed and "round 2/2 ok" in streamed, streamed[-3000:]
    assert "run finished: 2 round(s) completed, accuracy=" in streamed and f"outputs in {out}" in streamed
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["aggregation_config"]["max_rounds"] == 2
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert all(r["status"] == "ok" and r["accepted"] == 3 for r in results["rounds"])
    assert results["final"]["accuracy"] > 0.85
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == {"0.weight", "0.bias"}


def _app_copy(tmp_path: Path) -> Path:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, app_dir / name)
    shutil.copytree(ROOT / "oneliac_flwr", app_dir / "oneliac_flwr", ignore=shutil.ignore_patterns("__pycache__"))
    return app_dir


def test_a_bad_run_config_value_is_named_in_the_stream_and_the_run_fails(superlink: dict, tmp_path: Path) -> None:
    flwr = str(Path(sys.executable).parent / "flwr")
    completed = subprocess.run(
        [flwr, "run", str(_app_copy(tmp_path)), "--stream", "--federation-config", "num-supernodes=3",
         "--run-config", 'aggregation_config.max_rounds="ten"'],
        env=superlink, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert "invalid run configuration: aggregation_config.max_rounds: expected an integer" in output, output[-3000:]
    listed = subprocess.run(
        [flwr, "ls", "--format", "json"], env=superlink, capture_output=True, text=True, timeout=120, check=True
    )
    runs = json.loads(listed.stdout)["runs"]
    assert [run["status"] for run in runs] == ["finished:failed"], listed.stdout
