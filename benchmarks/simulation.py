"""Benchmark: wall time of whole simulations, printed as JSON.

    python benchmarks/simulation.py                 # 3 and 20 organizations, 10 rounds
    python benchmarks/simulation.py --rounds 5 --organizations 3 10

Reports, per federation size: total wall time (engine start-up included), the time of
rounds 2..N (steady state, excluding round 1 where the engine's workers start), rounds per
second in steady state, and final accuracy. Not a timed test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oneliac_flwr.config import ExperimentConfig  # noqa: E402
from oneliac_flwr.flower.simulation import simulate  # noqa: E402


def run_one(num_organizations: int, rounds: int, seed: int) -> dict:
    """Simulate one federation and time it."""
    config = ExperimentConfig.from_dict(
        {
            "seed": seed,
            "federation": {"num_organizations": num_organizations, "min_partition_size": 5},
            "aggregation_config": {"max_rounds": rounds},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        results = simulate(config, output_dir=Path(tmp))
        wall = time.perf_counter() - started
    steady = [r["wall_seconds"] for r in results["rounds"][1:]]
    steady_seconds = sum(steady)
    return {
        "organizations": num_organizations,
        "rounds": rounds,
        "wall_seconds": round(wall, 3),
        "rounds_per_second": round(rounds / wall, 4),
        "first_round_seconds": round(results["rounds"][0]["wall_seconds"], 3),
        "steady_round_seconds_mean": round(steady_seconds / len(steady), 4) if steady else None,
        "steady_rounds_per_second": round(len(steady) / steady_seconds, 3) if steady_seconds else None,
        "final_accuracy": results["final"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organizations", type=int, nargs="+", default=[3, 20])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [run_one(n, args.rounds, args.seed) for n in args.organizations]
    print(
        json.dumps(
            {
                "benchmark": "simulation",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
