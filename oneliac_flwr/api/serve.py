"""Start the REST coordinator under uvicorn, configured by Hydra."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oneliac_flwr.config import CoordinatorConfig, ExperimentConfig
from oneliac_flwr.errors import ConfigError

__all__ = ["ADMIN_TOKEN_ENV", "MIN_ADMIN_TOKEN_LENGTH", "load_settings", "main", "resolve_admin_token"]

ADMIN_TOKEN_ENV = "ONELIAC_ADMIN_TOKEN"
MIN_ADMIN_TOKEN_LENGTH = 24
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_settings(overrides: Sequence[str]) -> tuple[CoordinatorConfig, ExperimentConfig]:
    """Compose ``conf/service.yaml`` with ``overrides`` and split it into the two typed configs.

    Raises
    ------
    ConfigError
        On an unknown key or a bad value (named by its dotted field).
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR), job_name="oneliac_coordinator"):
            composed = compose(config_name="service", overrides=list(overrides))
    except HydraException as exc:
        raise ConfigError("overrides", str(exc)) from None
    data: dict[str, Any] = OmegaConf.to_container(composed, resolve=False)  # type: ignore[assignment]
    data.pop("hydra", None)
    coordinator = CoordinatorConfig.from_dict(data.pop("coordinator", {}))
    return coordinator, ExperimentConfig.from_dict(data)


def resolve_admin_token(*, generate: bool) -> str:
    """The operator token from ``ONELIAC_ADMIN_TOKEN``, or a new one when ``generate``.

    Raises
    ------
    ConfigError
        If the variable is unset (and not ``generate``) or shorter than 24 characters.
    """
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        if len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ConfigError(ADMIN_TOKEN_ENV, f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
        return token
    if not generate:
        raise ConfigError(
            ADMIN_TOKEN_ENV,
            "is not set: the service refuses to start without an admin token "
            "(set it, or pass --generate-admin-token to print a new one once)",
        )
    return secrets.token_urlsafe(32)


def main(argv: Sequence[str]) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m oneliac_flwr.api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the REST coordinator under uvicorn")
    serve.add_argument("--generate-admin-token", action="store_true", help="make a token and print it once")
    serve.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. coordinator.port=8080")
    args = parser.parse_args(list(argv))
    try:
        coordinator, experiment = load_settings(args.overrides)
        token = resolve_admin_token(generate=args.generate_admin_token)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not os.environ.get(ADMIN_TOKEN_ENV):
        print(f"admin token (shown once; keep it as {ADMIN_TOKEN_ENV}): {token}", flush=True)

    import uvicorn

    from oneliac_flwr.api.app import create_app

    try:  # settings the REST rounds cannot run (e.g. privacy_budget.mode=sample) stop it here
        app = create_app(coordinator=coordinator, experiment=experiment, admin_token=token)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=coordinator.host,
        port=coordinator.port,
        ssl_certfile=coordinator.ssl_certfile,
        ssl_keyfile=coordinator.ssl_keyfile,
        log_level="info",
        access_log=False,
    )
    return 0
