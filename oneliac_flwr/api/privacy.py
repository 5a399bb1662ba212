"""Differential privacy of REST rounds: the core guard over a ledger kept in the database.

The guard is the core's :class:`~oneliac_flwr.coordinator.privacy_guard.LedgerGuard` (the
same one the Flower path uses); only its store differs. :class:`DatabaseLedgerStore` keeps
the ledger in the one-row table ``privacy_ledger``, HMAC-tagged, and writes it in the
transaction of the round transition or submission that spends the budget. The service
keeps no ledger in memory: every transaction takes a fresh guard over the stored ledger
(:meth:`RestPrivacy.guard`), whose load checks the tag and replays every event, so an
edited row stops the service (at start-up, and before any round moves on).

Replaying is slow (seconds for a few dozen rounds of PLD accounting), so each process keeps
the last ledger it verified or wrote (:class:`LedgerCache`), keyed by the SHA-256 of the
whole tagged row. Every load reads the row in its own transaction and uses the cached
ledger (a copy) only if the row is byte for byte the one verified; any other row (a
release written by another process, a rollback, an edit with or without its tag) is
verified and replayed again. The cache is an optimisation, never a source of state.

Supported over REST: ``privacy_budget.mode`` ``none``, ``release`` (each hospital clips
and noises its own update and declares it; ``privacy_check`` verifies the declaration),
with ``fedavg`` or ``secure_sum`` rounds, and ``organization``: with ``noise_placement:
central`` under ``fedavg`` (the coordinator clips each update and the guard adds Gaussian
noise to the mean) or ``secure_sum`` (each hospital clips before masking; the guard noises
the unmasked mean at the quantized sensitivity), and with ``distributed`` under
``secure_sum`` (each hospital adds its own noise share before masking; the guard accounts
the unmasked sum). ``sample`` is refused at start-up.

Where a release is accounted is the Flower path's rule: a sealed ``fedavg`` update on
receipt (:meth:`LedgerGuard.on_receipt`), a secure sum when it is unmasked
(:meth:`LedgerGuard.on_reveal`, with the number of counted organizations), before any
check can drop the round.

The MAC key is a file on the coordinator's host, ``<state_dir>/<federation>/``
``coordinator-ledger.key`` (mode 0600), not in the database: someone who can write the
database but not that file cannot forge a ledger. It cannot stop a rollback of the whole
database to an older, validly tagged state (see ``docs/rest-api.md``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oneliac_flwr.api.store import PrivacyLedgerRow, Round
from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator.privacy_guard import LedgerGuard, expected_declaration, federation_state_dir
from oneliac_flwr.errors import ConfigError, PrivacyError
from oneliac_flwr.privacy import DifferentialPrivacy, PrivacyLedger
from oneliac_flwr.privacy.integrity import StateIntegrityError
from oneliac_flwr.privacy.ledger import LedgerIntegrityError, load_or_create_ledger_key
from oneliac_flwr.secure import RingSpec
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = ["LEDGER_KEY_FILE", "LEDGER_SOURCE", "DatabaseLedgerStore", "LedgerCache", "RestPrivacy", "privacy_unsupported"]

LEDGER_KEY_FILE = "coordinator-ledger.key"
LEDGER_SOURCE = "database table privacy_ledger"


def privacy_unsupported(config: ExperimentConfig) -> ConfigError | None:
    """The error naming the field when ``privacy_budget`` cannot run over REST, else ``None``."""
    budget = config.privacy_budget
    if budget.mode == "none":
        return None
    if budget.mode == "sample":
        return ConfigError(
            "privacy_budget.mode",
            "'sample' (DP-SGD accounted by each hospital) is not supported over REST; use 'release' or 'organization'",
        )
    method = config.aggregation_config.aggregation_method
    if budget.mode == "organization" and budget.noise_placement == "distributed" and method != "secure_sum":
        return ConfigError(
            "privacy_budget.noise_placement",
            "'distributed' noise shares need aggregation_config.aggregation_method=secure_sum (otherwise the "
            "coordinator would see every noise share's update); use 'central' with fedavg",
        )
    if method not in ("fedavg", "secure_sum"):
        return ConfigError("aggregation_config.aggregation_method", f"unknown method {method!r}")
    return None


class LedgerCache:
    """The last verified ledger of this process, keyed by the digest of its tagged row.

    Thread-safe; :meth:`get` and :meth:`put` hand out and keep copies, so a guard that
    records a release in a transaction that is then rolled back never changes the cache.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[str, PrivacyLedger] | None = None

    @staticmethod
    def digest(document: str) -> str:
        """SHA-256 of the row's document (tag included)."""
        return hashlib.sha256(document.encode()).hexdigest()

    def get(self, document: str) -> PrivacyLedger | None:
        """A copy of the ledger verified from exactly ``document``, or ``None``."""
        digest = self.digest(document)
        with self._lock:
            if self._entry is None or self._entry[0] != digest:
                return None
            return copy.deepcopy(self._entry[1])

    def put(self, document: str, ledger: PrivacyLedger) -> None:
        """Remember ``ledger`` as the verified content of ``document``."""
        entry = (self.digest(document), copy.deepcopy(ledger))
        with self._lock:
            self._entry = entry


class DatabaseLedgerStore:
    """The REST service's :class:`~oneliac_flwr.coordinator.privacy_guard.LedgerStore`: one
    row of ``privacy_ledger``, read and written in the caller's transaction.

    Parameters
    ----------
    session : Session
        The transaction the ledger is read and written in.
    key : bytes
        The HMAC key (see the module docstring).
    cache : LedgerCache, optional
        The process's cache of the last verified ledger (none: verify on every load).
    """

    source = LEDGER_SOURCE

    def __init__(self, session: Session, *, key: bytes, cache: LedgerCache | None = None) -> None:
        self.session = session
        self._key = key
        self._cache = cache

    def load(self) -> PrivacyLedger | None:
        """The verified ledger, or ``None`` before any round has run.

        Raises
        ------
        StateIntegrityError
            The row is missing although rounds have run, is not JSON, carries a wrong or
            no MAC, or its events do not replay to what it stores.
        """
        row = self.session.get(PrivacyLedgerRow, 1)
        if row is None:
            rounds = self.session.scalar(select(func.count()).select_from(Round)) or 0
            if rounds:
                raise StateIntegrityError(
                    f"{self.source}: missing, but {rounds} round(s) have run in this federation; a ledger "
                    "cannot be reset silently. To start over explicitly, use a new database"
                )
            return None
        cached = self._cache.get(row.document) if self._cache is not None else None
        if cached is not None:  # this very row was verified by this process
            return cached
        try:
            data: Any = json.loads(row.document)
        except json.JSONDecodeError as exc:
            raise LedgerIntegrityError(self.source, "document", f"not JSON ({exc})") from None
        try:
            ledger = PrivacyLedger.from_signed_dict(data, key=self._key, source=self.source)
        except StateIntegrityError:
            raise
        except PrivacyError as exc:  # not a ledger at all: as bad as an edited one
            raise LedgerIntegrityError(self.source, "document", str(exc)) from None
        if self._cache is not None:
            self._cache.put(row.document, ledger)
        return ledger

    def save(self, ledger: PrivacyLedger) -> None:
        """Write the tagged ledger into the row (committed with the caller's transaction)."""
        document = json.dumps(ledger.to_signed_dict(key=self._key), sort_keys=True)
        row = self.session.get(PrivacyLedgerRow, 1)
        now = datetime.now(UTC)
        if row is None:
            self.session.add(PrivacyLedgerRow(id=1, document=document, updated_at=now))
        else:
            row.document, row.updated_at = document, now
        self.session.flush()
        if self._cache is not None:  # if the transaction rolls back, the row no longer matches: reloaded
            self._cache.put(document, ledger)


class RestPrivacy:
    """The privacy side of REST rounds: one calibrated guard, resumed over the stored
    ledger in each transaction.

    Parameters
    ----------
    config : ExperimentConfig
        ``privacy_budget`` (mode ``release`` or ``organization``), ``aggregation_config``
        and ``federation`` / ``state_dir`` (where the MAC key lives).
    dimension : int
        Number of model parameters.
    spec : RingSpec, optional
        The secure-sum ring (``secure_sum`` rounds): its fractional bits give the quantized
        sensitivity of central noise and the grid of distributed shares, its bound the
        share-failure probability (:func:`~oneliac_flwr.coordinator.secure_plan.secure_ring`).

    Raises
    ------
    ConfigError
        If the privacy settings cannot run over REST (:func:`privacy_unsupported`).
    """

    def __init__(self, config: ExperimentConfig, *, dimension: int, spec: RingSpec | None = None) -> None:
        problem = privacy_unsupported(config)
        if problem is not None:
            raise problem
        if config.privacy_budget.mode == "none":
            raise ConfigError("privacy_budget.mode", "RestPrivacy needs differential privacy ('release' or 'organization')")
        self.config = config
        self.mode = config.privacy_budget.mode
        frac_bits, ring_bound = (None, None) if spec is None else (spec.frac_bits, float(spec.clip_bound))
        self._template = LedgerGuard(config, dimension=dimension, frac_bits=frac_bits, ring_bound=ring_bound, store=None,
                                     round_offset=0)  # fmt: skip
        self._key = load_or_create_ledger_key(federation_state_dir(config), filename=LEDGER_KEY_FILE)
        self.cache = LedgerCache()
        self.expected = self._expected()

    def _expected(self) -> DeclaredPrivacy:
        """What every submission must declare: clip and mechanism, and in ``release`` mode
        the noise multiplier of the release the ledger accounts."""
        base = expected_declaration(self.config)
        if base is None:  # not reached: mode is release or organization
            raise ConfigError("privacy_budget.mode", "no declaration for mode 'none'")
        if self.mode != "release":
            return base
        budget = self.config.privacy_budget
        release = self._template.release_epsilon
        if release is None:
            raise ConfigError("privacy_budget.mode", "release mode without a per-release epsilon")
        delta = budget.delta if budget.mechanism == "gaussian" else None
        noise = DifferentialPrivacy(release, delta, budget.mechanism).noise_multiplier
        return DeclaredPrivacy(clip_norm=base.clip_norm, noise_multiplier=noise, mechanism=base.mechanism)

    @property
    def clips_on_server(self) -> bool:
        """``organization`` mode: the coordinator clips each update to ``clip_norm`` before
        the guard's noise (the noise is calibrated to that sensitivity)."""
        return self.mode == "organization"

    @property
    def clip_norm(self) -> float:
        """``privacy_budget.clip_norm``."""
        return self.config.privacy_budget.clip_norm

    def guard(self, session: Session) -> LedgerGuard:
        """The guard over the ledger stored in ``session``'s database (created on first use).

        Raises
        ------
        StateIntegrityError
            The stored ledger was edited, untagged, or deleted after rounds ran.
        ConfigError
            The stored ledger was written for another budget.
        """
        return self._template.with_store(DatabaseLedgerStore(session, key=self._key, cache=self.cache), round_offset=0)

    @property
    def noises_centrally(self) -> bool:
        """The coordinator adds the noise (``organization`` mode, central placement)."""
        return self._template.noises_centrally

    def client_settings(self) -> dict[str, int | float | str | bool]:
        """What a hospital needs to privatize its update (mode, clip, mechanism, noise,
        per-release epsilon and delta; for distributed noise the ring's ``frac-bits``, the
        ``min-contributors`` its share is sized for and the resulting ``share-std``): the
        Flower path's client config."""
        values = self._template.client_config()
        if self.mode == "release" and self.expected.noise_multiplier is not None:
            values["noise-multiplier"] = self.expected.noise_multiplier
        if self._template.distributed:
            values["min-contributors"] = self._template.min_contributors
            values["share-std"] = self._template.client_std
        if self.mode == "organization":
            values["noise-placement"] = "distributed" if self._template.distributed else "central"
        return values
