"""The Flower ClientApp: local PyTorch training inside one organization.

In simulation the node config carries ``partition-id``/``num-partitions``; in deployment
it carries ``organization-id`` and ``data-path`` (the hospital's own CSV). The settings
come from the run config (``flwr run``) or from the config object the app was built with
(in-process simulation).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, DataError, OneliacError, PrivacyError, ProtocolViolation, SecureAggregationError
from oneliac_flwr.flower.records import ARRAYS, CONFIG, INFO, MASKED, METRICS, NUM_EXAMPLES, PRIVACY, SECURE_SUM, reply_info
from oneliac_flwr.flower.portable import PortableClientApp
from oneliac_flwr.flower.secure_sum import CONFIRM_ACTION, KEYS_ACTION, UNMASK_ACTION
from oneliac_flwr.secure.graph import DEFAULT_COLLUDING_FRACTION, DEFAULT_DROPOUT_FRACTION
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
from oneliac_flwr.validation import DeclaredPrivacy, ValidationPolicy, ValidationReport
from oneliac_flwr.masked_statistics import MaskedStatistics, pack_statistics

if TYPE_CHECKING:  # torch, the data stack and the privacy stack are imported where used:
    # a flwr-clientapp process that only unmasks or advertises keys never loads them
    import torch

    from oneliac_flwr.data import OrganizationData
    from oneliac_flwr.privacy.hospital import HospitalPrivacyState

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
    from oneliac_flwr.data import deployment_organization, simulation_organization

    if organization.partition_id is not None:
        return simulation_organization(config, organization.partition_id)
    return deployment_organization(config, organization.data_path or "", seed_salt=organization.salt)


def _server_round(msg: Message) -> int:
    config = msg.content.get(CONFIG)
    value = config.get("server-round", 0) if isinstance(config, ConfigRecord) else 0
    return int(value) if isinstance(value, int) else 0


def _inject_fault(kind: str, update: list[np.ndarray], config: ExperimentConfig) -> list[np.ndarray]:
    """Simulation only: turn an honest model update into the configured fault."""
    faults = config.faults
    if kind == "nan":
        poisoned = [np.array(u, copy=True) for u in update]
        poisoned[0].flat[0] = np.nan
        return poisoned
    if kind == "huge_norm":
        return [u * faults.huge_norm_scale for u in update]
    if kind == "sign_flip":
        return [-u * faults.sign_flip_scale for u in update]
    if kind == "wrong_shape":
        return [np.concatenate([u.ravel(), np.zeros(1, dtype=u.dtype)]) for u in update]
    raise ConfigError("faults", f"unknown fault {kind!r}")


def _as_weights(update: list[np.ndarray], global_weights: list[np.ndarray]) -> list[np.ndarray]:
    """``global + update`` in the model's dtypes; arrays of the wrong shape are sent as they are
    (so the coordinator's ``bounds_check`` names the mismatch)."""
    if len(update) != len(global_weights) or any(u.shape != g.shape for u, g in zip(update, global_weights, strict=False)):
        return list(update)
    return [(g + u).astype(g.dtype) for g, u in zip(global_weights, update, strict=True)]


_CLIENT_STATE = "secure-sum-client"
#: Environment variable naming the folder of per-organization secure-sum state when the
#: node config gives no paths (simulation); default: a folder under the temp directory.
SECURE_HOME_ENV = "ONELIAC_SECURE_HOME"


@dataclass(frozen=True)
class SecureSettings:
    """A hospital's own secure-sum settings, read from its node config (never the run config).

    Node config keys: ``secure-identity`` (identity key file), ``secure-pins`` (pin file of
    ``organization-id fingerprint`` lines; without it, trust on first use),
    ``secure-trust-store`` (TOFU file), ``federation``, ``secure-min-threshold``,
    ``secure-mode`` (``malicious``: never unmask without the consistency check), and
    ``secure-colluding-fraction`` / ``secure-dropout-fraction`` (default 0.1 each: the
    fractions a sparse sharing graph must withstand, ``docs/secure-sum.md`` section 12).
    """

    organization: str
    federation: str
    identity_path: Path
    pins_path: Path | None
    trust_store: Path
    min_threshold: int
    mode: str = "semi-honest"
    colluding_fraction: float = DEFAULT_COLLUDING_FRACTION
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION

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
    if "state-dir" in node_config:  # the hospital's own state folder holds its identity too
        default_dir = Path(str(node_config["state-dir"])) / "secure" / federation
    else:
        home = Path(os.environ.get(SECURE_HOME_ENV) or Path(tempfile.gettempdir()) / f"oneliac-secure-{os.getuid()}")
        default_dir = home / federation / organization
    raw_min = node_config.get("secure-min-threshold", 2)
    if not isinstance(raw_min, int) or isinstance(raw_min, bool) or raw_min < 2:
        raise ConfigError("secure-min-threshold", f"expected an integer >= 2, got {raw_min!r}")
    pins = node_config.get("secure-pins")
    mode = str(node_config.get("secure-mode", "semi-honest"))
    if mode not in ("semi-honest", "malicious"):
        raise ConfigError("secure-mode", f"expected 'semi-honest' or 'malicious', got {mode!r}")
    fractions = {}
    for key, default in (("colluding", DEFAULT_COLLUDING_FRACTION), ("dropout", DEFAULT_DROPOUT_FRACTION)):
        raw = node_config.get(f"secure-{key}-fraction", default)
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not 0.0 <= raw < 0.5:
            raise ConfigError(f"secure-{key}-fraction", f"expected a number in [0, 0.5), got {raw!r}")
        fractions[f"{key}_fraction"] = float(raw)
    return SecureSettings(
        organization=organization,
        federation=federation,
        identity_path=Path(str(node_config.get("secure-identity", default_dir / "identity.ed25519"))),
        pins_path=Path(str(pins)) if pins else None,
        trust_store=Path(str(node_config.get("secure-trust-store", default_dir / "known_identities.json"))),
        min_threshold=raw_min,
        mode=mode,
        **fractions,
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
        colluding_fraction=settings.colluding_fraction, dropout_fraction=settings.dropout_fraction,
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
        return _refuse(msg, secure.organization, check=_check_name(exc, default_check), detail=str(exc))
    _save_secure_client(context, client)
    return Message(content=RecordDict({SECURE_SUM: ConfigRecord(response.to_record())}), reply_to=msg)


def _masked_reply(
    msg: Message,
    context: Context,
    organization: Organization,
    update: list[np.ndarray],
    *,
    weight: int,
    statistics: MaskedStatistics | None,
    declared: DeclaredPrivacy | None,
    clip: bool = True,
) -> Message:
    """Stage M: clip the update (unless it carries distributed noise), append the masked
    statistics (secure sum without DP), mask it, and reply with the masked payload only.

    Nothing data-dependent is sent in the clear: the weight (capped sample count) and the
    statistics travel inside the masked vector; the MetricRecord carries a placeholder.
    """
    setup = RoundSetup.from_record(dict(msg.content[SECURE_SUM]))
    flat = np.concatenate([np.asarray(u, np.float64).ravel() for u in update])
    norm = float(np.linalg.norm(flat))
    if clip and norm > setup.clip_bound:
        flat = flat * (setup.clip_bound / norm)
    if statistics is not None:
        flat = np.concatenate([flat, pack_statistics(statistics, bound=setup.clip_bound)])
    weight = min(int(weight), int(setup.weight_bound))
    client, secure = _secure_client(msg, context)
    try:
        masked = client.mask(flat, weight=weight, setup=setup, trust=secure.trust())
    except OneliacError as exc:  # a refused setup, or an update that cannot enter the ring
        check = _check_name(exc, "secure_sum_encoding")
        return _refuse(msg, organization.organization_id, check=check, detail=f"{secure.organization}: {exc}")
    _save_secure_client(context, client)
    info = reply_info(organization=organization.organization_id)
    for key, value in declared_privacy_record(declared).items():
        info[key] = value
    content = RecordDict(
        {
            MASKED: ArrayRecord(numpy_ndarrays=[masked.masked]),
            SECURE_SUM: ConfigRecord(masked.to_record()),
            METRICS: MetricRecord({NUM_EXAMPLES: 1}),  # a placeholder: the weight is inside the masked vector
            INFO: info,
        }
    )
    return Message(content=content, reply_to=msg)


def _refuse(msg: Message, organization_id: str, *, check: str, detail: str, public_reason: str = "") -> Message:
    """A reply that sends no update and names the refusing check only.

    The detail (norms, budgets, counts) can depend on the hospital's data: it is logged on
    the hospital's side and never sent. Only ``public_reason`` is sent: for a data error,
    the file, the column and the kind of problem (:attr:`DataError.public_reason`).
    """
    logger.warning("%s refuses to send its update (%s): %s", organization_id, check, detail)
    info = reply_info(organization=organization_id, status="rejected", check=check, reason=public_reason)
    return Message(content=RecordDict({INFO: info}), reply_to=msg)


def _refusal(msg: Message, organization: Organization, report: ValidationReport) -> Message:
    """Refuse with every failed check of a validation report."""
    failed = ",".join(r.check for r in report.failures)
    return _refuse(msg, organization.organization_id, check=failed, detail="; ".join(report.reasons()))


def _privacy_free(config: ExperimentConfig, node_config: dict, instruction: ConfigRecord | None) -> bool:
    """Neither the coordinator nor the hospital asks for DP: no policy to check or state to
    hold (what :func:`~oneliac_flwr.flower.client_privacy.hospital_policy` would say), so
    the privacy stack (dp-accounting, SciPy) is not imported for this message."""
    simulated_budget = "partition-id" in node_config and config.privacy_budget.mode != "none"
    return instruction is None and "privacy-unit" not in node_config and not simulated_budget


def _seeded_generator(config: ExperimentConfig, organization: Organization, server_round: int) -> torch.Generator:
    """Shuffling without DP: reproducible from the seed (nothing private depends on it)."""
    import torch

    seed = int(np.random.default_rng([config.seed, 4, organization.salt, server_round]).integers(2**62))
    return torch.Generator().manual_seed(seed)


def _evaluate_received(config: ExperimentConfig, data: OrganizationData, global_weights: list[np.ndarray]) -> tuple[float | None, float | None]:
    """Evaluate the received global model on local validation rows (it rides in the training reply)."""
    from oneliac_flwr.models import new_model
    from oneliac_flwr.training import evaluate, set_weights

    if len(data.validation) == 0:
        return None, None
    model = new_model(config)
    set_weights(model, global_weights)
    result = evaluate(model, data.validation)
    return result.loss, result.accuracy


_CHECK_FOR_ERROR: tuple[tuple[type[OneliacError], str], ...] = (
    (PrivacyError, "privacy_check"),
    (DataError, "data_check"),
    (ConfigError, "config_check"),
    (SecureAggregationError, "secure_sum_encoding"),
)


def _fail_closed(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Turn every error into a refusal that names a check only.

    An error reply would carry the exception's text to the coordinator (Flower sends it),
    and that text can name counts, norms or label values of the hospital's data; the
    detail goes to the hospital's log instead. Errors of ours map to their check
    (``privacy_check``, ``data_check``, ...), anything else to ``client_error``.
    """

    @wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:  # noqa: BLE001 - any text of a client error can depend on the data
            check = next((name for kind, name in _CHECK_FOR_ERROR if isinstance(exc, kind)), "client_error")
            try:
                organization = resolve_organization(dict(context.node_config)).organization_id
            except OneliacError:
                organization = f"node-{context.node_id}"
            public = exc.public_reason if isinstance(exc, DataError) else ""
            return _refuse(msg, organization, check=check, detail=f"{type(exc).__name__}: {exc}", public_reason=public)

    return wrapped


def build_client_app(config: ExperimentConfig | None = None) -> ClientApp:
    """Build the ClientApp.

    Parameters
    ----------
    config : ExperimentConfig, optional
        Settings for an in-process simulation. ``None`` reads them from the run config
        (``flwr run``), so a setting means the same thing on both paths.
    """
    # Pickled as this call (the simulation engine pickles the app with every message).
    client_app = PortableClientApp(builder="oneliac_flwr.flower.clientapp:build_client_app", args=(config,))

    def settings(context: Context) -> ExperimentConfig:
        return config if config is not None else ExperimentConfig.from_run_config(context.run_config)

    @client_app.train()
    @_fail_closed
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        node_config = dict(context.node_config)
        _check_federation_size(cfg, node_config)
        organization = resolve_organization(node_config)
        org_id = organization.organization_id
        server_round = _server_round(msg)
        fault = cfg.faults.fault_for(organization.partition_id, server_round) if organization.partition_id is not None else None
        if fault == "crash":
            raise RuntimeError(f"injected crash in {org_id} at round {server_round}")
        instruction = msg.content.get(PRIVACY)
        instruction = instruction if isinstance(instruction, ConfigRecord) else None
        unit = str(instruction["mode"]) if instruction is not None else "none"
        if _privacy_free(cfg, node_config, instruction):  # no policy to check: the privacy stack is not loaded
            return _train_round(msg, context, cfg, organization, None, None, fault)
        from oneliac_flwr.flower.client_privacy import hospital_policy, hospital_state, instruction_refusal

        policy = hospital_policy(cfg, node_config)
        refusal = instruction_refusal(policy, instruction)
        if refusal is not None:
            return _refuse(msg, org_id, check="privacy_check", detail=refusal)
        # The hospital's privacy state stays locked from the budget check to the recorded release.
        held = hospital_state(cfg, node_config, organization=org_id, policy=policy) if unit != "none" else nullcontext(None)
        with held as state:
            return _train_round(msg, context, cfg, organization, instruction, state, fault)

    def _train_round(
        msg: Message,
        context: Context,
        cfg: ExperimentConfig,
        organization: Organization,
        instruction: ConfigRecord | None,
        state: HospitalPrivacyState | None,
        fault: str | None,
    ) -> Message:
        from oneliac_flwr.models import new_model
        from oneliac_flwr.privacy.entropy import os_torch_generator
        from oneliac_flwr.training import get_weights, make_loader, make_optimizer, set_weights, train_local

        org_id = organization.organization_id
        server_round = _server_round(msg)
        unit = str(instruction["mode"]) if instruction is not None else "none"
        secure = SECURE_SUM in msg.content
        private = unit != "none" or secure
        data = _organization_data(cfg, organization)
        global_weights = [np.asarray(a) for a in msg.content[ARRAYS].to_numpy_ndarrays()]
        # Without DP the received global model is evaluated here, inside the training message (plain: in
        # the clear, as the evaluate exchange would; secure sum: inside the masked vector), which saves
        # one exchange per round. Under DP its metrics would be a release outside the ledger.
        received_eval = _evaluate_received(cfg, data, global_weights) if unit == "none" else (None, None)
        model = new_model(cfg)
        set_weights(model, global_weights)
        # Under DP, batches (Opacus' Poisson sample) and noise come from OS entropy. A real
        # hospital under secure sum shuffles from OS entropy too: a seeded shuffle would let a
        # coordinator replay a round, get bit-identical updates and difference the sums. A
        # simulated hospital (public table) keeps the seeded shuffle, so runs reproduce.
        fresh = unit != "none" or (secure and organization.partition_id is None)
        generator = os_torch_generator() if fresh else _seeded_generator(cfg, organization, server_round)
        loader = make_loader(data.train, batch_size=cfg.training.batch_size, generator=generator)
        optimizer = make_optimizer(
            model, name=cfg.training.optimizer, learning_rate=cfg.training.learning_rate, momentum=cfg.training.momentum
        )
        proximal_mu = float(msg.content[CONFIG].get("proximal-mu", 0.0)) if CONFIG in msg.content else 0.0
        declared: DeclaredPrivacy | None = None
        if unit == "sample" and state is not None and instruction is not None:
            from oneliac_flwr.flower.sample_dp import train_with_dpsgd  # torch + Opacus: sample-level DP only

            outcome = train_with_dpsgd(
                model, loader, optimizer, settings=instruction, state=state, epochs=cfg.training.local_epochs, proximal_mu=proximal_mu
            )
            if outcome.refusal is not None or outcome.result is None:
                return _refuse(msg, org_id, check="privacy_check", detail=outcome.refusal or "DP-SGD produced no model")
            result, declared = outcome.result, outcome.declared
        else:
            result = train_local(model, loader, optimizer, epochs=cfg.training.local_epochs, proximal_mu=proximal_mu)
        update = update_of(get_weights(model), global_weights)
        bypass = cfg.faults.bypass_client_checks
        if fault is not None and not bypass:
            update = _inject_fault(fault, update, cfg)
        # Under DP or secure sum the checks see no sample count and no coordinator-set bound:
        # a refusal must not answer a question about the data (norm, value, row count).
        report = check_update(
            update,
            num_examples=1 if private else result.num_examples,
            policy=ValidationPolicy.for_arrays(global_weights) if private else submission_policy(cfg, global_weights),
            checks=cfg.validation.checks,
            server_round=server_round,
        )
        if not report.passed:
            return _refusal(msg, organization, report)
        if unit in ("organization", "release") and state is not None and instruction is not None:
            from oneliac_flwr.flower.client_privacy import privatize_update

            threshold = int(msg.content[SECURE_SUM]["threshold"]) if secure else None
            release = privatize_update(update, instruction, state=state, server_round=server_round, threshold=threshold)
            if isinstance(release, str):
                return _refuse(msg, org_id, check="privacy_check", detail=release)
            update, declared = release.update, release.declared
        if fault is not None and bypass:
            update = _inject_fault(fault, update, cfg)
        if secure:
            statistics = None
            if unit == "none":
                counts = np.bincount(data.train.labels, minlength=cfg.dataset.num_classes).astype(np.float64)
                statistics = MaskedStatistics(
                    train_loss=result.loss,
                    train_accuracy=result.accuracy,
                    eval_loss=received_eval[0],
                    eval_accuracy=received_eval[1],
                    label_fractions=tuple(counts / max(counts.sum(), 1.0)),
                )
            distributed_noise = unit == "organization" and instruction is not None and "frac-bits" in instruction
            return _masked_reply(
                msg,
                context,
                organization,
                update,
                weight=result.num_examples if unit == "none" else 1,
                statistics=statistics,
                declared=declared,
                clip=not distributed_noise,
            )
        info = reply_info(organization=org_id)
        for key, value in declared_privacy_record(declared).items():
            info[key] = value
        if unit == "none":
            # Plain aggregation without DP protects nothing from the coordinator: it sees the update.
            info["label-counts"] = np.bincount(data.train.labels, minlength=cfg.dataset.num_classes).astype(int).tolist()
            metrics = {NUM_EXAMPLES: result.num_examples, "train_loss": result.loss, "train_accuracy": result.accuracy}
            if received_eval[0] is not None and received_eval[1] is not None:
                metrics |= {
                    "received_eval_loss": received_eval[0],
                    "received_eval_accuracy": received_eval[1],
                    "received_eval_examples": len(data.validation),
                }
        else:
            # Under DP only the accounted release leaves: equal weights, no metrics, no counts.
            metrics = {NUM_EXAMPLES: 1}
        content = RecordDict({ARRAYS: ArrayRecord(numpy_ndarrays=_as_weights(update, global_weights)), METRICS: MetricRecord(metrics), INFO: info})
        return Message(content=content, reply_to=msg)

    @client_app.train(KEYS_ACTION)
    @_fail_closed
    def advertise_keys(msg: Message, context: Context) -> Message:
        client, _ = _secure_client(msg, context)
        advert = client.advertise_keys(round=int(msg.content[SECURE_SUM]["round"]))
        _save_secure_client(context, client)
        return Message(content=RecordDict({SECURE_SUM: ConfigRecord(advert.to_record())}), reply_to=msg)

    @client_app.train(UNMASK_ACTION)
    @_fail_closed
    def unmask(msg: Message, context: Context) -> Message:
        return _secure_stage(msg, context, "unmask_check", lambda c, r: c.unmask(UnmaskRequest.from_record(r)))

    @client_app.train(CONFIRM_ACTION)
    @_fail_closed
    def confirm(msg: Message, context: Context) -> Message:
        return _secure_stage(
            msg, context, "consistency_check", lambda c, r: c.confirm_survivors(ConsistencyRequest.from_record(r))
        )

    @client_app.evaluate()
    @_fail_closed
    def evaluate_handler(msg: Message, context: Context) -> Message:
        from oneliac_flwr.models import new_model
        from oneliac_flwr.training import evaluate, set_weights

        cfg = settings(context)
        organization = resolve_organization(dict(context.node_config))
        if not _privacy_free(cfg, dict(context.node_config), None):
            from oneliac_flwr.flower.client_privacy import hospital_policy

            try:
                policy_unit = hospital_policy(cfg, dict(context.node_config)).unit
            except OneliacError as exc:
                return _refuse(msg, organization.organization_id, check="privacy_check", detail=str(exc))
        else:
            policy_unit = "none"
        if policy_unit != "none":  # metrics in the clear would be a release outside any ledger
            return _refuse(
                msg, organization.organization_id, check="privacy_check", detail="no plain evaluation under a DP policy"
            )
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
