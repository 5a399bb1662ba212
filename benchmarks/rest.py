"""Benchmark of the REST coordinator as it stands: a real uvicorn process on loopback.

    python benchmarks/rest.py                   # 10 organizations; models of ~10k and ~1M parameters
    python benchmarks/rest.py --orgs 10 --rounds 3 --sizes 10k,1M
    python benchmarks/rest.py --orgs 10 --rounds 3 --sizes 10k --secure-only
    python benchmarks/rest.py --sizes 10k,1M --secure-only --processes 1,2   # 1 and 2 coordinator processes
    python benchmarks/rest.py --sizes 10k,1M --secure-only --hospital-processes 1,2   # hospitals in 1 or 2 processes

Per model size (an MLP on the breast-cancer table, hidden sizes chosen for the size):
service start-up to the first answer, registration latency of ``--orgs`` organizations
(p50/p99), ``GET /api/v1/federated/model`` latency (p50/p99) and throughput in MB/s for the
JSON form (0x hex) and the raw safetensors form, and SQLite growth per registration.
Then ``--rounds`` plain REST rounds (``aggregation_method: fedavg``, sealed updates): each
organization downloads the model, seals a perturbed copy and submits it (sequentially,
as one client would see it); per round the wall time from the first download to the new
model version, submission latency p50/p99, ingest MB/s (request bytes over the time spent
in submissions) and database growth. Then ``--rounds`` secure-sum REST rounds
(``aggregation_method: secure_sum``) on a fresh service: every organization drives all
stages concurrently with :func:`oneliac_flwr.api.participant.take_part_in_secure_round` and
the core ``SecureSumClient`` (wall time from the round opening to the new model version), and
the in-process Flower simulation's secure-sum round for the same number of parameters and
organizations (``benchmarks/secure_sum.py``'s ``ours`` method: ``run_simulation`` with our
ServerApp and ClientApp handlers); ``secure_ratio`` is REST over Flower (target <= 2).
The hospitals run as threads of this process by default; ``--hospital-processes 2`` spreads
them over two processes, the parallelism the simulation gives its clients (2 Ray workers
on this 2-core machine), and ``--processes`` runs several coordinator processes on one
database. Every configuration asked for is measured in the same run (the first is the
headline, ``summary.secure_ratio_by_configuration`` lists them all).
The secure-sum latency percentiles cover every request of the rounds except long polls;
ingest MB/s is request bytes over the time spent in POSTs. Each size's ``summary`` puts
the headline figures side by side. stdout carries the JSON only.
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
from typing import Any

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


def _plain_rounds(client: httpx.Client, folder: Path, *, rounds: int, orgs: int) -> dict:
    from safetensors.numpy import load as safetensors_load

    from oneliac_flwr.api.rounds import encode_arrays
    from oneliac_flwr.secure.sealed import seal, sealing_context

    per_round, latencies, ingest_bytes, ingest_seconds = [], [], 0, 0.0
    for number in range(1, rounds + 1):
        size_before = _db_bytes(folder)
        started = time.perf_counter()
        deadline = started + 120
        while (state := client.get(f"{PREFIX}/rounds/current").json())["status"] != "open" or state["round"] != number:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"round {number} did not open: {state}")
            time.sleep(0.05)
        raw = client.get(f"{PREFIX}/model", headers={"Accept": "application/octet-stream"}).content
        tensors = safetensors_load(raw)
        names = sorted(tensors)
        public = bytes.fromhex(client.get(f"{PREFIX}/coordinator-key").json()["public_key"][2:])
        for org_id, api_key in _ORG_KEYS:
            rng = np.random.default_rng(number * 1000 + len(org_id))
            local = [(tensors[n] + 0.001 * rng.standard_normal(tensors[n].shape)).astype(tensors[n].dtype) for n in names]
            context = sealing_context(organization_id=org_id, round=number, model_version=state["model_version"])
            body = {"organization_id": org_id, "round": number, "model_version": state["model_version"], "sample_count": 100,
                    "gradients_encrypted": "0x" + seal(encode_arrays(names, local), public, context=context).hex()}  # fmt: skip
            payload = json.dumps(body).encode()
            t0 = time.perf_counter()
            response = client.post(f"{PREFIX}/gradients", content=payload,
                                   headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})  # fmt: skip
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            latencies.append(elapsed)
            ingest_bytes += len(payload)
            ingest_seconds += elapsed
        while client.get(f"{PREFIX}/model").json()["training_round"] != number:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"round {number} did not close")
            time.sleep(0.05)
        per_round.append({"round": number, "seconds": round(time.perf_counter() - started, 3),
                          "db_growth_bytes": _db_bytes(folder) - size_before})  # fmt: skip
    steady = per_round[1:] or per_round
    return {
        "organizations": orgs,
        "rounds": per_round,
        "mean_round_seconds": round(float(np.mean([r["seconds"] for r in steady])), 3),
        "rounds_averaged": f"{2 if len(per_round) >= 2 else 1}..{len(per_round)}",
        "submit": _percentiles(latencies),
        "ingest_mb_per_s": round(ingest_bytes / 1e6 / ingest_seconds, 1),
        "db_growth_bytes_per_round": int(np.mean([r["db_growth_bytes"] for r in steady])),
    }


_ORG_KEYS: list[tuple[str, str]] = []


def _start(folder: Path, overrides: list[str], token: str) -> tuple[subprocess.Popen, httpx.Client]:
    port = _port()
    command = [sys.executable, "-m", "oneliac_flwr.api", "serve", *overrides, f"coordinator.port={port}",
               f"coordinator.database_url=sqlite:///{folder / 'bench.db'}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ONELIAC_ADMIN_TOKEN": token}
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=120,
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}")
        try:
            if client.get("/healthz").status_code == 200:
                return process, client
        except httpx.HTTPError:
            time.sleep(0.1)


class _TimedTransport(httpx.HTTPTransport):
    """Records the latency and request size of every exchange except long polls (a GET with
    ``wait_seconds``). A stage message's POST waits for its stage to move on too: its latency
    leaves out the wait the coordinator reports (``Server-Timing: wait;dur=<ms>``)."""

    def __init__(self, log: list[tuple[str, str, float, int]]) -> None:
        super().__init__()
        self.log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = super().handle_request(request)
        response.read()
        if request.method == "GET" and "wait_seconds" in request.url.params:  # a long poll waits on purpose
            return response
        waited = 0.0
        for metric in response.headers.get("server-timing", "").split(","):
            name, _, duration = metric.strip().partition(";dur=")
            if name == "wait" and duration:
                waited = float(duration) / 1000
        self.log.append((request.method, request.url.path, time.perf_counter() - started - waited, len(request.content)))
        return response


class _Hospitals:
    """Hospitals with their own HTTP and secure-sum clients, each driving every stage of a
    round concurrently (one thread per hospital)."""

    def __init__(self, specs: list[tuple[int, str, str, str]], *, organizations: int) -> None:
        from oneliac_flwr.api.participant import secure_node
        from oneliac_flwr.secure import Identity, SecureSumClient

        self.exchanges: list[tuple[str, str, float, int]] = []
        self.organizations = organizations  # in the whole federation (the synthetic weights depend on it)
        self.members = []
        for index, org_id, api_key, base_url in specs:  # (index, organization id, API key, coordinator URL)
            http = httpx.Client(base_url=base_url, trust_env=False, timeout=120, transport=_TimedTransport(self.exchanges),
                                headers={"Authorization": f"Bearer {api_key}"})  # fmt: skip
            node = secure_node(http)
            client = SecureSumClient(node_id=node.node_id, run_id=node.run_id, identity=Identity.generate(),
                                     organization=org_id)  # fmt: skip
            self.members.append((index, org_id, http, client))
        self.exchanges.clear()  # node look-ups are not round traffic

    def round(self, number: int, version: str, shapes: list[tuple[int, ...]]) -> tuple[list[int | None], list]:
        """Every hospital takes part in round ``number``; their receipts' contributor counts and the round's exchanges."""
        import concurrent.futures

        from oneliac_flwr.api.participant import take_part_in_secure_round
        from oneliac_flwr.masked_statistics import MaskedStatistics

        if str(ROOT / "benchmarks") not in sys.path:
            sys.path.insert(0, str(ROOT / "benchmarks"))
        from secure_sum import synthetic_update, synthetic_weight

        def take_part(member: tuple) -> object:
            index, org_id, http, client = member
            # the Flower simulation's synthetic update and weight for this hospital and round
            # (benchmarks/secure_sum.py), so that both paths mask the same numbers
            flat = synthetic_update(index, number, sum(int(np.prod(shape)) for shape in shapes))
            update = np.split(flat, np.cumsum([int(np.prod(shape)) for shape in shapes])[:-1])
            update = [part.reshape(shape) for part, shape in zip(update, shapes, strict=True)]
            stats = MaskedStatistics(train_loss=0.5, train_accuracy=0.8, eval_loss=0.5, eval_accuracy=0.8,
                                     label_fractions=(0.5, 0.5))  # fmt: skip
            return take_part_in_secure_round(http, organization_id=org_id, secure_client=client, update=update,
                                             weight=float(synthetic_weight(index, self.organizations)),
                                             model_version=version, statistics=stats, wait_seconds=10)  # fmt: skip

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.members)) as pool:
            receipts = list(pool.map(take_part, self.members))
        log = list(self.exchanges)
        self.exchanges.clear()
        return [r.contributors for r in receipts], log

    def close(self) -> None:
        for _, _, http, _ in self.members:
            http.close()


def _hospital_process(connection, specs: list[tuple[int, str, str, str]], organizations: int) -> None:  # noqa: ANN001 - a Connection
    """A process hosting some hospitals: one round per command, until ``None``."""
    hospitals = _Hospitals(specs, organizations=organizations)
    connection.send("ready")
    try:
        while (command := connection.recv()) is not None:
            connection.send(hospitals.round(*command))
    finally:
        hospitals.close()


def secure_rounds(hidden: str, *, orgs: int, rounds: int, processes: int = 1, hospital_processes: int = 1) -> dict:
    """``rounds`` secure-sum REST rounds of ``orgs`` organizations driving every stage concurrently,
    against ``processes`` coordinator processes on one database (organization ``i`` talks to
    process ``i % processes``, as behind a load balancer). The hospitals run as threads of
    this process (``hospital_processes=1``) or spread over that many processes (hospital
    ``i`` in process ``i % hospital_processes``), as the Flower simulation spreads its
    clients over its Ray workers."""
    import multiprocessing

    from safetensors.numpy import load as safetensors_load

    token = secrets.token_urlsafe(32)
    overrides = ["model=mlp", f"model.hidden_sizes={hidden}", f"aggregation_config.min_participants={orgs}",
                 f"federation.num_organizations={orgs}", f"aggregation_config.max_rounds={rounds}",
                 "aggregation_config.aggregation_method=secure_sum", "strategy=fedavg", "privacy_budget=none",
                 "aggregation_config.timeout_minutes=10"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started_services = [_start(folder, overrides, token)]
        hospitals: _Hospitals | None = None
        workers: list[tuple[multiprocessing.Process, Any]] = []
        try:
            started_services += [_start(folder, overrides, token) for _ in range(processes - 1)]
            admin = started_services[0][1]
            bases = [str(client.base_url) for _, client in started_services]
            specs = []
            for i in range(orgs):
                key = X25519PrivateKey.generate().public_key().public_bytes_raw()
                body = {"organization_name": f"Hospital {i}", "endpoint": f"https://h{i}.example.org/f",
                        "encryption_key": "0x" + key.hex()}  # fmt: skip
                created = admin.post(f"{PREFIX}/organizations", json=body).raise_for_status().json()
                specs.append((i, created["organization_id"], created["api_key"], bases[i % processes]))
            if hospital_processes == 1:
                hospitals = _Hospitals(specs, organizations=orgs)
            else:
                context = multiprocessing.get_context("spawn")
                for k in range(hospital_processes):
                    ours, theirs = context.Pipe()
                    worker = context.Process(target=_hospital_process, args=(theirs, specs[k::hospital_processes], orgs), daemon=True)
                    worker.start()
                    workers.append((worker, ours))
                for _, connection in workers:
                    if connection.recv() != "ready":
                        raise RuntimeError("a hospital process did not start")
            per_round, sizes, exchanges = [], [], []
            for number in range(1, rounds + 1):
                size_before = _db_bytes(folder)
                deadline = time.perf_counter() + 300
                while (state := admin.get(f"{PREFIX}/rounds/current").json())["round"] != number or state["status"] != "open":
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"round {number} did not open: {state}")
                    time.sleep(0.02)
                started = time.perf_counter()
                raw = admin.get(f"{PREFIX}/model", headers={"Accept": "application/octet-stream"}).content
                tensors = safetensors_load(raw)
                sizes.append(sum(int(t.size) for t in tensors.values()))
                command = (number, state["model_version"], [tuple(t.shape) for t in tensors.values()])
                if hospitals is not None:
                    outcomes = [hospitals.round(*command)]
                else:
                    for _, connection in workers:
                        connection.send(command)
                    outcomes = [connection.recv() for _, connection in workers]
                seconds = time.perf_counter() - started
                contributors = [c for counts, _ in outcomes for c in counts]
                exchanges += [e for _, log in outcomes for e in log]
                per_round.append({"round": number, "seconds": round(seconds, 3), "contributors": contributors[0],
                                  "db_growth_bytes": _db_bytes(folder) - size_before})  # fmt: skip
            steady = [r["seconds"] for r in per_round[1:]] or [per_round[0]["seconds"]]
            posts = [(seconds, size) for method, _, seconds, size in exchanges if method == "POST"]
            return {"organizations": orgs, "processes": processes, "hospital_processes": hospital_processes,
                    "parameters": sizes[0], "rounds": per_round,
                    "mean_round_seconds": round(float(np.mean(steady)), 3),
                    "rounds_averaged": f"{2 if len(per_round) >= 2 else 1}..{len(per_round)}",
                    "requests": {**_percentiles([e[2] for e in exchanges]), "count": len(exchanges),
                                 "excluded": "long polls (GET /rounds/current, GET /rounds/{round} with wait_seconds) and "
                                             "the wait of stage messages (Server-Timing: wait)"},
                    "posts": {**_percentiles([p[0] for p in posts]), "count": len(posts)},
                    "ingest_mb_per_s": round(sum(p[1] for p in posts) / 1e6 / sum(p[0] for p in posts), 1),
                    "db_growth_bytes_per_round": int(np.mean([r["db_growth_bytes"] for r in per_round[1:] or per_round]))}  # fmt: skip
        finally:
            if hospitals is not None:
                hospitals.close()
            for worker, connection in workers:
                try:
                    connection.send(None)
                except OSError:
                    pass
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
            for service, client in started_services:
                client.close()
                service.terminate()
                service.wait(timeout=30)


def flower_secure_round(parameters: int, *, orgs: int, rounds: int) -> dict:
    """The in-process Flower simulation's secure-sum round (``benchmarks/secure_sum.py``, method ``ours``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from secure_sum import simulate, summarize_simulation

    return summarize_simulation(simulate("ours", parameters, orgs, rounds, sys.stderr), rounds)


def measure(label: str, hidden: str, *, orgs: int, downloads: int, rounds: int) -> dict:
    """Start one service for a model size and measure it."""
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _ORG_KEYS.clear()
        overrides = ["model=mlp", f"model.hidden_sizes={hidden}", f"aggregation_config.min_participants={orgs}",
                     f"federation.num_organizations={orgs}", f"aggregation_config.max_rounds={rounds}",
                     "aggregation_config.aggregation_method=fedavg", "strategy=fedavg", "privacy_budget=none"]  # fmt: skip
        started = time.perf_counter()
        process, client = _start(folder, overrides, token)
        try:
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
                _ORG_KEYS.append((response.json()["organization_id"], response.json()["api_key"]))
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
            plain = _plain_rounds(client, folder, rounds=rounds, orgs=orgs)
            return {
                "plain_rounds": plain,
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES),
                        help=f"model sizes, space- or comma-separated, among {sorted(SIZES)} (e.g. --sizes 10k,1M)")
    parser.add_argument("--secure-only", action="store_true", help="only the secure-sum REST vs Flower comparison")
    parser.add_argument("--processes", default="1",
                        help="coordinator process counts on one database for the secure-sum rounds, comma-separated "
                             "(e.g. 1,2: each is measured, side by side; the first is the headline)")  # fmt: skip
    parser.add_argument("--hospital-processes", default="1",
                        help="how many processes the hospitals run in, comma-separated (1: threads of this process; "
                             "2: spread over two, as the Flower simulation spreads its clients over 2 Ray workers)")  # fmt: skip
    args = parser.parse_args()
    counts = _counts(parser, "--processes", args.processes)
    hospital_counts = _counts(parser, "--hospital-processes", args.hospital_processes)
    labels = [label for item in args.sizes for label in item.split(",") if label]
    unknown = [label for label in labels if label not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown size(s) {unknown}; expected some of {sorted(SIZES)}")
    results = []
    for label in labels:
        hidden = SIZES[label]
        result = {"model": label} if args.secure_only else measure(label, hidden, orgs=args.orgs, downloads=args.downloads, rounds=args.rounds)
        configurations = [(counts[0], h) for h in hospital_counts] + [(n, hospital_counts[0]) for n in counts[1:]]
        measured = {f"coordinators={n},hospital_processes={h}": secure_rounds(
            hidden, orgs=args.orgs, rounds=args.rounds, processes=n, hospital_processes=h) for n, h in configurations}  # fmt: skip
        rest = next(iter(measured.values()))
        flower = flower_secure_round(rest["parameters"], orgs=args.orgs, rounds=args.rounds)
        result["secure_sum"] = {"rest": rest, "flower_simulation": flower, "rest_by_configuration": measured}
        ratios = {name: round(r["mean_round_seconds"] / flower["mean_round_seconds"], 2)
                  for name, r in measured.items() if flower.get("mean_round_seconds")}  # fmt: skip
        ratio = next(iter(ratios.values()), None)
        result["secure_sum"]["secure_ratio"] = ratio
        result["summary"] = {**_summary(result, rest, flower, ratio), "headline_configuration": next(iter(measured)),
                             "rest_secure_round_seconds_by_configuration": {name: r["mean_round_seconds"]
                                                                             for name, r in measured.items()},
                             "secure_ratio_by_configuration": ratios}  # fmt: skip
        results.append(result)
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}, "orgs": args.orgs,
                      "rounds": args.rounds, "command": " ".join(["python", "benchmarks/rest.py", *sys.argv[1:]]),
                      "results": results}, indent=2))  # fmt: skip


def _counts(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    """Comma-separated positive integers (``1,2``), or a usage error naming ``option``."""
    try:
        counts = [int(item) for item in text.split(",") if item]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        parser.error(f"{option}: expected comma-separated positive integers, got {text!r}")
    return counts


def _summary(result: dict, rest: dict, flower: dict, ratio: float | None) -> dict:
    """The headline figures of one model size (steady-state rounds, i.e. rounds 2.. when >= 2 ran)."""
    plain = result.get("plain_rounds")
    flower_mean = flower.get("mean_round_seconds")
    return {
        "parameters": rest["parameters"],
        "rest_secure_round_seconds": rest["mean_round_seconds"],
        "rest_plain_round_seconds": plain["mean_round_seconds"] if plain else None,
        "flower_sim_secure_round_seconds": round(flower_mean, 3) if flower_mean else None,
        "secure_ratio_rest_over_flower": ratio,
        "target_ratio": 2.0,
        "rest_secure_request_latency": {k: rest["requests"][k] for k in ("p50_ms", "p99_ms")},
        "rest_plain_submit_latency": plain["submit"] if plain else None,
        "rest_secure_ingest_mb_per_s": rest["ingest_mb_per_s"],
        "rest_plain_ingest_mb_per_s": plain["ingest_mb_per_s"] if plain else None,
        "rest_secure_db_growth_bytes_per_round": rest["db_growth_bytes_per_round"],
        "rest_plain_db_growth_bytes_per_round": plain["db_growth_bytes_per_round"] if plain else None,
    }


if __name__ == "__main__":
    main()
