"""Benchmark of the REST coordinator as it stands: a real uvicorn process on loopback.

    python benchmarks/rest.py                   # 10 organizations; models of ~10k and ~1M parameters
    python benchmarks/rest.py --orgs 10 --downloads 20

Per model size (an MLP on the breast-cancer table, hidden sizes chosen for the size):
service start-up to the first answer, registration latency of ``--orgs`` organizations
(p50/p99), ``GET /api/v1/federated/model`` latency (p50/p99) and throughput in MB/s for the
JSON form (0x hex) and the raw safetensors form, and SQLite growth per registration.
Rounds are not measured here yet (plain REST rounds exist; secure-sum REST rounds do not).
stdout carries the JSON only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "/api/v1/federated"
SIZES = {"10k": "[300]", "1M": "[1000,970]"}  # 9,902 and 1,003,912 parameters


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _db_bytes(folder: Path) -> int:
    """Size of the database file once its write-ahead log is folded in."""
    with sqlite3.connect(folder / "bench.db", timeout=30) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in folder.glob("bench.db*"))


def measure(label: str, hidden: str, *, orgs: int, downloads: int) -> dict:
    """Start one service for a model size and measure it."""
    token = secrets.token_urlsafe(32)
    port = _port()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        command = [sys.executable, "-m", "oneliac_flwr.api", "serve", "model=mlp", f"model.hidden_sizes={hidden}",
                   f"coordinator.port={port}", f"coordinator.database_url=sqlite:///{folder / 'bench.db'}"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ONELIAC_ADMIN_TOKEN": token}
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60,
                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"service exited with {process.returncode}")
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            startup = time.perf_counter() - started
            before = _db_bytes(folder)
            register = []
            for i in range(orgs):
                key = X25519PrivateKey.generate().public_key().public_bytes_raw()
                body = {"organization_name": f"Hospital {i}", "endpoint": f"https://h{i}.example.org/f",
                        "encryption_key": "0x" + key.hex()}  # fmt: skip
                t0 = time.perf_counter()
                response = client.post(f"{PREFIX}/organizations", json=body)
                register.append(time.perf_counter() - t0)
                response.raise_for_status()
            growth = (_db_bytes(folder) - before) / orgs
            forms = {}
            for form, headers in (("json_hex", {}), ("octet_stream", {"Accept": "application/octet-stream"})):
                times, size = [], 0
                for _ in range(downloads):
                    t0 = time.perf_counter()
                    response = client.get(f"{PREFIX}/model", headers=headers)
                    times.append(time.perf_counter() - t0)
                    response.raise_for_status()
                    size = len(response.content)
                forms[form] = {**_percentiles(times), "bytes": size,
                               "mb_per_s": round(size / 1e6 / float(np.median(times)), 1)}  # fmt: skip
            return {
                "model": label,
                "hidden_sizes": hidden,
                "startup_seconds": round(startup, 2),
                "register": _percentiles(register),
                "db_bytes_per_registration": int(growth),
                "get_model": forms,
            }
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--downloads", type=int, default=20)
    args = parser.parse_args()
    results = [measure(label, hidden, orgs=args.orgs, downloads=args.downloads) for label, hidden in SIZES.items()]
    print(json.dumps({"machine": {"cpus": os.cpu_count()}, "orgs": args.orgs, "results": results,
                      "not_measured": "REST rounds (plain rounds are not benchmarked yet; secure-sum REST rounds are not built)"}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
