"""HTTP endpoints of the secure-sum stages (``aggregation_method: secure_sum``).

- ``GET  /secure-sum/node``: this organization's node id and the run id;
- ``POST /rounds/{round}/keys``: stage K, the key advertisement;
- ``GET  /rounds/{round}/setup``: stage M, the round setup;
- ``POST /gradients`` (:func:`submit_masked`): stage M, the masked vector;
- ``GET  /rounds/{round}/consistency-request`` and ``POST /rounds/{round}/consistency-response``:
  stage C (``secure_sum.mode: malicious``), the survivor set and this organization's signature of it;
- ``GET  /rounds/{round}/unmask-request`` and ``POST /rounds/{round}/unmask-response``: stage U.

Message records travel through the one codec :mod:`oneliac_flwr.api.records`. A message
goes into the protocol state under the round lock, in the same transaction that records
it (:class:`~oneliac_flwr.api.store.SecureMessage`, its content logged until the next
stage change), so the same body again gets the same receipt and a different one 409.
The setup, consistency-request and unmask-request downloads read a snapshot without the lock.
"""


import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Path, Response
from sqlalchemy import select

from oneliac_flwr.api.privacy_routes import declared_privacy
from oneliac_flwr.api.problems import ApiProblem
from oneliac_flwr.api.records import record_from_json, record_to_json
from oneliac_flwr.api.rounds import RoundEngine, aware
from oneliac_flwr.api.schemas import GradientsIn, Receipt, RoundOut, SecureNodeOut, SecureRecordIn, SecureRecordOut
from oneliac_flwr.api.secure_rounds import SecureRounds, StageClosed
from oneliac_flwr.api.uploads import upload_digest
from oneliac_flwr.api.store import AuditEvent, Database, Round, SecureMessage
from oneliac_flwr.errors import ProtocolViolation, ValidationFailed

__all__ = ["Accepted", "install_secure_routes", "submit_masked"]

logger = logging.getLogger("oneliac_flwr.api")


def _now() -> datetime:
    return datetime.now(UTC)


def field_of(exc: ProtocolViolation, prefix: str) -> str:
    """The request field a protocol refusal names (``<prefix>.<attribute>``)."""
    head = str(exc).split(": ", 1)[0].strip()
    if head in (prefix, "gradients_encrypted") or head.startswith((f"{prefix}.", f"{prefix}[")):
        return head
    tail = head.rsplit("/", 1)[-1]
    if "." in tail:
        return f"{prefix}.{tail.split('.', 1)[1]}"
    return prefix


def _hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """A stage message taken (or replayed).

    Parameters
    ----------
    receipt : Receipt
        Its receipt.
    kept_as : str
        The name of the stage the message is kept under (``keys1``, ``masked``, ...): what
        a wait after it watches.
    seen : int or None
        The change counter (:meth:`RoundEngine.generation`) taken under the round lock,
        when the round was in that stage: a wait from it needs no first read. ``None`` for a
        replay (the round may have moved since the message was first taken).
    """

    receipt: Receipt
    kept_as: str
    seen: int | None


def _accept(database: Database, engine: RoundEngine, *, number: int, who: str, kind: str, body_hash: str,
            record: Any, prefix: str, masked: bytes | None = None, model_version: str | None = None,
            declaration: Callable[[Any, Round], None] | None = None) -> Accepted:  # fmt: skip
    """Take one stage message: replay, stage and roster checks, the protocol's checks, then store."""
    secure = engine.secure
    if secure is None:
        raise ApiProblem(409, "not_secure_sum", "Conflict", "this federation does not run secure_sum rounds")
    receipt = "rcpt_" + hashlib.sha256(f"{number}|{who}|{kind}|{body_hash}".encode()).hexdigest()[:32]
    try:  # decoded before the round lock is taken; a refusal is raised where the checks run, below
        decoded: tuple[Any, np.ndarray | None] | ProtocolViolation = _decode(secure, record, prefix, masked)
    except ProtocolViolation as exc:
        decoded = exc
    options: dict[str, Any] = {"number": number, "who": who, "kind": kind, "body_hash": body_hash, "receipt": receipt,
                               "decoded": decoded, "prefix": prefix, "model_version": model_version,
                               "declaration": declaration}  # fmt: skip
    try:
        replayed, kept_as, moved_to, seen = _accept_locked(database, engine, deadline_first=True, **options)
    except _DeadlinePassed:
        engine.advance()  # the stage's deadline passed before the ticker closed it: close it first
        replayed, kept_as, moved_to, seen = _accept_locked(database, engine, deadline_first=False, **options)
    if replayed is not None:
        return Accepted(receipt=replayed, kept_as=kept_as, seen=seen)
    if moved_to is not None:  # long polls watch (round, status, stage): only a stage change made here wakes them
        engine.changed(moved=(number, moved_to))
    return Accepted(receipt=Receipt(receipt=receipt, round=number, organization_id=who, replayed=False),
                    kept_as=kept_as, seen=seen)  # fmt: skip


class _DeadlinePassed(ProtocolViolation):
    """The stage's deadline passed before anything closed it (nothing was written)."""


def _accept_locked(database: Database, engine: RoundEngine, *, number: int, who: str, kind: str, body_hash: str,
                   receipt: str, decoded: tuple[Any, np.ndarray | None] | ProtocolViolation, prefix: str,
                   model_version: str | None, declaration: Callable[[Any, Round], None] | None,
                   deadline_first: bool) -> tuple[Receipt | None, str, tuple[str, str | None, int] | None, int | None]:  # fmt: skip
    """:func:`_accept`'s transaction: the receipt of a replay (or ``None`` once the message is
    stored, and its stage closed if it completed it), the stage name the message is kept
    under, where the round moved to ``(status, stage, key pass)`` if this message moved it
    (else ``None``), and the change counter taken under the lock (``None`` for a replay: the
    round may have moved on since the message was first taken).

    Raises
    ------
    _DeadlinePassed
        With ``deadline_first``, when the stage's deadline has passed (rolled back; the caller
        advances first and tries again).
    """
    secure = engine.secure
    if secure is None:
        raise ApiProblem(409, "not_secure_sum", "Conflict", "this federation does not run secure_sum rounds")
    with database.transaction() as session:
        engine.lock(session)
        seen = engine.generation()  # under the lock: every later change bumps it
        now = _now()  # after the lock: message times follow the commit order (the log is replayed in it)
        rnd = session.get(Round, number)
        if rnd is None:
            raise ApiProblem(409, "round_not_open", "Conflict", f"round {number} is not open", field="round")
        if who not in json.loads(rnd.roster):
            raise ApiProblem(403, "not_in_roster", "Forbidden", f"{who} is not on round {number}'s roster")
        stage_kind = secure.message_kind_now(session, number)
        kinds = [k for k in (stage_kind, kind) if k is not None and (k == kind or k.startswith(kind))]
        earlier = list(dict.fromkeys(kinds))
        if kind == "keys":  # stored per key pass (keys1, keys2): a resend after its pass closed is still a replay
            earlier += [k for k in session.scalars(select(SecureMessage.stage).where(
                SecureMessage.round == number, SecureMessage.organization_id == who,
                SecureMessage.stage.startswith("keys"))) if k not in earlier]  # fmt: skip
        stored = {name: m for name in earlier if (m := session.get(SecureMessage, (number, who, name))) is not None}
        for existing in stored.values():
            if existing.body_sha256 == body_hash:
                return (Receipt(receipt=existing.receipt, round=number, organization_id=who, replayed=True),
                        existing.stage, None, None)  # fmt: skip
        if any(name in stored for name in kinds):  # another message of this stage (a new key pass may ask again)
            raise ApiProblem(409, "conflicting_resubmission", "Conflict",
                             f"a different {kind} message for round {number} was already accepted", field=prefix)  # fmt: skip
        stage = secure.stage_of(session, number)  # read by message_kind_now: no query
        if deadline_first and rnd.status == "open" and stage is not None and now >= aware(stage.stage_deadline):
            raise _DeadlinePassed
        if rnd.status != "open" or stage_kind is None or not stage_kind.startswith(kind):
            raise ApiProblem(409, "stage_closed", "Conflict",
                             f"round {number} does not take {kind} messages now (round {rnd.status})", field="round")  # fmt: skip
        if model_version is not None and model_version != rnd.base_version:
            raise ApiProblem(409, "stale_model_version", "Conflict",
                             f"round {number} trains model {rnd.base_version}, not {model_version}", field="model_version")  # fmt: skip
        if declaration is not None:
            declaration(session, rnd)
        try:
            if isinstance(decoded, ProtocolViolation):
                raise decoded
            message, masked = decoded
            secure.accept(session, number=number, organization_id=who, kind=kind, record=message, masked=masked,
                          body_sha256=body_hash, receipt=receipt, now=now)  # fmt: skip
        except StageClosed as exc:
            raise ApiProblem(409, "stage_closed", "Conflict", str(exc), field="round") from None
        except ProtocolViolation as exc:
            raise ApiProblem(422, "secure_sum_rejected", "Invalid request", str(exc), field=field_of(exc, prefix)) from None
        session.add(AuditEvent(at=now, actor=who, action=f"secure_sum.{kind}", organization_id=who,
                               detail=f"round {number}"))  # fmt: skip
        # the message that completes its stage closes it here, in the transaction that accepts it
        # (a deadline is the ticker's); a closed round opens the next one
        def position() -> tuple[str, str | None, int]:  # the step changes these objects in place
            return (rnd.status, stage.stage, stage.key_pass) if stage is not None else (rnd.status, None, 0)

        before = position()
        if not secure.step(session, rnd, now):
            engine.advance_locked(session, now)
        after = position()
    return None, stage_kind, after if after != before else None, seen


def _decode(secure: SecureRounds, record: Any, prefix: str, blob: bytes | None) -> tuple[Any, np.ndarray | None]:
    """The message's record (from its JSON form) and masked vector (ring elements, from its bytes).

    Raises
    ------
    ProtocolViolation
        Bad record encoding, or a vector that is not whole ring elements (names the field).
    """
    message = record_from_json(record, field=prefix)
    if blob is None:
        return message, None
    dtype = secure.ring_dtype()
    if len(blob) % dtype.itemsize:
        raise ProtocolViolation(f"gradients_encrypted: {len(blob)} bytes is not a whole number of "
                                f"{dtype.itemsize}-byte ring elements")  # fmt: skip
    return message, np.frombuffer(blob, dtype=dtype).astype(secure.spec.dtype)


#: ``after(organization, round, accepted, wait_seconds)``: the organization's view of the round
#: once it moved past the stage the accepted message is kept under, or after the wait; and
#: the seconds spent waiting
AfterMessage = Callable[[str, int, Accepted, float], tuple[RoundOut, float]]


def _with_status(accepted: Accepted, after: AfterMessage, wait_seconds: float, response: Response) -> Receipt:
    """The receipt with the organization's view of the round after the message (once the
    stage moved on, or the wait is over): taken after the commit, outside the round lock.
    The time spent waiting is reported as ``Server-Timing: wait;dur=<ms>``."""
    receipt = accepted.receipt
    try:
        status, waited = after(receipt.organization_id, receipt.round, accepted, wait_seconds)
    except Exception:  # noqa: BLE001 - the message is stored: its receipt stands, the sender asks for the round
        logger.exception("round %d: the status after %s's stage message", receipt.round, receipt.organization_id)
        return receipt
    response.headers["Server-Timing"] = f"wait;dur={1000 * waited:.1f}"
    return receipt.model_copy(update={"round_status": status})


def submit_masked(database: Database, engine: RoundEngine, body: GradientsIn, who: str, *, after: AfterMessage,
                  wait_seconds: float, response: Response) -> Receipt:  # fmt: skip
    """``POST /gradients`` in secure_sum mode: the masked vector and its protocol fields (stage M),
    answered with this organization's view of the round (after ``wait_seconds`` for the stage to move)."""
    if body.secure_sum is None:
        raise ApiProblem(422, "secure_sum_missing", "Invalid request",
                         "secure_sum mode: send the masked input's protocol fields in 'secure_sum'", field="secure_sum")  # fmt: skip

    def declaration(session: Any, rnd: Round) -> None:
        """Under DP, ``privacy_check`` of the declaration (the release is accounted when the sum is unmasked)."""
        try:
            engine.check_declaration(session, current=rnd, sample_count=body.sample_count,
                                     declared=declared_privacy(body.privacy))  # fmt: skip
        except ValidationFailed as exc:
            raise ApiProblem(422, "validation_privacy_check", "Validation failed", str(exc), field="privacy") from None

    accepted = _accept(database, engine, number=body.round, who=who, kind="masked", body_hash=upload_digest(body),
                       record=body.secure_sum, prefix="secure_sum", masked=body.gradients_encrypted,
                       model_version=body.model_version, declaration=declaration)  # fmt: skip
    return _with_status(accepted, after, wait_seconds, response)


def install_secure_routes(app: FastAPI, *, prefix: str, database: Database, engine: RoundEngine,
                          caller: Callable[..., str], errors: dict[int | str, dict[str, Any]], after: AfterMessage,
                          wait_query: Any) -> None:  # fmt: skip
    """Add the secure-sum stage endpoints to ``app``; ``after`` gives an organization's view
    of a round once a stage it sent a message for moved on (``wait_query`` is the long-poll
    query parameter's annotation)."""

    def organization(who: Annotated[str, Depends(caller)]) -> str:
        if who == "admin":
            raise ApiProblem(403, "forbidden", "Forbidden", "secure-sum messages need an organization's API key")
        return who

    def secure() -> SecureRounds:
        if engine.secure is None:
            raise ApiProblem(409, "not_secure_sum", "Conflict", "this federation does not run secure_sum rounds")
        return engine.secure

    def post_record(round: int, body: SecureRecordIn, who: str, kind: str, wait_seconds: float,
                    response: Response) -> Receipt:  # fmt: skip
        if body.organization_id != who:
            raise ApiProblem(403, "organization_mismatch", "Forbidden",
                             "organization_id is not the organization of this API key", field="organization_id")  # fmt: skip
        secure()
        accepted = _accept(database, engine, number=round, who=who, kind=kind, body_hash=_hash(body.model_dump()),
                           record=body.record, prefix="record")  # fmt: skip
        return _with_status(accepted, after, wait_seconds, response)

    round_path = Annotated[int, Path(ge=1, le=10**6)]

    @app.get(f"{prefix}/secure-sum/node", response_model=SecureNodeOut, responses=errors)
    def secure_node(who: Annotated[str, Depends(organization)]) -> SecureNodeOut:
        """This organization's stable secure-sum node id and the federation's run id."""
        machine = secure()
        with database.transaction() as session:
            engine.lock(session)
            return SecureNodeOut(organization_id=who, node_id=machine.node_id(session, who),
                                 run_id=machine.run_id(session, _now()))  # fmt: skip

    @app.post(f"{prefix}/rounds/{{round}}/keys", response_model=Receipt, responses=errors)
    def advertise_keys(round: round_path, body: SecureRecordIn, who: Annotated[str, Depends(organization)],
                       response: Response, wait_seconds: wait_query = 0.0) -> Receipt:  # fmt: skip
        """Stage K: this organization's signed envelope and mask keys (an AdvertiseKeys record).
        With ``wait_seconds``, answered once this key pass has closed (``round_status``)."""
        return post_record(round, body, who, "keys", wait_seconds, response)

    @app.get(f"{prefix}/rounds/{{round}}/setup", response_model=SecureRecordOut, responses=errors)
    def round_setup(round: round_path, who: Annotated[str, Depends(organization)]) -> SecureRecordOut:
        """Stage M: the round setup (participants, their keys, ring, threshold, graph)."""
        machine = secure()
        with database.read() as session:
            rnd = session.get(Round, round)
            if rnd is None or who not in json.loads(rnd.roster):
                raise ApiProblem(403 if rnd is not None else 409, "not_in_roster" if rnd is not None else "round_not_open",
                                 "Forbidden" if rnd is not None else "Conflict", f"no round {round} setup for {who}")  # fmt: skip
            try:
                setup = machine.setup(session, round, _now())
            except ProtocolViolation as exc:
                raise ApiProblem(409, "stage_closed", "Conflict", str(exc), field="round") from None
        return SecureRecordOut(round=round, record=record_to_json(setup.to_record()))

    def download(round: int, who: str, fetch: Callable[[SecureRounds], Callable[..., Any]]) -> SecureRecordOut:
        """This organization's request of a stage, from a read-only snapshot (409 when the stage is not open)."""
        machine = secure()
        with database.read() as session:
            try:
                request = fetch(machine)(session, round, who, _now())
            except ProtocolViolation as exc:
                raise ApiProblem(409, "stage_closed", "Conflict", str(exc), field="round") from None
        return SecureRecordOut(round=round, record=record_to_json(request.to_record()))

    @app.get(f"{prefix}/rounds/{{round}}/consistency-request", response_model=SecureRecordOut, responses=errors)
    def consistency_request(round: round_path, who: Annotated[str, Depends(organization)]) -> SecureRecordOut:
        """Stage C (``secure_sum.mode: malicious``): the survivor set (counted, dropped) this organization is asked to sign."""
        return download(round, who, lambda machine: machine.consistency_request)

    @app.post(f"{prefix}/rounds/{{round}}/consistency-response", response_model=Receipt, responses=errors)
    def consistency_response(round: round_path, body: SecureRecordIn, who: Annotated[str, Depends(organization)],
                             response: Response, wait_seconds: wait_query = 0.0) -> Receipt:  # fmt: skip
        """Stage C (``secure_sum.mode: malicious``): this organization's signature of the survivor set (a ConsistencyResponse record).
        With ``wait_seconds``, answered once stage C has closed (``round_status``)."""
        return post_record(round, body, who, "consistency", wait_seconds, response)

    @app.get(f"{prefix}/rounds/{{round}}/unmask-request", response_model=SecureRecordOut, responses=errors)
    def unmask_request(round: round_path, who: Annotated[str, Depends(organization)]) -> SecureRecordOut:
        """Stage U: what this organization must reveal (shares of counted nodes' seeds, of dropped nodes' keys)."""
        return download(round, who, lambda machine: machine.unmask_request)

    @app.post(f"{prefix}/rounds/{{round}}/unmask-response", response_model=Receipt, responses=errors)
    def unmask_response(round: round_path, body: SecureRecordIn, who: Annotated[str, Depends(organization)],
                        response: Response, wait_seconds: wait_query = 0.0) -> Receipt:  # fmt: skip
        """Stage U: this organization's unmask response (an UnmaskResponse record). With
        ``wait_seconds``, answered once the round has closed (``round_status``: its outcome)."""
        return post_record(round, body, who, "unmask", wait_seconds, response)
