"""The Flower ClientApp: local PyTorch training inside one organization.

In simulation the node config carries ``partition-id``/``num-partitions``; in deployment
it carries ``organization-id`` and ``data-path`` (the hospital's own CSV). The settings
come from the run config (``flwr run``) or from the config object the app was built with
(in-process simulation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data import OrganizationData, deployment_organization, simulation_organization
from oneliac_flwr.errors import ConfigError, OneliacError, ProtocolViolation
from oneliac_flwr.flower.records import ARRAYS, CONFIG, INFO, MASKED, METRICS, NUM_EXAMPLES, PRIVACY, SECURE_SUM, reply_info
from oneliac_flwr.flower.privacy import apply_update_privacy
from oneliac_flwr.flower.sample_dp import train_with_dpsgd
from oneliac_flwr.flower.secure_sum import CONFIRM_ACTION, KEYS_ACTION, UNMASK_ACTION
from oneliac_flwr.secure import (
    ConsistencyRequest,
    Identity,
    PinnedTrust,
    RoundSetup,
    SecureSumClient,
    TofuTrust,
    Trust,
    UnmaskRequest,
    load_pins,
)
from oneliac_flwr.flower.checks import check_update, declared_privacy_record, submission_policy, update_of
from oneliac_flwr.flower.components import new_model
from oneliac_flwr.validation import DeclaredPrivacy, ValidationReport
from oneliac_flwr.training import evaluate, get_weights, make_loader, make_optimizer, set_weights, train_local

__all__ = ["Organization", "SecureSettings", "app", "build_client_app", "resolve_organization", "secure_settings"]

logger = logging.getLogger("oneliac_flwr")


@dataclass(frozen=True)
class Organization:
    """Who this node is and where its data comes from."""

    organization_id: str
    partition_id: int | None
    data_path: str | None
    salt: int


def resolve_organization(node_config: dict) -> Organization:
    """Read the organization's identity from Flower's node config.

    Raises
    ------
    ConfigError
        If neither ``partition-id`` (simulation) nor ``data-path`` (deployment) is set.
    """
    if "partition-id" in node_config:
        pid = int(node_config["partition-id"])
        return Organization(str(node_config.get("organization-id", f"org-{pid}")), pid, None, pid)
    if "data-path" in node_config:
        org = str(node_config.get("organization-id", "organization"))
        salt = int.from_bytes(org.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
        return Organization(org, None, str(node_config["data-path"]), salt)
    raise ConfigError(
        "node_config",
        "expected 'partition-id' (simulation) or 'data-path' and 'organization-id' (deployment), "
        f"got keys {sorted(node_config)}",
    )


def _check_federation_size(config: ExperimentConfig, node_config: dict) -> None:
    if "num-partitions" in node_config and int(node_config["num-partitions"]) != config.federation.num_organizations:
        raise ConfigError(
            "federation.num_organizations",
            f"is {config.federation.num_organizations} but the simulation runs "
            f"{node_config['num-partitions']} SuperNodes; make them equal "
            "(e.g. flwr run . --federation-config 'num-supernodes=N' -c 'federation.num_organizations=N')",
        )


@lru_cache(maxsize=64)
def _organization_data(config: ExperimentConfig, organization: Organization) -> OrganizationData:
    if organization.partition_id is not None:
        return simulation_organization(config, organization.partition_id)
    return deployment_organization(config, organization.data_path or "", seed_salt=organization.salt)


def _server_round(msg: Message) -> int:
    config = msg.content.get(CONFIG)
    value = config.get("server-round", 0) if isinstance(config, ConfigRecord) else 0
    return int(value) if isinstance(value, int) else 0


def _inject_fault(kind: str, weights: list[np.ndarray], global_weights: list[np.ndarray], config: ExperimentConfig) -> list[np.ndarray]:
    faults = config.faults
    if kind == "nan":
        poisoned = [w.copy() for w in weights]
        poisoned[0].flat[0] = np.nan
        return poisoned
    if kind == "huge_norm":
        return [g + (w - g) * faults.huge_norm_scale for w, g in zip(weights, global_weights, strict=True)]
    if kind == "sign_flip":
        return [g - (w - g) * faults.sign_flip_scale for w, g in zip(weights, global_weights, strict=True)]
    if kind == "wrong_shape":
        return [np.concatenate([w.ravel(), np.zeros(1, dtype=w.dtype)]) for w in weights]
    raise ConfigError("faults", f"unknown fault {kind!r}")


_CLIENT_STATE = "secure-sum-client"
#: Environment variable naming the folder of per-organization secure-sum state when the
#: node config gives no paths (simulation); default: a folder under the temp directory.
SECURE_HOME_ENV = "ONELIAC_SECURE_HOME"


@dataclass(frozen=True)
class SecureSettings:
    """A hospital's own secure-sum settings, read from its node config (never the run config).

    Node config keys: ``secure-identity`` (identity key file), ``secure-pins`` (pin file of
    ``organization-id fingerprint`` lines; without it, trust on first use),
    ``secure-trust-store`` (TOFU file), ``federation``, ``secure-min-threshold`` and
    ``secure-mode`` (``malicious``: never unmask without the consistency check).
    """

    organization: str
    federation: str
    identity_path: Path
    pins_path: Path | None
    trust_store: Path
    min_threshold: int
    mode: str = "semi-honest"

    def trust(self) -> Trust:
        """Pins if a pin file is configured, else trust on first use."""
        if self.pins_path is not None:
            return PinnedTrust(load_pins(self.pins_path))
        return TofuTrust(self.trust_store)


def secure_settings(node_config: dict) -> SecureSettings:
    """Resolve a hospital's secure-sum settings from its node config.

    Raises
    ------
    ConfigError
        If ``secure-min-threshold`` is not an integer >= 2.
    """
    organization = resolve_organization(node_config).organization_id
    federation = str(node_config.get("federation", "default"))
    home = Path(os.environ.get(SECURE_HOME_ENV) or Path(tempfile.gettempdir()) / f"oneliac-secure-{os.getuid()}")
    default_dir = home / federation / organization
    raw_min = node_config.get("secure-min-threshold", 2)
    if not isinstance(raw_min, int) or isinstance(raw_min, bool) or raw_min < 2:
        raise ConfigError("secure-min-threshold", f"expected an integer >= 2, got {raw_min!r}")
    pins = node_config.get("secure-pins")
    mode = str(node_config.get("secure-mode", "semi-honest"))
    if mode not in ("semi-honest", "malicious"):
        raise ConfigError("secure-mode", f"expected 'semi-honest' or 'malicious', got {mode!r}")
    return SecureSettings(
        organization=organization,
        federation=federation,
        identity_path=Path(str(node_config.get("secure-identity", default_dir / "identity.ed25519"))),
        pins_path=Path(str(pins)) if pins else None,
        trust_store=Path(str(node_config.get("secure-trust-store", default_dir / "known_identities.json"))),
        min_threshold=raw_min,
        mode=mode,
    )


def _secure_client(msg: Message, context: Context) -> tuple[SecureSumClient, SecureSettings]:
    settings = secure_settings(dict(context.node_config))
    identity = Identity.load_or_create(settings.identity_path)
    stored = context.state.get(_CLIENT_STATE)
    if isinstance(stored, ConfigRecord):
        try:
            return SecureSumClient.from_state_dict(dict(stored), identity=identity), settings
        except ProtocolViolation as exc:  # e.g. the identity was replaced: start afresh (stage K)
            logger.warning("%s discards its secure-sum state: %s", settings.organization, exc)
    client = SecureSumClient(
        node_id=msg.metadata.dst_node_id, run_id=msg.metadata.run_id, identity=identity,
        organization=settings.organization, federation=settings.federation, min_threshold=settings.min_threshold,
        mode=settings.mode,  # type: ignore[arg-type]
    )  # fmt: skip
    return client, settings


def _save_secure_client(context: Context, client: SecureSumClient) -> None:
    context.state[_CLIENT_STATE] = ConfigRecord(client.state_dict())


def _check_name(exc: Exception, default: str) -> str:
    """The check name a refusal may carry to the coordinator (never data-dependent text)."""
    head = str(exc).split(":", 1)[0]
    return head if head.endswith("_check") and head.isidentifier() else default


def _secure_stage(
    msg: Message, context: Context, default_check: str, step: Callable[[SecureSumClient, dict], Any]
) -> Message:
    """Run one secure-sum stage on the request record; a refusal names the check only."""
    client, secure = _secure_client(msg, context)
    try:
        response = step(client, dict(msg.content[SECURE_SUM]))
    except OneliacError as exc:
        logger.warning("%s refuses the secure-sum request: %s", secure.organization, exc)
        check = _check_name(exc, default_check)
        return _refuse(msg, secure.organization, check=check, reason=check)
    _save_secure_client(context, client)
    return Message(content=RecordDict({SECURE_SUM: ConfigRecord(response.to_record())}), reply_to=msg)


def _masked_reply(
    msg: Message,
    context: Context,
    config: ExperimentConfig,
    weights: list[np.ndarray],
    global_weights: list[np.ndarray],
    metrics: dict[str, float | int],
    info: ConfigRecord,
    *,
    clip: bool = True,
) -> Message:
    """Stage M: clip the update (unless it carries distributed noise), mask it, and reply
    with the masked payload only."""
    setup = RoundSetup.from_record(dict(msg.content[SECURE_SUM]))
    update = update_of(weights, global_weights)  # the arrays themselves when shapes disagree
    flat = np.concatenate([np.asarray(u, np.float64).ravel() for u in update])
    norm = float(np.linalg.norm(flat))
    if clip and norm > setup.clip_bound:
        flat = flat * (setup.clip_bound / norm)
    weight = min(int(metrics[NUM_EXAMPLES]), int(setup.weight_bound))
    if weight < int(metrics[NUM_EXAMPLES]):
        info["weight-capped-from"] = int(metrics[NUM_EXAMPLES])
    client, secure = _secure_client(msg, context)
    try:
        masked = client.mask(flat, weight=weight, setup=setup, trust=secure.trust())
    except OneliacError as exc:  # a refused setup, or an update that cannot enter the ring
        logger.warning("%s refuses the secure-sum round: %s", secure.organization, exc)
        check = _check_name(exc, "secure_sum_encoding")
        return _refuse(msg, str(info["organization-id"]), check=check, reason=check)
    _save_secure_client(context, client)
    content = RecordDict(
        {
            MASKED: ArrayRecord(numpy_ndarrays=[masked.masked]),
            SECURE_SUM: ConfigRecord(masked.to_record()),
            METRICS: MetricRecord({**metrics, NUM_EXAMPLES: weight}),
            INFO: info,
        }
    )
    return Message(content=content, reply_to=msg)


def _refuse(msg: Message, organization_id: str, *, check: str, reason: str) -> Message:
    """A reply that sends no update and says which check refused it and why."""
    logger.warning("%s refuses to send its update: %s", organization_id, reason)
    info = reply_info(organization=organization_id, status="rejected", check=check, reason=reason)
    return Message(content=RecordDict({INFO: info}), reply_to=msg)


def _refusal(msg: Message, organization: Organization, report: ValidationReport) -> Message:
    """Refuse with every failed check of a validation report."""
    failed = ",".join(r.check for r in report.failures)
    return _refuse(msg, organization.organization_id, check=failed, reason="; ".join(report.reasons()))


def build_client_app(config: ExperimentConfig | None = None) -> ClientApp:
    """Build the ClientApp.

    Parameters
    ----------
    config : ExperimentConfig, optional
        Settings for an in-process simulation. ``None`` reads them from the run config
        (``flwr run``), so a setting means the same thing on both paths.
    """
    client_app = ClientApp()

    def settings(context: Context) -> ExperimentConfig:
        return config if config is not None else ExperimentConfig.from_run_config(context.run_config)

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        _check_federation_size(cfg, dict(context.node_config))
        organization = resolve_organization(dict(context.node_config))
        server_round = _server_round(msg)
        fault = cfg.faults.fault_for(organization.partition_id, server_round) if organization.partition_id is not None else None
        if fault == "crash":
            raise RuntimeError(f"injected crash in {organization.organization_id} at round {server_round}")
        data = _organization_data(cfg, organization)
        model = new_model(cfg)
        global_weights = [np.asarray(a) for a in msg.content[ARRAYS].to_numpy_ndarrays()]
        set_weights(model, global_weights)
        generator = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, 4, organization.salt, server_round]).integers(2**62)))
        loader = make_loader(data.train, batch_size=cfg.training.batch_size, generator=generator)
        optimizer = make_optimizer(
            model, name=cfg.training.optimizer, learning_rate=cfg.training.learning_rate, momentum=cfg.training.momentum
        )
        proximal_mu = float(msg.content[CONFIG].get("proximal-mu", 0.0)) if CONFIG in msg.content else 0.0
        dp = msg.content.get(PRIVACY)
        dp_mode = str(dp["mode"]) if isinstance(dp, ConfigRecord) else "none"
        info = reply_info(organization=organization.organization_id)
        info["label-counts"] = np.bincount(data.train.labels, minlength=cfg.dataset.num_classes).astype(int).tolist()
        declared: DeclaredPrivacy | None = None
        if dp_mode == "sample":
            outcome = train_with_dpsgd(
                model, loader, optimizer, settings=dp, state=context.state, epochs=cfg.training.local_epochs, proximal_mu=proximal_mu
            )
            if outcome.refusal is not None:
                return _refuse(msg, organization.organization_id, check="privacy_check", reason=outcome.refusal)
            result, declared = outcome.result, outcome.declared
            info["dp-can-continue"] = outcome.can_continue
        else:
            result = train_local(model, loader, optimizer, epochs=cfg.training.local_epochs, proximal_mu=proximal_mu)
        weights = get_weights(model)
        bypass = cfg.faults.bypass_client_checks
        if fault is not None and not bypass:
            weights = _inject_fault(fault, weights, global_weights, cfg)
        report = check_update(
            update_of(weights, global_weights),
            num_examples=result.num_examples,
            policy=submission_policy(cfg, global_weights),
            checks=cfg.validation.checks,
            server_round=server_round,
        )
        if not report.passed:
            return _refusal(msg, organization, report)
        weight = result.num_examples
        if dp_mode in ("organization", "release"):
            # clipped, noised, and weighted equally: the sensitivity must not depend on sample counts
            private, declared = apply_update_privacy(update_of(weights, global_weights), dp)
            weights = [(g + u).astype(g.dtype) for g, u in zip(global_weights, private, strict=True)]
            weight = 1
        if fault is not None and bypass:
            weights = _inject_fault(fault, weights, global_weights, cfg)
        for key, value in declared_privacy_record(declared).items():
            info[key] = value
        metrics = {NUM_EXAMPLES: weight, "train_loss": result.loss, "train_accuracy": result.accuracy}
        if SECURE_SUM in msg.content:
            clip = not (dp_mode == "organization" and float(dp.get("client-noise-std", 0.0)) > 0)
            return _masked_reply(msg, context, cfg, weights, global_weights, metrics, info, clip=clip)
        content = RecordDict({ARRAYS: ArrayRecord(numpy_ndarrays=weights), METRICS: MetricRecord(metrics), INFO: info})
        return Message(content=content, reply_to=msg)

    @client_app.train(KEYS_ACTION)
    def advertise_keys(msg: Message, context: Context) -> Message:
        client, _ = _secure_client(msg, context)
        advert = client.advertise_keys(round=int(msg.content[SECURE_SUM]["round"]))
        _save_secure_client(context, client)
        return Message(content=RecordDict({SECURE_SUM: ConfigRecord(advert.to_record())}), reply_to=msg)

    @client_app.train(UNMASK_ACTION)
    def unmask(msg: Message, context: Context) -> Message:
        return _secure_stage(msg, context, "unmask_check", lambda c, r: c.unmask(UnmaskRequest.from_record(r)))

    @client_app.train(CONFIRM_ACTION)
    def confirm(msg: Message, context: Context) -> Message:
        return _secure_stage(
            msg, context, "consistency_check", lambda c, r: c.confirm_survivors(ConsistencyRequest.from_record(r))
        )

    @client_app.evaluate()
    def evaluate_handler(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        organization = resolve_organization(dict(context.node_config))
        data = _organization_data(cfg, organization)
        model = new_model(cfg)
        set_weights(model, msg.content[ARRAYS].to_numpy_ndarrays())
        result = evaluate(model, data.validation)
        content = RecordDict(
            {
                METRICS: MetricRecord(
                    {NUM_EXAMPLES: result.num_examples, "eval_loss": result.loss, "eval_accuracy": result.accuracy}
                ),
                INFO: reply_info(organization=organization.organization_id),
            }
        )
        return Message(content=content, reply_to=msg)

    return client_app


app = build_client_app()
