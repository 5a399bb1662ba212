"""The federation's configuration as the SDK uses it.

The coordinator is the authority on the model, the feature schema, the aggregation
method, the privacy policy and the validation bounds. When it publishes them
(``GET /api/v1/federated/config``: the :meth:`ExperimentConfig.to_dict` groups) the SDK
uses that. The REST coordinator does not publish it yet: until it does, the hospital uses
the configuration its operator shares with it (the same Hydra groups the coordinator was
started with), passed as ``config=``, or the built-in default (the breast-cancer
federation), and the model it downloads must match it tensor for tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, CoordinatorError
from oneliac_flwr.sdk.transport import CoordinatorClient

__all__ = ["CONFIG_PATH", "FederationSettings", "load_settings"]

CONFIG_PATH = "/config"
_PUBLISHED_GROUPS = ("dataset", "model", "training", "aggregation_config", "privacy_budget", "validation", "secure_sum")


@dataclass(frozen=True)
class FederationSettings:
    """The configuration in use and where it came from.

    Parameters
    ----------
    config : ExperimentConfig
        Model, feature schema, training, aggregation, privacy and validation settings.
    source : {"coordinator", "local"}
        ``coordinator``: published by it; ``local``: the hospital's copy (not published yet).
    """

    config: ExperimentConfig
    source: Literal["coordinator", "local"]

    @property
    def aggregation_method(self) -> str:
        """``fedavg`` or ``secure_sum``."""
        return self.config.aggregation_config.aggregation_method

    @property
    def privacy_mode(self) -> str:
        """``none``, ``sample``, ``organization`` or ``release``."""
        return self.config.privacy_budget.mode


def load_settings(client: CoordinatorClient, local: ExperimentConfig | None) -> FederationSettings:
    """The coordinator's published configuration, or the hospital's ``local`` copy.

    Raises
    ------
    ConfigError
        If the published document is not a valid configuration (names the field).
    CoordinatorError
        If the coordinator refuses the request for another reason than not having it.
    """
    try:
        published = client.get_json(CONFIG_PATH)
    except CoordinatorError as exc:
        if exc.status != 404:
            raise
        return FederationSettings(local or ExperimentConfig(), "local")
    if not isinstance(published, dict):
        raise ConfigError("config", "the coordinator's configuration is not a JSON object")
    groups = {k: published[k] for k in _PUBLISHED_GROUPS if k in published}
    return FederationSettings(ExperimentConfig.from_dict(groups), "coordinator")
