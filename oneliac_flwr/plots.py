"""Plots of a run: accuracy and loss per round, epsilon per round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from oneliac_flwr.results import OUTPUT_MODE, RunResults  # noqa: E402

__all__ = ["plot_run"]


def plot_run(results: RunResults, output_dir: Path) -> list[Path]:
    """Write ``accuracy.png``, ``loss.png`` and (with DP) ``epsilon.png``; return their paths."""
    written: list[Path] = []
    rounds = results.rounds
    for metric, title in (("accuracy", "Accuracy"), ("loss", "Cross-entropy loss")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for source in ("centralized", "federated"):
            points = [(r.round, getattr(r, f"{source}_{metric}")) for r in rounds]
            points = [(x, y) for x, y in points if y is not None]
            if source == "centralized" and getattr(results, f"initial_centralized_{metric}") is not None:
                points.insert(0, (0, getattr(results, f"initial_centralized_{metric}")))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=f"{source} ({'test set' if source == 'centralized' else 'local validation'})")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.set_ylabel(metric)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        path = output_dir / f"{metric}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        path.chmod(OUTPUT_MODE)
        plt.close(fig)
        written.append(path)
    eps = [(r.round, r.privacy.get("epsilon_total")) for r in rounds if r.privacy]
    eps = [(x, y) for x, y in eps if y is not None]
    if eps:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(*zip(*eps, strict=True), marker="o", label="cumulative epsilon")
        budget = (results.privacy_report or {}).get("epsilon_budget")
        if budget is not None:
            ax.axhline(budget, color="red", linestyle="--", label="budget")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.set_ylabel("epsilon")
        ax.set_title("Privacy spent")
        ax.grid(alpha=0.3)
        ax.legend()
        path = output_dir / "epsilon.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        path.chmod(OUTPUT_MODE)
        plt.close(fig)
        written.append(path)
    return written
