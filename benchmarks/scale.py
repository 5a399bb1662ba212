"""Benchmark at hospital-network scale: plain FedAvg, our secure sum and Flower's SecAgg+,
10 to 100 organizations, printed as one JSON document.

    python benchmarks/scale.py                  # 10, 50, 100 organizations x 10k, 1M parameters
    python benchmarks/scale.py --quick          # 10 and 50 organizations x 10k parameters
    python benchmarks/scale.py --orgs 100 --sizes 10000 --secagg-cap 120
    python benchmarks/scale.py --simulation     # inside Flower's simulation engine (issue #13)

``--simulation`` runs every method inside Flower's in-process simulation engine
(``flwr.simulation.run_simulation``, as ``simulations.run`` does; one child process per
simulation, ``benchmarks/secure_sum.py``'s apps and synthetic clients, same seed for every
method): plain FedAvg (Flower's ``FedAvg``) and ours (``OneliacStrategy`` +
``SecureSumAggregator``, the real ClientApp's secure handlers, the sharing graph of
``secure_sum.graph: auto``) at every (organizations, parameters) point, ``--sim-rounds``
rounds each; SecAgg+ only at the points of ``--secagg-at`` (default 100 organizations x 1M
parameters), killed after ``--secagg-cap`` seconds and reported as not finishing.
``key_setup_seconds`` is round 1 (engine start-up, stage K, the first masked round);
``steady_seconds`` the mean of rounds 2..R; ratios are ours / FedAvg in the same run;
``steady_breakdown`` gives each exchange of a steady round (its seconds and the mean and
largest client handler time inside it) and the coordinator's time outside the exchanges.
The engine's floor: after its timed rounds each simulation runs 3 exchanges with every
node whose handler returns at once (``train.noop``); ``engine_noop_exchange_seconds`` is
their mean over both simulations of a point, and ``engine_floor_over_fedavg_steady`` what
one and two such exchanges cost against FedAvg's steady round (a steady secure round needs
two exchanges, so ``two_exchanges`` is the ratio no handler or coordinator work can beat).
One scale at a time: ``--orgs 100 --sizes 10000 --skip-secagg``.

Everything runs in this process (SecAgg+ in a child process with a time cap), without
Flower's simulation engine: at 100 organizations the engine's per-node processes would
measure this machine's scheduler, not the protocols. The clients are the synthetic clients
of ``benchmarks/secure_sum.py`` (a deterministic float32 update per partition and round,
weights 50..150, no training), so methods differ in aggregation only.

Per (organizations, parameters):

- ``fedavg``: the server's weighted mean (best of 3) and 4 bytes per parameter uploaded;
- ``ours``: two full rounds of ``oneliac_flwr.secure`` (round 1 sets up keys, round 2 is the
  steady state) with the ring sized from the federation (``secure_sum.max_participants``
  null), through ``benchmarks/secure_sum.py``'s ``ours_in_process``;
- ``secaggplus``: Flower's ``SecAggPlusWorkflow`` + ``secaggplus_mod`` (complete graph,
  threshold ``floor(n/2) + 1``), one round, through ``benchmarks/_secagg_baseline.py``; it runs
  in a child process killed after ``--secagg-cap`` seconds, reported as ``did not finish``;
- ``sharing``: Shamir sharing and reconstruction alone, ours vs pycryptodome's GF(2^128)
  (the former implementation) on the same ``t``: the coordinator's reconstruction of ``n``
  seeds and one client's sharing of 2 secrets.

Round times are critical paths built from measured parts, as if each hospital ran on its
own machine: the coordinator's work (sequential, measured) plus the slowest client's
masking and a client's unmask reply (clients work in parallel; network time excluded).
``round_seconds_key_setup`` is round 1 (stage K: every node advertises keys);
``round_seconds_steady`` is round 2. stdout carries the JSON only; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _path in (str(REPO), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import secure_sum as base  # noqa: E402 - after the path set-up above

# The ring is sized from the federation: secure_sum.max_participants null (the default).
base.MAX_PARTICIPANTS = None

DEFAULT_ORGS = (10, 50, 100)
DEFAULT_SIZES = (10_000, 1_000_000)
QUICK_ORGS = (10, 50)
QUICK_SIZES = (10_000,)
PYCRYPTODOME_SAMPLE = 4  # pycryptodome reconstructions timed per point; the rest extrapolated


def _log(message: str) -> None:
    print(f"[scale bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- ours
def ours(size: int, orgs: int) -> dict[str, Any]:
    """Two rounds of our secure sum in memory; critical-path round times from the parts."""
    result = base.ours_in_process(size, orgs, rounds=2)

    def critical_path(r: dict[str, Any]) -> float:
        return (
            r["stage_k_seconds"]
            + r["client_mask_seconds_max"]
            + r["server_receive_masked_seconds_total"]
            + r["server_unmask_seconds"]
            + r["client_unmask_seconds"]
        )

    first, steady = result["per_round"]
    upload = result["upload_bytes_per_client"]
    return {
        "ring": result["ring"],
        "threshold": result["threshold"],
        "round_seconds_key_setup": critical_path(first),
        "round_seconds_steady": critical_path(steady),
        "stage_k_seconds": first["stage_k_seconds"],
        "server_unmask_seconds": steady["server_unmask_seconds"],
        "server_finalize_seconds": steady["server_finalize_seconds"],
        "server_receive_masked_seconds_total": steady["server_receive_masked_seconds_total"],
        "client_mask_seconds": steady["client_mask_seconds"],
        "client_mask_seconds_max": steady["client_mask_seconds_max"],
        "client_unmask_seconds": steady["client_unmask_seconds"],
        "upload_bytes_per_client": upload["masked_vector"] + upload["masked_input_record_without_vector"] + upload["unmask_response"],
        "upload_bytes_per_parameter": upload["all_stages_per_parameter"],
        "max_abs_error": result["max_abs_error"],
        "error_bound_mean": result["error_bound_mean"],
        "counted": steady["counted"],
    }


# --------------------------------------------------------------------------- plain FedAvg
def fedavg(size: int, orgs: int) -> dict[str, Any]:
    """The server's weighted mean: FedAvg's whole aggregation, for scale."""
    result = base.plain_in_process(size, orgs, repeats=3)
    return {
        "round_seconds": result["server_weighted_mean_seconds"],
        "server_seconds": result["server_weighted_mean_seconds"],
        "upload_bytes_per_client": 4.0 * size,
        "upload_bytes_per_parameter": result["upload_bytes_per_parameter"],
        "max_abs_error": result["max_abs_error_float32"],
    }


# --------------------------------------------------------------------------- SecAgg+
def _secagg_child(size: int, orgs: int, queue: Any) -> None:
    from _secagg_baseline import secaggplus_in_process

    try:
        result = secaggplus_in_process(
            size=size,
            num_clients=orgs,
            rounds=1,
            settings=base.secagg_settings(orgs),
            update_fn=lambda pid, rnd: base.synthetic_update(pid, rnd, size),
            weight_fn=lambda pid: base.synthetic_weight(pid, orgs),
            reference_fn=lambda rnd: base.exact_weighted_mean(size, orgs, rnd),
        )
        queue.put({"ok": result})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, never hidden
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def secaggplus(size: int, orgs: int, cap_seconds: float) -> dict[str, Any]:
    """One SecAgg+ round in a child process, stopped after ``cap_seconds``."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_secagg_child, args=(size, orgs, queue), daemon=True)
    started = time.perf_counter()
    child.start()
    outcome: dict[str, Any] | None = None
    while outcome is None and time.perf_counter() - started < cap_seconds:
        try:
            outcome = queue.get(timeout=1.0)
        except Exception:  # noqa: BLE001 - queue.Empty: keep waiting until the cap
            if not child.is_alive() and queue.empty():
                outcome = {"error": f"child exited with code {child.exitcode}"}
    elapsed = time.perf_counter() - started
    if outcome is None:
        child.terminate()  # our own child, by its handle
        child.join(10)
        return {"status": "did not finish", "cap_seconds": cap_seconds}
    child.join(10)
    if "error" in outcome:
        return {"status": "failed", "error": outcome["error"], "seconds": elapsed}
    r = outcome["ok"]
    server = r["server_seconds_per_stage"]
    return {
        "status": "ok",
        "round_seconds": float(sum(server.values())) + r["client_protocol_seconds"],
        "server_unmask_seconds": r["server_unmask_seconds"],
        "server_seconds_per_stage": server,
        "client_mask_seconds": r["client_mask_seconds"],
        "client_protocol_seconds": r["client_protocol_seconds"],
        "upload_bytes_per_client": r["upload_bytes_per_client"]["all_stages"],
        "upload_bytes_per_parameter": r["upload_bytes_per_client"]["all_stages_per_parameter"],
        "max_abs_error": r["max_abs_error"],
        "child_wall_seconds": elapsed,
    }


# --------------------------------------------------------------------------- sharing alone
def sharing(orgs: int) -> dict[str, Any]:
    """Shamir at the round's ``t``: ours (batched) vs pycryptodome (the former code)."""
    from Crypto.Protocol.SecretSharing import Shamir

    from oneliac_flwr.flower.secure_sum import threshold_for
    from oneliac_flwr.secure.sharing import reconstruct_many, share_many

    t = threshold_for(orgs, 2)
    secrets_ = [os.urandom(32) for _ in range(orgs)]
    started = time.perf_counter()
    share_many(secrets_[:2], threshold=t, n=orgs)
    ours_share = time.perf_counter() - started
    sharings = share_many(secrets_, threshold=t, n=orgs)
    started = time.perf_counter()
    recovered = reconstruct_many([s[:t] for s in sharings], threshold=t, what=[""] * orgs)
    ours_reconstruct = time.perf_counter() - started
    if recovered != secrets_:
        raise RuntimeError("reconstruction mismatch")
    started = time.perf_counter()
    halves = [Shamir.split(t, orgs, secret[h : h + 16], ssss=False) for secret in secrets_[:2] for h in (0, 16)]
    theirs_share = time.perf_counter() - started
    sample = min(PYCRYPTODOME_SAMPLE, orgs)
    started = time.perf_counter()
    for _ in range(sample):
        for half in halves[:2]:
            Shamir.combine(half[:t], ssss=False)
    theirs_reconstruct = (time.perf_counter() - started) * orgs / sample
    return {
        "threshold": t,
        "client_share_2_secrets_seconds": {"ours": ours_share, "pycryptodome": theirs_share},
        "server_reconstruct_n_seeds_seconds": {
            "ours": ours_reconstruct,
            "pycryptodome": theirs_reconstruct,
            "pycryptodome_note": f"{sample} reconstructions timed, scaled to {orgs}",
        },
        "speedup_reconstruct": theirs_reconstruct / ours_reconstruct,
    }


# --------------------------------------------------------------------------- in the simulation engine
def simulated(method: str, size: int, orgs: int, rounds: int, log: Any, cap: float) -> dict[str, Any]:
    """One simulation of ``method``; key-setup (round 1) and steady (mean of rounds 2..R) times."""
    result = base.simulate(method, size, orgs, rounds, log, timeout=cap)
    if "error" in result:
        return {"status": "did not finish" if "did not finish" in result["error"] else "error", "detail": result["error"]}
    summary = base.summarize_simulation(result, rounds)
    seconds = summary["round_seconds"]
    return {
        "status": "ok",
        "key_setup_seconds": seconds[0],
        "steady_seconds": summary["mean_round_seconds"],
        "round_seconds": seconds,
        "rounds_with_aggregate": summary["rounds_with_aggregate"],
        "max_abs_error": summary["max_abs_error"],
        "exchanges_per_round": summary.get("breakdown_mean_seconds", {}).get("exchanges_per_round"),
        "steady_breakdown": summary.get("breakdown_mean_seconds"),
        "secure_sum": summary.get("secure_sum_records"),
        "simulation_wall_seconds": summary["simulation_wall_seconds"],
        "noop_exchange_seconds": summary.get("noop_exchange_seconds"),
        "noop_exchange_seconds_mean": summary.get("noop_exchange_seconds_mean"),
    }


def simulation_points(
    orgs_list: list[int], sizes: list[int], rounds: int, secagg_at: set[tuple[int, ...]], cap: float, log: Any
) -> list[dict[str, Any]]:
    """FedAvg and ours (and SecAgg+ where asked) at every point, each in its own simulation."""
    points = []
    for size in sizes:
        for orgs in orgs_list:
            entry: dict[str, Any] = {"organizations": orgs, "parameters": size, "rounds": rounds}
            for method in ("fedavg", "ours"):
                _log(f"simulation {method} n={orgs} size={size}")
                entry[method] = simulated(method, size, orgs, rounds, log, base.CHILD_TIMEOUT_SECONDS)
            if (orgs, size) in secagg_at:
                _log(f"simulation secaggplus n={orgs} size={size} (cap {cap:g} s)")
                entry["secaggplus"] = simulated("secaggplus", size, orgs, rounds, log, cap)
            plain, ours_ = entry["fedavg"], entry["ours"]
            if plain["status"] == ours_["status"] == "ok":
                entry["ours_over_fedavg_steady"] = ours_["steady_seconds"] / plain["steady_seconds"]
                entry["ours_over_fedavg_key_setup"] = ours_["key_setup_seconds"] / plain["key_setup_seconds"]
                noop = [r["noop_exchange_seconds_mean"] for r in (plain, ours_) if r.get("noop_exchange_seconds_mean")]
                if noop:
                    # The engine's floor: one exchange whose handlers return at once, same engine and nodes.
                    entry["engine_noop_exchange_seconds"] = statistics.fmean(noop)
                    entry["engine_floor_over_fedavg_steady"] = {
                        "one_exchange": statistics.fmean(noop) / plain["steady_seconds"],
                        "two_exchanges": 2 * statistics.fmean(noop) / plain["steady_seconds"],
                    }
            _log(f"done n={orgs} size={size}: {json.dumps({k: v for k, v in entry.items() if 'over' in k})}")
            points.append(entry)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, nargs="+", default=None, help="organizations (default 10 50 100)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="parameters (default 10000 1000000)")
    parser.add_argument("--quick", action="store_true", help="10 and 50 organizations, 10k parameters")
    parser.add_argument("--secagg-cap", type=float, default=600.0, help="seconds SecAgg+ may take per point")
    parser.add_argument("--skip-secagg", action="store_true")
    parser.add_argument("--simulation", action="store_true", help="measure inside Flower's simulation engine")
    parser.add_argument("--sim-rounds", type=int, default=4, help="simulated rounds per point (round 1: key setup)")
    parser.add_argument("--secagg-at", type=str, nargs="*", default=["100x1000000"], help="ORGSxPARAMS points for SecAgg+ (--simulation)")
    parser.add_argument("--log", type=str, default=None, help="file for simulation logs (default: stderr)")
    parser.add_argument("--graph", choices=("auto", "complete", "sparse"), default="auto", help="secure_sum.graph of ours")
    args = parser.parse_args()
    base.GRAPH = args.graph
    if args.simulation:
        secagg_at = set() if args.skip_secagg else {tuple(int(v) for v in p.split("x")) for p in args.secagg_at}
        log = open(args.log, "a") if args.log else sys.stderr  # noqa: SIM115 - kept open for the children
        started = time.perf_counter()
        out = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": base._load()},
            "methodology": __doc__,
            "graph": args.graph,
            "simulation": simulation_points(
                args.orgs or list(DEFAULT_ORGS), args.sizes or [10_000], args.sim_rounds, secagg_at, args.secagg_cap, log
            ),
        }
        out["machine"]["load_average_end"] = base._load()
        out["total_seconds"] = time.perf_counter() - started
        print(json.dumps(base._compact(out), indent=1))
        return
    orgs_list = args.orgs or list(QUICK_ORGS if args.quick else DEFAULT_ORGS)
    sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    started = time.perf_counter()
    out: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": base._load()},
        "methodology": __doc__,
        "sharing": {},
        "results": [],
    }
    for orgs in orgs_list:
        _log(f"sharing n={orgs}")
        out["sharing"][str(orgs)] = sharing(orgs)
    for size in sizes:
        for orgs in orgs_list:
            entry: dict[str, Any] = {"organizations": orgs, "parameters": size}
            _log(f"fedavg n={orgs} size={size}")
            entry["fedavg"] = fedavg(size, orgs)
            _log(f"ours n={orgs} size={size}")
            entry["ours"] = ours(size, orgs)
            if args.skip_secagg:
                entry["secaggplus"] = {"status": "skipped"}
            else:
                _log(f"secaggplus n={orgs} size={size} (cap {args.secagg_cap:g} s)")
                entry["secaggplus"] = secaggplus(size, orgs, args.secagg_cap)
            plain = entry["fedavg"]["round_seconds"]
            entry["ours_added_seconds_steady"] = entry["ours"]["round_seconds_steady"] - plain
            if entry["secaggplus"].get("status") == "ok":
                entry["secaggplus_added_seconds"] = entry["secaggplus"]["round_seconds"] - plain
            out["results"].append(entry)
            _log(f"done n={orgs} size={size}: ours steady {entry['ours']['round_seconds_steady']:.3f} s")
    out["machine"]["load_average_end"] = base._load()
    out["total_seconds"] = time.perf_counter() - started
    print(json.dumps(base._compact(out), indent=1))


if __name__ == "__main__":
    main()
