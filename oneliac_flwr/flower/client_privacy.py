"""The hospital's side of differential privacy at the Flower boundary.

A hospital's privacy policy and state directory come from its own SuperNode's node
config, never from the run config the coordinator controls:

- ``privacy-unit``: ``none``, ``sample``, ``organization`` or ``release``;
- ``privacy-epsilon``: total epsilon the hospital allows on its data;
- ``privacy-delta``: largest delta it accepts;
- ``privacy-min-noise-multiplier``: smallest noise multiplier it accepts (default 0);
- ``privacy-require-distributed-noise``: refuse central noise, accept only its own shares;
- ``state-dir``: its own directory for privacy state (and keys).

In simulation (node config with ``partition-id`` and no ``privacy-unit``), the simulated
hospitals adopt the experiment's ``privacy_budget`` as their policy, and keep their state
under ``<state_dir>/<federation>/organizations/<organization>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.privacy.hospital import HospitalPolicy, HospitalPrivacyState, locked_state
from oneliac_flwr.privacy.update_release import UpdateRelease, privatize_update

__all__ = ["UpdateRelease", "hospital_policy", "hospital_state", "instruction_refusal", "privatize_update"]


def hospital_policy(config: ExperimentConfig, node_config: Mapping[str, Any]) -> HospitalPolicy:
    """The hospital's own privacy policy (see the module docstring for its source).

    Raises
    ------
    ConfigError
        If a policy key has a bad value (the message names the node-config key).
    """
    if "privacy-unit" not in node_config:
        if "partition-id" in node_config:  # a simulated hospital adopts the experiment's budget
            budget = config.privacy_budget
            return HospitalPolicy(
                unit=budget.mode, epsilon=budget.epsilon, delta=budget.delta, min_noise_multiplier=0.0
            )
        return HospitalPolicy(unit="none", epsilon=1.0, delta=1e-5)
    try:
        return HospitalPolicy(
            unit=str(node_config["privacy-unit"]),  # type: ignore[arg-type]
            epsilon=float(node_config.get("privacy-epsilon", "nan")),
            delta=float(node_config.get("privacy-delta", "nan")),
            min_noise_multiplier=float(node_config.get("privacy-min-noise-multiplier", 0.0)),
            require_distributed_noise=_flag(node_config.get("privacy-require-distributed-noise", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError("node_config", f"privacy policy: {exc}") from exc


def hospital_state(
    config: ExperimentConfig, node_config: Mapping[str, Any], *, organization: str, policy: HospitalPolicy
) -> AbstractContextManager[HospitalPrivacyState]:
    """The hospital's privacy state on its own disk (``state-dir``, or the simulation's
    folder), held under an exclusive lock for the duration of the ``with`` block.

    Raises
    ------
    ConfigError
        If a deployed hospital with a DP policy names no ``state-dir``.
    StateIntegrityError
        If the state there is tampered with, mismatched or missing (see
        :class:`~oneliac_flwr.privacy.hospital.HospitalPrivacyState`).
    """
    if "state-dir" in node_config:
        directory = Path(str(node_config["state-dir"]))
    elif "partition-id" in node_config:
        directory = Path(config.state_dir) / config.federation_name / "organizations" / organization
    else:
        raise ConfigError(
            "state-dir",
            "a hospital with a privacy policy needs its own state directory in its node config "
            "(--node-config 'state-dir=\"/var/lib/oneliac/h1\"'): its privacy history must survive restarts",
        )
    return locked_state(directory, organization=organization, policy=policy)


def instruction_refusal(policy: HospitalPolicy, instruction: ConfigRecord | None) -> str | None:
    """Why the coordinator's privacy instruction breaks the hospital's policy, if it does."""
    if instruction is None:
        unit, delta, noise, distributed = "none", None, None, False
    else:
        unit = str(instruction.get("mode", "none"))
        delta = _number(instruction.get("delta"))
        noise = _number(instruction.get("noise-multiplier")) if unit == "organization" else None
        distributed = "frac-bits" in instruction
    if policy.unit == "none" and unit != "none":
        return (
            f"the coordinator asks for privacy unit {unit!r} but this hospital has no privacy policy "
            "(node config privacy-unit, privacy-epsilon, privacy-delta, state-dir)"
        )
    return policy.refusal(unit=unit, delta=delta, noise_multiplier=noise, distributed=distributed)


def _flag(value: object) -> bool:
    """A node-config boolean (Flower passes ``true``/``false`` as bool, or as a string)."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "no", ""):
        return False
    raise ConfigError("privacy-require-distributed-noise", f"expected true or false, got {value!r}")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
