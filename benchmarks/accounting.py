"""Accounting benchmark: our ledger (PLD primary) against Flower's RdpAccountant.

Same full-participation Gaussian rounds through both: our
:class:`~oneliac_flwr.privacy.PrivacyLedger`, used as the coordinator uses it
(budget check before each round, record after), and Flower's
``flwr.serverapp.RdpAccountant`` configured as its DP wrappers use it (RDP,
no sampling amplification, add-or-remove-one). Prints JSON; asserts nothing.

Run: ``python benchmarks/accounting.py [--delta 1e-5]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)

from oneliac_flwr.privacy import GaussianRelease, PrivacyLedger, gaussian_full_participation_epsilon

NOISE_MULTIPLIERS = (0.8, 1.0, 1.5)
ROUNDS = (1, 2, 10, 100)
POPULATION = 10  # organizations; all take part (no amplification either side)


def _ours(z: float, rounds: int, delta: float) -> tuple[PrivacyLedger, float]:
    ledger = PrivacyLedger(epsilon_budget=1e9, delta=delta)
    start = time.perf_counter()
    for round_number in range(1, rounds + 1):
        event = GaussianRelease(z)
        ledger.would_exceed([event])
        ledger.record([event], round_number=round_number, clip_norm=1.0, participants=POPULATION)
    return ledger, time.perf_counter() - start


def _flower(z: float, rounds: int, delta: float) -> tuple[float, float]:
    config = PrivacyConfig(
        target_delta=delta,
        population_size=POPULATION,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    accountant = RdpAccountant(config)
    event = GaussianPrivacyEvent(noise_multiplier=z, sample_size=POPULATION, population_size=POPULATION)
    start = time.perf_counter()
    for _ in range(rounds):
        accountant.would_exceed(event, max_epsilon=1e9)
        accountant.compose(event)
    epsilon = accountant.get_epsilon(delta)
    return epsilon, time.perf_counter() - start


def run(delta: float) -> dict[str, Any]:
    rows = []
    for z in NOISE_MULTIPLIERS:
        for rounds in ROUNDS:
            ledger, seconds_ours = _ours(z, rounds, delta)
            ours = ledger.get_current_epsilon()
            flower, seconds_flower = _flower(z, rounds, delta)
            rows.append(
                {
                    "noise_multiplier": z,
                    "rounds": rounds,
                    "epsilon_ours_pld": ours,
                    "epsilon_ours_rdp_cross_check": ledger.cross_check_epsilon(),
                    "epsilon_exact_gdp": gaussian_full_participation_epsilon(
                        noise_multiplier=z, rounds=rounds, delta=delta
                    ),
                    "epsilon_flower_rdp": flower,
                    "ratio_ours_over_flower": ours / flower,
                    "seconds_ours": round(seconds_ours, 3),
                    "seconds_flower": round(seconds_flower, 3),
                }
            )
    at_100 = [row for row in rows if row["rounds"] == 100]
    return {
        "benchmark": "accounting",
        "delta": delta,
        "mechanism": "gaussian, full participation, sensitivity 1",
        "ours": "oneliac_flwr.privacy.PrivacyLedger (PLD primary, would_exceed + record each round)",
        "flower": "flwr.serverapp.RdpAccountant (NO_AMPLIFICATION, would_exceed + compose each round)",
        "rows": rows,
        "summary": {
            "never_looser": all(row["epsilon_ours_pld"] <= row["epsilon_flower_rdp"] for row in rows),
            "max_ratio": max(row["ratio_ours_over_flower"] for row in rows),
            "tightening_at_100_rounds": {
                str(row["noise_multiplier"]): 1.0 - row["ratio_ours_over_flower"] for row in at_100
            },
            "at_least_5_percent_tighter_at_100_rounds": all(
                row["ratio_ours_over_flower"] <= 0.95 for row in at_100
            ),
            "pld_within_1_percent_of_exact_and_not_below": all(
                row["epsilon_exact_gdp"] * (1 - 1e-9)
                <= row["epsilon_ours_pld"]
                <= 1.01 * row["epsilon_exact_gdp"]
                for row in rows
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delta", type=float, default=1e-5)
    args = parser.parse_args()
    print(json.dumps(run(args.delta), indent=2))


if __name__ == "__main__":
    main()
