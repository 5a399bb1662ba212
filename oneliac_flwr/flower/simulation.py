"""In-process simulation: one virtual SuperNode per organization, on this machine."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.clientapp import build_client_app
from oneliac_flwr.flower.serverapp import build_server_app

__all__ = ["preflight", "simulate"]


def preflight(config: ExperimentConfig, *, output_dir: Path) -> None:
    """Find, before any engine starts, every error the coordinator side can detect.

    Loads every simulated organization's data and the test set (missing file, missing,
    non-numeric or incomplete column), builds the model, plans the secure-sum ring and
    the privacy budget (a ring or budget that cannot work), and opens the federation's
    ledger (tampered, or for another budget).

    Raises
    ------
    OneliacError
        The first problem found, naming the setting, file or column.
    """
    from oneliac_flwr.data import central_test_set, simulation_organization
    from oneliac_flwr.flower.components import build_strategy
    from oneliac_flwr.flower.privacy import federation_state_dir, start_up_plan
    from oneliac_flwr.privacy.entropy import os_generator

    if (Path(output_dir) / "results.json").exists():
        raise ConfigError("output_dir", f"{output_dir} already holds a run's results.json; choose a new output folder")
    for partition in range(config.federation.num_organizations):
        simulation_organization(config, partition)
    central_test_set(config)
    plan = start_up_plan(config)
    if plan is not None and plan.refusal is not None:
        raise ConfigError("privacy_budget", plan.refusal)
    state = federation_state_dir(config) if config.privacy_budget.mode != "none" else None
    build_strategy(config, rng=os_generator(), run_id=0, state_dir=state)


def simulate(config: ExperimentConfig, *, output_dir: Path, num_cpus: int | None = None) -> dict:
    """Run the federation of ``config`` in-process with Flower's simulation engine.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings; ``federation.num_organizations`` virtual SuperNodes are started.
    output_dir : Path
        Where ``results.json``, ``model.pt`` and the plots are written.
    num_cpus : int, optional
        CPUs given to the simulation engine (default: all of this machine's).

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    from flwr.simulation import run_simulation  # heavy import (Ray): only when simulating

    output_dir = Path(output_dir)
    # Virtual SuperNodes may run in other processes: give them the absolute state folder.
    config = dataclasses.replace(config, state_dir=str(Path(config.state_dir).resolve()))
    results_path = output_dir / "results.json"
    preflight(config, output_dir=output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cpus = num_cpus or os.cpu_count() or 1
    run_simulation(
        server_app=build_server_app(config, output_dir=output_dir),
        client_app=build_client_app(config),
        num_supernodes=config.federation.num_organizations,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False},
        },
    )
    if not results_path.is_file():
        raise RuntimeError(f"the simulation wrote no {results_path}; see the log above for the server's error")
    return json.loads(results_path.read_text())
