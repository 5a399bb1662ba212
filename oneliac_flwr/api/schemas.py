"""Request and response bodies of the REST coordinator (pydantic, strict: unknown fields refused)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator

from oneliac_flwr.errors import SecureAggregationError
from oneliac_flwr.secure.keys import check_public_key

__all__ = [
    "CoordinatorKeyOut",
    "GradientsIn",
    "ModelOut",
    "Receipt",
    "RoundOut",
    "SecureNodeOut",
    "SecureRecordIn",
    "SecureRecordOut",
    "OrganizationCreated",
    "OrganizationIn",
    "OrganizationOut",
    "AuditEventOut",
    "decode_key",
    "EpsilonOut",
    "PrivacyDeclarationIn",
    "PrivacyReportOut",
]

_KEY = re.compile(r"^0x[0-9a-fA-F]{64}$")
#: the documented pattern of ``gradients_encrypted`` (checked by :func:`_hex_bytes`, without a regex)
HEX_BLOB_PATTERN = r"^0x([0-9a-fA-F]{2})+$"
_HEX_BLOB_EXPECTED = "expected 0x followed by a non-empty, even number of hex digits"


def _hex_bytes(value: object) -> bytes:
    """``gradients_encrypted``'s bytes: decoded once from ``0x`` + hex (the JSON form), or the
    tensor's bytes as they are (the safetensors form, :mod:`oneliac_flwr.api.uploads`)."""
    if isinstance(value, bytes):
        blob = value
    elif isinstance(value, str):
        if not value.startswith("0x") or len(value) % 2:
            raise ValueError(_HEX_BLOB_EXPECTED)
        try:
            blob = bytes.fromhex(value[2:])
        except ValueError:
            raise ValueError(_HEX_BLOB_EXPECTED) from None
        if 2 * len(blob) != len(value) - 2:  # bytes.fromhex skips whitespace; the pattern does not
            raise ValueError(_HEX_BLOB_EXPECTED)
    else:
        raise ValueError(f"{_HEX_BLOB_EXPECTED} (a string)")
    if not blob:
        raise ValueError(_HEX_BLOB_EXPECTED)
    return blob


#: ``0x`` + hex on the wire (documented with its pattern), the decoded bytes once validated
HexBlob = Annotated[bytes, PlainValidator(_hex_bytes),
                    WithJsonSchema({"type": "string", "pattern": HEX_BLOB_PATTERN, "examples": ["0x00"]})]  # fmt: skip


def decode_key(value: str) -> bytes:
    """``0x`` + 64 hex digits to 32 raw bytes (``ValueError`` otherwise)."""
    if not _KEY.fullmatch(value):
        raise ValueError("expected 0x followed by 64 hex digits (a raw 32-byte public key)")
    return bytes.fromhex(value[2:])


class OrganizationIn(BaseModel):
    """``POST /api/v1/federated/organizations`` (the documented body, plus ``identity_key``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    organization_name: str = Field(min_length=1, max_length=200, examples=["Hospital A"])
    endpoint: str = Field(max_length=2048, examples=["https://hospital-a.com/federated"])
    encryption_key: str = Field(
        description="The hospital's X25519 public key: 0x + 64 hex digits.", examples=["0x" + "9" * 64]
    )
    identity_key: str | None = Field(default=None, description="Optional Ed25519 identity key: 0x + 64 hex digits.")

    @field_validator("organization_name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ord(c) < 32 for c in value):
            raise ValueError("must be non-empty printable text")
        return value

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL with a host")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _x25519(cls, value: str) -> str:
        try:
            check_public_key(decode_key(value), field="encryption_key")
        except SecureAggregationError as exc:
            raise ValueError(str(exc)) from None
        return value.lower()

    @field_validator("identity_key")
    @classmethod
    def _ed25519(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            Ed25519PublicKey.from_public_bytes(decode_key(value))
        except ValueError as exc:
            raise ValueError(f"not an Ed25519 public key: {exc}") from None
        return value.lower()


class OrganizationOut(BaseModel):
    """An organization as the operator sees it (never its API key)."""

    organization_id: str
    organization_name: str
    endpoint: str
    active: bool
    encryption_key_fingerprint: str
    identity_key_fingerprint: str | None
    created_at: datetime


class OrganizationCreated(OrganizationOut):
    """Registration answer: the API key is shown this once and stored only as a hash."""

    api_key: str = Field(description="sk_live_...: send as 'Authorization: Bearer <api_key>'. Shown once.")
    api_key_fingerprint: str = Field(description="First 16 hex digits of the key's SHA-256, to recognise it later.")


class ModelOut(BaseModel):
    """``GET /api/v1/federated/model``: the documented fields plus checksum and provenance."""

    model_version: str
    weights: str = Field(description="0x + hex of a safetensors file (never pickle).")
    weights_format: str = "safetensors"
    checksum_sha256: str
    accuracy: float | None
    organizations_contributed: int
    training_round: int
    epsilon_spent: float | None


class PrivacyDeclarationIn(BaseModel):
    """What a hospital declares about the update it submits under differential privacy.

    In ``release`` mode the hospital clipped its update to ``clip_norm`` and added the
    noise of :class:`~oneliac_flwr.privacy.DifferentialPrivacy` at the policy's per-release
    epsilon (``GET /privacy/policy``): ``noise_multiplier`` is that object's, ``mechanism``
    its mechanism. In ``organization`` mode it clipped (the coordinator adds the noise).
    ``privacy_check`` compares each field with the policy; the coordinator cannot see
    whether the noise was really added.
    """

    model_config = ConfigDict(extra="forbid")

    mechanism: str = Field(min_length=1, max_length=20, examples=["gaussian"])
    clip_norm: float = Field(gt=0, allow_inf_nan=False, examples=[1.0])
    noise_multiplier: float | None = Field(default=None, gt=0, allow_inf_nan=False, examples=[4.2])
    epsilon_spent: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="The hospital's own epsilon spent so far, this release included."
    )


class GradientsIn(BaseModel):
    """``POST /api/v1/federated/gradients`` (the documented body).

    In ``fedavg`` mode ``gradients_encrypted`` is ``0x`` + the hex of the update sealed to
    the coordinator's key (``GET /coordinator-key``); the sealed plaintext is a safetensors
    file of the organization's local model (the model's tensor names). ``sample_count`` is
    its weight: the coordinator sees the update anyway in this mode, and the body travels
    over TLS. The same fields also arrive as a safetensors file
    (``Content-Type: application/octet-stream``, :mod:`oneliac_flwr.api.uploads`), which is
    validated as this model.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    organization_id: str = Field(max_length=40, examples=["org_0123456789abcdef"])
    round: int = Field(ge=1, le=10**6)
    gradients_encrypted: HexBlob = Field(
        description="0x + hex of the sealed update (fedavg) or of the masked vector (secure_sum); "
        "once validated, the decoded bytes."
    )
    model_version: str = Field(max_length=40, examples=["1.0.0"])
    sample_count: int = Field(ge=1, le=10**9)
    privacy: PrivacyDeclarationIn | None = Field(
        default=None,
        description="Differential-privacy declaration (required when privacy_budget.mode is release or "
        "organization; checked by privacy_check against GET /privacy/policy).",
    )
    secure_sum: dict[str, Any] | None = Field(
        default=None,
        description="secure_sum mode only: the protocol fields of the masked input (the MaskedInput record, "
        "bytes as 0x hex); gradients_encrypted is then the masked vector, 0x + hex of its little-endian ring "
        "elements. sample_count is not used for weighting then (the weight rides inside the masked vector): send 1.",
    )


class RoundOut(BaseModel):
    """A round's state and what the calling organization must do next."""

    round: int | None
    status: str = Field(description="waiting | open | ok | skipped | failed | budget_exhausted | unavailable")
    model_version: str | None = None
    deadline: datetime | None = None
    roster_size: int | None = None
    in_roster: bool | None = None
    next_action: str = Field(description="advertise_keys | submit | confirm_survivors | unmask | wait | finished | none")
    reason: str | None = None
    dropouts: list[str] | None = None
    contributors: int | None = None
    stage: str | None = Field(default=None, description="secure_sum mode: keys | masking | consistency | unmasking | "
                              "done | failed")  # fmt: skip
    node_id: int | None = Field(default=None, description="secure_sum mode: this organization's node id")
    run_id: int | None = Field(default=None, description="secure_sum mode: the federation's run id")
    aggregation_method: str | None = Field(default=None, description="fedavg | secure_sum: how this federation's "
                                           "rounds aggregate (what a submission must look like)")  # fmt: skip
    record: dict[str, Any] | None = Field(default=None, description="secure_sum mode: the record this "
                                          "organization's next action answers, as its stage's download endpoint "
                                          "gives it (submit: the round setup; confirm_survivors: its consistency "
                                          "request; unmask: its unmask request), or null")  # fmt: skip


class Receipt(BaseModel):
    """An accepted submission; the same body again gets the same receipt."""

    receipt: str
    round: int
    organization_id: str
    replayed: bool
    round_status: RoundOut | None = Field(default=None, description="secure_sum stage messages (keys, masked "
                                          "upload, consistency and unmask responses): this organization's view "
                                          "of the round after the message, as GET /rounds/{round} gives it. With "
                                          "wait_seconds, once the round's status or stage has moved past the "
                                          "stage the message was for (a long poll folded into the message), or "
                                          "when the wait is over. Null for fedavg submissions")  # fmt: skip


class SecureRecordIn(BaseModel):
    """A secure-sum stage message: key advertisement, consistency response or unmask response (bytes as ``0x`` hex)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    organization_id: str = Field(max_length=40, examples=["org_0123456789abcdef"])
    record: dict[str, Any] = Field(description="The message record (to_record() of the secure-sum message).")


class SecureRecordOut(BaseModel):
    """A secure-sum message for this organization: round setup, consistency request or unmask request."""

    round: int
    record: dict[str, Any]


class SecureNodeOut(BaseModel):
    """This organization's secure-sum identity in the federation."""

    organization_id: str
    node_id: int
    run_id: int


class CoordinatorKeyOut(BaseModel):
    """The coordinator's published X25519 sealing key."""

    public_key: str
    fingerprint: str


class AuditEventOut(BaseModel):
    """One audit-log entry (it never holds a secret or an update)."""

    at: datetime
    actor: str
    action: str
    organization_id: str | None
    detail: str


class EpsilonOut(BaseModel):
    """The federation's privacy budget and what has been spent (``GET /privacy/epsilon``)."""

    mode: str = Field(description="privacy_budget.mode: none | release | organization")
    epsilon_spent: float | None
    epsilon_budget: float | None
    epsilon_remaining: float | None
    delta: float | None
    mechanism: str | None
    accountant: str | None
    budget_exhausted: bool
    reason: str | None = Field(default=None, description="Why no further round opens, once the budget is exhausted.")
    rounds_recorded: int


class PrivacyReportOut(BaseModel):
    """One round's release in the federation's ledger (``GET /privacy/report?round=N``)."""

    round: int
    epsilon_round: float = Field(description="The round's own epsilon (its releases alone).")
    epsilon_cumulative: float = Field(description="Epsilon spent by the federation after this round (PLD).")
    epsilon_cumulative_cross_check: float | None
    delta: float
    mechanism: str
    noise_multiplier: float | None
    clip_norm: float | None
    participants: int = Field(description="Organizations whose update this round released.")
    mode: str
    recorded: str = Field(description="When the release is accounted: on receipt (release, fedavg), when unmasked "
                          "(release, secure_sum) or when noised (organization).")
