"""The REST coordinator's FastAPI application: organizations, model registry, audit log.

Every piece of state lives in the database (:class:`~oneliac_flwr.api.store.Database`);
each state change is one transaction, so any number of processes can serve one
federation and a killed process loses nothing it acknowledged.
"""


import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Header, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from safetensors.numpy import save as safetensors_save
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from oneliac_flwr.api.problems import ApiProblem, BodySizeLimit, Problem, install_problem_handlers
from oneliac_flwr.api.schemas import (
    AuditEventOut,
    ModelOut,
    OrganizationCreated,
    OrganizationIn,
    OrganizationOut,
    decode_key,
)
from oneliac_flwr.api.store import AuditEvent, Database, ModelVersion, Organization
from oneliac_flwr.config import CoordinatorConfig, ExperimentConfig
from oneliac_flwr.secure import fingerprint, identity_fingerprint

__all__ = ["API_PREFIX", "create_app", "hash_api_key", "model_version_name"]

API_PREFIX = "/api/v1/federated"
API_KEY_PREFIX = "sk_live_"
_bearer = HTTPBearer(auto_error=False)
_ERRORS = {
    code: {"model": Problem, "content": {"application/problem+json": {}}} for code in (401, 403, 404, 409, 413, 422)
}


def hash_api_key(api_key: str) -> str:
    """SHA-256 hex of an API key (keys are 256-bit random: a plain hash suffices)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def model_version_name(training_round: int) -> str:
    """Version label of the model after ``training_round`` rounds (``1.0.0`` is the initial one)."""
    return f"1.0.{training_round}"


def _new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
        created_at=_aware(org.created_at),
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        database.migrate()
        _ensure_initial_model(database, experiment)
        try:
            yield
        finally:
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
        with database.transaction() as session:
            org = session.scalar(select(Organization).where(Organization.api_key_hash == hash_api_key(token)))
            if org is None:
                raise ApiProblem(401, "unknown_api_key", "Authentication failed", "unknown or revoked API key",
                                 headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            if not org.active:
                raise ApiProblem(403, "organization_inactive", "Forbidden", f"organization {org.id} is deactivated")
            return org.id

    def require_admin(who: Annotated[str, Depends(caller)]) -> str:
        if who != "admin":
            raise ApiProblem(403, "forbidden", "Forbidden", "this operation needs the operator's admin token")
        return who

    def get_org(session, organization_id: str) -> Organization:  # noqa: ANN001 - Session
        org = session.get(Organization, organization_id)
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
        with database.transaction() as session:
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
        version: Annotated[str | None, Query(max_length=40)] = None,
        accept: Annotated[str | None, Header()] = None,
    ) -> ModelOut | Response:
        """The current global model, or a kept ``version``; raw safetensors with
        ``Accept: application/octet-stream``."""
        with database.transaction() as session:
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
        with database.transaction() as session:
            rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
            return [
                AuditEventOut(at=_aware(r.at), actor=r.actor, action=r.action, organization_id=r.organization_id, detail=r.detail)
                for r in rows
            ]

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


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
