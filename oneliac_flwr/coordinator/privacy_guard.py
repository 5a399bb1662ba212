"""The coordinator's differential-privacy guard, the same for every transport.

Four units of privacy, chosen by ``privacy_budget.mode`` (see ``docs/privacy.md``):

- ``sample``: DP-SGD inside each organization (Opacus, Poisson sampling). Each hospital
  accounts for itself and refuses to train when its next round would exceed its budget.
- ``organization``: DP-FedAvg. Updates are clipped to ``clip_norm``, weighted equally, and
  Gaussian noise of std ``z * clip_norm`` is added to their sum: by the coordinator
  (``noise_placement: central``) or as shares by the clients before secure-sum masking
  (``distributed``: the coordinator never sees an un-noised sum).
- ``release``: each organization releases its clipped update through
  :class:`~oneliac_flwr.privacy.DifferentialPrivacy` (local DP, analytic Gaussian or Laplace).

The coordinator keeps a :class:`~oneliac_flwr.privacy.PrivacyLedger` (PLD primary, RDP
cross-check) for the *federation* in a :class:`LedgerStore`, tagged with an HMAC: the
Flower path uses :class:`TaggedFileLedgerStore` (``<state_dir>/<federation>/``, keyed by a
secret there), the REST service a database row. A restarted coordinator resumes what was
spent, and an edited ledger is refused. A release is recorded the moment it reaches the
coordinator or is unmasked, before validation or any check that could skip the round.
Hospitals account for themselves too (:mod:`oneliac_flwr.flower.client_privacy`).

This module imports neither Flower nor HTTP; :mod:`oneliac_flwr.flower.privacy`
re-exports it for the Flower adapter.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator.aggregate import Aggregate
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.privacy import (
    DifferentialPrivacy,
    GaussianRelease,
    PrivacyLedger,
    calibrate_noise_multiplier,
    client_noise_std,
    distributed_release,
    effective_sensitivity,
    gdp_epsilon,
)
from oneliac_flwr.privacy.distributed import (
    quantized_sensitivity,
    share_bound,
    share_bound_failure_probability,
    share_failure_release,
)
from oneliac_flwr.privacy.integrity import StateIntegrityError
from oneliac_flwr.privacy.ledger import load_or_create_ledger_key
from oneliac_flwr.privacy.plan import BudgetPlan, budget_plan
from oneliac_flwr.results import RoundRecord
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = [
    "LEDGER_FILE",
    "LedgerGuard",
    "LedgerStore",
    "TaggedFileLedgerStore",
    "SampleLevelGuard",
    "build_privacy_guard",
    "federation_state_dir",
    "start_up_plan",
    "distributed_noise_multiplier",
    "distributed_share_std",
    "guaranteed_contributors",
    "expected_declaration",
    "noise_multiplier_for",
]

logger = logging.getLogger("oneliac_flwr")

LEDGER_FILE = "privacy_ledger.json"
LEDGER_KEY_FILE = "ledger.key"
SHARE_FAILURE_PROBABILITY = 1e-12
"""Per-client probability that a distributed noise share exceeds the ring's bound (sizes the ring)."""


def federation_state_dir(config: ExperimentConfig) -> Path:
    """``<state_dir>/<federation name>``: where the coordinator keeps a federation's ledger."""
    return Path(config.state_dir) / config.federation_name


class LedgerStore(Protocol):
    """Where a federation's ledger is kept between releases (the guard's storage seam).

    ``source`` names it in error messages. :meth:`load` returns the verified ledger
    (MAC checked, every event replayed), or ``None`` when none was started yet; it raises
    :class:`~oneliac_flwr.privacy.integrity.StateIntegrityError` when a ledger should exist
    and does not, or was edited. :meth:`save` keeps the ledger with its integrity tag.
    """

    source: str

    def load(self) -> PrivacyLedger | None:
        """The verified ledger, or ``None`` when this federation has none yet."""
        ...

    def save(self, ledger: PrivacyLedger) -> None:
        """Keep ``ledger`` (tagged) in place of the previous one."""
        ...


class TaggedFileLedgerStore:
    """The Flower path's store: ``<state_dir>/privacy_ledger.json`` with an HMAC keyed by
    ``<state_dir>/ledger.key`` (created once, mode 0600).

    Parameters
    ----------
    state_dir : Path
        The federation's state directory (:func:`federation_state_dir`).

    Raises
    ------
    StateIntegrityError
        If the key shows the directory in use but the ledger file is gone.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LEDGER_FILE
        self.source = str(self.path)
        in_use = (state_dir / LEDGER_KEY_FILE).is_file()
        self._key = load_or_create_ledger_key(state_dir, filename=LEDGER_KEY_FILE)
        if in_use and not self.path.is_file():
            raise StateIntegrityError(
                f"{self.path}: missing, but {state_dir / LEDGER_KEY_FILE} shows the federation "
                f"{state_dir.name!r} already spent budget here; a ledger cannot be reset silently. "
                "To start over explicitly, delete the whole federation folder"
            )

    def load(self) -> PrivacyLedger | None:
        """The saved ledger (MAC checked, events replayed), or ``None`` before the first save."""
        if not self.path.is_file():
            return None
        return PrivacyLedger.load(self.path, key=self._key)

    def save(self, ledger: PrivacyLedger) -> None:
        """Write the tagged ledger atomically."""
        ledger.save(self.path, key=self._key)


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
    if budget.noise_multiplier is not None:
        return budget.noise_multiplier
    # Every round also records the share-failure delta (shares beyond the ring's bound,
    # probability <= SHARE_FAILURE_PROBABILITY per client): calibrate for what is left.
    rounds = config.aggregation_config.max_rounds
    extra = min(1.0, config.secure_sum_participants() * SHARE_FAILURE_PROBABILITY) * (1.0 + math.exp(min(budget.epsilon, 700.0)))
    remaining = budget.delta - rounds * extra
    if remaining <= budget.delta / 2:
        raise ConfigError(
            "privacy_budget.delta",
            f"distributed noise: {rounds} rounds of share-failure delta ({extra:.3g} each) leave too little of "
            f"delta={budget.delta}; use a smaller epsilon or fewer participants",
        )
    z = calibrate_noise_multiplier(epsilon=budget.epsilon, delta=remaining, rounds=rounds)
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
        # no noise multiplier or epsilon: both follow from a hospital's row count, so they are not sent
        return DeclaredPrivacy(clip_norm=budget.clip_norm, mechanism="gaussian")
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
        Fractional bits of the secure-sum ring (distributed noise, and central noise
        under secure sum, whose encoding rounds each update before the noise is added).
    ring_bound : float, optional
        The secure-sum ring's per-coordinate bound (distributed noise: a share beyond it
        drops out, and that probability is added to delta every round).
    store : LedgerStore, optional
        Where the federation's ledger lives: it is resumed from there and saved there
        after every release, with an integrity tag. ``None`` keeps it in memory (tests).
    round_offset : int, optional
        Added to a round's number in the ledger. ``None``: the last round recorded so far,
        so that a new run of the same federation continues its numbering (Flower path);
        the REST service numbers rounds across restarts itself and passes 0.

    Raises
    ------
    ConfigError
        If the saved ledger was written for another budget.
    StateIntegrityError
        If the saved ledger was edited, or disappeared from a directory in use.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        dimension: int,
        frac_bits: int | None = None,
        ring_bound: float | None = None,
        store: LedgerStore | None = None,
        round_offset: int | None = None,
    ) -> None:
        budget = config.privacy_budget
        self.config = config
        self.mode = budget.mode
        self.clip_norm = budget.clip_norm
        self.min_contributors = guaranteed_contributors(config)
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
            self.events: list[Any] = [
                distributed_release(
                    noise_std=self.client_std,
                    clip_norm=self.clip_norm,
                    dimension=dimension,
                    fractional_bits=frac_bits,
                    min_contributors=self.min_contributors,
                )
            ]
            bound = ring_bound if ring_bound is not None else share_bound(
                clip_norm=self.clip_norm,
                noise_std=self.client_std,
                dimension=dimension,
                fractional_bits=frac_bits,
                failure_probability=SHARE_FAILURE_PROBABILITY,
            )
            failure = share_bound_failure_probability(
                bound=bound, clip_norm=self.clip_norm, noise_std=self.client_std, dimension=dimension, fractional_bits=frac_bits
            )
            # a client whose share falls outside the ring drops out: that probability joins delta
            self.events.append(
                share_failure_release(
                    failure_probability=failure, clients=config.secure_sum_participants(), epsilon_budget=budget.epsilon
                )
            )
        elif self.mode == "organization":
            self.events = [GaussianRelease(self.z)]
        elif budget.mechanism == "laplace":
            self.release_epsilon = budget.epsilon / rounds
            self.events = [DifferentialPrivacy(self.release_epsilon, None, "laplace").release_event()]
        else:
            self.release_epsilon = gdp_epsilon(mu=1.0 / self.z, delta=budget.delta)
            self.events = [DifferentialPrivacy(self.release_epsilon, budget.delta, "gaussian").release_event()]
        # Central noise under secure sum: the encoding rounds each clipped update to the grid
        # before the noise is added, so the sum's sensitivity is S = C + sqrt(d) 2^-(f+1).
        # The noise std is z * S, which keeps the accounted release exactly GaussianRelease(z).
        self.sensitivity = self.clip_norm
        secure = config.aggregation_config.aggregation_method == "secure_sum"
        if self.mode == "organization" and not self.distributed and secure and frac_bits is not None:
            self.sensitivity = quantized_sensitivity(clip_norm=self.clip_norm, dimension=dimension, fractional_bits=frac_bits)
        self._resume(store, round_offset)

    @property
    def sum_noise_std(self) -> float:
        """Largest std of the noise inside an unmasked secure sum: distributed shares of at
        most ``secure_sum_participants()`` clients (0 without distributed noise). The
        aggregate's bounds check allows for it."""
        if not self.distributed:
            return 0.0
        return self.client_std * math.sqrt(self.config.secure_sum_participants())

    @property
    def noises_centrally(self) -> bool:
        """``organization`` mode with central noise: the coordinator holds the un-noised sum
        until :meth:`privatize`, so nothing computed from it before then may be published."""
        return self.mode == "organization" and not self.distributed

    def with_store(self, store: LedgerStore, *, round_offset: int | None = None) -> LedgerGuard:
        """The same guard (settings, events, noise) over the ledger in ``store``.

        The calibration is done once; a coordinator that keeps no state in memory (the
        REST service) takes a fresh guard over the stored ledger for every transaction.
        """
        twin = copy.copy(self)
        twin._resume(store, round_offset)
        return twin

    def _resume(self, store: LedgerStore | None, round_offset: int | None) -> None:
        self.store = store
        self.ledger = self._load_or_start(self.config.privacy_budget.epsilon, self.config.privacy_budget.delta)
        last = max((e.round_number for e in self.ledger.entries), default=0)
        self.round_offset = last if round_offset is None else round_offset
        self._released: dict[int, tuple[int, float]] = {}  # round -> (participants, epsilon before)

    def _load_or_start(self, epsilon: float, delta: float) -> PrivacyLedger:
        ledger = self.store.load() if self.store is not None else None  # replays every event; refuses edits
        if ledger is None:
            ledger = PrivacyLedger(epsilon_budget=epsilon, delta=delta)
            self._save(ledger)
            return ledger
        if ledger.epsilon_budget != epsilon or ledger.delta != delta:
            raise ConfigError(
                "privacy_budget",
                f"the federation {self.config.federation_name!r} has a ledger ({self.store.source}) with budget "
                f"epsilon={ledger.epsilon_budget}, delta={ledger.delta}; the config says epsilon={epsilon}, "
                f"delta={delta}. A budget cannot be changed mid-federation: start a new federation "
                "(federation.name=...) instead",
            )
        logger.info("resumed privacy ledger %s: epsilon %.4f already spent", self.store.source, ledger.get_current_epsilon())
        return ledger

    def _save(self, ledger: PrivacyLedger) -> None:
        if self.store is not None:
            self.store.save(ledger)

    def check_round(self, server_round: int) -> str | None:
        """Stop before a round that would exceed the budget."""
        if not self.ledger.would_exceed(self.events):
            return None
        return (
            f"round {server_round} would raise epsilon from {self.ledger.get_current_epsilon():.4f} to "
            f"{self.ledger.epsilon_if(self.events):.4f} > budget {self.ledger.epsilon_budget}"
        )

    def client_config(self) -> dict[str, int | float | str | bool]:
        """What clients need: mode, clip, and their noise (distributed or release)."""
        values: dict[str, int | float | str | bool] = {
            "mode": self.mode,
            "clip-norm": self.clip_norm,
            "noise-multiplier": self.z,
            "mechanism": self.config.privacy_budget.mechanism if self.mode == "release" else "gaussian",
            "delta": self.config.privacy_budget.delta,
        }
        if self.release_epsilon is not None:
            values["release-epsilon"] = self.release_epsilon
        if self.distributed and self.frac_bits is not None:
            values["frac-bits"] = self.frac_bits
        return values

    def _record(self, server_round: int, participants: int) -> None:
        """Record this round's release once, and save the ledger at once."""
        if server_round in self._released or participants <= 0 or self.recorded(server_round):
            return
        self._released[server_round] = (participants, self.ledger.get_current_epsilon())
        label = f"{self.mode}:{'distributed' if self.distributed else 'central' if self.mode == 'organization' else 'local'}"
        self.ledger.record(
            self.events, round_number=self.round_offset + server_round, label=label, clip_norm=self.clip_norm, participants=participants
        )
        self._save(self.ledger)

    def recorded(self, server_round: int) -> bool:
        """Whether the ledger already holds this round's release (any process may have written it)."""
        number = self.round_offset + server_round
        return any(entry.round_number == number for entry in self.ledger.entries)

    def on_receipt(self, server_round: int, releases: int) -> None:
        """Plain replies carrying an update arrived: in ``release`` mode each is a release."""
        if self.mode == "release":
            self._record(server_round, releases)

    def on_reveal(self, server_round: int, contributors: int) -> None:
        """A secure sum was unmasked: a release in distributed and ``release`` modes."""
        if self.distributed or self.mode == "release":
            self._record(server_round, contributors)

    def privatize(self, server_round: int, aggregate: Aggregate, rng: np.random.Generator) -> Aggregate:
        """Central placement: Gaussian noise of std ``z * C`` on the sum of clipped updates.

        The release is recorded here, before anything else can skip the round.
        """
        if self.mode != "organization" or self.distributed:
            return aggregate
        count = len(aggregate.counted)
        sigma_mean = self.z * self.sensitivity / count
        noisy = [u + rng.normal(0.0, sigma_mean, size=u.shape) for u in aggregate.mean_update]
        self._record(server_round, count)
        return replace(aggregate, mean_update=noisy)

    def end_round(self, server_round: int, record: RoundRecord) -> None:
        """Fill ``record.privacy`` when this round released anything (skipped rounds too)."""
        if server_round not in self._released:
            return
        participants, before = self._released[server_round]
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
            "participants": participants,
            "accountant": "pld",
            "recorded": "on receipt" if self.mode == "release" else "on unmasking" if self.distributed else "when noised",
        }

    def report(self) -> dict[str, Any]:
        """The ledger's report, plus the settings that produced it."""
        return {
            **self.ledger.report(),
            "mode": self.mode,
            "federation": self.config.federation_name,
            "ledger_path": self.store.source if self.store is not None else None,
            "noise_placement": "distributed" if self.distributed else "central",
            "epsilon_budget": self.ledger.epsilon_budget,
            "noise_multiplier": self.z,
            "sampling": "none claimed: every sampled organization takes part (no amplification)",
        }


class SampleLevelGuard:
    """Coordinator side of ``sample`` mode: each hospital accounts for itself.

    A hospital's DP-SGD epsilon depends on its sample rate, i.e. on its row count, so it
    is not sent: each hospital keeps its history on its own disk and refuses
    (``privacy_check``) a round that would exceed its cap. The coordinator stops the run
    when a round found fewer than ``min_participants`` organizations able to train.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.exhausted: set[str] = set()
        self.rows: list[dict[str, Any]] = []
        self._stop: str | None = None

    def check_round(self, server_round: int) -> str | None:
        """Stop after a round in which too few organizations could afford to train."""
        return self._stop

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

    def on_receipt(self, server_round: int, releases: int) -> None:
        """Nothing to record: each hospital records its own DP-SGD steps before sending."""

    def on_reveal(self, server_round: int, contributors: int) -> None:
        """Nothing to record (as :meth:`on_receipt`)."""

    def privatize(self, server_round: int, aggregate: Aggregate, rng: np.random.Generator) -> Aggregate:
        """Nothing to add: the noise was added inside each organization."""
        return aggregate

    def end_round(self, server_round: int, record: RoundRecord) -> None:
        """Organizations that refused with ``privacy_check`` cannot continue; stop when too few can."""
        refused = {r.organization for r in record.rejected if r.check == "privacy_check"}
        self.exhausted |= refused
        minimum = self.config.aggregation_config.min_participants
        if record.status != "ok" and refused and len(record.participants) < minimum:
            self._stop = (
                f"in round {server_round}, {len(refused)} organization(s) refused for their privacy budget "
                f"(privacy_check) and fewer than min_participants={minimum} could train"
            )
        record.privacy = {
            "mode": "sample",
            "epsilon_budget": self.config.privacy_budget.epsilon,
            "delta": self.config.privacy_budget.delta,
            "clip_norm": self.config.privacy_budget.clip_norm,
            "mechanism": "gaussian",
            "participants": len(record.participants),
            "refused_for_budget": sorted(refused),
            "accountant": "each hospital, on its own disk (PLD over its Opacus DP-SGD history)",
        }
        self.rows.append({"round": server_round, **record.privacy})

    def report(self) -> dict[str, Any]:
        """Per round, who trained and who refused for its budget."""
        return {
            "mode": "sample",
            "epsilon_budget": self.config.privacy_budget.epsilon,
            "delta": self.config.privacy_budget.delta,
            "rounds": self.rows,
            "per_organization_epsilon": "kept by each hospital; not sent (it depends on the hospital's row count)",
        }


def build_privacy_guard(
    config: ExperimentConfig,
    *,
    dimension: int,
    frac_bits: int | None,
    state_dir: Path | None,
    ring_bound: float | None = None,
) -> LedgerGuard | SampleLevelGuard | None:
    """The guard for ``privacy_budget.mode`` (``None`` when DP is off)."""
    mode = config.privacy_budget.mode
    if mode == "none":
        return None
    if mode == "sample":
        return SampleLevelGuard(config)
    store = TaggedFileLedgerStore(state_dir) if state_dir is not None else None
    return LedgerGuard(config, dimension=dimension, frac_bits=frac_bits, ring_bound=ring_bound, store=store)


def start_up_plan(config: ExperimentConfig) -> BudgetPlan | None:
    """What the budget implies, before round 1 (``None`` without DP, and in ``sample`` mode,
    where each hospital calibrates for its own row count, which the coordinator never learns).

    Organizations per round: ``min_participants``, the fewest any aggregated round has.
    """
    budget = config.privacy_budget
    if budget.mode not in ("organization", "release"):
        return None
    return budget_plan(
        epsilon=budget.epsilon,
        delta=budget.delta,
        mode=budget.mode,
        rounds=config.aggregation_config.max_rounds,
        num_organizations=guaranteed_contributors(config),
        clip_norm=budget.clip_norm,
        noise_multiplier=budget.noise_multiplier,
        mechanism=budget.mechanism,
    )
