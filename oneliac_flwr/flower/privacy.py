"""Differential privacy at the Flower boundary: coordinator guards and client-side steps.

Four units of privacy, chosen by ``privacy_budget.mode`` (see ``docs/privacy.md``):

- ``sample``: DP-SGD inside each organization (Opacus, Poisson sampling). Each client's
  accountant history lives in ``context.state`` so its epsilon accumulates across rounds;
  a client refuses to train when its next round would exceed its budget, and says so.
- ``organization``: DP-FedAvg. Updates are clipped to ``clip_norm``, weighted equally, and
  Gaussian noise of std ``z * clip_norm`` is added to their sum: by the coordinator
  (``noise_placement: central``) or as shares by the clients before secure-sum masking
  (``distributed``: the coordinator never sees an un-noised sum).
- ``release``: each organization releases its clipped update through
  :class:`~oneliac_flwr.privacy.DifferentialPrivacy` (local DP, analytic Gaussian or Laplace).

The coordinator keeps a :class:`~oneliac_flwr.privacy.PrivacyLedger` (PLD primary, RDP
cross-check), checks the budget before every round and saves the ledger after every
round, so a restarted coordinator resumes with what was spent.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.checks import declared_privacy
from oneliac_flwr.flower.records import TrainReply
from oneliac_flwr.flower.strategy import Aggregate
from oneliac_flwr.privacy import (
    DifferentialPrivacy,
    GaussianRelease,
    PrivacyLedger,
    calibrate_noise_multiplier,
    client_noise_std,
    clip_l2,
    distributed_noise_share,
    distributed_release,
    effective_sensitivity,
    gdp_epsilon,
)
from oneliac_flwr.results import RoundRecord
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = [
    "LEDGER_FILE",
    "LedgerGuard",
    "SampleLevelGuard",
    "apply_update_privacy",
    "build_privacy_guard",
    "distributed_noise_multiplier",
    "distributed_share_std",
    "guaranteed_contributors",
    "expected_declaration",
    "noise_multiplier_for",
]

logger = logging.getLogger("oneliac_flwr")

LEDGER_FILE = "privacy_ledger.json"


def noise_multiplier_for(config: ExperimentConfig) -> float:
    """``privacy_budget.noise_multiplier``, or the one that spends the budget in exactly
    ``aggregation_config.max_rounds`` full-participation Gaussian rounds."""
    budget = config.privacy_budget
    if budget.noise_multiplier is not None:
        return budget.noise_multiplier
    return calibrate_noise_multiplier(
        epsilon=budget.epsilon, delta=budget.delta, rounds=config.aggregation_config.max_rounds
    )


def guaranteed_contributors(config: ExperimentConfig) -> int:
    """Fewest organizations in any aggregated round: the ``t`` distributed noise is sized for."""
    return max(2, config.aggregation_config.min_participants)


def distributed_share_std(config: ExperimentConfig, *, noise_multiplier: float) -> float:
    """Std of one client's distributed noise share, so ``t`` honest shares give ``z * C``."""
    return client_noise_std(
        noise_multiplier=noise_multiplier,
        clip_norm=config.privacy_budget.clip_norm,
        min_contributors=guaranteed_contributors(config),
    )


def distributed_noise_multiplier(config: ExperimentConfig, *, dimension: int, frac_bits: int) -> float:
    """Noise multiplier of the *total* noise for distributed DP, relative to ``clip_norm``.

    The ledger accounts distributed noise against the effective sensitivity (clip norm
    plus the quantization allowance), so a calibrated multiplier is scaled up by that
    ratio: the budget then lasts exactly ``max_rounds``. A configured multiplier is used
    as it is (and the run stops when the budget is spent).
    """
    budget = config.privacy_budget
    z = noise_multiplier_for(config)
    if budget.noise_multiplier is not None:
        return z
    sensitivity = effective_sensitivity(
        clip_norm=budget.clip_norm,
        dimension=dimension,
        fractional_bits=frac_bits,
        min_contributors=guaranteed_contributors(config),
    )
    return z * sensitivity / budget.clip_norm


def expected_declaration(config: ExperimentConfig) -> DeclaredPrivacy | None:
    """What every submission must declare under the configured DP mode (``None``: no DP)."""
    budget = config.privacy_budget
    if budget.mode == "none":
        return None
    if budget.mode == "sample":
        return DeclaredPrivacy(clip_norm=budget.clip_norm, mechanism="gaussian", epsilon_spent=budget.epsilon)
    mechanism = budget.mechanism if budget.mode == "release" else "gaussian"
    return DeclaredPrivacy(clip_norm=budget.clip_norm, mechanism=mechanism)


class LedgerGuard:
    """Coordinator-side accounting for the ``organization`` and ``release`` modes.

    Parameters
    ----------
    config : ExperimentConfig
        ``privacy_budget.*`` and ``aggregation_config.*``.
    dimension : int
        Number of model parameters (quantization allowance of distributed noise).
    frac_bits : int, optional
        Fractional bits of the secure-sum ring (distributed noise only).
    ledger_path : Path, optional
        Where the ledger is saved after every round; an existing ledger there is resumed.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        dimension: int,
        frac_bits: int | None = None,
        ledger_path: Path | None = None,
    ) -> None:
        budget = config.privacy_budget
        self.config = config
        self.mode = budget.mode
        self.clip_norm = budget.clip_norm
        self.min_contributors = guaranteed_contributors(config)
        self.ledger_path = ledger_path
        self.frac_bits = frac_bits
        rounds = config.aggregation_config.max_rounds
        self.z = noise_multiplier_for(config)
        self.client_std = 0.0
        self.release_epsilon: float | None = None
        self.distributed = self.mode == "organization" and budget.noise_placement == "distributed"
        if self.mode == "organization" and self.distributed:
            if config.aggregation_config.aggregation_method != "secure_sum" or frac_bits is None:
                raise ConfigError(
                    "privacy_budget.noise_placement",
                    "'distributed' needs aggregation_config.aggregation_method='secure_sum' "
                    "(otherwise the coordinator would see every noise share's update)",
                )
            self.z = distributed_noise_multiplier(config, dimension=dimension, frac_bits=frac_bits)
            self.client_std = distributed_share_std(config, noise_multiplier=self.z)
            self.event: Any = distributed_release(
                noise_std=self.client_std,
                clip_norm=self.clip_norm,
                dimension=dimension,
                fractional_bits=frac_bits,
                min_contributors=self.min_contributors,
            )
        elif self.mode == "organization":
            self.event = GaussianRelease(self.z)
        elif budget.mechanism == "laplace":
            self.release_epsilon = budget.epsilon / rounds
            self.event = DifferentialPrivacy(self.release_epsilon, None, "laplace").release_event()
        else:
            self.release_epsilon = gdp_epsilon(mu=1.0 / self.z, delta=budget.delta)
            self.event = DifferentialPrivacy(self.release_epsilon, budget.delta, "gaussian").release_event()
        resumed = ledger_path is not None and ledger_path.is_file()
        self.ledger = PrivacyLedger.load(ledger_path) if resumed else PrivacyLedger(epsilon_budget=budget.epsilon, delta=budget.delta)
        if resumed and (self.ledger.epsilon_budget != budget.epsilon or self.ledger.delta != budget.delta):
            raise ConfigError(
                "privacy_budget",
                f"the saved ledger {ledger_path} has budget epsilon={self.ledger.epsilon_budget}, "
                f"delta={self.ledger.delta}; the config says epsilon={budget.epsilon}, delta={budget.delta}",
            )
        self.round_offset = max((e.round_number for e in self.ledger.entries), default=0)
        if resumed:
            logger.info("resumed privacy ledger %s: epsilon %.4f already spent", ledger_path, self.ledger.get_current_epsilon())

    def check_round(self, server_round: int) -> str | None:
        """Stop before a round that would exceed the budget."""
        if not self.ledger.would_exceed([self.event]):
            return None
        return (
            f"round {server_round} would raise epsilon from {self.ledger.get_current_epsilon():.4f} to "
            f"{self.ledger.epsilon_if([self.event]):.4f} > budget {self.ledger.epsilon_budget}"
        )

    def client_config(self) -> dict[str, int | float | str | bool]:
        """What clients need: mode, clip, and their noise (distributed or release)."""
        values: dict[str, int | float | str | bool] = {
            "mode": self.mode,
            "clip-norm": self.clip_norm,
            "noise-multiplier": self.z,
            "mechanism": self.config.privacy_budget.mechanism if self.mode == "release" else "gaussian",
            "delta": self.config.privacy_budget.delta,
            "client-noise-std": self.client_std,
        }
        if self.release_epsilon is not None:
            values["release-epsilon"] = self.release_epsilon
        if self.distributed and self.frac_bits is not None:
            values["frac-bits"] = self.frac_bits
        return values

    def privatize(self, server_round: int, aggregate: Aggregate, rng: np.random.Generator) -> Aggregate:
        """Central placement: Gaussian noise of std ``z * C`` on the sum of clipped updates."""
        if self.mode != "organization" or self.distributed:
            return aggregate
        count = len(aggregate.counted)
        sigma_mean = self.z * self.clip_norm / count
        noisy = [u + rng.normal(0.0, sigma_mean, size=u.shape) for u in aggregate.mean_update]
        return replace(aggregate, mean_update=noisy)

    def account(self, server_round: int, record: RoundRecord, replies: list[TrainReply]) -> None:
        """Record the round's release in the ledger, save it, and fill ``record.privacy``."""
        before = self.ledger.get_current_epsilon()
        self.ledger.record(
            [self.event],
            round_number=self.round_offset + server_round,
            label=f"{self.mode}:{'distributed' if self.distributed else 'central' if self.mode == 'organization' else 'local'}",
            clip_norm=self.clip_norm,
            participants=len(replies),
        )
        if self.ledger_path is not None:
            self.ledger.save(self.ledger_path)
        total = self.ledger.get_current_epsilon()
        record.privacy = {
            "mode": self.mode,
            "epsilon_round": total - before,
            "epsilon_total": total,
            "epsilon_cross_check": self.ledger.cross_check_epsilon(),
            "epsilon_closed_form": self.ledger.closed_form_epsilon(),
            "epsilon_budget": self.ledger.epsilon_budget,
            "delta": self.ledger.delta,
            "mechanism": self.client_config()["mechanism"],
            "noise_multiplier": self.z,
            "clip_norm": self.clip_norm,
            "participants": len(replies),
            "accountant": "pld",
        }

    def end_round(self, server_round: int, record: RoundRecord) -> None:
        """Nothing to learn: the ledger is updated in :meth:`account`."""

    def report(self) -> dict[str, Any]:
        """The ledger's report, plus the settings that produced it."""
        return {
            **self.ledger.report(),
            "mode": self.mode,
            "noise_placement": "distributed" if self.distributed else "central",
            "epsilon_budget": self.ledger.epsilon_budget,
            "noise_multiplier": self.z,
            "sampling": "none claimed: every sampled organization takes part (no amplification)",
        }


class SampleLevelGuard:
    """Coordinator side of ``sample`` mode: collects each organization's DP-SGD epsilon.

    Each client accounts for itself (its data never leaves); the coordinator stops the run
    when fewer than ``min_participants`` organizations can afford another round.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.can_continue: dict[str, bool] = {}
        self.rows: list[dict[str, Any]] = []

    def check_round(self, server_round: int) -> str | None:
        """Stop when too few organizations can afford the next round."""
        if server_round == 1 or not self.can_continue:
            return None
        able = sum(self.can_continue.values())
        minimum = self.config.aggregation_config.min_participants
        if able >= minimum:
            return None
        return f"only {able} organization(s) can afford round {server_round} within epsilon={self.config.privacy_budget.epsilon} (min_participants={minimum})"

    def client_config(self) -> dict[str, int | float | str | bool]:
        """Mode, clip, budget and horizon: each client calibrates its own noise."""
        budget = self.config.privacy_budget
        values: dict[str, int | float | str | bool] = {
            "mode": "sample",
            "clip-norm": budget.clip_norm,
            "epsilon-budget": budget.epsilon,
            "delta": budget.delta,
            "max-rounds": self.config.aggregation_config.max_rounds,
        }
        if budget.noise_multiplier is not None:
            values["noise-multiplier"] = budget.noise_multiplier
        return values

    def privatize(self, server_round: int, aggregate: Aggregate, rng: np.random.Generator) -> Aggregate:
        """Nothing to add: the noise was added inside each organization."""
        return aggregate

    def account(self, server_round: int, record: RoundRecord, replies: list[TrainReply]) -> None:
        """Record each organization's declared sample-level epsilon."""
        per_org: dict[str, float] = {}
        for reply in replies:
            declared = declared_privacy(reply.info)
            if declared is not None and declared.epsilon_spent is not None:
                per_org[reply.organization] = declared.epsilon_spent
            self.can_continue[reply.organization] = bool(reply.info.get("dp-can-continue", False))
        record.privacy = {
            "mode": "sample",
            "per_organization_epsilon": per_org,
            "epsilon_total": max(per_org.values(), default=0.0),
            "epsilon_budget": self.config.privacy_budget.epsilon,
            "delta": self.config.privacy_budget.delta,
            "clip_norm": self.config.privacy_budget.clip_norm,
            "mechanism": "gaussian",
            "participants": len(replies),
            "accountant": "rdp (Opacus history, Poisson-sampled Gaussian), per organization",
        }
        self.rows.append({"round": server_round, **record.privacy})

    def end_round(self, server_round: int, record: RoundRecord) -> None:
        """An organization that refused for its budget cannot continue."""
        for rejection in record.rejected:
            if rejection.check == "privacy_check" and "budget" in rejection.reason:
                self.can_continue[rejection.organization] = False

    def report(self) -> dict[str, Any]:
        """Per round, each organization's cumulative sample-level epsilon."""
        return {
            "mode": "sample",
            "epsilon_budget": self.config.privacy_budget.epsilon,
            "delta": self.config.privacy_budget.delta,
            "rounds": self.rows,
            "epsilon": max((r["epsilon_total"] for r in self.rows), default=0.0),
        }


def build_privacy_guard(
    config: ExperimentConfig,
    *,
    dimension: int,
    frac_bits: int | None,
    ledger_path: Path | None,
) -> LedgerGuard | SampleLevelGuard | None:
    """The guard for ``privacy_budget.mode`` (``None`` when DP is off)."""
    mode = config.privacy_budget.mode
    if mode == "none":
        return None
    if mode == "sample":
        return SampleLevelGuard(config)
    return LedgerGuard(config, dimension=dimension, frac_bits=frac_bits, ledger_path=ledger_path)


def apply_update_privacy(update: list[np.ndarray], settings: ConfigRecord) -> tuple[list[np.ndarray], DeclaredPrivacy]:
    """Client side of the ``organization`` and ``release`` modes, on one model update.

    Clips the update to ``clip-norm`` (L2) and adds the client's noise: a distributed
    share (``client-noise-std``) or a per-release :class:`DifferentialPrivacy` noise. The
    noise generator is seeded from the operating system (never reproducible, as DP needs).

    Returns
    -------
    tuple
        The privatized update and what this client declares about it.
    """
    mode = str(settings["mode"])
    clip = float(settings["clip-norm"])
    rng = np.random.default_rng(secrets.randbits(128))
    clipped, _norm = clip_l2([np.asarray(u, np.float64) for u in update], clip)
    mechanism = str(settings.get("mechanism", "gaussian"))
    if mode == "organization":
        std = float(settings.get("client-noise-std", 0.0))
        if std > 0:
            frac_bits = int(settings["frac-bits"])
            clipped = distributed_noise_share(clipped, noise_std=std, fractional_bits=frac_bits, rng=rng)
        declared = DeclaredPrivacy(clip_norm=clip, noise_multiplier=float(settings["noise-multiplier"]), mechanism="gaussian")
        return list(clipped), declared
    if mode == "release":
        epsilon = float(settings["release-epsilon"])
        delta = float(settings["delta"]) if mechanism == "gaussian" else None
        if mechanism == "laplace":
            # Laplace needs L1 sensitivity: scale the update so its L1 norm is at most `clip`.
            l1 = float(sum(np.abs(u).sum() for u in clipped))
            if l1 > clip:
                clipped = [u * (clip / l1) for u in clipped]
        mechanism_obj = DifferentialPrivacy(epsilon, delta, mechanism, rng=rng)
        noisy = mechanism_obj.add_noise_to_gradients(list(clipped), sensitivity=clip)
        declared = DeclaredPrivacy(clip_norm=clip, mechanism=mechanism, noise_multiplier=mechanism_obj.noise_multiplier)
        return list(noisy), declared
    raise ConfigError("privacy_budget.mode", f"no update-level privacy for mode {mode!r}")
