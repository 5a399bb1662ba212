"""Privacy-utility sweep: accuracy against epsilon, as a table and a plot.

    python -m simulations.privacy_utility --epsilons 1 3 8 --out multirun/privacy-utility \\
        -- privacy_budget=sample training.learning_rate=0.05

Runs a Hydra multirun of ``simulations.run`` over ``privacy_budget.epsilon`` (with the DP
settings given after ``--``), plus one run without DP under the same other overrides, then
writes ``privacy_utility.json``, ``privacy_utility.md`` and ``privacy_utility.png`` to
``--out``. Each row cites the results.json it came from.

Each epsilon is its own federation (``federation.name=eps<epsilon>``, state under
``--out/state``): the runs of a sweep are alternatives, not one federation spending one
budget. Under sample-level DP the coordinator does not learn any hospital's epsilon; the
sweep, which plays every simulated hospital, reads their own state files for the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _run(args: list[str]) -> None:
    command = [sys.executable, "-m", "simulations.run", *args]
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])


def _hospitals_epsilon(config: dict) -> float | None:
    """Largest epsilon any simulated hospital spent, from the hospitals' own state."""
    from oneliac_flwr.config import ExperimentConfig
    from oneliac_flwr.privacy.hospital import HospitalPolicy, HospitalPrivacyState

    typed = ExperimentConfig.from_dict(config)
    budget = typed.privacy_budget
    policy = HospitalPolicy(unit=budget.mode, epsilon=budget.epsilon, delta=budget.delta)
    folder = Path(typed.state_dir) / typed.federation_name / "organizations"
    spent = [HospitalPrivacyState(d, organization=d.name, policy=policy).epsilon() for d in sorted(folder.iterdir())]
    return max(spent, default=None)


def _row(results_file: Path) -> dict:
    results = json.loads(results_file.read_text())
    budget = results["config"]["privacy_budget"]
    report = results.get("privacy_report") or {}
    spent = _hospitals_epsilon(results["config"]) if budget["mode"] == "sample" else report.get("epsilon_spent")
    return {
        "mode": budget["mode"],
        "epsilon_budget": budget["epsilon"] if budget["mode"] != "none" else None,
        "epsilon_spent": spent,
        "delta": budget["delta"] if budget["mode"] != "none" else None,
        "accuracy": results["final"]["accuracy"],
        "rounds_completed": results["final"]["rounds_completed"],
        "stopped_reason": results["final"]["stopped_reason"],
        "results": str(results_file),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--out", type=Path, default=Path("multirun/privacy-utility"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    out = args.out.resolve()
    dp_overrides = [o for o in args.overrides if not o.startswith("privacy_budget.epsilon=")]
    if not any(o.startswith("privacy_budget=") or o.startswith("privacy_budget.mode=") for o in dp_overrides):
        dp_overrides.insert(0, "privacy_budget=sample")
    base_overrides = [o for o in dp_overrides if not o.startswith("privacy_budget")]
    epsilons = ",".join(f"{e:g}" for e in args.epsilons)
    state = f"state_dir={(out / 'state').resolve()}"
    _run(["-m", *dp_overrides, state, "federation.name=eps${privacy_budget.epsilon}", f"privacy_budget.epsilon={epsilons}", f"hydra.sweep.dir={out / 'dp'}"])
    _run([*base_overrides, "privacy_budget=none", f"output_dir={out / 'no_dp'}"])
    rows = [_row(p) for p in sorted((out / "dp").glob("*/results.json"))]
    rows.sort(key=lambda r: r["epsilon_budget"])
    rows.append(_row(out / "no_dp" / "results.json"))
    (out / "privacy_utility.json").write_text(json.dumps({"overrides": args.overrides, "rows": rows}, indent=2))
    lines = [
        "| DP | epsilon (budget) | epsilon spent | delta | accuracy | rounds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        eps = "-" if row["epsilon_budget"] is None else f"{row['epsilon_budget']:g}"
        spent = "-" if row["epsilon_spent"] is None else f"{row['epsilon_spent']:.3f}"
        delta = "-" if row["delta"] is None else f"{row['delta']:g}"
        lines.append(f"| {row['mode']} | {eps} | {spent} | {delta} | {row['accuracy']:.3f} | {row['rounds_completed']} |")
    (out / "privacy_utility.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    dp_rows = [r for r in rows if r["epsilon_budget"] is not None]
    ax.plot([r["epsilon_budget"] for r in dp_rows], [r["accuracy"] for r in dp_rows], marker="o", label=dp_rows[0]["mode"] + "-level DP" if dp_rows else "DP")
    if rows[-1]["epsilon_budget"] is None:
        ax.axhline(rows[-1]["accuracy"], color="grey", linestyle="--", label="no DP")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon")
    ax.set_ylabel("test accuracy")
    ax.set_title("Privacy-utility trade-off")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "privacy_utility.png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
