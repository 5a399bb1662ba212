"""Run one simulated federation configured by Hydra.

    python -m simulations.run federation.num_organizations=3 aggregation_config.max_rounds=10
    python -m simulations.run -m strategy=fedavg,fedprox,fedadam seed=0,1,2

Outputs go to Hydra's run folder (``outputs/<date>/<time>``), or ``output_dir=...``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import OneliacError

logger = logging.getLogger("oneliac_flwr")


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Build the typed config, simulate, and return the final accuracy (for sweepers)."""
    from oneliac_flwr.flower.console import tidy_console
    from oneliac_flwr.flower.simulation import simulate

    tidy_console()  # one copy of each line (Hydra's root handler), no alembic/deprecation noise
    try:
        config = ExperimentConfig.from_dict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))  # type: ignore[arg-type]
    except MissingMandatoryValue as exc:
        logger.error("invalid configuration: %s: is required (the config leaves it as ???)", exc.full_key)
        raise SystemExit(2) from exc
    except OneliacError as exc:
        logger.error("invalid configuration: %s", exc)
        raise SystemExit(2) from exc
    output_dir = Path(config.output_dir or HydraConfig.get().runtime.output_dir)
    try:
        results = simulate(config, output_dir=output_dir)  # preflights before Ray: one line, no traceback
    except OneliacError as exc:
        logger.error("cannot run: %s", exc)
        raise SystemExit(2) from exc
    final = results["final"]
    logger.info(
        "final accuracy %s after %d round(s) (%s); results in %s",
        final["accuracy"],
        final["rounds_completed"],
        final["stopped_reason"],
        output_dir / "results.json",
    )
    return final["accuracy"]


if __name__ == "__main__":
    main()
