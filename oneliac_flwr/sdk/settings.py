"""The federation's configuration as the SDK uses it.

The coordinator is the authority on the model, the feature schema, the aggregation
method, the privacy policy and the validation bounds: it publishes them at
``GET /api/v1/federated/config`` (:mod:`oneliac_flwr.api.config_routes`) and the SDK uses
that document by default, with no local file.

A hospital may still hold a local configuration (``config=``, or the JSON file named by
``$ONELIAC_CONFIG``). It is only an override: its ``training`` group (the hospital's own
local loop) and its local data split (``dataset.csv_path``, ``test_fraction``,
``local_validation_fraction``, ``record_id_column``, ``site_column``) replace the
published ones; every other field that changes what the hospital computes or sends
(:data:`CHECKED_FIELDS`) must equal the published value, else :class:`ConfigError`
names the field. A local ``ExperimentConfig`` is compared field by field; a mapping of
groups (a JSON file) only on the fields it sets. Round timing is the coordinator's: the
published ``aggregation_config`` timing is used.

Privacy fails closed (:func:`privacy_refusal`): a hospital's own policy (saved in its
state directory, or given as ``privacy_policy=``) is never lowered by what the
coordinator publishes; a published policy weaker than it is refused with
:class:`~oneliac_flwr.errors.PrivacyPolicyRefused`.

A coordinator that does not publish its configuration (404) is served from the local
configuration, or the built-in default.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, CoordinatorError, PrivacyPolicyRefused
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.sdk.transport import CoordinatorClient

__all__ = [
    "CHECKED_FIELDS",
    "CONFIG_PATH",
    "LOCAL_FIELDS",
    "FederationSettings",
    "LocalConfig",
    "check_privacy",
    "load_settings",
    "merge_local",
    "privacy_refusal",
]

CONFIG_PATH = "/config"
_PUBLISHED_GROUPS = ("federation", "dataset", "model", "training", "aggregation_config", "secure_sum",
                     "privacy_budget", "validation")  # fmt: skip
#: Fields a hospital's local configuration may set to its own values (``None``: the whole group).
LOCAL_FIELDS: dict[str, tuple[str, ...] | None] = {
    "training": None,
    "dataset": ("csv_path", "test_fraction", "local_validation_fraction", "record_id_column", "site_column"),
}
#: Fields a local configuration must not contradict (``None``: every field of the group but :data:`LOCAL_FIELDS`).
CHECKED_FIELDS: dict[str, tuple[str, ...] | None] = {
    "dataset": None,
    "model": None,
    "aggregation_config": ("aggregation_method",),
    "secure_sum": None,
    "privacy_budget": None,
    "validation": None,
}

LocalConfig = ExperimentConfig | Mapping[str, Any]


@dataclass(frozen=True)
class FederationSettings:
    """The configuration in use and where it came from.

    Parameters
    ----------
    config : ExperimentConfig
        Model, feature schema, training, aggregation, privacy and validation settings.
    source : {"coordinator", "local"}
        ``coordinator``: published by it (with the hospital's local overrides applied);
        ``local``: the hospital's copy (the coordinator publishes none).
    privacy_policy : dict or None
        The coordinator's published privacy policy (``GET /privacy/policy``), if any.
    coordinator_key_fingerprint : str or None
        The fingerprint of the coordinator's sealing key, as published.
    """

    config: ExperimentConfig
    source: Literal["coordinator", "local"]
    privacy_policy: Mapping[str, Any] | None = None
    coordinator_key_fingerprint: str | None = None

    @property
    def aggregation_method(self) -> str:
        """``fedavg`` or ``secure_sum``."""
        return self.config.aggregation_config.aggregation_method

    @property
    def privacy_mode(self) -> str:
        """``none``, ``sample``, ``organization`` or ``release``."""
        return self.config.privacy_budget.mode


def _local_groups(local: LocalConfig) -> dict[str, Any]:
    """The groups and fields the hospital set: every field of an ``ExperimentConfig``, only the
    given ones of a mapping (validated as a configuration first)."""
    if isinstance(local, ExperimentConfig):
        return local.to_dict()
    if not isinstance(local, Mapping):
        raise ConfigError("config", f"expected an ExperimentConfig or a mapping of config groups, got {type(local).__name__}")
    ExperimentConfig.from_dict(local)  # names a bad field
    return {str(k): dict(v) if isinstance(v, Mapping) else v for k, v in local.items()}


def _canonical(value: Any) -> Any:
    """Lists and tuples alike, numbers as floats (JSON and dataclasses spell them differently)."""
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def merge_local(published: ExperimentConfig, local: LocalConfig | None) -> ExperimentConfig:
    """The published configuration with the hospital's allowed local overrides.

    Raises
    ------
    ConfigError
        If ``local`` contradicts the published configuration on a field of
        :data:`CHECKED_FIELDS` (names the field, with both values).
    """
    if local is None:
        return published
    given = _local_groups(local)
    reference = published.to_dict()
    for group, fields in CHECKED_FIELDS.items():
        mine = given.get(group)
        if not isinstance(mine, Mapping):
            continue
        allowed = LOCAL_FIELDS.get(group) or ()
        for name in fields if fields is not None else tuple(mine):
            if name in allowed or name not in mine:
                continue
            if _canonical(mine[name]) != _canonical(reference[group][name]):
                raise ConfigError(f"{group}.{name}", f"the local configuration says {mine[name]!r}, the coordinator "
                                  f"publishes {reference[group][name]!r}; remove the local value or ask the operator")  # fmt: skip
    merged = dict(reference)
    for group, fields in LOCAL_FIELDS.items():
        mine = given.get(group)
        if isinstance(mine, Mapping):
            merged[group] = {**reference[group], **{k: v for k, v in mine.items() if fields is None or k in fields}}
    return ExperimentConfig.from_dict(merged)


def privacy_refusal(policy: HospitalPolicy, config: ExperimentConfig, published: Mapping[str, Any] | None) -> str | None:
    """Why the coordinator's privacy settings are weaker than the hospital's own policy (``None``: they are not).

    Parameters
    ----------
    policy : HospitalPolicy
        The hospital's own requirement.
    config : ExperimentConfig
        The federation's configuration (``privacy_budget``).
    published : mapping or None
        The coordinator's privacy policy (``GET /privacy/policy``; ``None`` without DP).

    Notes
    -----
    A hospital without DP (``none``) accepts any federation. A ``sample``-level hospital
    runs DP-SGD itself, under its own cap, whatever the federation adds; it refuses an
    update-level unit instead of its own. An ``organization``- or ``release``-level hospital
    needs the same unit published (a federation without DP is weaker), at most its delta,
    at least its minimum noise multiplier and, if it requires it, distributed noise.
    """
    budget = config.privacy_budget
    if policy.unit == "none":
        return None
    if policy.unit == "sample":
        if budget.mode in ("none", "sample"):
            return None
        return f"the coordinator publishes privacy unit {budget.mode!r}; this hospital's policy requires 'sample'"
    if budget.mode == "none":
        return (f"the coordinator publishes no differential privacy (privacy_budget.mode={budget.mode!r}); "
                f"this hospital's policy requires {policy.unit!r}-level DP")  # fmt: skip
    # the values this hospital will use are privacy_budget's; a published policy (absent when the
    # settings are local) that says otherwise is a contradiction, refused rather than believed
    noise, delta = budget.noise_multiplier, budget.delta
    if published is not None:
        for key, used in (("noise-multiplier", noise), ("delta", delta)):
            said = published.get(key)
            if said is not None and used is not None and not math.isclose(float(said), float(used), rel_tol=1e-9):
                return (f"the coordinator's published policy says {key} {said} but its privacy_budget says {used}; "
                        "refusing a contradictory configuration")  # fmt: skip
        if noise is None:
            noise = published.get("noise-multiplier")
    distributed = budget.noise_placement == "distributed"
    if budget.mode == "organization":
        contradiction = _placement_contradiction(distributed, published)
        if contradiction is not None:
            return contradiction
        if distributed and config.aggregation_config.aggregation_method != "secure_sum":
            return ("the coordinator publishes distributed noise without secure_sum: this hospital's noise share, "
                    "sized for a sum of several, would travel alone; refusing")  # fmt: skip
    return policy.refusal(unit=budget.mode, delta=float(delta), noise_multiplier=None if noise is None else float(noise),
                          distributed=distributed)  # fmt: skip


def _placement_contradiction(distributed: bool, published: Mapping[str, Any] | None) -> str | None:
    """Why the published policy's noise placement contradicts ``privacy_budget``'s, or ``None``.

    What the hospital does follows the published policy (a share on its ``frac-bits`` grid,
    or a clipped update for central noise); what it accepted follows ``privacy_budget``. A
    coordinator must not pass the check with one and get the other.
    """
    if published is None:
        return None
    said = published.get("noise-placement")
    if said is not None and said != ("distributed" if distributed else "central"):
        return (f"the coordinator's published policy says noise-placement {said!r} but its privacy_budget says "
                f"{'distributed' if distributed else 'central'!r}; refusing a contradictory configuration")  # fmt: skip
    if ("frac-bits" in published) != distributed:
        return ("the coordinator's published policy " + ("lacks" if distributed else "has") + " the distributed-noise "
                "instruction (frac-bits) that its privacy_budget.noise_placement implies; refusing a contradictory "
                "configuration")  # fmt: skip
    return None


def check_privacy(policy: HospitalPolicy, settings: FederationSettings) -> None:
    """Refuse a federation whose privacy is weaker than the hospital's policy.

    Raises
    ------
    PrivacyPolicyRefused
        With the reason (:func:`privacy_refusal`).
    """
    reason = privacy_refusal(policy, settings.config, settings.privacy_policy)
    if reason is not None:
        raise PrivacyPolicyRefused(f"privacy_policy: {reason}; this hospital does not take part (its policy is never lowered "
                           "by the coordinator's)")  # fmt: skip


def load_settings(client: CoordinatorClient, local: LocalConfig | None) -> FederationSettings:
    """The coordinator's published configuration (with ``local`` overrides), or ``local``
    alone when the coordinator publishes none.

    Raises
    ------
    ConfigError
        If the published document is not a valid configuration, or ``local`` contradicts it
        (names the field).
    CoordinatorError
        If the coordinator refuses the request for another reason than not having it.
    """
    try:
        published = client.get_json(CONFIG_PATH)
    except CoordinatorError as exc:
        if exc.status != 404:
            raise
        if local is None or isinstance(local, ExperimentConfig):
            return FederationSettings(local or ExperimentConfig(), "local")
        return FederationSettings(ExperimentConfig.from_dict(_local_groups(local)), "local")
    if not isinstance(published, dict):
        raise ConfigError("config", "the coordinator's configuration is not a JSON object")
    missing = [group for group in _PUBLISHED_GROUPS if not isinstance(published.get(group), dict)]
    if missing:
        raise ConfigError(f"config.{missing[0]}", "missing from the coordinator's published configuration")
    config = ExperimentConfig.from_dict({group: published[group] for group in _PUBLISHED_GROUPS})
    policy = published.get("privacy_policy")
    return FederationSettings(merge_local(config, local), "coordinator",
                              privacy_policy=dict(policy) if isinstance(policy, dict) else None,
                              coordinator_key_fingerprint=published.get("coordinator_key_fingerprint"))  # fmt: skip

