"""Benchmark: our secure sum vs plain FedAvg vs Flower's SecAgg+, printed as one JSON document.

    python benchmarks/secure_sum.py                     # 10k and 1M parameters, 5 and 10 clients, 3 rounds
    python benchmarks/secure_sum.py --sizes 10000 --clients 5 --rounds 2
    python benchmarks/secure_sum.py --quick             # 2 rounds, fewer in-process repetitions

Every client of every method is the same synthetic client: partition ``p`` returns, in round
``r``, a deterministic pseudo-random float32 vector of the model size (uniform in
[-0.01, 0.01], seeded by (size, p, r)) with weight ``num_examples = 50 + round(100 p/(n-1))``
(50..150). There is no training: what differs between the methods is aggregation only.

Sections of the output (see ``methodology`` in the JSON for the details):

1. ``simulation``: round wall time in ``flwr.simulation.run_simulation`` (Ray backend, one
   subprocess per simulation) for
   - ``fedavg``: a Message-API ServerApp driving ``flwr.serverapp.strategy.FedAvg`` (Flower's own
     ``Strategy.start``); the client replies with its update as ``arrays``;
   - ``ours_malicious``: the same in ``secure_sum.mode = "malicious"`` (consistency check);
   - ``ours``: ``OneliacStrategy(FedAvg(...), aggregator=SecureSumAggregator(...))``; the client
     masks with ``oneliac_flwr.flower.clientapp._masked_reply`` and answers ``train.secure_keys``
     / ``train.secure_unmask`` with our real ClientApp's handlers;
   - ``secaggplus``: legacy ``ServerApp`` + ``LegacyContext`` + ``DefaultWorkflow(fit_workflow=
     SecAggPlusWorkflow(...))`` + legacy ``FedAvg``, legacy ``ClientApp(client_fn, mods=
     [secaggplus_mod])`` with a ``NumPyClient`` returning the update;
   - ``oneliac_plain`` (extra, not in the targets): ``OneliacStrategy`` with ``PlainAggregator``,
     to split ours' overhead into wrapper and protocol.
2. ``in_process``: compute time outside the engine (ours through ``oneliac_flwr.secure``;
   SecAgg+ through its own workflow stages and client mod), upload bytes, max abs error.
3. ``mask_rate``: our mask generation vs the raw AES-256-CTR keystream of ``cryptography``.
4. ``added_time``: secure methods minus plain FedAvg per round at the largest model size.

Numbers depend on the machine and on its load (the load average is reported). stdout carries
the JSON only; simulation logs go to ``--log`` (default: stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _path in (str(REPO), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

SEED = 20240917
UPDATE_LOW, UPDATE_HIGH = -0.01, 0.01
WEIGHT_LOW, WEIGHT_HIGH = 50, 150
# Secure-sum settings: clip_norm above any synthetic update's L2 norm (<= 0.01 sqrt(N) = 10 at
# N = 1M, ~5.8 on average), so nothing is clipped; weight_bound above every weight.
CLIP_NORM = 10.0
WEIGHT_BOUND = 200
MAX_PARTICIPANTS = 16
GRAPH = "auto"  # secure_sum.graph: auto | complete | sparse
#: After the timed rounds, each simulation runs this many exchanges with every node whose
#: handler returns at once (``train.noop``): the engine's own cost of one exchange.
NOOP_ACTION = "noop"
NOOP_REPEATS = 3
# SecAgg+ quantization matched to ours: the same per-coordinate range (|x_i| <= ||x|| <= 10)
# and the same weight bound; quantization_range and modulus_range stay at flwr's defaults.
SECAGG_CLIPPING_RANGE = CLIP_NORM
SECAGG_MAX_WEIGHT = float(WEIGHT_BOUND)
METHODS = ("fedavg", "ours", "ours_malicious", "secaggplus", "oneliac_plain")  # oneliac_plain: extra, see METHODOLOGY
REQUIRED = ("fedavg", "ours", "secaggplus")
BACKEND_CONFIG = {
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False},
}
CHILD_TIMEOUT_SECONDS = 1800


# --------------------------------------------------------------------------- synthetic clients
def synthetic_update(partition_id: int, server_round: int, size: int) -> np.ndarray:
    """The update partition ``partition_id`` sends in ``server_round`` (float32)."""
    rng = np.random.default_rng([SEED, size, partition_id, server_round])
    return rng.uniform(UPDATE_LOW, UPDATE_HIGH, size).astype(np.float32)


def synthetic_weight(partition_id: int, num_clients: int) -> int:
    """``num_examples`` of partition ``partition_id``: 50..150."""
    return WEIGHT_LOW + round((WEIGHT_HIGH - WEIGHT_LOW) * partition_id / max(num_clients - 1, 1))


def exact_weighted_mean(size: int, num_clients: int, server_round: int) -> np.ndarray:
    """Weighted mean of the round's updates, accumulated in extended precision, as float64."""
    total = np.zeros(size, dtype=np.longdouble)
    weight_sum = 0
    for pid in range(num_clients):
        w = synthetic_weight(pid, num_clients)
        total += synthetic_update(pid, server_round, size).astype(np.longdouble) * w
        weight_sum += w
    return (total / weight_sum).astype(np.float64)


def secure_sum_config(num_clients: int, rounds: int, mode: str = "semi-honest") -> Any:
    from oneliac_flwr.config import ExperimentConfig

    return ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": num_clients},
            "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": 2, "max_rounds": rounds},
            "strategy": {"fraction_evaluate": 0.0},
            "secure_sum": {"clip_norm": CLIP_NORM, "weight_bound": WEIGHT_BOUND, "max_participants": MAX_PARTICIPANTS,
                           "mode": mode, "graph": GRAPH},
        }
    )


def secagg_settings(num_clients: int) -> Any:
    from _secagg_baseline import SecAggSettings

    return SecAggSettings.for_clients(num_clients, max_weight=SECAGG_MAX_WEIGHT, clipping_range=SECAGG_CLIPPING_RANGE)


# --------------------------------------------------------------------------- Message-API apps
def _round_of(msg: Any) -> int:
    config = msg.content.get("config")
    return int(config.get("server-round", 0)) if config is not None else 0


def _timed_strategy(base: type) -> type:
    """``base`` with the wall time of each round recorded: configure_train .. aggregate_train."""

    class Timed(base):  # type: ignore[misc, valid-type]
        round_seconds: list[float]
        round_windows: list[tuple[float, float]]

        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            self._round_started = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            out = super().aggregate_train(server_round, replies)
            ended = time.perf_counter()
            self.round_seconds.append(ended - self._round_started)
            self.round_windows.append((self._round_started, ended))
            return out

    Timed.__name__ = f"Timed{base.__name__}"
    return Timed


def build_message_api_apps(method: str, size: int, num_clients: int, rounds: int, out: dict[str, Any]) -> tuple[Any, Any]:
    """ServerApp + ClientApp for ``fedavg`` (flwr FedAvg), ``ours`` (OneliacStrategy + secure sum) or
    ``oneliac_plain`` (OneliacStrategy + PlainAggregator: our wrapper without the secure sum)."""
    from _secagg_baseline import CLIENT_SECONDS, TimingGrid
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    fedavg_kwargs = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": num_clients,
        "min_evaluate_nodes": 0,
        "min_available_nodes": num_clients,
    }
    from oneliac_flwr.flower.portable import PortableClientApp

    out.update({"round_seconds": [], "round_windows": [], "exchanges": [], "max_abs_error": {}, "counted": {}, "secure_sum": {}, "status": {}})
    server_app = ServerApp()
    # Every method's ClientApp reaches the engine's workers as a reference to bench_client_app
    # (as our real ClientApp does), not as pickled closures with every message.
    client_app = PortableClientApp(builder="secure_sum:bench_client_app", args=(method, size, num_clients, rounds, MAX_PARTICIPANTS, GRAPH))
    initial = lambda: ArrayRecord(numpy_ndarrays=[np.zeros(size, dtype=np.float32)])  # noqa: E731
    out["noop_exchange_seconds"] = []

    @client_app.train(NOOP_ACTION)
    def noop_train(msg: Message, context: Any) -> Message:
        return Message(content=RecordDict({}), reply_to=msg)

    def noop_exchanges(grid: Any) -> None:
        """The engine's floor: exchanges with every node whose handler returns at once."""
        nodes = sorted(grid.get_node_ids())
        for _ in range(NOOP_REPEATS):
            messages = [Message(content=RecordDict({}), dst_node_id=n, message_type=f"train.{NOOP_ACTION}") for n in nodes]
            started = time.perf_counter()
            replies = list(grid.send_and_receive(messages, timeout=600.0))
            seconds = time.perf_counter() - started
            if sum(not r.has_error() for r in replies) == len(nodes):
                out["noop_exchange_seconds"].append(seconds)

    if method == "fedavg":

        class CapturingFedAvg(_timed_strategy(FedAvg)):  # type: ignore[misc]
            captured: dict[int, np.ndarray]

            def aggregate_train(self, server_round: int, replies: Any) -> Any:
                replies = list(replies)
                arrays, metrics = super().aggregate_train(server_round, replies)
                if arrays is not None:
                    self.captured[server_round] = np.concatenate([a.ravel() for a in arrays.to_numpy_ndarrays()])
                    out["counted"][server_round] = sum(not m.has_error() for m in replies)
                return arrays, metrics

        @server_app.main()
        def fedavg_main(grid: Any, context: Any) -> None:
            strategy = CapturingFedAvg(**fedavg_kwargs)
            strategy.round_seconds, strategy.round_windows, strategy.captured = out["round_seconds"], out["round_windows"], {}
            strategy.start(grid=TimingGrid(grid, out["exchanges"]), initial_arrays=initial(), num_rounds=rounds, timeout=600.0)
            noop_exchanges(grid)
            for server_round, aggregate in strategy.captured.items():
                exact = exact_weighted_mean(size, num_clients, server_round)
                out["max_abs_error"][server_round] = float(np.max(np.abs(aggregate.astype(np.float64) - exact)))

        @client_app.train()
        def fedavg_train(msg: Message, context: Any) -> Message:
            started = time.perf_counter()
            pid = int(context.node_config["partition-id"])
            metrics = MetricRecord({"num-examples": synthetic_weight(pid, num_clients)})
            content = RecordDict(
                {"arrays": ArrayRecord(numpy_ndarrays=[synthetic_update(pid, _round_of(msg), size)]), "metrics": metrics}
            )
            metrics[CLIENT_SECONDS] = time.perf_counter() - started
            return Message(content=content, reply_to=msg)

        return server_app, client_app

    from oneliac_flwr.flower.clientapp import Organization, _masked_reply, build_client_app
    from oneliac_flwr.masked_statistics import MaskedStatistics, slots as statistics_slots
    from oneliac_flwr.flower.plain import PlainAggregator
    from oneliac_flwr.flower.records import ARRAYS, INFO, METRICS, NUM_EXAMPLES, reply_info
    from oneliac_flwr.flower.secure_sum import CONFIRM_ACTION, KEYS_ACTION, UNMASK_ACTION, SecureSumAggregator
    from oneliac_flwr.flower.strategy import OneliacStrategy

    config = secure_sum_config(num_clients, rounds, mode="malicious" if method == "ours_malicious" else "semi-honest")

    def record_strategy(strategy: Any) -> None:
        for server_round, record in sorted(strategy.records.items()):
            out["status"][server_round] = record.status
            out["counted"][server_round] = len(record.participants)

    if method == "oneliac_plain":

        class CapturingPlain(PlainAggregator):
            captured: dict[int, np.ndarray]

            def aggregate(self, server_round: int, replies: Any, global_arrays: Any, *args: Any, **kwargs: Any) -> Any:
                aggregate = super().aggregate(server_round, replies, global_arrays, *args, **kwargs)
                mean = np.concatenate([np.asarray(a, np.float64).ravel() for a in aggregate.mean_update])
                start = np.concatenate([np.asarray(g, np.float64).ravel() for g in global_arrays])
                self.captured[server_round] = mean + start  # the clients sent their update as "weights"
                return aggregate

        @server_app.main()
        def plain_main(grid: Any, context: Any) -> None:
            aggregator = CapturingPlain()
            aggregator.captured = {}
            strategy = _timed_strategy(OneliacStrategy)(
                FedAvg(**fedavg_kwargs),
                aggregator=aggregator,
                min_participants=config.aggregation_config.min_participants,
                rng=np.random.default_rng(SEED),
            )
            strategy.round_seconds, strategy.round_windows = out["round_seconds"], out["round_windows"]
            strategy.start(grid=TimingGrid(grid, out["exchanges"]), initial_arrays=initial(), num_rounds=rounds, timeout=600.0, train_config=ConfigRecord())
            noop_exchanges(grid)
            record_strategy(strategy)
            for server_round, mean in aggregator.captured.items():
                exact = exact_weighted_mean(size, num_clients, server_round)
                out["max_abs_error"][server_round] = float(np.max(np.abs(mean - exact)))

        @client_app.train()
        def plain_train(msg: Message, context: Any) -> Message:
            started = time.perf_counter()
            pid = int(context.node_config["partition-id"])
            metrics = MetricRecord({NUM_EXAMPLES: synthetic_weight(pid, num_clients)})
            content = RecordDict(
                {
                    ARRAYS: ArrayRecord(numpy_ndarrays=[synthetic_update(pid, _round_of(msg), size)]),
                    METRICS: metrics,
                    INFO: reply_info(organization=f"org-{pid}"),
                }
            )
            metrics[CLIENT_SECONDS] = time.perf_counter() - started
            return Message(content=content, reply_to=msg)

        return server_app, client_app

    if method not in ("ours", "ours_malicious"):
        raise ValueError(method)

    class CapturingSecureSum(SecureSumAggregator):
        captured: dict[int, np.ndarray]

        def aggregate(self, server_round: int, replies: Any, *args: Any, **kwargs: Any) -> Any:
            aggregate = super().aggregate(server_round, replies, *args, **kwargs)
            self.captured[server_round] = np.concatenate([np.asarray(a, np.float64).ravel() for a in aggregate.mean_update])
            return aggregate

    # The statistics a client without DP appends (one label class; values irrelevant here).
    BENCH_STATISTICS = MaskedStatistics(train_loss=0.5, train_accuracy=0.5, eval_loss=None, eval_accuracy=None, label_fractions=(1.0,))

    @server_app.main()
    def ours_main(grid: Any, context: Any) -> None:
        aggregator = CapturingSecureSum(
            config, run_id=int(context.run_id), num_parameters=size, statistics_slots=statistics_slots(1)
        )
        aggregator.captured = {}
        strategy = _timed_strategy(OneliacStrategy)(
            FedAvg(**fedavg_kwargs),
            aggregator=aggregator,
            min_participants=config.aggregation_config.min_participants,
            rng=np.random.default_rng(SEED),
        )
        strategy.round_seconds, strategy.round_windows = out["round_seconds"], out["round_windows"]
        strategy.start(grid=TimingGrid(grid, out["exchanges"]), initial_arrays=initial(), num_rounds=rounds, timeout=600.0, train_config=ConfigRecord())
        noop_exchanges(grid)
        record_strategy(strategy)
        for server_round, record in sorted(strategy.records.items()):
            if record.secure_sum:
                out["secure_sum"][server_round] = {
                    k: record.secure_sum[k]
                    for k in ("exchanges", "keys_advertised", "bytes_uploaded_per_client", "ring_bits", "frac_bits", "error_bound_sum")
                }
                out["counted"][server_round] = len(record.secure_sum["counted"])
        for server_round, mean in aggregator.captured.items():
            exact = exact_weighted_mean(size, num_clients, server_round)
            out["max_abs_error"][server_round] = float(np.max(np.abs(mean - exact)))

    real_app = build_client_app(config)  # our ClientApp: its secure_keys / secure_unmask handlers

    @client_app.train()
    def ours_train(msg: Message, context: Any) -> Message:
        started = time.perf_counter()
        pid = int(context.node_config["partition-id"])
        update = synthetic_update(pid, _round_of(msg), size)
        # As our ClientApp does under secure sum without DP: the weight and the masked
        # statistics ride inside the masked vector; num-examples is a placeholder 1.
        reply = _masked_reply(
            msg, context, Organization(f"org-{pid}", pid, None, 0), [update], weight=synthetic_weight(pid, num_clients),
            statistics=BENCH_STATISTICS, declared=None, clip=False,
        )  # fmt: skip
        reply.content[METRICS][CLIENT_SECONDS] = time.perf_counter() - started
        return reply

    def delegate(msg: Message, context: Any) -> Message:
        started = time.perf_counter()
        reply = real_app(msg, context)
        if reply.has_content():
            reply.content["bench"] = MetricRecord({CLIENT_SECONDS: time.perf_counter() - started})
        return reply

    @client_app.train(KEYS_ACTION)
    def ours_keys(msg: Message, context: Any) -> Message:
        return delegate(msg, context)

    @client_app.train(UNMASK_ACTION)
    def ours_unmask(msg: Message, context: Any) -> Message:
        return delegate(msg, context)

    @client_app.train(CONFIRM_ACTION)
    def ours_confirm(msg: Message, context: Any) -> Message:
        return delegate(msg, context)

    return server_app, client_app


def bench_client_app(method: str, size: int, num_clients: int, rounds: int, max_participants: int | None, graph: str) -> Any:
    """The ClientApp of ``build_message_api_apps`` (what an engine worker rebuilds)."""
    global MAX_PARTICIPANTS, GRAPH
    MAX_PARTICIPANTS, GRAPH = max_participants, graph
    return build_message_api_apps(method, size, num_clients, rounds, {})[1]


# --------------------------------------------------------------------------- one simulation (child)
def run_child(spec: dict[str, Any]) -> None:
    """Run one simulation and write its measurements to ``spec['out']`` (JSON)."""
    import logging

    from flwr.simulation import run_simulation

    global MAX_PARTICIPANTS, GRAPH
    method, size, num_clients, rounds = spec["method"], spec["size"], spec["clients"], spec["rounds"]
    MAX_PARTICIPANTS = spec.get("max_participants", MAX_PARTICIPANTS)
    GRAPH = spec.get("graph", GRAPH)
    out: dict[str, Any] = {"method": method, "size": size, "clients": num_clients, "rounds": rounds}
    if method == "secaggplus":
        from _secagg_baseline import build_secaggplus_apps, new_results

        results = new_results()
        settings = secagg_settings(num_clients)
        server_app, client_app = build_secaggplus_apps(
            size=size,
            num_clients=num_clients,
            rounds=rounds,
            settings=settings,
            update_fn=lambda pid, rnd: synthetic_update(pid, rnd, size),
            weight_fn=lambda pid: synthetic_weight(pid, num_clients),
            reference_fn=lambda rnd: exact_weighted_mean(size, num_clients, rnd),
            results=results,
        )
        out.update(results)
        out["settings"] = settings.to_dict()
    else:
        server_app, client_app = build_message_api_apps(method, size, num_clients, rounds, out)
    logging.getLogger("oneliac_flwr").setLevel(logging.WARNING)
    started = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_clients, backend_config=BACKEND_CONFIG)
    out["simulation_wall_seconds"] = time.perf_counter() - started
    if method == "secaggplus":
        out.update(results)
    Path(spec["out"]).write_text(json.dumps(out))


def _session_processes(session_id: int) -> list[int]:
    """PIDs of live processes in session ``session_id`` (the child and what it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == session_id and fields[0] != "Z" and ("ray" in _cmdline(int(entry.name)) or sys.executable in _cmdline(int(entry.name))):
            pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def _reap_session(session_id: int, grace_seconds: float = 15.0) -> list[str]:
    """Wait for the session's processes to exit; SIGTERM then SIGKILL those that do not."""
    deadline = time.monotonic() + grace_seconds
    while _session_processes(session_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    stopped = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _session_processes(session_id)
        for pid in pids:
            stopped.append(f"{pid} {_cmdline(pid)} ({sig.name})")
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids:
            time.sleep(2.0)
    return stopped


def simulate(method: str, size: int, num_clients: int, rounds: int, log: Any, timeout: float = CHILD_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Run one simulation in its own subprocess (Ray state is per process), killed after ``timeout`` s."""
    with tempfile.TemporaryDirectory(prefix="secure-sum-bench-") as tmp:
        out_path = Path(tmp) / "result.json"
        spec = {"method": method, "size": size, "clients": num_clients, "rounds": rounds, "out": str(out_path),
                "max_participants": MAX_PARTICIPANTS, "graph": GRAPH}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(BENCH_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            returncode = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            returncode = child.wait()
            timed_out = True
        else:
            timed_out = False
        wall = time.perf_counter() - started
        # Anything the child left behind (it led its own session) is ours: give it time to exit
        # on its own (Ray shuts down asynchronously), then stop it by PID.
        leftovers = _reap_session(child.pid)
        if timed_out:
            return {"method": method, "size": size, "clients": num_clients, "error": f"did not finish within {timeout:g} s", "leftover_processes_stopped": leftovers}
        if returncode != 0 or not out_path.is_file():
            return {"method": method, "size": size, "clients": num_clients, "error": f"child exited with {returncode}", "leftover_processes_stopped": leftovers}
        result = json.loads(out_path.read_text())
    result["subprocess_wall_seconds"] = wall
    result["leftover_processes_stopped"] = leftovers
    return result


def _client_seconds(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"client_handler_seconds_mean": statistics.fmean(values), "client_handler_seconds_max": max(values)}


def summarize_simulation(result: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Mean round time (rounds 2.. if >= 2 rounds ran, else round 1) and per-round details."""
    from _secagg_baseline import exchange_breakdown

    if "error" in result:
        return result
    seconds = result["round_seconds"]
    steady = seconds[1:] if len(seconds) >= 2 else seconds
    errors = {int(k): v for k, v in result["max_abs_error"].items()}
    summary = {
        "round_seconds": [round(s, 4) for s in seconds],
        "mean_round_seconds": statistics.fmean(steady) if steady else None,
        "min_round_seconds": min(steady) if steady else None,
        "rounds_averaged": f"{2 if len(seconds) >= 2 else 1}..{len(seconds)}",
        "rounds_completed": len(seconds),
        "rounds_with_aggregate": sorted(errors),
        "counted_per_round": {int(k): v for k, v in result["counted"].items()},
        "max_abs_error": max(errors.values()) if errors else None,
        "simulation_wall_seconds": round(result["simulation_wall_seconds"], 2),
        "leftover_processes_stopped": result["leftover_processes_stopped"],
    }
    breakdown = exchange_breakdown([tuple(w) for w in result["round_windows"]], [tuple(e) for e in result["exchanges"]])
    steady_breakdown = breakdown[1:] if len(breakdown) >= 2 else breakdown
    if steady_breakdown:
        positions = max(len(b["exchanges"]) for b in steady_breakdown)
        summary["breakdown_mean_seconds"] = {
            "exchanges_per_round": [len(b["exchanges"]) for b in breakdown],
            "each_exchange": [
                {
                    "type": steady_breakdown[0]["exchanges"][i][0],
                    "seconds": statistics.fmean(b["exchanges"][i][1] for b in steady_breakdown if len(b["exchanges"]) > i),
                    **_client_seconds([cs for b in steady_breakdown if len(b["exchanges"]) > i for cs in b["exchanges"][i][2]]),
                }
                for i in range(positions)
            ],
            "in_exchanges": statistics.fmean(b["exchange_seconds"] for b in steady_breakdown),
            "server_outside_exchanges": statistics.fmean(b["outside_exchanges_seconds"] for b in steady_breakdown),
        }
    if result.get("noop_exchange_seconds"):
        summary["noop_exchange_seconds"] = [round(v, 4) for v in result["noop_exchange_seconds"]]
        summary["noop_exchange_seconds_mean"] = statistics.fmean(result["noop_exchange_seconds"])
    if len(seconds) < rounds or len(errors) < rounds:
        summary["warning"] = f"{len(seconds)} rounds timed, {len(errors)} aggregates for {rounds} rounds"
    if result.get("secure_sum"):
        summary["secure_sum_records"] = {int(k): v for k, v in result["secure_sum"].items()}
    if result.get("status"):
        summary["status"] = {int(k): v for k, v in result["status"].items()}
    if result.get("settings"):
        summary["settings"] = result["settings"]
        summary["legacy_aggregate_fit_seconds"] = [round(v, 4) for _, v in sorted(result["aggregate_fit_seconds"].items())]
    return summary


# --------------------------------------------------------------------------- in-process: ours
def ours_in_process(size: int, num_clients: int, rounds: int, mode: str = "semi-honest") -> dict[str, Any]:
    """Full rounds of ``oneliac_flwr.secure`` in memory (no Flower): time, bytes, error."""
    from oneliac_flwr.flower.secure_sum import graph_for, ring_for, threshold_for
    from oneliac_flwr.secure import Identity, SecureSumClient, SecureSumServer

    config = secure_sum_config(num_clients, rounds, mode=mode)
    spec = ring_for(config)
    run_id = 99
    node_ids = [(2**63 + 7919 * (i + 1) * 1_000_003) % 2**64 for i in range(num_clients)]
    server = SecureSumServer(run_id=run_id, spec=spec, length=size, mode=mode)
    clients = {
        nid: SecureSumClient(
            node_id=nid, run_id=run_id, identity=Identity.generate(), organization=f"org-{i}", mode=mode  # type: ignore[arg-type]
        )
        for i, nid in enumerate(node_ids)
    }
    pid_of = {nid: i for i, nid in enumerate(node_ids)}
    threshold = threshold_for(num_clients, config.aggregation_config.min_participants)
    per_round = []
    for server_round in range(1, rounds + 1):
        started = time.perf_counter()
        plan = graph_for(config, num_clients)  # the adapter's sharing graph (secure_sum.graph)
        for nid in server.needs_keys(node_ids, round=server_round, threshold=plan.threshold):
            server.register_keys(nid, clients[nid].advertise_keys(round=server_round))
        stage_k = time.perf_counter() - started
        setup = server.round_setup(
            round=server_round, participants=node_ids, threshold=threshold, graph_degree=plan.degree,
            sharing_threshold=plan.threshold,
        )
        mask_seconds, receive_seconds, uploads, records = [], 0.0, [], []
        inputs = {nid: (synthetic_update(pid_of[nid], server_round, size), synthetic_weight(pid_of[nid], num_clients)) for nid in node_ids}
        messages = {}
        for nid in node_ids:
            x, w = inputs[nid]
            x64 = x.astype(np.float64)  # what _masked_reply hands to mask(): the update as float64
            started = time.perf_counter()
            messages[nid] = clients[nid].mask(x64, weight=w, setup=setup)
            mask_seconds.append(time.perf_counter() - started)
            m = messages[nid]
            shares = sum(len(c) for c in m.self_share_ciphertexts) + sum(len(c) for c in m.key_share_ciphertexts)
            uploads.append((m.masked.nbytes, shares))
            record = m.to_record()
            records.append(sum(len(v) if isinstance(v, (bytes, str)) else 8 for value in record.values() for v in (value if isinstance(value, list) else [value])))
        for nid in node_ids:
            started = time.perf_counter()
            server.receive_masked(nid, messages[nid])
            receive_seconds += time.perf_counter() - started
        confirm_client, confirm_server = [0.0], 0.0
        if mode == "malicious":  # stage C: every survivor signs the survivor set
            started = time.perf_counter()
            confirms = server.consistency_requests()
            confirm_server += time.perf_counter() - started
            confirm_client = []
            for nid, creq in confirms.items():
                started = time.perf_counter()
                signed = clients[nid].confirm_survivors(creq)
                confirm_client.append(time.perf_counter() - started)
                started = time.perf_counter()
                server.receive_consistency(nid, signed)
                confirm_server += time.perf_counter() - started
        started = time.perf_counter()
        requests = server.unmask_requests()
        request_seconds = time.perf_counter() - started + confirm_server
        client_unmask, receive_unmask, response_bytes = [], 0.0, []
        for nid, request in requests.items():
            started = time.perf_counter()
            response = clients[nid].unmask(request)
            client_unmask.append(time.perf_counter() - started)
            rec = response.to_record()
            response_bytes.append(sum(len(v) if isinstance(v, (bytes, str)) else 8 for value in rec.values() for v in (value if isinstance(value, list) else [value])))
            started = time.perf_counter()
            server.receive_unmask(nid, response)
            receive_unmask += time.perf_counter() - started
        started = time.perf_counter()
        result = server.finalize()
        finalize_seconds = time.perf_counter() - started
        weight_sum = sum(w for _, w in inputs.values())
        mean = result.weighted_sum / weight_sum
        exact = exact_weighted_mean(size, num_clients, server_round)
        per_round.append(
            {
                "round": server_round,
                "stage_k_seconds": stage_k,
                "client_mask_seconds": statistics.fmean(mask_seconds),
                "client_mask_seconds_max": max(mask_seconds),
                "client_unmask_seconds": statistics.fmean(client_unmask) + statistics.fmean(confirm_client),
                "server_receive_masked_seconds_total": receive_seconds,
                "server_unmask_seconds": request_seconds + receive_unmask + finalize_seconds,
                "server_unmask_requests_seconds": request_seconds,
                "server_receive_unmask_seconds_total": receive_unmask,
                "server_finalize_seconds": finalize_seconds,
                "masked_bytes": statistics.fmean(u[0] for u in uploads),
                "share_ciphertext_bytes": statistics.fmean(u[1] for u in uploads),
                "masked_input_record_bytes": statistics.fmean(records),
                "unmask_response_bytes": statistics.fmean(response_bytes),
                "max_abs_error": float(np.max(np.abs(mean - exact))),
                "error_bound_mean": float(result.error_bound / weight_sum),
                "counted": len(result.counted),
            }
        )
    steady = per_round[1:] if len(per_round) >= 2 else per_round

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in steady))

    masked, shares = med("masked_bytes"), med("share_ciphertext_bytes")
    return {
        "ring": {"bits": spec.bits, "frac_bits": spec.frac_bits, "clip_bound": spec.clip_bound, "weight_bound": spec.weight_bound, "max_participants": spec.max_participants},
        "threshold": threshold,
        "rounds_run": rounds,
        "rounds_summarized": f"median of rounds {steady[0]['round']}..{steady[-1]['round']}",
        "client_mask_seconds": med("client_mask_seconds"),
        "client_unmask_seconds": med("client_unmask_seconds"),
        "client_protocol_seconds": med("client_mask_seconds") + med("client_unmask_seconds"),
        "server_receive_masked_seconds_total": med("server_receive_masked_seconds_total"),
        "server_unmask_seconds": med("server_unmask_seconds"),
        "server_unmask_requests_plus_finalize_seconds": med("server_unmask_requests_seconds") + med("server_finalize_seconds"),
        "server_receive_unmask_seconds_total": med("server_receive_unmask_seconds_total"),
        "server_finalize_seconds": med("server_finalize_seconds"),
        "stage_k_seconds_round1": per_round[0]["stage_k_seconds"],
        "upload_bytes_per_client": {
            "masked_vector": masked,
            "masked_vector_per_parameter": masked / size,
            "share_ciphertexts": shares,
            "masked_plus_shares": masked + shares,
            "masked_plus_shares_per_parameter": (masked + shares) / size,
            "masked_input_record_without_vector": med("masked_input_record_bytes"),
            "unmask_response": med("unmask_response_bytes"),
            "all_stages_per_parameter": (masked + med("masked_input_record_bytes") + med("unmask_response_bytes")) / size,
        },
        "max_abs_error": max(r["max_abs_error"] for r in per_round),
        "error_bound_mean": per_round[-1]["error_bound_mean"],
        "per_round": per_round,
    }


def client_reply_in_process(size: int, num_clients: int, repeats: int) -> dict[str, Any]:
    """One client's train handler in-process, outside the engine: ours (``_masked_reply``,
    i.e. the adapter around ``mask()``: update, float64 flatten, norm, state load/save, records)
    vs a plain reply (the update in an ArrayRecord). Round 1 after stage K, every client."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from oneliac_flwr.flower.clientapp import Organization, _masked_reply, _save_secure_client, _secure_client
    from oneliac_flwr.flower.records import NUM_EXAMPLES, SECURE_SUM
    from oneliac_flwr.flower.secure_sum import graph_for, ring_for, threshold_for
    from oneliac_flwr.secure import MaskedInput, SecureSumServer

    run_id = 5
    config = secure_sum_config(num_clients, 1)
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    if TaskIdentity._run_id is None:  # Messages need a run identity outside a real run
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, 0
    try:
        node_ids = [300 + i for i in range(num_clients)]
        contexts = {nid: Context(run_id=run_id, node_id=nid, node_config={"partition-id": i}, state=RecordDict(), run_config={}) for i, nid in enumerate(node_ids)}
        server = SecureSumServer(run_id=run_id, spec=ring_for(config), length=size)
        ours, plain = [], []
        for server_round in range(1, repeats + 1):
            plan = graph_for(config, num_clients)
            for nid in server.needs_keys(node_ids, round=server_round, threshold=plan.threshold):
                probe = Message(content=RecordDict({}), dst_node_id=nid, message_type="train")
                client, _ = _secure_client(probe, contexts[nid])
                server.register_keys(nid, client.advertise_keys(round=server_round))
                _save_secure_client(contexts[nid], client)
            setup = server.round_setup(
                round=server_round, participants=node_ids, threshold=threshold_for(num_clients, 2),
                graph_degree=plan.degree, sharing_threshold=plan.threshold,
            )
            for i, nid in enumerate(node_ids):
                record = RecordDict({SECURE_SUM: ConfigRecord(setup.to_record()), "config": ConfigRecord({"server-round": server_round})})
                msg = Message(content=record, dst_node_id=nid, message_type="train")
                update, weight = synthetic_update(i, server_round, size), synthetic_weight(i, num_clients)
                started = time.perf_counter()
                reply = _masked_reply(
                    msg, contexts[nid], Organization(f"org-{i}", i, None, 0), [update], weight=weight, statistics=None,
                    declared=None, clip=False,
                )  # fmt: skip
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                RecordDict({"arrays": ArrayRecord(numpy_ndarrays=[update]), "metrics": MetricRecord({NUM_EXAMPLES: weight})})
                plain.append(time.perf_counter() - started)
                server.receive_masked(nid, MaskedInput.from_record(dict(reply.content[SECURE_SUM]), masked=reply.content["masked"].to_numpy_ndarrays()[0]))
            server.abort_round()  # stage U is measured by ours_in_process; every node keeps its next key
    finally:
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved
    return {
        "ours_masked_reply_seconds": statistics.median(ours),
        "plain_reply_seconds": statistics.median(plain),
        "samples": len(ours),
        "note": "median over clients and rounds; the update is generated outside the timed region",
    }


def plain_in_process(size: int, num_clients: int, repeats: int) -> dict[str, Any]:
    """Server compute of a plain weighted mean (what FedAvg's aggregation does), for scale."""
    updates = [synthetic_update(pid, 1, size) for pid in range(num_clients)]
    weights = [synthetic_weight(pid, num_clients) for pid in range(num_clients)]
    total = sum(weights)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        acc = updates[0] * (weights[0] / total)
        for u, w in zip(updates[1:], weights[1:], strict=True):
            acc += u * (w / total)
        best = min(best, time.perf_counter() - started)
    exact = exact_weighted_mean(size, num_clients, 1)
    return {"server_weighted_mean_seconds": best, "max_abs_error_float32": float(np.max(np.abs(acc.astype(np.float64) - exact))), "upload_bytes_per_parameter": 4.0}


# --------------------------------------------------------------------------- mask rate
def mask_rate(num_elements: int, repeats: int, streams: int = 4) -> dict[str, Any]:
    """Our mask generation vs the raw AES-256-CTR keystream, same bytes, interleaved, best-of."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    from oneliac_flwr.secure.masks import apply_masks, keystream

    nbytes = num_elements * 4
    keys = [os.urandom(32) for _ in range(streams)]
    zeros = bytes(nbytes)
    out_buf = bytearray(nbytes + 15)
    acc = np.zeros(num_elements, dtype=np.uint32)
    signed = [(k, 1 if i % 2 else -1) for i, k in enumerate(keys)]

    def raw_update() -> None:  # the brief's reference: encryptor().update(zeros)
        for key in keys:
            Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(zeros)

    def raw_update_into() -> None:  # stricter reference: no allocation at all
        for key in keys:
            Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, out_buf)

    def ours_keystream() -> None:
        for key in keys:
            keystream(key, num_elements, np.uint32)

    def ours_apply() -> None:
        apply_masks(acc, signed)

    def secagg_prg() -> None:
        for key in keys:
            pseudo_rand_gen(key, 1 << 32, [(num_elements,)])

    candidates = {"raw_update": raw_update, "raw_update_into": raw_update_into, "ours_keystream": ours_keystream, "ours_apply_masks": ours_apply, "secaggplus_pseudo_rand_gen": secagg_prg}
    best = {name: float("inf") for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    total_bytes = nbytes * streams
    rate = {name: total_bytes / t for name, t in best.items()}
    return {
        "streams": streams,
        "bytes_per_stream": nbytes,
        "elements_per_stream": num_elements,
        "repeats_best_of": repeats,
        "bytes_per_second": {k: round(v) for k, v in rate.items()},
        "ratio_ours_keystream_vs_raw_update": rate["ours_keystream"] / rate["raw_update"],
        "ratio_ours_keystream_vs_raw_update_into": rate["ours_keystream"] / rate["raw_update_into"],
        "ratio_ours_apply_masks_vs_raw_update": rate["ours_apply_masks"] / rate["raw_update"],
        "ratio_secaggplus_prg_vs_raw_update": rate["secaggplus_pseudo_rand_gen"] / rate["raw_update"],
        "note": "rates in bytes of 32-bit mask elements per second; SecAgg+'s pseudo_rand_gen emits int64 "
        "holding 32-bit values, counted here as 4 bytes per element (its real output is 8 bytes each)",
    }


# --------------------------------------------------------------------------- main
def _compact(value: Any) -> Any:
    """Floats to 5 significant digits (timings are not more precise than that), recursively."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--rounds", type=int, default=3, help="simulated rounds per run (round 1 excluded from the mean if >= 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quick", action="store_true", help="2 simulated rounds, fewer in-process repetitions")
    parser.add_argument("--skip-simulation", action="store_true", help="in-process measurements only")
    parser.add_argument("--log", type=str, default=None, help="file for simulation logs (default: stderr)")
    parser.add_argument("--details", action="store_true", help="keep per-round in-process data and full float precision")
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_child(json.loads(args.child))
        return

    rounds = 2 if args.quick else args.rounds
    in_process_rounds = 2 if args.quick else 3
    rate_repeats = 5 if args.quick else 15
    log = open(args.log, "a") if args.log else sys.stderr  # noqa: SIM115
    started_all = time.perf_counter()
    load_before = _load()

    from oneliac_flwr.flower.secure_sum import ring_for

    ring = ring_for(secure_sum_config(max(args.clients), rounds))

    # 3. mask rate first (quietest moment: no simulation has run yet)
    print("[secure_sum bench] mask rate", file=sys.stderr, flush=True)
    rate = mask_rate(max(max(args.sizes), 1 << 19), rate_repeats)

    configurations = []
    for size in args.sizes:
        for num_clients in args.clients:
            print(f"[secure_sum bench] in-process size={size} clients={num_clients}", file=sys.stderr, flush=True)
            entry: dict[str, Any] = {"size": size, "clients": num_clients, "weights": [synthetic_weight(p, num_clients) for p in range(num_clients)]}
            entry["in_process"] = {
                "fedavg": plain_in_process(size, num_clients, 5),
                "ours": ours_in_process(size, num_clients, in_process_rounds),
                "ours_malicious": ours_in_process(size, num_clients, in_process_rounds, mode="malicious"),
                "client_train_handler": client_reply_in_process(size, num_clients, 2),
            }
            if "secaggplus" in args.methods:
                from _secagg_baseline import secaggplus_in_process

                entry["in_process"]["secaggplus"] = secaggplus_in_process(
                    size=size,
                    num_clients=num_clients,
                    rounds=2,
                    settings=secagg_settings(num_clients),
                    update_fn=lambda pid, rnd, size=size: synthetic_update(pid, rnd, size),
                    weight_fn=lambda pid, n=num_clients: synthetic_weight(pid, n),
                    reference_fn=lambda rnd, size=size, n=num_clients: exact_weighted_mean(size, n, rnd),
                )
            sim: dict[str, Any] = {}
            if not args.skip_simulation:
                for method in args.methods:
                    print(f"[secure_sum bench] simulation {method} size={size} clients={num_clients}", file=sys.stderr, flush=True)
                    sim[method] = summarize_simulation(simulate(method, size, num_clients, rounds, log), rounds)
                base = sim.get("fedavg", {}).get("mean_round_seconds")
                for method, row in sim.items():
                    if base and row.get("mean_round_seconds") is not None:
                        row["ratio_to_fedavg"] = row["mean_round_seconds"] / base
                        row["added_seconds_vs_fedavg"] = row["mean_round_seconds"] - base
                wrapper = sim.get("oneliac_plain", {}).get("mean_round_seconds")
                if wrapper and sim.get("ours", {}).get("mean_round_seconds") is not None:
                    sim["ours"]["ratio_to_oneliac_plain"] = sim["ours"]["mean_round_seconds"] / wrapper
            entry["simulation"] = sim
            configurations.append(entry)

    # 4. added time at the largest size
    largest = max(args.sizes)
    added = []
    for entry in configurations:
        sim = entry["simulation"]
        if entry["size"] != largest or not all(m in sim and sim[m].get("mean_round_seconds") is not None for m in REQUIRED):
            continue
        ours_added = sim["ours"]["added_seconds_vs_fedavg"]
        secagg_added = sim["secaggplus"]["added_seconds_vs_fedavg"]
        malicious_added = sim.get("ours_malicious", {}).get("added_seconds_vs_fedavg")
        ip = entry["in_process"]
        ours_compute = ip["ours"]["client_mask_seconds"] + ip["ours"]["server_unmask_seconds"]
        secagg_compute = ip["secaggplus"]["client_mask_seconds"] + ip["secaggplus"]["server_unmask_seconds"]
        added.append(
            {
                "size": largest,
                "clients": entry["clients"],
                "ours_added_seconds": ours_added,
                "secaggplus_added_seconds": secagg_added,
                "ratio_ours_added_to_secaggplus_added": ours_added / secagg_added if secagg_added > 0 else None,
                "ours_malicious_added_seconds": malicious_added,
                "ratio_ours_malicious_added_to_secaggplus_added": (
                    malicious_added / secagg_added if malicious_added is not None and secagg_added > 0 else None
                ),
                "in_process_compute_ratio": {
                    "definition": "(one client's masking + server unmasking) ours / SecAgg+, from in_process",
                    "ours_seconds": ours_compute,
                    "secaggplus_seconds": secagg_compute,
                    "ratio": ours_compute / secagg_compute,
                },
            }
        )

    # targets
    targets: dict[str, Any] = {}
    rows = [e for e in configurations if "ours" in e["simulation"] and "ratio_to_fedavg" in e["simulation"]["ours"]]
    targets["secure_sum_round_le_1.15x_fedavg"] = {
        "per_configuration": {f"{e['size']}x{e['clients']}": {"ratio": e["simulation"]["ours"]["ratio_to_fedavg"], "met": e["simulation"]["ours"]["ratio_to_fedavg"] <= 1.15} for e in rows},
        "met": bool(rows) and all(e["simulation"]["ours"]["ratio_to_fedavg"] <= 1.15 for e in rows),
    }
    targets["ours_added_le_one_third_of_secaggplus_added_at_largest_size"] = {
        "per_configuration": {f"{a['size']}x{a['clients']}": {"ratio": a["ratio_ours_added_to_secaggplus_added"], "met": a["ratio_ours_added_to_secaggplus_added"] is not None and a["ratio_ours_added_to_secaggplus_added"] <= 1 / 3} for a in added},
        "met": bool(added) and all(a["ratio_ours_added_to_secaggplus_added"] is not None and a["ratio_ours_added_to_secaggplus_added"] <= 1 / 3 for a in added),
    }
    ours_errors = {f"{e['size']}x{e['clients']}": {"in_process": e["in_process"]["ours"]["max_abs_error"], "simulation": e["simulation"].get("ours", {}).get("max_abs_error")} for e in configurations}
    worst_ours = max(v for d in ours_errors.values() for v in d.values() if v is not None)
    secagg_errors = {f"{e['size']}x{e['clients']}": {"in_process": e["in_process"].get("secaggplus", {}).get("max_abs_error"), "simulation": e["simulation"].get("secaggplus", {}).get("max_abs_error")} for e in configurations}
    secagg_values = [v for d in secagg_errors.values() for v in d.values() if v is not None]
    targets["ours_max_abs_error_le_1e-5"] = {"per_configuration": ours_errors, "worst": worst_ours, "met": worst_ours <= 1e-5}
    targets["secaggplus_max_abs_error_about_1e-4"] = {
        "per_configuration": secagg_errors,
        "worst": max(secagg_values) if secagg_values else None,
        "le_1e-4": (max(secagg_values) <= 1e-4) if secagg_values else None,
        "note": "reference value from the issue, not a target for us",
    }
    per_param = {f"{e['size']}x{e['clients']}": e["in_process"]["ours"]["upload_bytes_per_client"] for e in configurations}
    targets["upload_le_4_bytes_per_parameter_k32"] = {
        "ring_bits": ring.bits,
        "masked_vector_per_parameter": {k: v["masked_vector_per_parameter"] for k, v in per_param.items()},
        "masked_plus_shares_per_parameter": {k: v["masked_plus_shares_per_parameter"] for k, v in per_param.items()},
        "met_masked_vector": ring.bits == 32 and all(v["masked_vector_per_parameter"] <= 4 for v in per_param.values()),
        "met_including_share_ciphertexts": ring.bits == 32 and all(v["masked_plus_shares_per_parameter"] <= 4 for v in per_param.values()),
    }
    targets["mask_generation_ge_50pct_raw_keystream"] = {
        "ratio_vs_update": rate["ratio_ours_keystream_vs_raw_update"],
        "ratio_vs_update_into": rate["ratio_ours_keystream_vs_raw_update_into"],
        "met": rate["ratio_ours_keystream_vs_raw_update"] >= 0.5,
        "met_vs_update_into": rate["ratio_ours_keystream_vs_raw_update_into"] >= 0.5,
    }

    document = {
        "benchmark": "secure_sum",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "flwr": __import__("flwr").__version__,
        "load_average_before": load_before,
        "load_average_after": _load(),
        "total_wall_seconds": round(time.perf_counter() - started_all, 1),
        "settings": {
            "sizes": args.sizes,
            "clients": args.clients,
            "rounds": rounds,
            "quick": args.quick,
            "methods": args.methods,
            "backend_config": BACKEND_CONFIG,
            "synthetic_update": f"float32 uniform in [{UPDATE_LOW}, {UPDATE_HIGH}], seeded by (size, partition, round)",
            "weights": f"num_examples = {WEIGHT_LOW} + round({WEIGHT_HIGH - WEIGHT_LOW} * p / (n - 1))",
            "ours_secure_sum": {"clip_norm": CLIP_NORM, "weight_bound": WEIGHT_BOUND, "max_participants": MAX_PARTICIPANTS, "ring_bits": ring.bits, "frac_bits": ring.frac_bits, "threshold": "max(2, floor(n/2) + 1)"},
            "secaggplus": {str(n): secagg_settings(n).to_dict() for n in args.clients},
        },
        "methodology": METHODOLOGY,
        "mask_rate": rate,
        "configurations": configurations,
        "added_time_at_largest_size": added,
        "targets": targets,
    }
    if log is not sys.stderr:
        log.close()
    if not args.details:
        for entry in configurations:
            for row in entry["in_process"].values():
                row.pop("per_round", None)
        document = _compact(document)
    print(json.dumps(document, indent=1))


METHODOLOGY = {
    "simulation_round_seconds": "server-side wall time of one training round inside run_simulation: for Message-API "
    "strategies from entering configure_train to leaving aggregate_train (for ours this spans stage K when "
    "needed, the training exchange carrying stage M, and stage U); for SecAgg+ the DefaultWorkflow's fit_workflow "
    "call (configure_fit, its 4 exchanges, unmasking, aggregate_fit). Federated evaluation is off "
    "(fraction_evaluate=0), so a round is aggregation only. mean_round_seconds averages rounds 2..R (round 1 "
    "includes engine/actor start-up and, for ours, stage K); with R=1 it is round 1.",
    "simulation_breakdown": "breakdown_mean_seconds (rounds 2..R): every grid.send_and_receive of the round, timed by a "
    "delegating grid (message type, seconds; exchange times are multiples of the in-memory grid's 0.1 s pull interval "
    "plus dispatch), the mean/max time the client handler itself took (a 'bench-client-seconds' metric the benchmark's "
    "ClientApp adds to its replies; not available for SecAgg+, whose reply is built by secaggplus_mod), and the "
    "server time outside exchanges.",
    "fedavg_baseline": "the plain FedAvg reference of every ratio: flwr.serverapp.strategy.FedAvg driven by Flower's own "
    "Strategy.start; clients reply with the update as arrays and num-examples as weight; the aggregate is compared "
    "to the exact weighted mean.",
    "oneliac_plain": "extra, not used by the targets: OneliacStrategy(FedAvg, aggregator=PlainAggregator()) with the same "
    "clients (replying in our wire format), i.e. our wrapper without the secure sum, so that ours' overhead can be "
    "split into wrapper and protocol (ours.ratio_to_oneliac_plain). No validator in either OneliacStrategy run.",
    "ours_simulation": "OneliacStrategy(FedAvg, aggregator=SecureSumAggregator(config, run_id=context.run_id, "
    "num_parameters=N)); the client's train handler calls oneliac_flwr.flower.clientapp._masked_reply with the "
    "update against an all-zero global model (so the masked update is exactly the synthetic vector); "
    "train.secure_keys and train.secure_unmask are delegated to our real ClientApp (build_client_app(config)). "
    "The error compares the aggregator's unmasked mean update (float64) with the exact weighted mean.",
    "ours_malicious": "as ours_simulation with secure_sum.mode='malicious': one more exchange per round "
    "(train.secure_confirm: every survivor signs the survivor set, Ed25519) and unmasking only with t signatures; "
    "in_process.ours_malicious adds stage C's client and server time to client_unmask and server_unmask.",
    "secaggplus_simulation": "legacy ServerApp + LegacyContext + DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...)) + "
    "legacy FedAvg (fraction_evaluate=0) and a legacy ClientApp(client_fn, mods=[secaggplus_mod]) whose NumPyClient "
    "returns the update as its parameters. num_shares = n (complete graph, as ours) and reconstruction_threshold = "
    "floor(n/2)+1 (as ours); num_shares == number of sampled clients never takes the workflow's even-num_shares "
    "branch that halts rounds. clipping_range = 10 and max_weight = 200 match our clip and weight bounds; "
    "quantization_range = 2^22 and modulus_range = 2^32 are flwr's defaults. The error compares what SecAgg+ hands "
    "to aggregate_fit (a capturing subclass of legacy FedAvg) with the exact weighted mean.",
    "in_process_ours": "oneliac_flwr.secure.SecureSumClient/SecureSumServer in memory, R rounds (stage K in round 1); "
    "client_mask_seconds = one client's mask() (encode, self + n-1 pairwise AES-CTR masks, 2 Shamir splits, 2n "
    "AES-GCM envelopes), mean over clients, median over rounds 2..R; server_unmask_seconds = unmask_requests + all "
    "receive_unmask + finalize (Shamir combine, removing the self masks, decode), the same span as SecAgg+'s "
    "unmask stage; server_unmask_requests_plus_finalize_seconds leaves out receive_unmask (validating the replies); receive_masked (summing the masked "
    "vectors) is reported apart. Messages are not serialized (their record sizes are reported). Upload = masked "
    "vector (uint32) + share envelopes of stage M; the full stage-M record and the stage-U response are also given.",
    "in_process_client_train_handler": "one client's training reply outside the engine: ours = "
    "oneliac_flwr.flower.clientapp._masked_reply (update, float64 flatten, norm/clip, client state load/save, mask(), "
    "ConfigRecord + ArrayRecord of the masked vector); plain = building the RecordDict with the float32 update. "
    "Median over clients and 2 rounds.",
    "in_process_secaggplus": "flwr's own SecAggPlusWorkflow stage methods and its ClientApp + secaggplus_mod, joined by "
    "an in-memory grid that calls the ClientApp synchronously; client_mask_seconds = flwr's _collect_masked_vectors "
    "per client (share decryption, weighting, stochastic quantization, private + n-1 pairwise numpy masks); "
    "server_unmask_seconds = unmask_stage minus the client calls and the grid's message copies (standing for "
    "transport) minus the legacy FedAvg aggregate_fit that follows (reported apart); round 2 of 2 is reported. Upload = bytes in the reply ConfigRecords (masked vector as int64 "
    "npy bytes).",
    "mask_rate": "our oneliac_flwr.secure.masks.keystream (the function producing a mask) vs raw "
    "Cipher(AES(key), CTR(zero nonce)).encryptor().update(zeros) for the same byte count (4 streams of 4*N bytes, "
    "N = largest size), all variants interleaved, best of the repetitions; update_into (no allocation) is the "
    "stricter reference.",
    "added_time": "mean_round_seconds(method) - mean_round_seconds(fedavg) at the largest size, per client count.",
}


if __name__ == "__main__":
    main()
