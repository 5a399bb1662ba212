"""``GET /config``: the federation's configuration as the coordinator publishes it.

A hospital's SDK trains, checks and privatizes from this document (model, feature schema,
aggregation method and secure-sum ring, privacy policy, validation bounds, round timing),
so it needs no copy of the operator's settings. The groups are the coordinator's own
:class:`~oneliac_flwr.config.ExperimentConfig` groups (the same names and fields as the
Hydra config), so ``ExperimentConfig.from_dict`` rebuilds them on the hospital's side;
``privacy_policy`` is the content of ``GET /privacy/policy``.
"""

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from oneliac_flwr.api.rounds import RoundEngine
from oneliac_flwr.api.store import Database
from oneliac_flwr.config import (
    AggregationConfig,
    DatasetConfig,
    ExperimentConfig,
    FederationConfig,
    ModelConfig,
    PrivacyBudgetConfig,
    SecureSumConfig,
    TrainingConfig,
    ValidationConfig,
)
from oneliac_flwr.secure import fingerprint

__all__ = ["PUBLISHED_GROUPS", "FeatureSchemaOut", "FederationConfigOut", "RingOut", "install_config_routes"]

#: The configuration groups published (``ExperimentConfig`` field names).
PUBLISHED_GROUPS = ("federation", "dataset", "model", "training", "aggregation_config", "secure_sum", "privacy_budget",
                    "validation")  # fmt: skip


class FeatureSchemaOut(BaseModel):
    """The columns of a hospital's table, in the model's input order."""

    label_column: str = Field(description="The integer class label column.")
    feature_columns: list[str] = Field(description="Feature columns, in the model's input order.")
    num_classes: int = Field(ge=2)


class RingOut(BaseModel):
    """The secure-sum ring the masked vectors live in (``secure_sum`` federations only)."""

    bits: int = Field(description="Ring size k: values in Z_{2^k}.")
    frac_bits: int = Field(description="Fractional bits of the fixed-point encoding.")
    clip_bound: float = Field(description="Bound on |x_i| of every update coordinate.")
    weight_bound: float = Field(description="Bound on one organization's weight.")
    max_participants: int = Field(description="Largest number of organizations in one sum.")


class FederationConfigOut(BaseModel):
    """``GET /api/v1/federated/config``: what a hospital needs to take part.

    The groups carry the names and fields of the coordinator's configuration
    (``conf/<group>/*.yaml``). ``aggregation_config`` holds the round timing
    (``timeout_minutes``, ``min_participants``, ``max_rounds``) and the method;
    ``secure_sum`` and ``ring`` the secure-sum parameters; ``privacy_budget`` the
    federation's budget and ``privacy_policy`` what ``GET /privacy/policy`` answers
    (``null`` without differential privacy).
    """

    federation_name: str
    federation: FederationConfig
    dataset: DatasetConfig
    feature_schema: FeatureSchemaOut
    model: ModelConfig
    training: TrainingConfig
    aggregation_config: AggregationConfig
    secure_sum: SecureSumConfig
    ring: RingOut | None = Field(description="The secure-sum ring; null in a fedavg federation.")
    privacy_budget: PrivacyBudgetConfig
    privacy_policy: dict[str, int | float | str | bool] | None = Field(
        description="The content of GET /privacy/policy; null when privacy_budget.mode is none."
    )
    validation: ValidationConfig
    coordinator_key_fingerprint: str = Field(description="Fingerprint of the X25519 key fedavg updates are sealed to.")


def _feature_schema(experiment: ExperimentConfig) -> FeatureSchemaOut:
    from oneliac_flwr.data.federated import columns  # the one place that names the built-in table's columns

    label, features = columns(experiment.dataset)
    return FeatureSchemaOut(label_column=label, feature_columns=list(features), num_classes=experiment.dataset.num_classes)


def install_config_routes(app: FastAPI, *, prefix: str, database: Database, engine: RoundEngine,
                          experiment: ExperimentConfig, caller: Callable[..., str],
                          errors: dict[int | str, dict[str, Any]]) -> None:  # fmt: skip
    """Add ``GET {prefix}/config`` to ``app``."""
    schema = _feature_schema(experiment)
    spec = engine.secure.spec if engine.secure is not None else None
    ring = None if spec is None else RingOut(bits=spec.bits, frac_bits=spec.frac_bits, clip_bound=float(spec.clip_bound),
                                             weight_bound=float(spec.weight_bound),
                                             max_participants=spec.max_participants)  # fmt: skip

    @app.get(f"{prefix}/config", response_model=FederationConfigOut, responses=errors)
    def federation_config(_: Annotated[str, Depends(caller)]) -> FederationConfigOut:
        """The federation's published configuration: model, feature schema, training,
        aggregation method and secure-sum ring, privacy budget and policy, validation
        bounds, round timing and the coordinator's sealing-key fingerprint."""
        with database.read() as session:
            key = engine.public_key(session)
        policy = engine.privacy.client_settings() if engine.privacy is not None else None
        groups = {group: getattr(experiment, group) for group in PUBLISHED_GROUPS}
        # the operator's own file path is not the hospitals' business (each names its own table)
        groups["dataset"] = dataclasses.replace(experiment.dataset, csv_path=None)
        return FederationConfigOut(
            federation_name=experiment.federation_name, feature_schema=schema, ring=ring, privacy_policy=policy,
            coordinator_key_fingerprint=fingerprint(key), **groups,
        )  # fmt: skip
