"""Training rounds over REST: ``aggregation_method: fedavg`` (sealed updates) here, and the
secure-sum stages of ``aggregation_method: secure_sum`` in :mod:`oneliac_flwr.api.secure_rounds`.

All round state is in the database. :meth:`RoundEngine.advance` is the one place a round
changes stage; every process calls it (a ticker each second, and before and after each
submission), under a database lock (SQLite: an immediate transaction; PostgreSQL: a
transaction-scoped advisory lock), so a transition happens exactly once whichever
process gets there first. A round opens when no round is open, fewer than
``max_rounds`` have run and at least ``min_participants`` organizations are active; its
roster is the active organizations at that moment. It closes when every organization on
the roster has submitted or at its deadline (``timeout_minutes`` after opening, also when
no request arrives); the missing ones are dropouts. The accepted updates go through the
coordinator core (:func:`~oneliac_flwr.coordinator.plain_aggregate`,
:class:`~oneliac_flwr.coordinator.RoundCore`); fewer than ``min_participants`` skips the
round with the model unchanged.

Under differential privacy (:mod:`oneliac_flwr.api.privacy`) three hooks call the core
guard in the same transaction: :meth:`RoundEngine.check_round` before a round opens (a
round that would exceed the budget is recorded as ``budget_exhausted`` instead, and no
round opens after it), :meth:`RoundEngine.on_receipt` when a sealed update opens (a
``release`` is accounted before validation, as in the Flower path), and the guard's
``privatize`` inside :meth:`RoundCore.complete` at close (``organization`` noise).

The inner strategy's server update (:func:`~oneliac_flwr.coordinator.build_server_update`)
is built afresh for every close (:func:`closing_core`) and restored from the state stored
with the round's base model version; its new state is stored with the version it produces
(:func:`store_version`), in the same transaction. FedAvgM's momentum and FedAdam's moments
therefore live in the database only: any process, also after SIGKILL, continues them.

When a round closes, its sealed updates are erased in the same transaction (the rows keep
their digest and receipt, so a re-submission still gets its receipt), unless
``coordinator.keep_sealed_updates``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from safetensors import SafetensorError
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from oneliac_flwr.api.privacy import RestPrivacy
from oneliac_flwr.api.secure_rounds import SecureRounds, secure_unavailable
from oneliac_flwr.api.store import (
    AuditEvent, CoordinatorKey, Database, ModelVersion, Organization, Round, SecureRoundStage, Submission,
)  # fmt: skip
from oneliac_flwr.config import ExperimentConfig, StrategyConfig
from oneliac_flwr.coordinator import PrivacyGuard, RoundCore, build_server_update, plain_aggregate, server_state
from oneliac_flwr.coordinator.secure_plan import secure_ring
from oneliac_flwr.coordinator.checks import check_update, submission_policy, update_of
from oneliac_flwr.errors import ConfigError, ProtocolViolation, ValidationFailed
from oneliac_flwr.privacy import clip_l2
from oneliac_flwr.privacy.entropy import os_generator
from oneliac_flwr.secure.sealed import open_sealed, sealing_context
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = [
    "BUDGET_EXHAUSTED",
    "ROUND_LOCK",
    "RoundEngine",
    "closing_core",
    "decode_arrays",
    "encode_arrays",
    "model_version_name",
    "rounds_unavailable",
    "store_version",
]

logger = logging.getLogger("oneliac_flwr.api")

ROUND_LOCK = 0x0E11AD  # PostgreSQL advisory-lock key held while a round changes stage
BUDGET_EXHAUSTED = "budget_exhausted"  # status of the round that the privacy budget did not let open


def model_version_name(training_round: int) -> str:
    """Version label of the model after ``training_round`` (``1.0.0`` is the initial one)."""
    return f"1.0.{training_round}"


def aware(moment: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def encode_arrays(names: list[str], arrays: list[np.ndarray]) -> bytes:
    """A safetensors file of named arrays (never pickle)."""
    return safetensors_save({n: np.ascontiguousarray(a) for n, a in zip(names, arrays, strict=True)})


def decode_arrays(blob: bytes, names: list[str]) -> list[np.ndarray]:
    """The arrays of a safetensors file in ``names`` order.

    Raises
    ------
    ValidationFailed
        ``bounds_check``: not a safetensors file, or not the model's tensor names.
    """
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ValidationFailed(f"bounds_check: not a safetensors file: {exc}") from None
    if sorted(tensors) != sorted(names):
        raise ValidationFailed(f"bounds_check: expected tensors {sorted(names)}, got {sorted(tensors)[:10]}")
    return [tensors[n] for n in names]


def rounds_unavailable(config: ExperimentConfig) -> str | None:
    """Why this configuration cannot run rounds over REST yet, or ``None`` when it can."""
    if config.aggregation_config.aggregation_method == "secure_sum":
        refusal = secure_unavailable(config)
        if refusal is not None:
            return refusal
    return None


def closing_core(session: Session, *, base_version: str, strategy: StrategyConfig, min_participants: int,
                 rng: np.random.Generator, privacy: PrivacyGuard | None) -> RoundCore:  # fmt: skip
    """The core that closes a round: a fresh server update for ``strategy``, continued from
    the state stored with ``base_version`` (none for the initial model or a stateless rule).

    Raises
    ------
    ProtocolViolation
        The base version is not kept, or its stored state is not this optimizer's.
    """
    row = session.get(ModelVersion, base_version)
    if row is None:
        raise ProtocolViolation(f"no kept model version {base_version!r}")
    server_update = build_server_update(strategy)
    if row.server_state is not None:
        load = getattr(server_update, "load_state_dict", None)
        if not callable(load):
            raise ProtocolViolation(f"model version {base_version} carries server-optimizer state, but strategy "
                                    f"{strategy.name!r} has none")  # fmt: skip
        try:
            load(safetensors_load(row.server_state))
        except (SafetensorError, ValueError, TypeError) as exc:
            raise ProtocolViolation(f"model version {base_version}: unreadable server-optimizer state: {exc}") from None
    return RoundCore(min_participants=min_participants, server_update=server_update, rng=rng, privacy=privacy)


def store_version(session: Session, *, training_round: int, names: list[str], arrays: list[np.ndarray],
                  core: RoundCore, contributors: int, epsilon_spent: float | None, now: datetime) -> None:  # fmt: skip
    """Keep the model produced by ``training_round`` with the server-optimizer state that
    produced it (in the caller's transaction)."""
    weights_file = encode_arrays(names, arrays)
    state = server_state(core.server_update)
    session.add(ModelVersion(version=model_version_name(training_round), training_round=training_round,
                             weights=weights_file, sha256=hashlib.sha256(weights_file).hexdigest(),
                             contributors=contributors, accuracy=None, epsilon_spent=epsilon_spent, created_at=now,
                             server_state=safetensors_save(state) if state else None))  # fmt: skip


class RoundEngine:
    """Round transitions and submission checks, with every piece of state in ``database``.

    Parameters
    ----------
    database : Database
        The coordinator's database.
    config : ExperimentConfig
        ``aggregation_config`` (min_participants, timeout_minutes, max_rounds),
        ``validation`` (checks and bounds), ``strategy`` (the server rule),
        ``privacy_budget`` (:class:`~oneliac_flwr.api.privacy.RestPrivacy`).
    keep_sealed_updates : bool
        ``coordinator.keep_sealed_updates``: do not erase sealed updates at round close.

    Raises
    ------
    ConfigError
        If ``privacy_budget`` cannot run over REST (the message names the field).
    """

    def __init__(self, database: Database, config: ExperimentConfig, *, keep_sealed_updates: bool = False) -> None:
        self.database = database
        self.config = config
        self.keep_sealed_updates = keep_sealed_updates
        self.unavailable = rounds_unavailable(config)
        settings = config.aggregation_config
        self.timeout = timedelta(minutes=settings.timeout_minutes)
        self.max_rounds = settings.max_rounds
        # participant floor and noise source; each close builds its own server update (closing_core)
        self.core = RoundCore(
            min_participants=settings.min_participants,
            server_update=build_server_update(config.strategy),
            rng=np.random.default_rng(secrets.randbits(128)),
        )
        secure = settings.aggregation_method == "secure_sum"
        # the ring, sized like the Flower path's (it also holds distributed noise shares)
        spec = secure_ring(config, dimension=_dimension(config)) if secure else None
        self.privacy = RestPrivacy(config, dimension=_dimension(config), spec=spec) if config.privacy_budget.mode != "none" else None
        # wakes long polls (a hint: they re-read the database); never holds federation state
        self._change = threading.Condition()
        self._generation = 0  # transitions seen by this process (committed here or noticed by watch())
        self._waiting = 0  # long polls waiting now
        self._watched: tuple[int | None, str | None, str | None] | None = None
        # where this process's own commits left a round (round -> (change counter, (status,
        # stage, key pass))), and the counter of the last change without that knowledge
        # (the ticker's, another process's): a woken wait that only this process's moves
        # explain compares without reading the database
        self._moves: dict[int, tuple[int, tuple[str, str | None, int]]] = {}
        self._unexplained = 0
        self.secure: SecureRounds | None = None
        if self.unavailable is None and spec is not None:
            self.secure = SecureRounds(config, core=self.core, spec=spec, privacy=self.privacy)

    # ------------------------------------------------------------------ keys and models
    def ensure_key(self) -> None:
        """Create the coordinator's sealing key once (whichever process is first)."""
        try:
            with self.database.transaction() as session:
                if session.get(CoordinatorKey, 1) is not None:
                    return
                private = X25519PrivateKey.generate()
                session.add(CoordinatorKey(id=1, private_key=private.private_bytes_raw(),
                                           public_key=private.public_key().public_bytes_raw(),
                                           created_at=datetime.now(UTC)))  # fmt: skip
        except IntegrityError:
            return

    def ensure_privacy(self) -> None:
        """Load (and replay) the stored privacy ledger, or start it (whichever process is
        first); an edited ledger raises here, so the service does not start."""
        if self.privacy is None:
            return
        with self.database.transaction() as session:
            self.lock(session)
            self.privacy.guard(session)

    def erase_closed_updates(self) -> None:
        """Unless ``keep_sealed_updates``, erase the sealed updates of every round no longer
        open (rounds closed before an upgrade, or while they were kept)."""
        if self.keep_sealed_updates:
            return
        with self.database.transaction() as session:
            closed = select(Round.number).where(Round.status != "open").scalar_subquery()
            session.execute(update(Submission).where(Submission.round.in_(closed), Submission.payload.is_not(None))
                            .values(payload=None))  # fmt: skip

    def ensure_server_state(self) -> None:
        """Refuse to start when the latest model version carries server-optimizer state that
        ``strategy`` cannot continue (another optimizer, other shapes): every round would
        otherwise fail to close.

        Raises
        ------
        ConfigError
            ``strategy``: the stored state is not this strategy's (the message says which version).
        """
        with self.database.read() as session:
            latest = session.scalars(select(ModelVersion.version).order_by(ModelVersion.training_round.desc()).limit(1)).first()
            if latest is None:
                return
            try:
                closing_core(session, base_version=latest, strategy=self.config.strategy,
                             min_participants=self.core.min_participants, rng=self.core.rng, privacy=None)  # fmt: skip
            except ProtocolViolation as exc:
                raise ConfigError("strategy", f"{exc}; start with the strategy that produced it, or a new database") from None

    def public_key(self, session: Session) -> bytes:
        """The published X25519 key that fedavg updates are sealed to."""
        row = session.get(CoordinatorKey, 1)
        if row is None:
            raise ProtocolViolation("the coordinator has no sealing key yet")
        return row.public_key

    def _private_key(self, session: Session) -> X25519PrivateKey:
        row = session.get(CoordinatorKey, 1)
        if row is None:
            raise ProtocolViolation("the coordinator has no sealing key yet")
        return X25519PrivateKey.from_private_bytes(row.private_key)

    @staticmethod
    def model_arrays(session: Session, version: str) -> tuple[list[str], list[np.ndarray]]:
        """Names and arrays of a kept model version."""
        row = session.get(ModelVersion, version)
        if row is None:
            raise ProtocolViolation(f"no kept model version {version!r}")
        tensors = safetensors_load(row.weights)
        names = sorted(tensors)
        return names, [tensors[n] for n in names]

    # ------------------------------------------------------------------ locking
    def lock(self, session: Session) -> None:
        """Serialise round transitions across processes (SQLite already holds its write lock)."""
        if not self.database.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROUND_LOCK})

    # ------------------------------------------------------------------ transitions
    def advance(self, now: datetime | None = None) -> None:
        """Close the open round if it is complete or past its deadline; open the next one.

        Whether anything is due is first read from a snapshot without the write lock (every
        request and the ticker call this); only then is the lock taken, and the transition
        re-checked under it, so it happens once whichever process gets there first.
        """
        if self.unavailable is not None:
            return
        now = now or datetime.now(UTC)
        with self.database.read() as session:
            if not self._due(session, now):
                return
        try:
            self._advance(now)
        finally:
            self.changed()

    def advance_if_due(self) -> None:
        """:meth:`advance` for the read paths (status, long polls): skipped when
        :meth:`maybe_due` shows an open round before its deadlines (one query)."""
        if self.unavailable is not None:
            return
        with self.database.read() as session:
            if not self.maybe_due(session, datetime.now(UTC)):
                return
        self.advance()

    def _due(self, session: Session, now: datetime) -> bool:
        """Whether :meth:`_advance` would change anything now (read-only; re-checked under the lock)."""
        current = session.scalar(select(Round).order_by(Round.number.desc()).limit(1))
        if current is not None and current.status == BUDGET_EXHAUSTED:
            return False
        if current is not None and current.status == "open":
            if self.secure is not None:
                return self.secure.due(session, current, now)
            submitted = session.scalar(select(func.count()).select_from(Submission).where(Submission.round == current.number))
            return (submitted or 0) >= len(json.loads(current.roster)) or now >= aware(current.deadline)
        if (current.number if current is not None else 0) + 1 > self.max_rounds:
            return False
        active = session.scalar(select(func.count()).select_from(Organization).where(Organization.active.is_(True)))
        return self.core.enough(int(active or 0), "active organization(s)") is None

    def position(self, session: Session, *, with_stage: bool, number: int | None = None,
                 by_message: bool = False) -> tuple[int | None, str | None, str | None]:  # fmt: skip
        """``(round, status, stage)`` of round ``number`` (the newest if ``None``), in one
        query (what a long poll watches). With ``by_message``, the stage is named as its
        messages are kept (``keys1``, ``keys2``, ``masked``, ``consistency``, ``unmask``), so
        that a new key pass is a move too."""
        if self.unavailable is not None:
            return None, "unavailable", None
        row = _round_row(session, Round.number, Round.status, SecureRoundStage.stage, SecureRoundStage.key_pass,
                         number=number)  # fmt: skip
        if row is None:
            return None, "waiting", None
        return self.position_of(row[0], (row[1], row[2], row[3] or 0), with_stage=with_stage, by_message=by_message)

    def position_of(self, number: int, state: tuple[str, str | None, int], *, with_stage: bool,
                    by_message: bool) -> tuple[int | None, str | None, str | None]:  # fmt: skip
        """:meth:`position` of round ``number`` in ``state`` ``(status, stage, key pass)``."""
        status, stage, key_pass = state
        shown = stage if with_stage and self.secure is not None else None
        if by_message and shown is not None and self.secure is not None:
            shown = self.secure.message_stage_named(shown, key_pass)
        return number, status, shown

    def changed(self, *, moved: tuple[int, tuple[str, str | None, int]] | None = None) -> None:
        """Wake this process's long polls (a hint only: they re-read the database, unless
        ``moved``, ``(round, (status, stage, key pass))`` as a commit of this process just left
        it, explains the change: :meth:`known_move`)."""
        with self._change:
            self._generation += 1
            if moved is None:
                self._unexplained = self._generation
            else:
                number, state = moved
                known = self._moves.get(number)
                # published after the commit, outside the round lock: a later state may be here first
                if known is None or SecureRounds.progress(state) >= SecureRounds.progress(known[1]):
                    self._moves[number] = (self._generation, state)
                for old in [n for n in self._moves if n < number - 1]:
                    del self._moves[old]
                if self._watched is not None and self._watched[0] == number:  # the watcher need not wake anyone for it
                    self._watched = self.position_of(number, self._moves[number][1], with_stage=True, by_message=True)
            self._change.notify_all()

    def known_move(self, number: int, seen: int) -> tuple[str, str | None, int] | None:
        """Where this process's last commit after change ``seen`` left round ``number``, when
        every change since ``seen`` is explained by this process's own moves (of any round);
        ``None`` when a database read must tell (a change of the ticker, another process's,
        or no move of this round)."""
        with self._change:
            if self._unexplained > seen:
                return None
            move = self._moves.get(number)
            return move[1] if move is not None and move[0] > seen else None

    def generation(self) -> int:
        """A counter of the changes this process has seen; pass it to :meth:`wait_for_change`."""
        with self._change:
            return self._generation

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Sleep until the change counter differs from ``seen`` (a transition committed by this
        process, or one of another process noticed by :meth:`watch`) or ``timeout`` seconds
        pass; the counter then. Taking ``seen`` before reading the database loses no wake-up."""
        with self._change:
            self._waiting += 1
            try:
                self._change.wait_for(lambda: self._generation != seen, timeout)
            finally:
                self._waiting -= 1
            return self._generation

    def watch(self) -> None:
        """While long polls wait, read ``(round, status, stage)`` once for all of them and wake
        them when it moved (a change committed by another process); called every
        ``POLL_SECONDS`` by the service. One query per period per process, whatever the
        number of waiting long polls."""
        with self._change:
            if self._waiting == 0:
                self._watched = None  # nobody to wake; the next waiter compares from its own read
                return
        with self.database.read() as session:
            position = self.position(session, with_stage=True, by_message=True)  # a new key pass too
        if position != self._watched:  # also the first read after an idle spell: its waiters may be behind it
            self._watched = position
            self.changed()

    def _advance(self, now: datetime) -> None:
        with self.database.transaction() as session:
            self.lock(session)
            self.advance_locked(session, now)

    def maybe_due(self, session: Session, now: datetime) -> bool:
        """A cheap, conservative pre-check for the read paths (one query): ``False`` only when
        the newest round is open and neither its deadline nor its stage's has passed. An open
        round's completion is advanced by the message that completes it (in its transaction),
        deadlines by the ticker; this lets status requests and long polls skip :meth:`advance`."""
        if self.unavailable is not None:
            return False
        row = _round_row(session, Round.status, Round.deadline, SecureRoundStage.stage_deadline)
        if row is None or row[0] != "open":
            return True
        deadline = row[2] if self.secure is not None and row[2] is not None else row[1]
        return now >= aware(deadline)

    def advance_locked(self, session: Session, now: datetime) -> None:
        """:meth:`advance`'s transition in the caller's transaction, which holds the round lock
        (a stage message that completes its stage closes it in the transaction that accepts it)."""
        current = session.scalar(select(Round).order_by(Round.number.desc()).limit(1))
        if current is not None and current.status == BUDGET_EXHAUSTED:
            return
        if current is not None and current.status == "open":
            if self.secure is not None:
                if self.secure.step(session, current, now):
                    return
            else:
                roster = json.loads(current.roster)
                submitted = session.scalar(select(func.count()).select_from(Submission).where(Submission.round == current.number))
                if (submitted or 0) < len(roster) and now < aware(current.deadline):
                    return
                self._close(session, current, now)
        number = (current.number if current is not None else 0) + 1
        if number > self.max_rounds:
            return
        active = sorted(session.scalars(select(Organization.id).where(Organization.active.is_(True))))
        if self.core.enough(len(active), "active organization(s)") is not None:
            return
        base = session.scalar(select(ModelVersion.version).order_by(ModelVersion.training_round.desc()).limit(1))
        if base is None:
            return
        exhausted = self.check_round(session, number)
        if exhausted is not None:
            session.add(Round(number=number, status=BUDGET_EXHAUSTED, base_version=base, roster="[]", opened_at=now,
                              deadline=now, closed_at=now, reason=exhausted, report="{}"))  # fmt: skip
            session.add(AuditEvent(at=now, actor="coordinator", action="federation.budget_exhausted",
                                   organization_id=None, detail=exhausted))  # fmt: skip
            logger.info("privacy budget exhausted: %s", exhausted)
            return
        opened = Round(number=number, status="open", base_version=base, roster=json.dumps(active),
                       opened_at=now, deadline=now + self.timeout, report="{}")  # fmt: skip
        session.add(opened)
        session.add(AuditEvent(at=now, actor="coordinator", action="round.opened", organization_id=None,
                               detail=f"round {number}: roster of {len(active)}, base {base}"))  # fmt: skip
        if self.secure is not None:
            session.flush()
            self.secure.open(session, opened, now)

    def _close(self, session: Session, current: Round, now: datetime) -> None:
        roster: list[str] = json.loads(current.roster)
        submissions = list(session.scalars(select(Submission).where(Submission.round == current.number)))
        names, global_arrays = self.model_arrays(session, current.base_version)
        key = self._private_key(session)
        guard = self.privacy.guard(session) if self.privacy is not None else None  # refuses an edited ledger
        participants, arrays, weights, rejected = [], [], [], {}
        for index, sub in enumerate(sorted(submissions, key=lambda s: s.organization_id)):
            try:
                context = sealing_context(organization_id=sub.organization_id, round=current.number,
                                          model_version=current.base_version)  # fmt: skip
                arrays.append(decode_arrays(open_sealed(sub.payload, key, context=context), names))
            except (ProtocolViolation, ValidationFailed) as exc:  # checked on receipt: only a corrupted row lands here
                rejected[sub.organization_id] = str(exc)
                continue
            if self.privacy is not None and self.privacy.clips_on_server:
                clipped, _ = clip_l2(update_of(arrays[-1], global_arrays), self.privacy.clip_norm)
                arrays[-1] = [g.astype(np.float64) + c for g, c in zip(global_arrays, clipped, strict=True)]  # exact
            participants.append(index)
            weights.append(1.0 if guard is not None else float(sub.sample_count))  # under DP every update weighs 1
        submitted = sorted(s.organization_id for s in submissions)
        report = {"roster": roster, "submitted": submitted, "dropouts": sorted(set(roster) - set(submitted)),
                  "rejected": rejected, "contributors": len(arrays)}  # fmt: skip
        short = self.core.enough(len(arrays), "accepted submission(s)")
        if short is not None:
            current.status, current.reason = "skipped", short
        else:
            aggregate = plain_aggregate(participants=participants, arrays=arrays, weights=weights,
                                        metrics=[{} for _ in arrays], global_arrays=global_arrays)  # fmt: skip
            core = closing_core(session, base_version=current.base_version, strategy=self.config.strategy,
                                min_participants=self.core.min_participants,
                                rng=self.core.rng if guard is None else os_generator(), privacy=guard)  # fmt: skip
            outcome = core.complete(current.number, aggregate, global_arrays)
            current.status, current.reason = outcome.status, outcome.reason
            if outcome.status == "ok" and outcome.arrays is not None:
                store_version(session, training_round=current.number, names=names, arrays=outcome.arrays, core=core,
                              contributors=len(arrays), now=now,
                              epsilon_spent=guard.ledger.get_current_epsilon() if guard else None)  # fmt: skip
        if guard is not None:
            report["epsilon_total"] = guard.ledger.get_current_epsilon()
        current.report = json.dumps(report)
        current.closed_at = now
        if not self.keep_sealed_updates:  # no longer needed: the digest and receipt stay for idempotency
            session.execute(update(Submission).where(Submission.round == current.number).values(payload=None))
        session.add(AuditEvent(at=now, actor="coordinator", action=f"round.{current.status}", organization_id=None,
                               detail=f"round {current.number}: {len(arrays)} contributor(s), "
                                      f"{len(report['dropouts'])} dropout(s)" + (f"; {current.reason}" if current.reason else "")))  # fmt: skip
        logger.info("round %d %s (%d contributors)", current.number, current.status, len(arrays))

    # ------------------------------------------------------------------ submissions
    def open_submission(self, session: Session, *, organization_id: str, current: Round, blob: bytes) -> bytes:
        """The plaintext of one sealed update.

        Raises
        ------
        ProtocolViolation
            It does not open under this organization, round and base version.
        """
        context = sealing_context(organization_id=organization_id, round=current.number, model_version=current.base_version)
        return open_sealed(blob, self._private_key(session), context=context)

    def check_submission(self, session: Session, *, current: Round, plaintext: bytes, sample_count: int,
                         declared: DeclaredPrivacy | None = None) -> None:  # fmt: skip
        """Validate one opened update against the round's model (raises on any failure).

        Under differential privacy the declaration must match the policy
        (``privacy_check`` always runs then).

        Raises
        ------
        ValidationFailed
            A named check failed (the message starts with the check's name).
        """
        names, global_arrays = self.model_arrays(session, current.base_version)
        arrays = decode_arrays(plaintext, names)
        checks = tuple(self.config.validation.checks)
        if self.privacy is not None and "privacy_check" not in checks:
            checks += ("privacy_check",)
        report = check_update(
            update_of(arrays, global_arrays),
            num_examples=sample_count,
            policy=submission_policy(self.config, global_arrays,
                                     expected=self.privacy.expected if self.privacy is not None else None),  # fmt: skip
            checks=checks,
            declared=declared,
            server_round=current.number,
        )
        if not report.passed:
            raise ValidationFailed("; ".join(report.reasons()))

    def check_declaration(self, session: Session, *, current: Round, sample_count: int,
                          declared: DeclaredPrivacy | None) -> None:  # fmt: skip
        """``privacy_check`` of a masked (secure-sum) submission: only its declaration and
        sample count can be checked, the update itself is masked.

        Raises
        ------
        ValidationFailed
            ``privacy_check``: no declaration, or one that is not the policy's.
        """
        if self.privacy is None:
            return
        _, global_arrays = self.model_arrays(session, current.base_version)
        report = check_update(
            [np.zeros_like(g) for g in global_arrays],
            num_examples=sample_count,
            policy=submission_policy(self.config, global_arrays, expected=self.privacy.expected),
            checks=("privacy_check",),
            declared=declared,
            server_round=current.number,
        )
        if not report.passed:
            raise ValidationFailed("; ".join(report.reasons()))

    # ------------------------------------------------------------------ privacy hooks
    def check_round(self, session: Session, number: int) -> str | None:
        """Why round ``number`` must not open (its release would exceed the budget), or ``None``."""
        return self.privacy.guard(session).check_round(number) if self.privacy is not None else None

    def on_receipt(self, session: Session, number: int) -> None:
        """An update of round ``number`` reached the coordinator: in ``release`` mode the
        round's release is recorded (once per round), before validation."""
        if self.privacy is not None:
            self.privacy.guard(session).on_receipt(number, 1)


def _round_row(session: Session, *columns: Any, number: int | None = None) -> Any:
    """``columns`` of round ``number`` (the newest if ``None``) joined with its secure-sum
    stage row (one query), or ``None``."""
    query = select(*columns).outerjoin(SecureRoundStage, SecureRoundStage.round == Round.number)
    query = query.order_by(Round.number.desc()).limit(1) if number is None else query.where(Round.number == number)
    return session.execute(query).first()


def _dimension(config: ExperimentConfig) -> int:
    """Number of parameters of the federation's model."""
    from oneliac_flwr.models import new_model  # torch is needed only here, at start-up

    return int(sum(p.numel() for p in new_model(config).state_dict().values()))
