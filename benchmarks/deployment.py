"""Benchmark: per-round latency of a real deployment on loopback, printed as JSON.

    python benchmarks/deployment.py                  # 6 rounds per variant
    python benchmarks/deployment.py --rounds 3

Starts one insecure ``flower-superlink`` and 3 ``flower-supernode`` processes on 127.0.0.1
(each SuperNode with its own hospital CSV, a third of the breast-cancer table), then runs,
one after the other against the same processes:

- ``anchor``: Flower's own minimal FedAvg ClientApp/ServerApp (``benchmarks/anchor_app``),
  same model, same local training, one train and one evaluate exchange per round;
- ``plain``: our apps, ``aggregation_method=fedavg``;
- ``secure_sum``: our apps, ``aggregation_method=secure_sum``.

Reports per variant: the per-round latencies measured inside the ServerApp, their mean
over rounds 2..N-1 (round 1 includes one-off costs: FAB download, secure-sum key
agreement; our plain path's last round adds the final evaluate exchange), the wall time of ``flwr run``, and the ratios against the targets
(plain <= 1.2x anchor, secure sum <= 1.5x plain). It also reports where a round's time
goes: the import time of each ClientApp module in a fresh interpreter, and Flower's
polling intervals, which every exchange pays. Not a timed test: figures depend on the
machine. Every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oneliac_flwr.data import load_breast_cancer  # noqa: E402
from oneliac_flwr.flower.exchange import POLL_SECONDS  # noqa: E402

BIN = Path(sys.executable).parent
ORGANIZATIONS = ("h1", "h2", "h3")
SUPEREXEC_POLL_SECONDS = 0.1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _write_csvs(folder: Path) -> dict[str, Path]:
    table = load_breast_cancer()
    header = ",".join([*(f"f{i}" for i in range(table.features.shape[1])), "diagnosis"])
    order = np.random.default_rng(0).permutation(len(table.labels))
    paths = {}
    for org, part in zip(ORGANIZATIONS, np.array_split(order, len(ORGANIZATIONS)), strict=True):
        path = folder / f"{org}.csv"
        np.savetxt(path, np.column_stack([table.features[part], table.labels[part]]), delimiter=",", header=header, comments="")
        paths[org] = path
    return paths


class Processes:
    """Processes started here, each in its own session, stopped by PID at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, command: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen:
        handle = log.open("w")
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.started):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def _import_seconds(module: str, *, path: Path) -> float:
    """Wall time of importing ``module`` in a fresh interpreter (what each ClientApp process pays)."""
    code = f"import sys, time; sys.path.insert(0, {str(path)!r}); t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ.copy())
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def _app_copy(source: Path, target: Path, files: tuple[str, ...], package: str) -> Path:
    target.mkdir(parents=True)
    for name in files:
        shutil.copy(source / name, target / name)
    shutil.copytree(source / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _flwr_run(app: Path, config: str, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    completed = subprocess.run(
        [str(BIN / "flwr"), "run", str(app), "bench", "--stream", "--run-config", config],
        env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    log.write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"flwr run failed ({completed.returncode}); see {log}")
    return time.perf_counter() - started


def _summary(latencies: list[float]) -> dict:
    steady = latencies[1:-1]  # round 1 pays one-off costs; the last round of ours adds the final evaluation
    return {
        "round_seconds": [round(x, 2) for x in latencies],
        "first_round_seconds": round(latencies[0], 2) if latencies else None,
        "steady_round_seconds_mean": round(float(np.mean(steady)), 2) if steady else None,
        "mean_round_seconds_all": round(float(np.mean(latencies)), 2) if latencies else None,
    }


def run(rounds: int, work: Path) -> dict:
    """Start the processes, run the three variants, stop everything."""
    csvs = _write_csvs(work)
    port = _free_port()
    env = {**os.environ, "FLWR_HOME": str(work / "flwr-home"), "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           # flwr 1.42 knob: the SuperExec under each SuperNode looks for new work every 0.1 s (default 1 s)
           "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(SUPEREXEC_POLL_SECONDS)}  # fmt: skip
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    home = work / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    processes = Processes()
    try:
        processes.start(
            [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"],
            env=env, log=work / "superlink.log",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not _healthy(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"flower-superlink did not start; see {work / 'superlink.log'}")
            time.sleep(0.3)
        for org in ORGANIZATIONS:
            node_config = f'organization-id="{org}" data-path="{csvs[org]}" state-dir="{work / (org + "-state")}"'
            processes.start(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                 "--port", str(_free_port()), "--node-config", node_config],
                env=env, log=work / f"supernode-{org}.log",
            )  # fmt: skip
        anchor = _app_copy(ROOT / "benchmarks" / "anchor_app", work / "anchor", ("pyproject.toml",), "anchor_app")
        ours = _app_copy(ROOT, work / "ours", ("pyproject.toml", "README.md"), "oneliac_flwr")
        rows: dict[str, dict] = {}
        timing = work / "anchor-timing.json"
        wall = _flwr_run(anchor, f'num-server-rounds={rounds} timing-path="{timing}"', env, work / "anchor.log")
        marks = json.loads(timing.read_text())
        rows["anchor"] = {
            **_summary(list(np.diff(marks["round_ends"]))),
            "flwr_run_seconds": round(wall, 2),
            "final_accuracy": marks["final_eval_accuracy"],
            "exchanges_per_round": "2 (train, evaluate)",
        }
        features = ",".join(f"f{i}" for i in range(30))
        for method in ("fedavg", "secure_sum"):
            out = work / f"out-{method}"
            config = (
                f'dataset.name="csv" dataset.label_column="diagnosis" dataset.feature_columns="{features}" '
                f'aggregation_config.aggregation_method="{method}" aggregation_config.min_participants=3 '
                f'aggregation_config.max_rounds={rounds} aggregation_config.timeout_minutes=10.0 '
                f'output_dir="{out}" state_dir="{work / "coordinator-state"}"'
            )
            wall = _flwr_run(ours, config, env, work / f"{method}.log")
            results = json.loads((out / "results.json").read_text())
            rows["plain" if method == "fedavg" else "secure_sum"] = {
                **_summary([r["wall_seconds"] for r in results["rounds"]]),
                "flwr_run_seconds": round(wall, 2),
                "final_accuracy": results["final"]["accuracy"],
                "rounds_ok": sum(1 for r in results["rounds"] if r["status"] == "ok"),
                "exchanges_per_round": (
                    "1 (train, evaluating the received model); the last round adds an evaluate exchange"
                    if method == "fedavg"
                    else "2 (masked train, unmask); round 1 adds the key advertisement"
                ),
            }
    finally:
        processes.stop()
    anchor_s = rows["anchor"]["steady_round_seconds_mean"]
    plain_s = rows["plain"]["steady_round_seconds_mean"]
    secure_s = rows["secure_sum"]["steady_round_seconds_mean"]
    return {
        "variants": rows,
        "ratios": {
            "plain_over_anchor": round(plain_s / anchor_s, 3),
            "plain_over_anchor_target": 1.2,
            "secure_sum_over_plain": round(secure_s / plain_s, 3),
            "secure_sum_over_plain_target": 1.5,
        },
        "where_time_goes": {
            "clientapp_import_seconds": {
                "anchor": _import_seconds("anchor_app.client_app", path=ROOT / "benchmarks" / "anchor_app"),
                "ours": _import_seconds("oneliac_flwr.flower.clientapp", path=ROOT),
            },
            "flower_polling_seconds": {
                "supernode_idle_poll": 3.0,
                "superexec_task_poll": SUPEREXEC_POLL_SECONDS,
                "grid_send_and_receive_poll_anchor": 3.0,
                "grid_poll_ours": POLL_SECONDS,
                "note": "the SuperNode's 3 s sleep between empty pulls is fixed in flwr 1.42; "
                "every exchange pays up to one SuperNode poll, one SuperExec poll, a fresh "
                "flwr-clientapp process and its imports; Flower's own Grid.send_and_receive "
                "(the anchor) sleeps 3 s between pulls of replies, ours pulls every 0.2 s",
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) and print its path")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oneliac-deployment-bench-"))
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every process started here is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = run(args.rounds, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    report["rounds"] = args.rounds
    if args.keep:
        report["work_folder"] = str(work)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
