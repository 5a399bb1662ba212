"""The two forms of ``POST /gradients`` and the digest they share.

- ``application/json``: the documented body (:class:`~oneliac_flwr.api.schemas.GradientsIn`),
  ``gradients_encrypted`` as ``0x`` + hex;
- ``application/octet-stream``: a safetensors file whose one tensor ``gradients_encrypted``
  holds the same bytes (secure_sum: the masked vector in its ring dtype, little-endian;
  fedavg: the sealed update as ``uint8``) and whose ``__metadata__`` (strings only) carries
  the other fields: ``organization_id``, ``round``, ``model_version``, ``sample_count``,
  and ``secure_sum`` / ``privacy`` as JSON text.

Both become the same validated :class:`GradientsIn` (one set of checks), and
:func:`upload_digest` is the same for both, so a resend in either form of the same upload
answers the same receipt.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from oneliac_flwr.api.problems import ApiProblem
from oneliac_flwr.api.schemas import GradientsIn

__all__ = ["OCTET_STREAM", "TENSOR", "decode_upload", "encode_upload", "openapi_request_body", "upload_digest"]

OCTET_STREAM = "application/octet-stream"
TENSOR = "gradients_encrypted"
#: the largest safetensors header taken (the body limit bounds it too)
HEADER_LIMIT = 16 * 2**20
_JSON_TEXT = ("secure_sum", "privacy")
_INTEGERS = ("round", "sample_count")


def upload_digest(body: GradientsIn) -> str:
    """The upload's digest, whatever its form: SHA-256 of the canonical JSON of every field
    but ``gradients_encrypted``, with the SHA-256 of ``gradients_encrypted``'s decoded bytes."""
    fields = body.model_dump(exclude={"gradients_encrypted"})
    fields["gradients_encrypted_sha256"] = hashlib.sha256(body.gradients_encrypted).hexdigest()
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def encode_upload(fields: Mapping[str, Any], vector: np.ndarray) -> bytes:
    """The safetensors form of an upload.

    Parameters
    ----------
    fields : mapping
        The JSON body's fields but ``gradients_encrypted`` (``None`` values are left out).
    vector : numpy.ndarray
        ``gradients_encrypted``'s bytes as a 1-D array: the masked vector in its ring dtype,
        or the sealed update as ``uint8``.
    """
    metadata = {key: json.dumps(value, separators=(",", ":")) if key in _JSON_TEXT else str(value)
                for key, value in fields.items() if value is not None}  # fmt: skip
    wire = np.ascontiguousarray(vector.ravel(), dtype=vector.dtype.newbyteorder("<"))
    return safetensors_save({TENSOR: wire}, metadata=metadata)


def decode_upload(raw: bytes, content_type: str | None, *, dtype: np.dtype) -> GradientsIn:
    """The validated body of ``POST /gradients`` in either form.

    Parameters
    ----------
    raw : bytes
        The request body.
    content_type : str or None
        Its ``Content-Type`` (absent: JSON, as before the binary form existed).
    dtype : numpy.dtype
        The dtype the safetensors form's tensor must have (the ring's, or ``uint8``).

    Raises
    ------
    ApiProblem
        415 for another media type; 422 naming the field for a malformed body.
    RequestValidationError
        A field refused by :class:`GradientsIn` (the same 422 problem in both forms).
    """
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == OCTET_STREAM:
        return _validated(lambda: GradientsIn.model_validate(_safetensors_fields(raw, np.dtype(dtype))))
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return _validated(lambda: GradientsIn.model_validate_json(raw))
    raise ApiProblem(415, "unsupported_media_type", "Unsupported media type",
                     f"POST /gradients takes application/json or {OCTET_STREAM} (a safetensors file), not {media!r}")  # fmt: skip


def _validated(build: Callable[[], GradientsIn]) -> GradientsIn:
    try:
        return build()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None


def _malformed(detail: str, field: str | None = None) -> ApiProblem:
    return ApiProblem(422, "malformed_safetensors", "Malformed safetensors", detail, field=field)


def _safetensors_fields(raw: bytes, dtype: np.dtype) -> dict[str, Any]:
    """The fields of a safetensors upload, for :class:`GradientsIn` to validate."""
    metadata = _metadata(raw)
    try:
        tensors = safetensors_load(raw)
    except Exception as exc:  # noqa: BLE001 - the library's refusal of a malformed file, whatever its type
        raise _malformed(f"the body is not a valid safetensors file: {exc}") from None
    for name in sorted(tensors):
        if name != TENSOR:
            raise _malformed(f"unexpected tensor {name!r}: the file holds one tensor, {TENSOR!r}", field=name)
    tensor = tensors.get(TENSOR)
    if tensor is None:
        raise _malformed(f"the file has no tensor {TENSOR!r}", field=TENSOR)
    if tensor.dtype != dtype or tensor.ndim != 1:
        raise _malformed(f"{TENSOR}: expected a 1-D {dtype.name} tensor, got {tensor.dtype.name} of shape "
                         f"{list(tensor.shape)}", field=TENSOR)  # fmt: skip
    fields: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == TENSOR:
            raise _malformed(f"{TENSOR} is the tensor, not a metadata entry", field=TENSOR)
        if key in _INTEGERS and value.isascii() and value.isdigit() and len(value) <= 12:
            fields[key] = int(value)
        elif key in _JSON_TEXT:
            try:
                fields[key] = json.loads(value)
            except (ValueError, RecursionError):
                raise _malformed(f"{key}: expected JSON text in the metadata", field=key) from None
        else:
            fields[key] = value  # a bad type is refused by GradientsIn, naming the field
    fields[TENSOR] = np.ascontiguousarray(tensor, dtype=dtype.newbyteorder("<")).tobytes()
    return fields


def _metadata(raw: bytes) -> dict[str, str]:
    """``__metadata__`` of a safetensors file: 8-byte little-endian header length, then the JSON header."""
    if len(raw) < 8:
        raise _malformed(f"the body ({len(raw)} bytes) is too short for a safetensors file (8-byte header length)")
    (length,) = struct.unpack("<Q", raw[:8])
    if length > len(raw) - 8 or length > HEADER_LIMIT:
        raise _malformed(f"the safetensors header length ({length} bytes) exceeds the body ({len(raw) - 8} bytes "
                         f"after it) or {HEADER_LIMIT} bytes")  # fmt: skip
    try:
        header = json.loads(raw[8 : 8 + length].decode("utf-8"))
    except (ValueError, RecursionError):
        raise _malformed("the safetensors header is not JSON text") from None
    if not isinstance(header, dict):
        raise _malformed("the safetensors header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise _malformed("__metadata__: expected a map of strings", field="__metadata__")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _malformed(f"{key}: safetensors metadata values are strings", field=key)
    return metadata


def openapi_request_body() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /gradients``: the JSON body and the safetensors form."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/GradientsIn"}},
                OCTET_STREAM: {
                    "schema": {"type": "string", "format": "binary",
                               "description": f"a safetensors file: one tensor {TENSOR!r} (secure_sum: the masked "
                               "vector in its ring dtype; fedavg: the sealed update as uint8) and the other fields "
                               "in __metadata__ (secure_sum and privacy as JSON text)"},
                },
            },
        }
    }  # fmt: skip


def openapi_schemas() -> dict[str, Any]:
    """The component schemas :func:`openapi_request_body` refers to."""
    schema = GradientsIn.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, "GradientsIn": schema}
