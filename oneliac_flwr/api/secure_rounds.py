"""Secure-sum rounds over REST (``aggregation_method: secure_sum``): the stage machine.

The same protocol as the Flower adapter (:mod:`oneliac_flwr.flower.secure_sum`), with the
same parameter choices (:mod:`oneliac_flwr.coordinator.secure_plan`) and the same core
(:class:`~oneliac_flwr.secure.SecureSumServer`, then
:func:`~oneliac_flwr.coordinator.secure_sum_aggregate` and
:class:`~oneliac_flwr.coordinator.RoundCore`):

``keys``
    stage K, only for roster organizations without a mask key usable in this round
    (a second pass if the round's size changed its sharing threshold);
``masking``
    stage M: each participant downloads the round setup and posts its masked vector;
``consistency``
    stage C, ``secure_sum.mode: malicious`` only: each counted organization downloads the
    survivor set ``(C, D)`` and posts its signature of it; unmask requests go only to the
    signers, with every signature (below ``t`` signers the round fails);
``unmasking``
    stage U: each counted organization downloads its unmask request and posts the response;
``done`` / ``failed``
    the sum was unmasked and the model updated, or the round failed (reason recorded,
    model unchanged).

Each stage closes when every organization it waits for has answered, or at its own
deadline (``aggregation_config.timeout_minutes``, as each Flower exchange); the missing
ones are dropouts, recovered by the protocol while ``t`` remain.

No federation state is kept in process memory. The coordinator's protocol state is a
snapshot (:meth:`SecureSumServer.state_dict` in the ``secure_snapshots`` row), written at each
stage change, plus the log of the messages accepted since (``secure_messages`` rows with
their records and masked vectors), each appended in the transaction that runs the core's
checks on it, under the round lock
(:meth:`RoundEngine.lock <oneliac_flwr.api.rounds.RoundEngine.lock>`), so any
coordinator process continues any round from the database alone (snapshot, then the
current stage's log replayed through the core). A process keeps a copy of the state it
built or changed only together with the ``secure_runs.version`` it was built at, and uses
it only while that version is the stored one (checked in the same transaction).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session

from oneliac_flwr.api.privacy import RestPrivacy
from oneliac_flwr.api.records import record_from_json, record_to_json
from oneliac_flwr.api.store import (
    AuditEvent, ModelVersion, Round, SecureMessage, SecureNode, SecureRoundStage, SecureRun, SecureSnapshot,
)  # fmt: skip
from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator import RoundCore, secure_sum_aggregate
from oneliac_flwr.coordinator.aggregate import publishable_check
from oneliac_flwr.coordinator.secure_plan import graph_for, ring_for, statistics_slots_for, threshold_for
from oneliac_flwr.errors import ConfigError, ProtocolViolation, RoundFailed, SecureAggregationError
from oneliac_flwr.privacy.entropy import os_generator
from oneliac_flwr.secure import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencyResponse,
    MaskedInput,
    RingSpec,
    SecureSumServer,
    UnmaskRequest,
    UnmaskResponse,
)
from oneliac_flwr.secure.messages import RoundSetup

__all__ = ["SecureRounds", "StageView", "secure_unavailable"]

logger = logging.getLogger("oneliac_flwr.api")

KEYS, MASKING, CONSISTENCY, UNMASKING = "keys", "masking", "consistency", "unmasking"
DONE, FAILED = "done", "failed"
MAX_KEY_PASSES = 2
_MESSAGE_STAGE = {KEYS: "keys", MASKING: "masked", CONSISTENCY: "consistency", UNMASKING: "unmask"}
_STAGE_ORDER = {KEYS: 0, MASKING: 1, CONSISTENCY: 2, UNMASKING: 3, DONE: 4, FAILED: 4}
#: What an organization expected in a stage must do next (``GET /rounds/current``'s ``next_action``).
ACTIONS = {KEYS: "advertise_keys", MASKING: "submit", CONSISTENCY: "confirm_survivors", UNMASKING: "unmask"}
_T = TypeVar("_T")
_PENDING = "oneliac_secure_server"  # session.info key: (version, state) changed by the open transaction


def secure_unavailable(config: ExperimentConfig) -> str | None:
    """Why secure-sum rounds cannot run over REST with this configuration, or ``None``.

    Both ``secure_sum.mode`` values run (``malicious`` adds the consistency stage).
    """
    del config
    return None


@dataclass(frozen=True, kw_only=True)
class StageView:
    """What one organization sees of a secure round.

    Parameters
    ----------
    stage : str
        ``keys``, ``masking``, ``consistency``, ``unmasking``, ``done`` or ``failed``.
    next_action : str
        ``advertise_keys``, ``submit``, ``confirm_survivors``, ``unmask`` or ``wait`` for
        this organization.
    node_id, run_id : int
        This organization's stable node id and the federation's run id.
    """

    stage: str
    next_action: str
    node_id: int
    run_id: int


def _ids(text: str) -> list[str]:
    return list(json.loads(text))


class SecureRounds:
    """The secure-sum stages of REST rounds, every piece of state in the database.

    Parameters
    ----------
    config : ExperimentConfig
        ``secure_sum.*`` (ring, graph, ``mode``: ``malicious`` adds the consistency
        stage), ``aggregation_config`` (threshold floor, stage
        deadline), ``dataset.num_classes`` and ``privacy_budget.mode`` (statistics slots).
    core : RoundCore
        The coordinator core that turns the unmasked mean into the next model.
    spec : RingSpec, optional
        The ring (default :func:`~oneliac_flwr.coordinator.secure_plan.ring_for`; under
        distributed noise :func:`~oneliac_flwr.coordinator.secure_plan.secure_ring`, which
        holds the noise shares).
    privacy : RestPrivacy, optional
        Differential privacy, through the core guard as in the Flower secure-sum path:
        ``release`` and distributed ``organization`` noise are accounted when the sum is
        unmasked (:meth:`LedgerGuard.on_reveal
        <oneliac_flwr.coordinator.privacy_guard.LedgerGuard.on_reveal>`), before any check
        can drop the round; central ``organization`` noise is added to the unmasked mean
        and accounted by :meth:`LedgerGuard.privatize
        <oneliac_flwr.coordinator.privacy_guard.LedgerGuard.privatize>` inside
        :meth:`RoundCore.complete`. Under central noise nothing computed from the
        un-noised sum (its norm, a failed check's numbers) is stored or published.

    Raises
    ------
    ConfigError
        If no ring fits ``secure_sum.*`` (names the field).
    """

    def __init__(self, config: ExperimentConfig, *, core: RoundCore, spec: RingSpec | None = None,
                 privacy: RestPrivacy | None = None) -> None:  # fmt: skip
        self.config = config
        self.privacy = privacy
        self.spec = ring_for(config) if spec is None else spec
        self.slots = statistics_slots_for(config)
        self.core = core
        self.timeout = timedelta(minutes=config.aggregation_config.timeout_minutes)
        self.min_participants = config.aggregation_config.min_participants
        self.mode = config.secure_sum.mode
        # A copy of the protocol state at the stored version (validated on every use): it
        # saves rebuilding the state for every message; the database stays the truth.
        self._cache: tuple[int, SecureSumServer] | None = None
        self._cache_lock = threading.Lock()
        # What a stage publishes (the round setup, the unmask requests) is fixed when the
        # stage opens: kept per stage instance (round, stage, key pass, deadline, as read from
        # the stage row in the reader's own snapshot), so the downloads of a stage never
        # rebuild the state while its messages keep changing the version.
        self._published: tuple[tuple[Any, ...], RoundSetup | None, dict[int, Any] | None] | None = None
        # their JSON forms, by object, for the current stage instance only (a status answer's
        # record is rendered once per stage)
        self._published_json: dict[int, tuple[Any, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ identities and state
    def known(self, session: Session, organization_id: str) -> bool:
        """Whether the organization's node id and the run id exist, so that :meth:`view`
        needs no write (it can run in a read-only snapshot)."""
        return session.get(SecureNode, organization_id) is not None and session.get(SecureRun, 1) is not None

    def preload(self, session: Session, organization_id: str, number: int | None) -> bool:
        """:meth:`known`, with round ``number`` (the newest if ``None``), its stage row, the
        organization's node and the run loaded in one query: :meth:`view` then finds them
        in the session and reads only whether this organization answered its stage."""
        query = (
            select(Round, SecureRoundStage, SecureNode, SecureRun)
            .outerjoin(SecureRoundStage, SecureRoundStage.round == Round.number)
            .outerjoin(SecureNode, SecureNode.organization_id == organization_id)
            .outerjoin(SecureRun, SecureRun.id == 1)
        )  # fmt: skip
        query = query.where(Round.number == number) if number is not None else query.order_by(Round.number.desc()).limit(1)
        row = session.execute(query).first()
        if row is None:  # no such round: nothing to preload
            return self.known(session, organization_id)
        return row[2] is not None and row[3] is not None

    def record_for(self, session: Session, number: int, organization_id: str, action: str,
                   now: datetime) -> dict[str, Any] | None:  # fmt: skip
        """The JSON record ``action`` answers (what the stage's download endpoint gives:
        the round setup for ``submit``, this organization's consistency or unmask request),
        or ``None`` (another action, or the stage moved on meanwhile)."""
        fetch = {"submit": lambda: self.setup(session, number, now),
                 "confirm_survivors": lambda: self.consistency_request(session, number, organization_id, now),
                 "unmask": lambda: self.unmask_request(session, number, organization_id, now)}.get(action)  # fmt: skip
        if fetch is None:
            return None
        try:
            published = fetch()
        except ProtocolViolation:
            return None
        rendered = self._published_json  # emptied by _published_by when a new stage instance is published
        kept = rendered.get(id(published))  # the same object for the whole stage
        if kept is None or kept[0] is not published:
            kept = (published, record_to_json(published.to_record()))
            rendered[id(published)] = kept
        return kept[1]

    def node_id(self, session: Session, organization_id: str) -> int:
        """The organization's stable node id (made once, under the round lock)."""
        row = session.get(SecureNode, organization_id)
        if row is None:
            taken = set(session.scalars(select(SecureNode.node_id)))
            node = secrets.randbits(63)
            while node in taken:
                node = secrets.randbits(63)
            row = SecureNode(organization_id=organization_id, node_id=node)
            session.add(row)
            session.flush()
        return row.node_id

    def organization_of(self, session: Session) -> dict[int, str]:
        """Node id to organization id."""
        return {r.node_id: r.organization_id for r in session.scalars(select(SecureNode))}

    def _run_row(self, session: Session, now: datetime) -> SecureRun:
        row = session.get(SecureRun, 1)
        if row is None:
            run_id = secrets.randbits(63)
            length = self._length(session)
            state = SecureSumServer(run_id=run_id, spec=self.spec, length=length, mode=self.mode).state_dict()
            row = SecureRun(id=1, run_id=run_id, updated_at=now)
            session.add(row)
            session.add(SecureSnapshot(id=1, state=json.dumps(record_to_json(state, field="server_state")), total=None))
            session.flush()
        return row

    def run_id(self, session: Session, now: datetime) -> int:
        """The federation's run id (made once, under the round lock)."""
        return self._run_row(session, now).run_id

    def _length(self, session: Session) -> int:
        row = session.scalar(select(ModelVersion).where(ModelVersion.training_round == 0))
        if row is None:
            raise ProtocolViolation("the federation has no initial model yet")
        from safetensors.numpy import load as safetensors_load

        return sum(int(a.size) for a in safetensors_load(row.weights).values()) + self.slots

    def load(self, session: Session, now: datetime) -> SecureSumServer:
        """The coordinator's protocol state, as the last transaction left it, for a caller
        that will change it (then :meth:`save` or :meth:`_log` it in the same transaction).

        The copy this process kept is used when it was built at the stored ``version``
        (and taken out of the cache meanwhile); otherwise the snapshot is read and the
        messages accepted since are replayed through the core.
        """
        row = self._run_row(session, now)
        pending = session.info.pop(_PENDING, None)  # changed earlier in this very transaction
        if pending is not None and pending[0] == row.version:
            return pending[1]
        with self._cache_lock:
            cached, self._cache = self._cache, None
        if cached is not None and cached[0] == row.version:
            return cached[1]
        return self._rebuild(session, row)

    def _rebuild(self, session: Session, row: SecureRun) -> SecureSumServer:
        """Snapshot plus the log of the current stage's messages."""
        snapshot = session.get(SecureSnapshot, row.id)
        if snapshot is None:
            raise ProtocolViolation("the secure-sum run has no stored snapshot")
        state = record_from_json(json.loads(snapshot.state), field="server_state")
        state["mode"] = self.mode  # the operator's setting, not the one the run was created with
        if state.get("round") is not None:
            state["round"]["total"] = snapshot.total or b""
        server = SecureSumServer.from_state_dict(state, spec=self.spec)
        stage = session.scalar(select(SecureRoundStage).order_by(SecureRoundStage.round.desc()).limit(1))
        if stage is None or stage.stage not in _MESSAGE_STAGE:
            return server
        names = self.organization_of(session)
        nodes = {org: node for node, org in names.items()}
        log = session.execute(
            select(SecureMessage.organization_id, SecureMessage.record, SecureMessage.masked)
            .where(SecureMessage.round == stage.round, SecureMessage.stage == self.message_stage(stage),
                   SecureMessage.record.is_not(None))
            .order_by(SecureMessage.received_at, SecureMessage.organization_id)
        ).all()  # fmt: skip
        for organization_id, record, masked in log:
            self._apply(server, nodes[organization_id], _MESSAGE_STAGE[stage.stage],
                        record_from_json(json.loads(record), field="record"),
                        None if masked is None else self._ring_vector(masked))  # fmt: skip
        return server

    def _ring_vector(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=self.ring_dtype()).astype(self.spec.dtype)

    def _keep_after_commit(self, session: Session, server: SecureSumServer, version: int) -> None:
        """Cache ``server`` as the state at ``version`` once (and only if) the transaction commits."""

        def keep(_: Session) -> None:
            with self._cache_lock:
                self._cache = (version, server)

        session.info[_PENDING] = (version, server)  # a later change in this transaction continues from it
        event.listen(session, "after_commit", keep, once=True)

    def read(self, session: Session, now: datetime, use: Callable[[SecureSumServer], _T]) -> _T:
        """``use(server)`` on the stored protocol state, without changing it (a read-only
        snapshot is enough: the cached copy is used only at the snapshot's ``version``)."""
        version = session.scalar(select(SecureRun.version).where(SecureRun.id == 1))
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == version:
                return use(self._cache[1])
        server = self._rebuild(session, self._run_row(session, now))
        with self._cache_lock:
            if self._cache is None and version is not None:
                self._cache = (version, server)
            return use(server)

    def save(self, session: Session, server: SecureSumServer, now: datetime) -> None:
        """Store a snapshot of the protocol state (in the caller's transaction), which
        folds every logged message into it."""
        row = self._run_row(session, now)
        state = server.state_dict()
        total = None
        if state.get("round") is not None:
            total = state["round"]["total"]
            state["round"]["total"] = b""
        snapshot = session.get(SecureSnapshot, row.id)
        if snapshot is None:
            raise ProtocolViolation("the secure-sum run has no stored snapshot")
        snapshot.state = json.dumps(record_to_json(state, field="server_state"))
        snapshot.total = total
        row.updated_at = now
        self._erase_log(session, zero_fill=self.privacy is not None and self.privacy.noises_centrally)
        row.version += 1
        self._keep_after_commit(session, server, row.version)

    @staticmethod
    def _erase_log(session: Session, *, zero_fill: bool) -> None:
        """Erase the logged messages (records and masked vectors), now folded into the snapshot.

        Without ``zero_fill``, on SQLite this one statement runs with ``secure_delete`` off:
        zero-filling the freed pages (4 MB per organization at 1M parameters) doubled a stage
        change's writes. What is erased is the coordinator's own view of the protocol (masked
        vectors, share envelopes it cannot open, the shares it was sent to unmask): from it
        nothing beyond the sum can be computed, and the sum is what the round publishes
        (without DP, with local releases, or with distributed noise, whose shares are inside
        it). Under central noise the un-noised sum must never be recoverable from the file,
        so the caller asks for ``zero_fill`` there. Sealed fedavg updates, which the
        coordinator's stored key opens, are always overwritten.
        """
        sqlite = session.get_bind().dialect.name == "sqlite" and not zero_fill
        if sqlite:
            session.execute(text("PRAGMA secure_delete=OFF"))
        try:
            session.execute(update(SecureMessage).where(SecureMessage.record.is_not(None)).values(record=None, masked=None),
                            execution_options={"synchronize_session": False})  # fmt: skip
        finally:
            if sqlite:
                session.execute(text("PRAGMA secure_delete=ON"))

    def _log(self, session: Session, server: SecureSumServer, message: SecureMessage, now: datetime) -> None:
        """Append one accepted message to the log (the snapshot is not rewritten)."""
        row = self._run_row(session, now)
        session.add(message)
        row.updated_at = now
        row.version += 1
        self._keep_after_commit(session, server, row.version)

    # ------------------------------------------------------------------ transitions (under the lock)
    def open(self, session: Session, rnd: Round, now: datetime) -> None:
        """A round was just opened with its roster: start stage K, or stage M if nobody needs keys."""
        roster = _ids(rnd.roster)
        nodes = {self.node_id(session, org): org for org in roster}
        server = self.load(session, now)
        server.abort_round()  # a round left open by a failed stage never blocks the next
        stage = SecureRoundStage(round=rnd.number, stage=KEYS, stage_deadline=now + self.timeout, key_pass=0,
                                 expected="[]", dropouts="{}")  # fmt: skip
        session.add(stage)
        self._keys_or_setup(session, rnd, stage, server, sorted(nodes), nodes, now)
        self.save(session, server, now)

    def _keys_or_setup(self, session: Session, rnd: Round, stage: SecureRoundStage, server: SecureSumServer,
                       participants: list[int], names: dict[int, str], now: datetime) -> None:  # fmt: skip
        plan = graph_for(self.config, len(participants))
        need = server.needs_keys(participants, round=rnd.number, threshold=plan.threshold)
        if need and stage.key_pass < MAX_KEY_PASSES:
            stage.key_pass += 1
            self._enter(rnd, stage, KEYS, [names[n] for n in need], now)
            return
        participants = [n for n in participants if n not in need]
        self._record_dropouts(stage, "keys_refit", [names[n] for n in need])
        if len(participants) > self.spec.max_participants:
            self._fail(session, rnd, stage, server, f"{len(participants)} participants exceed the secure-sum ring's "
                       f"bound {self.spec.max_participants} (secure_sum.max_participants)", now)  # fmt: skip
            return
        if len(participants) < max(self.min_participants, 2):
            self._fail(session, rnd, stage, server, f"{len(participants)} participant(s) with keys, below "
                       f"min_participants {self.min_participants}", now)  # fmt: skip
            return
        threshold = threshold_for(len(participants), self.min_participants)
        plan = graph_for(self.config, len(participants))
        try:
            server.round_setup(round=rnd.number, participants=sorted(participants), threshold=threshold,
                               graph_degree=plan.degree, sharing_threshold=plan.threshold)  # fmt: skip
        except (SecureAggregationError, ConfigError) as exc:
            self._fail(session, rnd, stage, server, f"round setup: {exc}", now)
            return
        self._enter(rnd, stage, MASKING, [names[n] for n in sorted(participants)], now)

    def _enter(self, rnd: Round, stage: SecureRoundStage, name: str, expected: list[str], now: datetime) -> None:
        stage.stage, stage.expected = name, json.dumps(sorted(expected))
        stage.stage_deadline = now + self.timeout
        rnd.deadline = stage.stage_deadline

    @staticmethod
    def _record_dropouts(stage: SecureRoundStage, name: str, missing: list[str]) -> None:
        if missing:
            dropouts = json.loads(stage.dropouts)
            dropouts[name] = sorted(set(dropouts.get(name, [])) | set(missing))
            stage.dropouts = json.dumps(dropouts)

    def _answered(self, session: Session, rnd: Round, stage: SecureRoundStage) -> set[str]:
        kind = self.message_stage(stage)
        return set(session.scalars(select(SecureMessage.organization_id).where(
            SecureMessage.round == rnd.number, SecureMessage.stage == kind)))  # fmt: skip

    @staticmethod
    def message_stage(stage: SecureRoundStage) -> str:
        """Name under which this stage's messages are kept (stage K per pass)."""
        return SecureRounds.message_stage_named(stage.stage, stage.key_pass)

    @staticmethod
    def message_stage_named(name: str, key_pass: int) -> str:
        """Name under which the messages of stage ``name`` (in key pass ``key_pass``) are kept;
        ``name`` itself for a stage that takes none (done, failed)."""
        kind = _MESSAGE_STAGE.get(name)
        if kind is None:
            return name
        return f"{kind}{key_pass}" if name == KEYS else kind

    @staticmethod
    def progress(state: tuple[str, str | None, int]) -> tuple[int, int, int]:
        """How far ``(status, stage, key pass)`` is in its round (a round only moves forward):
        open before closed, then the stage, then the key pass."""
        status, stage, key_pass = state
        return (0 if status == "open" else 1, _STAGE_ORDER.get(stage or "", len(_STAGE_ORDER)), key_pass)

    def due(self, session: Session, rnd: Round, now: datetime) -> bool:
        """Whether :meth:`step` would close the open round's stage now (read-only)."""
        stage = session.get(SecureRoundStage, rnd.number)
        if stage is None or stage.stage in (DONE, FAILED):
            return False
        expected = set(_ids(stage.expected))
        return self._answered(session, rnd, stage) >= expected or now >= self._aware(stage.stage_deadline)

    def step(self, session: Session, rnd: Round, now: datetime) -> bool:
        """Close the current stage if complete or past its deadline; ``True`` while the round stays open."""
        stage = session.get(SecureRoundStage, rnd.number)
        if stage is None or stage.stage in (DONE, FAILED):
            return rnd.status == "open"
        expected = set(_ids(stage.expected))
        answered = self._answered(session, rnd, stage) & expected
        if answered != expected and now < self._aware(stage.stage_deadline):
            return True
        missing = sorted(expected - answered)
        self._record_dropouts(stage, stage.stage, missing)
        names = self.organization_of(session)
        nodes = {org: node for node, org in names.items()}
        server = self.load(session, now)
        if stage.stage == KEYS:
            left_out = {nodes[o] for o in missing}
            participants = [nodes[o] for o in _ids(rnd.roster) if nodes[o] not in left_out]
            participants = [n for n in participants if names[n] not in json.loads(stage.dropouts).get(KEYS, [])]
            self._keys_or_setup(session, rnd, stage, server, sorted(participants), names, now)
        elif stage.stage == MASKING and self.mode == "malicious":  # stage C follows (closes stage M)
            try:
                confirms = server.consistency_requests()
            except RoundFailed as exc:
                self._fail(session, rnd, stage, server, str(exc), now)
            else:
                self._enter(rnd, stage, CONSISTENCY, [names[n] for n in confirms], now)
        elif stage.stage in (MASKING, CONSISTENCY):
            try:  # in malicious mode, only the signers are asked (below t signers: RoundFailed)
                requests = server.unmask_requests()
            except RoundFailed as exc:
                self._fail(session, rnd, stage, server, str(exc), now)
            else:
                self._enter(rnd, stage, UNMASKING, [names[n] for n in requests], now)
        else:
            self._finish(session, rnd, stage, server, names, now)
        self.save(session, server, now)
        return rnd.status == "open"

    @staticmethod
    def _aware(moment: datetime) -> datetime:
        from oneliac_flwr.api.rounds import aware

        return aware(moment)

    def _fail(self, session: Session, rnd: Round, stage: SecureRoundStage, server: SecureSumServer, reason: str,
              now: datetime) -> None:  # fmt: skip
        server.abort_round()
        stage.stage = FAILED
        self._close(session, rnd, stage, "failed", reason, contributors=0, now=now)

    def _close(self, session: Session, rnd: Round, stage: SecureRoundStage, status: str, reason: str | None, *,
               contributors: int, now: datetime, extra: dict[str, Any] | None = None) -> None:  # fmt: skip
        dropouts = json.loads(stage.dropouts)
        missing = sorted({org for orgs in dropouts.values() for org in orgs})
        report = {"roster": _ids(rnd.roster), "dropouts": missing, "dropouts_by_stage": dropouts,
                  "contributors": contributors, **(extra or {})}  # fmt: skip
        rnd.status, rnd.reason, rnd.report, rnd.closed_at = status, reason, json.dumps(report), now
        session.add(AuditEvent(at=now, actor="coordinator", action=f"round.{status}", organization_id=None,
                               detail=f"round {rnd.number} (secure sum): {contributors} contributor(s), "
                                      f"{len(missing)} dropout(s)" + (f"; {reason}" if reason else "")))  # fmt: skip
        logger.info("round %d %s (secure sum, %d contributors)%s", rnd.number, status, contributors,
                    f": {reason}" if reason else "")  # fmt: skip

    def _finish(self, session: Session, rnd: Round, stage: SecureRoundStage, server: SecureSumServer,
                names: dict[int, str], now: datetime) -> None:  # fmt: skip
        from oneliac_flwr.api.rounds import RoundEngine, closing_core, store_version

        # everything that can refuse to close the round is built before the sum is revealed, so
        # that a reveal is never rolled back with its ledger entry (an edited ledger, stored
        # optimizer state that is not this strategy's)
        weights, global_arrays = RoundEngine.model_arrays(session, rnd.base_version)
        guard = self.privacy.guard(session) if self.privacy is not None else None  # refuses an edited ledger
        # central DP noise comes from OS entropy (the guard's privatize draws it)
        core = closing_core(session, base_version=rnd.base_version, strategy=self.config.strategy,
                            min_participants=self.core.min_participants,
                            rng=self.core.rng if guard is None else os_generator(), privacy=guard)  # fmt: skip
        try:
            result = server.finalize()
        except RoundFailed as exc:
            self._fail(session, rnd, stage, server, str(exc), now)
            return
        if guard is not None:
            guard.on_reveal(rnd.number, len(result.counted))  # the sum is revealed: account before any check
        central = guard is not None and guard.noises_centrally
        outcome = secure_sum_aggregate(
            result.weighted_sum, counted=list(result.counted), global_arrays=global_arrays,
            statistics_slots=self.slots, clip_bound=self.spec.clip_bound, frac_bits=self.spec.frac_bits,
            noise_std=guard.sum_noise_std if guard is not None else 0.0, central_noise=central,
        )  # fmt: skip
        # under central noise the mean is projected, not checked: nothing depends on the un-noised sum
        check, failure = publishable_check(outcome, unnoised=central)
        extra = {"counted": sorted(names[n] for n in result.counted), "error_bound_sum": float(result.error_bound),
                 "recovered_dropouts": int(result.recovered_dropouts),
                 "silent_in_unmask": sorted(names[n] for n in result.silent_in_unmask),
                 "aggregate_check": check, "label_distribution": outcome.label_distribution}  # fmt: skip
        if failure is not None:
            stage.stage = FAILED
            self._close(session, rnd, stage, "failed", failure, contributors=0, now=now, extra=extra)
            return
        accuracy = outcome.aggregate.metrics.get("received_eval_accuracy")
        if accuracy is not None:  # the hospitals' evaluation of the model they received: the base version
            base = session.get(ModelVersion, rnd.base_version)
            if base is not None:
                base.accuracy = float(accuracy)
        result_core = core.complete(rnd.number, outcome.aggregate, global_arrays)
        epsilon = guard.ledger.get_current_epsilon() if guard is not None else None
        if epsilon is not None:
            extra["epsilon_total"] = epsilon
        stage.stage = DONE if result_core.status == "ok" else FAILED
        contributors = len(result.counted)
        if result_core.status == "ok" and result_core.arrays is not None:
            store_version(session, training_round=rnd.number, names=weights, arrays=result_core.arrays, core=core,
                          contributors=contributors, epsilon_spent=epsilon, now=now)  # fmt: skip
        self._close(session, rnd, stage, result_core.status, result_core.reason, contributors=contributors, now=now,
                    extra=extra)  # fmt: skip

    # ------------------------------------------------------------------ what an organization sees
    def view(self, session: Session, rnd: Round, organization_id: str, now: datetime) -> StageView | None:
        """This organization's stage and next action in ``rnd`` (``None`` before the stage row exists)."""
        stage = session.get(SecureRoundStage, rnd.number)
        if stage is None:
            return None
        node = self.node_id(session, organization_id)
        action = "wait"
        if stage.stage in ACTIONS and organization_id in _ids(stage.expected):
            done = session.get(SecureMessage, (rnd.number, organization_id, self.message_stage(stage)))
            if done is None:
                action = ACTIONS[stage.stage]
        return StageView(stage=stage.stage, next_action=action, node_id=node, run_id=self.run_id(session, now))

    def stage_of(self, session: Session, number: int) -> SecureRoundStage | None:
        """The stage row of round ``number``."""
        return session.get(SecureRoundStage, number)

    def setup(self, session: Session, number: int, now: datetime) -> RoundSetup:
        """The open round's setup (stages M, C and U); read-only.

        Raises
        ------
        ProtocolViolation
            The round is not in stage M, C or U.
        """
        stage = session.get(SecureRoundStage, number)
        if stage is None or stage.stage not in (MASKING, CONSISTENCY, UNMASKING):
            raise ProtocolViolation(f"round {number} has no round setup to download now")
        setup, _ = self._published_by(session, stage, now)
        if setup is None or setup.round != number:
            raise ProtocolViolation(f"round {number} has no round setup to download now")
        return setup

    def unmask_request(self, session: Session, number: int, organization_id: str, now: datetime) -> UnmaskRequest:
        """This organization's unmask request (stage U); read-only.

        Raises
        ------
        ProtocolViolation
            The round is not in stage U or nothing was asked of this organization.
        """
        return self._request_for(session, number, organization_id, now, stage_name=UNMASKING, what="unmask")

    def consistency_request(self, session: Session, number: int, organization_id: str,
                            now: datetime) -> ConsistencyRequest:  # fmt: skip
        """This organization's consistency request (stage C, malicious mode): the survivor
        set ``(C, D)`` to sign; read-only (stage M is closed in the stored state, so
        building it changes nothing).

        Raises
        ------
        ProtocolViolation
            The round is not in stage C or nothing was asked of this organization.
        """
        return self._request_for(session, number, organization_id, now, stage_name=CONSISTENCY, what="consistency")

    def _request_for(self, session: Session, number: int, organization_id: str, now: datetime, *, stage_name: str,
                     what: str) -> Any:  # fmt: skip
        """This organization's request of round ``number``'s stage ``stage_name`` (C or U):
        a :class:`ConsistencyRequest` or an :class:`UnmaskRequest`."""
        stage = session.get(SecureRoundStage, number)
        if stage is None or stage.stage != stage_name:
            raise ProtocolViolation(f"round {number} is not in stage {stage_name!r}")
        row = session.get(SecureNode, organization_id)
        if row is None or organization_id not in _ids(stage.expected):
            raise ProtocolViolation(f"no {what} request for {organization_id} in round {number}")
        _, requests = self._published_by(session, stage, now)
        request = (requests or {}).get(row.node_id)
        if request is None or request.round != number:
            raise ProtocolViolation(f"no {what} request for {organization_id} in round {number}")
        return request

    def _published_by(self, session: Session, stage: SecureRoundStage, now: datetime,
                      ) -> tuple[RoundSetup | None, dict[int, Any] | None]:  # fmt: skip
        """The round setup and the requests (consistency requests in stage C, unmask requests
        in stage U) of the stage ``stage`` (a row of the caller's snapshot) opened with: they
        change only when a stage changes, never with its messages.

        Every stage change writes the snapshot and the stage row in one transaction, and a
        round passes each (stage, key pass) once, so the stage row's identity names the
        snapshot they were built from; the copy kept for it is used only when the reader's
        own snapshot shows that very stage instance.
        """
        key = (stage.round, stage.stage, stage.key_pass, self._aware(stage.stage_deadline))
        published = self._published
        if published is not None and published[0] == key:
            return published[1], published[2]

        def derive(server: SecureSumServer) -> tuple[RoundSetup | None, dict[int, Any] | None]:
            requests: dict[int, Any] | None = None
            if stage.stage == UNMASKING and server.stage == "unmasking":
                requests = server.unmask_requests()
            elif stage.stage == CONSISTENCY and server.stage == "masking":  # stage M closed in the stored state
                requests = server.consistency_requests()
            return server.open_setup, requests

        setup, requests = self.read(session, now, derive)
        self._published = (key, setup, requests)
        self._published_json = {}  # the previous stage's renderings go with its objects
        return setup, requests

    # ------------------------------------------------------------------ messages (under the lock)
    def accept(self, session: Session, *, number: int, organization_id: str, kind: str, record: dict[str, Any],
               masked: np.ndarray | None, body_sha256: str, receipt: str, now: datetime) -> None:  # fmt: skip
        """Feed one stage message to the protocol state and log it (raises, and stores
        nothing, if refused).

        The message is checked by the core against the state, then appended to
        ``secure_messages`` with its record (and masked vector, as raw ring elements); the
        snapshot is rewritten only at the next stage change (:meth:`save`).

        Parameters
        ----------
        kind : {"keys", "masked", "consistency", "unmask"}
            The stage the message belongs to; it must be the round's current stage.
        body_sha256, receipt : str
            The request body's hash and the receipt given for it (replay detection).

        Raises
        ------
        ProtocolViolation
            Wrong stage, not expected from this organization, or refused by the protocol
            (the message names the field).
        """
        stage = session.get(SecureRoundStage, number)
        if stage is None or stage.stage not in _MESSAGE_STAGE or _MESSAGE_STAGE[stage.stage] != kind:
            current = stage.stage if stage is not None else "none"
            raise StageClosed(f"round {number} is in stage {current!r}, not taking {kind!r} messages")
        if organization_id not in _ids(stage.expected):
            raise StageClosed(f"round {number}'s stage {stage.stage!r} expects nothing from {organization_id}")
        node = self.node_id(session, organization_id)
        if kind == "masked" and masked is None:
            raise ProtocolViolation("gradients_encrypted: the masked vector is missing")
        server = self.load(session, now)  # out of the cache: back only if this transaction commits
        self._apply(server, node, kind, record, masked)
        wire = None if masked is None else np.ascontiguousarray(masked, dtype=self.ring_dtype()).tobytes()
        self._log(session, server, SecureMessage(round=number, organization_id=organization_id,
                                                 stage=self.message_stage(stage), body_sha256=body_sha256,
                                                 receipt=receipt, received_at=now,
                                                 record=json.dumps(record_to_json(record, field="record")),
                                                 masked=wire), now)  # fmt: skip

    @staticmethod
    def _apply(server: SecureSumServer, node: int, kind: str, record: dict[str, Any], masked: np.ndarray | None) -> None:
        """One stage message through the core's checks into ``server``."""
        if kind == "keys":
            server.register_keys(node, AdvertiseKeys.from_record(record))
        elif kind == "masked":
            server.receive_masked(node, MaskedInput.from_record(record, masked=masked))
        elif kind == "consistency":
            server.receive_consistency(node, ConsistencyResponse.from_record(record))
        else:
            server.receive_unmask(node, UnmaskResponse.from_record(record))

    def message_kind_now(self, session: Session, number: int) -> str | None:
        """The message stage name (``keys1``, ``masked``, ``consistency``, ``unmask``) the round takes now."""
        stage = session.get(SecureRoundStage, number)
        if stage is None or stage.stage not in _MESSAGE_STAGE:
            return None
        return self.message_stage(stage)

    def ring_dtype(self) -> np.dtype:
        """dtype of a masked vector's ring elements (little-endian on the wire)."""
        return np.dtype(self.spec.dtype).newbyteorder("<")


class StageClosed(ProtocolViolation):
    """A stage message arrived for a stage that is not (or no longer) open for its sender."""
