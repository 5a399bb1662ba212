"""The REST coordinator's FastAPI application: organizations, model registry, audit log.

Every piece of state lives in the database (:class:`~oneliac_flwr.api.store.Database`);
each state change is one transaction, so any number of processes can serve one
federation and a killed process loses nothing it acknowledged.
"""


import asyncio
import collections
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from safetensors.numpy import save as safetensors_save
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from oneliac_flwr.api.config_routes import install_config_routes
from oneliac_flwr.api.problems import ApiProblem, BodySizeLimit, Problem, install_problem_handlers
from oneliac_flwr.api.schemas import (
    AuditEventOut,
    CoordinatorKeyOut,
    ModelOut,
    OrganizationCreated,
    OrganizationIn,
    OrganizationOut,
    Receipt,
    RoundOut,
    decode_key,
)
from oneliac_flwr.api.privacy_routes import declared_privacy, install_privacy_routes, privacy_refusal
from oneliac_flwr.api.rounds import BUDGET_EXHAUSTED, RoundEngine, aware, model_version_name
from oneliac_flwr.api.secure_routes import Accepted, install_secure_routes, submit_masked
from oneliac_flwr.api.uploads import decode_upload, openapi_request_body, openapi_schemas, upload_digest
from oneliac_flwr.api.store import AuditEvent, Database, ModelVersion, Organization, Round, Submission
from oneliac_flwr.config import CoordinatorConfig, ExperimentConfig
from oneliac_flwr.errors import ProtocolViolation, ValidationFailed
from oneliac_flwr.secure import fingerprint, identity_fingerprint

__all__ = ["API_PREFIX", "create_app", "hash_api_key"]

API_PREFIX = "/api/v1/federated"
API_KEY_PREFIX = "sk_live_"
TICK_SECONDS = 1.0
MAX_WAIT_SECONDS = 30.0
#: stage messages of one organization that may wait at once (each holds a worker thread and
#: its request body while it waits); more are answered at once, as with ``wait_seconds=0``
MAX_MESSAGE_WAITS = 2
_T = TypeVar("_T")
POLL_SECONDS = 0.1  # while long polls wait, the watcher re-reads the database this often (other processes' changes)
logger = logging.getLogger("oneliac_flwr.api")
_bearer = HTTPBearer(auto_error=False)
_ERRORS = {
    code: {"model": Problem, "content": {"application/problem+json": {}}} for code in (401, 403, 404, 409, 413, 422)
}


def hash_api_key(api_key: str) -> str:
    """SHA-256 hex of an API key (keys are 256-bit random: a plain hash suffices)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


def _initial_weights(experiment: ExperimentConfig) -> bytes:
    from oneliac_flwr.models import new_model  # torch is needed only here, at start-up

    state = new_model(experiment).state_dict()
    return safetensors_save({name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in state.items()})


def _organization_out(org: Organization) -> OrganizationOut:
    return OrganizationOut(
        organization_id=org.id,
        organization_name=org.name,
        endpoint=org.endpoint,
        active=org.active,
        encryption_key_fingerprint=fingerprint(org.encryption_key),
        identity_key_fingerprint=identity_fingerprint(org.identity_key) if org.identity_key else None,
        created_at=aware(org.created_at),
    )


def create_app(*, coordinator: CoordinatorConfig, experiment: ExperimentConfig, admin_token: str) -> FastAPI:
    """Build the service.

    Parameters
    ----------
    coordinator : CoordinatorConfig
        ``coordinator.*``: database URL and body limit.
    experiment : ExperimentConfig
        The federation's model (the initial global model is built from it).
    admin_token : str
        The operator's bearer token (``ONELIAC_ADMIN_TOKEN``).
    """
    database = Database(coordinator.database_url)
    engine = RoundEngine(database, experiment, keep_sealed_updates=coordinator.keep_sealed_updates)

    async def ticker() -> None:
        """Deadlines pass even when no request arrives (on its own thread: long polls holding
        every worker of the shared pool never delay it)."""
        own = anyio.CapacityLimiter(1)
        while True:
            for task in (engine.advance, database.checkpoint):  # the WAL copied out of every commit's way
                try:
                    await anyio.to_thread.run_sync(task, limiter=own)
                except Exception:  # noqa: BLE001 - the next tick retries; the transaction rolled back
                    logger.exception("round ticker")
            await asyncio.sleep(TICK_SECONDS)

    async def watcher() -> None:
        """Wakes this process's long polls when another process changed the round: one read
        per period for all of them (on its own thread, as the ticker)."""
        own = anyio.CapacityLimiter(1)
        while True:
            try:
                await anyio.to_thread.run_sync(engine.watch, limiter=own)
            except Exception:  # noqa: BLE001 - the next period retries
                logger.exception("long-poll watcher")
            await asyncio.sleep(POLL_SECONDS)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        database.migrate()
        _ensure_initial_model(database, experiment)
        engine.ensure_key()
        engine.ensure_privacy()  # an edited privacy ledger stops the service here
        engine.ensure_server_state()  # so does optimizer state another strategy stored
        engine.erase_closed_updates()
        tasks = [asyncio.create_task(ticker()), asyncio.create_task(watcher())] if engine.unavailable is None else []
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            database.dispose()

    app = FastAPI(
        title="oneliac-flwr REST coordinator",
        version="1.0.0",
        description="Federated learning for hospitals: organizations, model registry and audit log. "
        "Errors are problem documents {type, title, status, detail, field}.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, limit=coordinator.max_body_bytes)
    install_problem_handlers(app)
    app.state.database = database

    def credentials(value: HTTPAuthorizationCredentials | None) -> str:
        if value is None or value.scheme.lower() != "bearer" or not value.credentials:
            raise ApiProblem(401, "unauthorized", "Authentication required", "send 'Authorization: Bearer <token>'",
                             headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return value.credentials

    def caller(value: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
        """``admin`` or the id of the active organization whose API key was sent."""
        token = credentials(value)
        if hmac.compare_digest(token.encode(), admin_token.encode()):
            return "admin"
        with database.read() as session:  # two columns, not the entity: every request pays this
            org = session.execute(select(Organization.id, Organization.active)
                                  .where(Organization.api_key_hash == hash_api_key(token))).first()  # fmt: skip
        if org is None:
            raise ApiProblem(401, "unknown_api_key", "Authentication failed", "unknown or revoked API key",
                             headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not org.active:
            raise ApiProblem(403, "organization_inactive", "Forbidden", f"organization {org.id} is deactivated")
        return str(org.id)

    def require_admin(who: Annotated[str, Depends(caller)]) -> str:
        if who != "admin":
            raise ApiProblem(403, "forbidden", "Forbidden", "this operation needs the operator's admin token")
        return who

    def get_org(session, organization_id: str) -> Organization:  # noqa: ANN001 - Session
        # a NUL byte can name no organization (and PostgreSQL refuses it in a query)
        org = None if "\x00" in organization_id else session.get(Organization, organization_id)
        if org is None:
            raise ApiProblem(404, "unknown_organization", "Not found", f"no organization {organization_id!r}",
                             field="organization_id")  # fmt: skip
        return org

    @app.post(f"{API_PREFIX}/organizations", status_code=201, response_model=OrganizationCreated, responses=_ERRORS)
    def register_organization(body: OrganizationIn, actor: Annotated[str, Depends(require_admin)]) -> OrganizationCreated:
        """Register a hospital (admin token). The API key is in this answer only."""
        api_key = _new_api_key()
        org = Organization(
            id="org_" + secrets.token_hex(8),
            name=body.organization_name,
            endpoint=body.endpoint,
            encryption_key=decode_key(body.encryption_key),
            identity_key=decode_key(body.identity_key) if body.identity_key else None,
            api_key_hash=hash_api_key(api_key),
            active=True,
            created_at=_now(),
        )
        try:
            with database.transaction() as session:
                if session.scalar(select(Organization.id).where(Organization.name == org.name)) is not None:
                    raise ApiProblem(409, "duplicate_organization", "Conflict",
                                     f"an organization named {org.name!r} is already registered",
                                     field="organization_name")  # fmt: skip
                session.add(org)
                session.flush()
                session.add(AuditEvent(at=_now(), actor=actor, action="organization.registered",
                                       organization_id=org.id, detail=org.name))  # fmt: skip
        except IntegrityError:  # a concurrent registration of the same name won the race
            raise ApiProblem(409, "duplicate_organization", "Conflict",
                             f"an organization named {org.name!r} is already registered",
                             field="organization_name") from None  # fmt: skip
        out = _organization_out(org)
        return OrganizationCreated(**out.model_dump(), api_key=api_key, api_key_fingerprint=hash_api_key(api_key)[:16])

    @app.get(f"{API_PREFIX}/organizations", response_model=list[OrganizationOut], responses=_ERRORS)
    def list_organizations(_: Annotated[str, Depends(require_admin)]) -> list[OrganizationOut]:
        """Every registered organization (admin token)."""
        with database.read() as session:
            return [_organization_out(o) for o in session.scalars(select(Organization).order_by(Organization.created_at))]

    @app.post(f"{API_PREFIX}/organizations/{{organization_id}}/deactivate", response_model=OrganizationOut,
              responses=_ERRORS)  # fmt: skip
    def deactivate_organization(organization_id: str, actor: Annotated[str, Depends(require_admin)]) -> OrganizationOut:
        """Deactivate an organization: its API key stops working (admin token)."""
        with database.transaction() as session:
            org = get_org(session, organization_id)
            org.active = False
            session.add(AuditEvent(at=_now(), actor=actor, action="organization.deactivated",
                                   organization_id=org.id, detail=""))  # fmt: skip
            return _organization_out(org)

    @app.post(f"{API_PREFIX}/organizations/{{organization_id}}/api-key", response_model=OrganizationCreated,
              responses=_ERRORS)  # fmt: skip
    def rotate_api_key(organization_id: str, actor: Annotated[str, Depends(require_admin)]) -> OrganizationCreated:
        """Issue a new API key; the old one stops working at once (admin token)."""
        api_key = _new_api_key()
        with database.transaction() as session:
            org = get_org(session, organization_id)
            org.api_key_hash = hash_api_key(api_key)
            session.add(AuditEvent(at=_now(), actor=actor, action="organization.api_key_rotated",
                                   organization_id=org.id, detail=hash_api_key(api_key)[:16]))  # fmt: skip
            out = _organization_out(org)
        return OrganizationCreated(**out.model_dump(), api_key=api_key, api_key_fingerprint=hash_api_key(api_key)[:16])

    @app.get(
        f"{API_PREFIX}/model",
        response_model=ModelOut,
        responses={**_ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    )
    def get_model(
        _: Annotated[str, Depends(caller)],
        version: Annotated[str | None, Query(max_length=40, pattern=r"^[0-9A-Za-z._-]+$")] = None,
        accept: Annotated[str | None, Header()] = None,
    ) -> ModelOut | Response:
        """The current global model, or a kept ``version``; raw safetensors with
        ``Accept: application/octet-stream``."""
        with database.read() as session:
            if version is None:
                row = session.scalar(select(ModelVersion).order_by(ModelVersion.training_round.desc()).limit(1))
            else:
                row = session.get(ModelVersion, version)
            if row is None:
                raise ApiProblem(404, "unknown_model_version", "Not found", f"no kept model version {version!r}",
                                 field="version")  # fmt: skip
        if accept is not None and "application/octet-stream" in accept:
            return Response(
                content=row.weights,
                media_type="application/octet-stream",
                headers={"X-Model-Version": row.version, "X-Checksum-SHA256": row.sha256},
            )
        return ModelOut(
            model_version=row.version,
            weights="0x" + row.weights.hex(),
            checksum_sha256=row.sha256,
            accuracy=row.accuracy,
            organizations_contributed=row.contributors,
            training_round=row.training_round,
            epsilon_spent=row.epsilon_spent,
        )

    @app.get(f"{API_PREFIX}/audit", response_model=list[AuditEventOut], responses=_ERRORS)
    def audit_log(
        _: Annotated[str, Depends(require_admin)], limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[AuditEventOut]:
        """The newest audit events first (admin token)."""
        with database.read() as session:
            rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
            return [
                AuditEventOut(at=aware(r.at), actor=r.actor, action=r.action, organization_id=r.organization_id, detail=r.detail)
                for r in rows
            ]

    def current_round(session) -> Round | None:  # noqa: ANN001 - Session
        return session.scalar(select(Round).order_by(Round.number.desc()).limit(1))

    method = experiment.aggregation_config.aggregation_method

    def round_out(session, rnd: Round | None, who: str) -> RoundOut:  # noqa: ANN001 - Session
        if engine.unavailable is not None:
            return RoundOut(round=None, status="unavailable", next_action="none", reason=engine.unavailable,
                            aggregation_method=method)  # fmt: skip
        if rnd is None:
            return RoundOut(round=None, status="waiting", next_action="wait", aggregation_method=method,
                            reason=f"waiting for {experiment.aggregation_config.min_participants} active organizations")  # fmt: skip
        roster = json.loads(rnd.roster)
        submitted = None  # secure_sum rounds keep no Submission rows: their stage view says what is done
        if rnd.status == "open" and engine.secure is None:
            submitted = session.scalar(select(Submission.organization_id).where(
                Submission.round == rnd.number, Submission.organization_id == who))  # fmt: skip
        if rnd.status == "open":
            action = "submit" if who in roster and submitted is None else "wait"
        else:
            last = rnd.number >= experiment.aggregation_config.max_rounds or rnd.status == BUDGET_EXHAUSTED
            action = "finished" if last else "wait"
        now = _now()
        view = engine.secure.view(session, rnd, who, now) if engine.secure is not None and who != "admin" else None
        record = None
        if view is not None and rnd.status == "open":
            action = view.next_action if who in roster else "wait"
            record = engine.secure.record_for(session, rnd.number, who, action, now) if who in roster else None
        report = json.loads(rnd.report or "{}")
        return RoundOut(
            round=rnd.number, status=rnd.status, model_version=rnd.base_version, deadline=aware(rnd.deadline),
            roster_size=len(roster), in_roster=who in roster, next_action=action, reason=rnd.reason,
            dropouts=report.get("dropouts"), contributors=report.get("contributors"),
            stage=view.stage if view else None, node_id=view.node_id if view else None,
            run_id=view.run_id if view else None, aggregation_method=method, record=record,
        )  # fmt: skip

    @app.get(f"{API_PREFIX}/coordinator-key", response_model=CoordinatorKeyOut, responses=_ERRORS)
    def coordinator_key(_: Annotated[str, Depends(caller)]) -> CoordinatorKeyOut:
        """The X25519 key fedavg updates are sealed to (ephemeral X25519, HKDF-SHA256, AES-GCM)."""
        with database.read() as session:
            public = engine.public_key(session)
        return CoordinatorKeyOut(public_key="0x" + public.hex(), fingerprint=fingerprint(public))

    wait_query = Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="long poll: seconds to wait for a change")]
    status_query = Annotated[str | None, Query(max_length=20)]

    def wait_for_move(who: str, number: int | None, waited: tuple[int | None, str | None, str | None],
                      wait_seconds: float, *, by_message: bool = False, seen: int | None = None) -> None:  # fmt: skip
        """Return once ``(round, status, stage)`` of round ``number`` (the newest round if
        ``None``) differs from ``waited``, or after ``wait_seconds`` (``by_message``: the stage
        named as its messages are kept, :meth:`RoundEngine.position`). ``seen``: the change
        counter taken when the round was known to be at ``waited`` (the first read is skipped)."""
        deadline = time.monotonic() + wait_seconds
        with_stage = waited[2] is not None and who != "admin"
        read = seen is None
        if seen is None:
            seen = engine.generation()  # taken before the read: a change after it is not missed
        while waited != (None, None, None) and time.monotonic() < deadline:
            if read:
                with database.read() as session:  # a cheap snapshot: the long poll never takes the write lock
                    if engine.position(session, with_stage=with_stage, number=number, by_message=by_message) != waited:
                        return
            # woken by a transition of this process, or by the watcher (other processes' changes)
            before, seen = seen, engine.wait_for_change(seen, max(0.0, deadline - time.monotonic()))
            move = engine.known_move(number, before) if number is not None and seen != before else None
            if move is not None and number is not None:  # this process's own commits explain every change since
                if engine.position_of(number, move, with_stage=with_stage, by_message=by_message) != waited:
                    return
                read = False
            else:
                read = True

    @app.get(f"{API_PREFIX}/rounds/current", response_model=RoundOut, responses=_ERRORS)
    def round_status(
        who: Annotated[str, Depends(caller)],
        wait_seconds: wait_query = 0.0,
        after_round: Annotated[int | None, Query(ge=0, le=10**6)] = None,
        after_status: status_query = None,
        after_stage: status_query = None,
    ) -> RoundOut:
        """What the current round is and what this organization must do next. Long poll:
        with ``wait_seconds``, answer as soon as the round differs from ``after_round`` /
        ``after_status`` / ``after_stage`` (or when the wait is over)."""
        engine.advance_if_due()  # an open round's changes come from its messages and the ticker
        wait_for_move(who, None, (after_round, after_status, after_stage), wait_seconds)
        return status_of(who, None)

    def status_of(who: str, number: int | None) -> RoundOut:
        """This organization's view of round ``number`` (the newest if ``None``), from a
        read-only snapshot (a write transaction only the first time, to make its secure-sum
        node id); 404 for an unknown round."""

        def one(session) -> RoundOut:  # noqa: ANN001 - Session
            rnd = current_round(session) if number is None else session.get(Round, number)
            if rnd is None and number is not None:
                raise ApiProblem(404, "unknown_round", "Not found", f"no round {number}", field="round")
            return round_out(session, rnd, who)

        return as_seen_by(who, number, one)

    def as_seen_by(who: str, number: int | None, render: Callable[..., _T]) -> _T:
        """``render(session)`` in a read-only snapshot with round ``number`` (the newest if
        ``None``) preloaded; in a write transaction only the first time an organization looks
        in secure-sum mode (to make its node id)."""
        with database.read() as session:
            if engine.secure is None or who == "admin" or engine.secure.preload(session, who, number):
                return render(session)
        with database.transaction() as session:
            engine.lock(session)  # makes this organization's node id
            return render(session)

    message_waits: collections.Counter[str] = collections.Counter()  # stage messages waiting now, per organization
    message_waits_lock = threading.Lock()

    def after_message(who: str, number: int, accepted: Accepted, wait_seconds: float) -> tuple[RoundOut, float]:
        """``who``'s view of round ``number`` once it has moved past the stage the accepted
        message is kept under (a stage message's answer), or after ``wait_seconds``; and the
        seconds spent waiting."""
        with message_waits_lock:  # a few waiting messages per organization: more answer at once
            allowed = message_waits[who] < MAX_MESSAGE_WAITS
            message_waits[who] += int(allowed)
        started = time.monotonic()
        try:
            wait_for_move(who, number, (number, "open", accepted.kept_as), wait_seconds if allowed else 0.0,
                          by_message=True, seen=accepted.seen)  # fmt: skip
        finally:
            with message_waits_lock:
                message_waits[who] -= int(allowed)
                if not message_waits[who]:
                    del message_waits[who]
        waited = time.monotonic() - started
        return status_of(who, number), waited

    @app.get(f"{API_PREFIX}/rounds", response_model=list[RoundOut], responses=_ERRORS)
    def list_rounds(who: Annotated[str, Depends(caller)]) -> list[RoundOut]:
        """Every round with its outcome, contributors and dropouts (never an update)."""
        return as_seen_by(who, None, lambda session: [
            round_out(session, r, who) for r in session.scalars(select(Round).order_by(Round.number))])  # fmt: skip

    @app.get(f"{API_PREFIX}/rounds/{{round}}", response_model=RoundOut, responses=_ERRORS)
    def get_round(
        round: Annotated[int, Path(ge=1, le=10**6)],
        who: Annotated[str, Depends(caller)],
        wait_seconds: wait_query = 0.0,
        after_status: status_query = None,
        after_stage: status_query = None,
    ) -> RoundOut:
        """One round with its outcome, contributors and dropouts (what ``GET /rounds`` lists).
        Long poll: with ``wait_seconds``, answer as soon as this round's status or stage
        differs from ``after_status`` / ``after_stage`` (or when the wait is over): how an
        organization waits for the end of the round it took part in (the round's messages and
        the ticker move it: no transition is attempted here)."""
        if after_status is not None or after_stage is not None:
            wait_for_move(who, round, (round, after_status, after_stage), wait_seconds)
        return status_of(who, round)

    @app.post(f"{API_PREFIX}/gradients", response_model=Receipt, responses={**_ERRORS, 415: _ERRORS[409], 501: _ERRORS[409]},
              openapi_extra=openapi_request_body())  # fmt: skip
    def submit_gradients(upload: Annotated[tuple[str | None, bytes], Depends(_raw_body)],
                         who: Annotated[str, Depends(caller)], response: Response,
                         wait_seconds: wait_query = 0.0) -> Receipt:  # fmt: skip
        """Submit this organization's sealed update (fedavg) or masked vector (secure_sum) for the
        open round (idempotent per round): the JSON body, or the same fields as a safetensors file
        (``Content-Type: application/octet-stream``). In secure_sum mode the receipt carries this
        organization's view of the round (``round_status``), with ``wait_seconds`` once the
        masking stage has closed; fedavg submissions do not wait."""
        dtype = engine.secure.ring_dtype() if engine.secure is not None else np.dtype(np.uint8)
        body = decode_upload(upload[1], upload[0], dtype=dtype)
        if who == "admin":
            raise ApiProblem(403, "forbidden", "Forbidden", "submissions need an organization's API key")
        if body.organization_id != who:
            raise ApiProblem(403, "organization_mismatch", "Forbidden",
                             "organization_id is not the organization of this API key", field="organization_id")  # fmt: skip
        if engine.unavailable is not None:
            raise ApiProblem(501, "rounds_unavailable", "Not implemented", engine.unavailable)
        if engine.secure is not None:
            return submit_masked(database, engine, body, who, after=after_message, wait_seconds=wait_seconds,
                                 response=response)  # fmt: skip
        if wait_seconds:
            raise ApiProblem(422, "wait_unexpected", "Invalid request",
                             "this federation runs fedavg rounds: a submission does not wait (wait_seconds must be 0)",
                             field="wait_seconds")  # fmt: skip
        if body.secure_sum is not None:
            raise ApiProblem(422, "secure_sum_unexpected", "Invalid request",
                             "this federation runs fedavg rounds: 'secure_sum' is not expected", field="secure_sum")  # fmt: skip
        body_hash = upload_digest(body)
        receipt = "rcpt_" + hashlib.sha256(f"{body.round}|{who}|{body_hash}".encode()).hexdigest()[:32]
        engine.advance()
        with database.transaction() as session:
            engine.lock(session)
            existing = session.get(Submission, (body.round, who))
            if existing is not None:
                if existing.body_sha256 == body_hash:
                    return Receipt(receipt=existing.receipt, round=body.round, organization_id=who, replayed=True)
                raise ApiProblem(409, "conflicting_resubmission", "Conflict",
                                 f"a different submission for round {body.round} was already accepted", field="round")  # fmt: skip
            rnd = session.get(Round, body.round)
            if rnd is None or rnd.status != "open":
                now_open = current_round(session)
                if now_open is not None and now_open.status == BUDGET_EXHAUSTED:
                    raise privacy_refusal(now_open.reason or "", session)
                current = now_open.number if now_open is not None and now_open.status == "open" else None
                raise ApiProblem(409, "round_not_open", "Conflict",
                                 f"round {body.round} is not open (open round: {current})", field="round")  # fmt: skip
            if who not in json.loads(rnd.roster):
                raise ApiProblem(403, "not_in_roster", "Forbidden", f"{who} is not on round {rnd.number}'s roster")
            if body.model_version != rnd.base_version:
                raise ApiProblem(409, "stale_model_version", "Conflict",
                                 f"round {rnd.number} trains model {rnd.base_version}, not {body.model_version}",
                                 field="model_version")  # fmt: skip
            blob = body.gradients_encrypted
            try:
                plaintext = engine.open_submission(session, organization_id=who, current=rnd, blob=blob)
            except ProtocolViolation as exc:
                raise ApiProblem(422, "sealed_update_invalid", "Invalid request", str(exc), field="gradients_encrypted") from None
            engine.on_receipt(session, rnd.number)  # the coordinator has seen a release: accounted even if refused below
            refused: ApiProblem | None = None
            try:
                engine.check_submission(session, current=rnd, plaintext=plaintext, sample_count=body.sample_count,
                                        declared=declared_privacy(body.privacy))  # fmt: skip
            except ValidationFailed as exc:
                check = str(exc).split(":", 1)[0]
                field = "privacy" if check == "privacy_check" else "gradients_encrypted"
                refused = ApiProblem(422, f"validation_{check}", "Validation failed", str(exc), field=field)
            if refused is None:
                session.add(Submission(round=rnd.number, organization_id=who, body_sha256=body_hash, receipt=receipt,
                                       payload=blob, sample_count=body.sample_count, received_at=_now()))  # fmt: skip
                session.add(AuditEvent(at=_now(), actor=who, action="submission.accepted", organization_id=who,
                                       detail=f"round {rnd.number}, {len(blob)} sealed bytes"))  # fmt: skip
        if refused is not None:  # committed: only the release's accounting, never the update
            raise refused
        engine.advance()
        return Receipt(receipt=receipt, round=body.round, organization_id=who, replayed=False)

    generate_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's document, with the schemas of ``POST /gradients``'s two body forms."""
        if app.openapi_schema is None:
            generate_openapi().setdefault("components", {}).setdefault("schemas", {}).update(openapi_schemas())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    install_privacy_routes(app, prefix=API_PREFIX, database=database, engine=engine, caller=caller, errors=_ERRORS)
    install_secure_routes(app, prefix=API_PREFIX, database=database, engine=engine, caller=caller, errors=_ERRORS,
                          after=after_message, wait_query=wait_query)  # fmt: skip
    install_config_routes(app, prefix=API_PREFIX, database=database, engine=engine, experiment=experiment, caller=caller,
                          errors=_ERRORS)

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _raw_body(request: Request) -> tuple[str | None, bytes]:
    """``POST /gradients``'s content type and body, read here and parsed in the threadpool."""
    return request.headers.get("content-type"), await request.body()


def _ensure_initial_model(database: Database, experiment: ExperimentConfig) -> None:
    """Keep the federation's initial model as version ``1.0.0`` (once, whichever process is first)."""
    weights = _initial_weights(experiment)
    try:
        with database.transaction() as session:
            if session.scalar(select(ModelVersion.version).where(ModelVersion.training_round == 0)) is not None:
                return
            session.add(
                ModelVersion(
                    version=model_version_name(0),
                    training_round=0,
                    weights=weights,
                    sha256=hashlib.sha256(weights).hexdigest(),
                    contributors=0,
                    accuracy=None,
                    epsilon_spent=0.0,
                    created_at=_now(),
                )
            )
    except IntegrityError:  # another process stored it first
        return
