"""The Flower ServerApp: drives the wrapped strategy and writes the run's outputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data import central_test_set
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.errors import ConfigError, OneliacError
from oneliac_flwr.flower.privacy import federation_state_dir, start_up_plan
from oneliac_flwr.privacy.entropy import os_generator
from oneliac_flwr.plots import plot_run
from oneliac_flwr.results import OUTPUT_MODE, RunResults, write_json_atomic
from oneliac_flwr.training import evaluate, get_weights, set_weights

__all__ = ["app", "build_server_app", "default_output_dir", "run_federation"]

logger = logging.getLogger("oneliac_flwr")


def default_output_dir() -> Path:
    """``./outputs/run-<UTC timestamp>`` under the current directory."""
    return Path.cwd() / "outputs" / time.strftime("run-%Y%m%d-%H%M%S", time.gmtime())


def _central_evaluator(config: ExperimentConfig, model: torch.nn.Module):
    if config.dataset.name != "breast_cancer" and config.dataset.csv_path is None:
        return None
    test_set = central_test_set(config)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        set_weights(model, arrays.to_numpy_ndarrays())
        result = evaluate(model, test_set)
        return MetricRecord({"accuracy": result.accuracy, "loss": result.loss, "num-examples": result.num_examples})

    return evaluate_fn


def run_federation(grid: Grid, config: ExperimentConfig, *, output_dir: Path, run_id: int = 0) -> RunResults:
    """Train a global model across the organizations reachable through ``grid``.

    Writes ``results.json`` after every round (atomically, with ``stopped_reason:
    "running"`` until the run ends), then ``model.pt`` and plots. The privacy ledger
    belongs to the federation and lives in ``<state_dir>/<federation>/``, not here.

    Returns
    -------
    RunResults
        The per-round records, final metrics, stop reason and privacy report.

    Raises
    ------
    ConfigError
        If ``output_dir`` already holds a run's ``results.json`` (outputs are never
        overwritten), or the federation's saved ledger was written for another budget.
    """
    if (output_dir / "results.json").exists():
        raise ConfigError(
            "output_dir",
            f"{output_dir} already holds a run's results.json; choose a new output folder (the federation's "
            f"privacy budget is resumed from {federation_state_dir(config)} whatever the folder)",
        )
    plan = start_up_plan(config)
    if plan is not None:
        logger.info("privacy budget: %s", plan.advice)
        if plan.drowned:
            logger.warning("privacy budget: the noise will drown the signal. %s", plan.advice)
        if plan.refusal is not None:
            raise ConfigError("privacy_budget", plan.refusal)
    model = new_model(config)
    initial = ArrayRecord(numpy_ndarrays=get_weights(model))
    results = RunResults(config=config.to_dict(), stopped_reason="running")
    if plan is not None:
        results.privacy_plan = {
            "noise_multiplier": plan.noise_multiplier,
            "rounds_afforded": plan.rounds_afforded,
            "noise_std_on_mean_over_clip": plan.relative_noise,
            "drowned": plan.drowned,
            "advice": plan.advice,
        }

    def checkpoint(_record: object) -> None:
        results.rounds = [strategy.records[k] for k in sorted(strategy.records)]
        results.nodes = strategy.node_table()
        write_json_atomic(output_dir / "results.json", results.to_dict(), mode=OUTPUT_MODE)

    strategy = build_strategy(  # refuses a bad ledger before anything is written
        config,
        rng=os_generator(),  # coordinator noise: OS entropy, never the config's seed
        run_id=run_id,
        on_round_end=checkpoint,
        state_dir=federation_state_dir(config) if config.privacy_budget.mode != "none" else None,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    evaluate_fn = _central_evaluator(config, new_model(config))
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=config.aggregation_config.max_rounds,
        timeout=config.aggregation_config.timeout_minutes * 60.0,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
        evaluate_fn=evaluate_fn,
    )
    initial_metrics = result.evaluate_metrics_serverapp.get(0)
    if initial_metrics is not None:
        results.initial_centralized_accuracy = float(initial_metrics["accuracy"])
        results.initial_centralized_loss = float(initial_metrics["loss"])
    results.rounds = [strategy.records[k] for k in sorted(strategy.records)]
    results.stopped_reason = strategy.stopped_reason  # type: ignore[assignment]
    results.stop_detail = strategy.stop_detail
    if results.rounds_completed == 0 and results.stopped_reason == "max_rounds_reached":
        results.stopped_reason = "no_round_completed"
        results.stop_detail = "every round failed, was skipped or was refused; no model was trained"
    results.organizations = strategy.organization_summaries()
    results.nodes = strategy.node_table()
    if strategy.privacy is not None:
        results.privacy_report = strategy.privacy.report()
    if results.rounds_completed > 0:  # an untrained model is never reported as a result
        set_weights(model, result.arrays.to_numpy_ndarrays())
        torch.save(model.state_dict(), output_dir / "model.pt")
        (output_dir / "model.pt").chmod(OUTPUT_MODE)
    write_json_atomic(output_dir / "results.json", results.to_dict(), mode=OUTPUT_MODE)
    plot_run(results, output_dir)
    final = results.final()
    logger.info(
        "run finished: %d round(s) completed, accuracy=%s, stopped_reason=%s, outputs in %s",
        final["rounds_completed"],
        final["accuracy"],
        final["stopped_reason"],
        output_dir,
    )
    return results


def build_server_app(config: ExperimentConfig | None = None, *, output_dir: Path | None = None) -> ServerApp:
    """Build the ServerApp.

    Parameters
    ----------
    config : ExperimentConfig, optional
        Settings for an in-process simulation; ``None`` reads the run config.
    output_dir : Path, optional
        Where to write outputs; default ``config.output_dir`` or :func:`default_output_dir`.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is not None:  # in-process simulation: the caller set up logging and checked the config
            target = output_dir or (Path(config.output_dir) if config.output_dir else default_output_dir())
            run_federation(grid, config, output_dir=target, run_id=int(context.run_id))
            return
        _log_to_flower_console()
        try:
            cfg = ExperimentConfig.from_run_config(context.run_config)
        except OneliacError as exc:
            # one line naming the key, then fail the run (flwr ls shows it failed, with this reason)
            logger.error("invalid run configuration: %s", exc)
            raise
        target = output_dir or (Path(cfg.output_dir) if cfg.output_dir else default_output_dir())
        try:
            run_federation(grid, cfg, output_dir=target, run_id=int(context.run_id))
        except OneliacError as exc:
            logger.error("cannot run: %s", exc)
            raise

    return server_app


def _log_to_flower_console() -> None:
    """Under ``flwr run`` our progress lines go where Flower's go: Flower mirrors that
    console to ``flwr run --stream`` (a ServerApp process configures no other handler)."""
    from flwr.common.logger import console_handler

    package_logger = logging.getLogger("oneliac_flwr")
    if console_handler not in package_logger.handlers:
        package_logger.addHandler(console_handler)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False  # Flower's own lines do not propagate twice either


app = build_server_app()
