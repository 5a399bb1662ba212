"""``POST /gradients`` in its two forms (JSON and safetensors), against real uvicorn processes:
both accepted in both modes, one receipt for the same upload whatever its form, malformed
files refused naming the field with nothing stored."""

from __future__ import annotations

import concurrent.futures
import json
import struct
from typing import Any

import httpx
import numpy as np
from safetensors.numpy import save as safetensors_save

from oneliac_flwr.api.participant import masked_vector
from oneliac_flwr.api.records import record_from_json
from oneliac_flwr.api.uploads import OCTET_STREAM, TENSOR, encode_upload
from oneliac_flwr.secure import RoundSetup

from conftest import PREFIX, wait_until
from test_rest_secure_rounds import (assert_model, drive, masked_body, model, register, settings, statistics, status,
                                     update_of)
from test_rounds import ROUNDS, local_model
from test_rounds import body as sealed_body
from test_rounds import register as register_fedavg

def post_binary(http: httpx.Client, content: bytes, content_type: str = OCTET_STREAM) -> httpx.Response:
    return http.post(f"{PREFIX}/gradients", content=content, headers={"Content-Type": content_type})


def fields_of(json_body: dict[str, Any]) -> dict[str, Any]:
    """The metadata fields of a JSON body (every field but ``gradients_encrypted``)."""
    return {k: v for k, v in json_body.items() if k != TENSOR}


def metadata_of(json_body: dict[str, Any]) -> dict[str, str]:
    """What :func:`encode_upload` puts in ``__metadata__`` (to alter one entry)."""
    return {k: json.dumps(v) if k in ("secure_sum", "privacy") else str(v) for k, v in fields_of(json_body).items()}


def malformed_files(json_body: dict[str, Any], vector: np.ndarray) -> list[tuple[bytes, int, str | None]]:
    """(body, status, field) of broken safetensors uploads of ``json_body``'s fields and ``vector``."""
    good = encode_upload(fields_of(json_body), vector)
    meta = metadata_of(json_body)
    length = struct.unpack("<Q", good[:8])[0]

    def with_meta(**changes: str | None) -> bytes:
        changed = {k: v for k, v in {**meta, **changes}.items() if v is not None}
        return safetensors_save({TENSOR: vector}, metadata=changed)

    return [
        (good[:5], 422, None),  # truncated: not even the header length
        (good[:8] + good[8 : 8 + length // 2], 422, None),  # the header length beyond the body
        (struct.pack("<Q", 4) + b"nope" + good[8 + length :], 422, None),  # a header that is not JSON
        (struct.pack("<Q", 2) + b"[]", 422, None),  # a header that is not an object
        (good[:-3], 422, None),  # the tensor's data cut short (the library refuses the file)
        (safetensors_save({"weights": vector}, metadata=meta), 422, "weights"),  # another tensor
        (safetensors_save({}, metadata=meta), 422, TENSOR),  # the tensor is missing
        (safetensors_save({TENSOR: vector.astype(np.uint16)}, metadata=meta), 422, TENSOR),  # wrong dtype
        (safetensors_save({TENSOR: vector.reshape(1, -1)}, metadata=meta), 422, TENSOR),  # not 1-D
        (with_meta(round="one"), 422, "round"),
        (with_meta(sample_count="-3"), 422, "sample_count"),
        (with_meta(sample_count="0"), 422, "sample_count"),
        (with_meta(privacy="{not json"), 422, "privacy"),
        (with_meta(privacy='"gaussian"'), 422, "privacy"),
        (with_meta(model_version=None), 422, "model_version"),  # a missing field
        (with_meta(organization_id=None), 422, "organization_id"),
        (with_meta(extra="1"), 422, "extra"),  # unknown fields are refused, as in JSON
        (with_meta(gradients_encrypted="0x00"), 422, TENSOR),  # the vector travels as the tensor only
        (good, 415, None),  # sent as text/plain (below)
    ]


def check_refusals(http: httpx.Client, json_body: dict[str, Any], vector: np.ndarray) -> None:
    for content, code, field in malformed_files(json_body, vector):
        answer = post_binary(http, content, "text/plain" if code == 415 else OCTET_STREAM)
        assert answer.status_code == code, (field, answer.text)
        problem = answer.json()
        assert problem["status"] == code and problem["field"] == field, (field, problem)
        assert answer.headers["content-type"].startswith("application/problem+json")
    # a non-hex JSON vector is still refused naming the field (also hex with whitespace inside)
    for bad in ("0xzz", "0x0", "0x", "0x00 11", json_body[TENSOR][2:]):
        answer = http.post(f"{PREFIX}/gradients", json={**json_body, TENSOR: bad})
        assert answer.status_code == 422 and answer.json()["field"] == TENSOR, (bad, answer.text)


def at_masking(start_service, weight: float) -> tuple[Any, list[Any], list[np.ndarray], dict, np.ndarray]:  # noqa: ANN001
    """Round 1 of three hospitals, every one at its masked upload: (service, hospitals, base model,
    the first hospital's JSON body, its masked vector)."""
    service = start_service(extra=settings(min_participants=3, max_rounds=1))
    hospitals = register(service, 3)
    for h in hospitals:
        h.join(service)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda h: drive([service], h, 1, [], 1.0, stop_at="submit"), hospitals))
    first = hospitals[0]
    with first.http(service) as http:
        base, meta = model(http)
        setup = RoundSetup.from_record(record_from_json(http.get(f"{PREFIX}/rounds/1/setup").json()["record"]))
    flat = masked_vector(update_of(base, 0, 1), setup=setup, statistics=statistics(0))
    masked = first.client.mask(flat, weight=weight, setup=setup)
    good = masked_body(first, 1, meta["model_version"], masked)
    vector = np.frombuffer(bytes.fromhex(good[TENSOR][2:]), masked.masked.dtype.newbyteorder("<"))
    return service, hospitals, base, good, vector


def test_masked_upload_in_both_forms_gets_one_receipt_and_broken_files_store_nothing(start_service) -> None:  # noqa: ANN001
    weights = {0: 3.0, 1: 5.0, 2: 7.0}
    service, hospitals, base, good, vector = at_masking(start_service, weights[0])
    updates = {i: update_of(base, i, 1) for i in range(3)}
    with hospitals[0].http(service) as http:
        check_refusals(http, good, vector)
        assert status(http)["next_action"] == "submit"  # nothing was stored
        upper = http.post(f"{PREFIX}/gradients", json={**good, TENSOR: "0x" + good[TENSOR][2:].upper()})
        assert upper.status_code == 200 and upper.json()["replayed"] is False, upper.text
        lower = http.post(f"{PREFIX}/gradients", json=good)  # mixed-case hex is the same upload
        assert lower.json() == {**upper.json(), "replayed": True}
        binary = post_binary(http, encode_upload(fields_of(good), vector))  # JSON first, then binary: a replay
        assert binary.status_code == 200 and binary.json() == {**upper.json(), "replayed": True}, binary.text
        other = vector.copy()
        other[0] += 1
        conflict = post_binary(http, encode_upload(fields_of(good), other))
        assert conflict.status_code == 409 and conflict.json()["type"].endswith("conflicting_resubmission")
        changed = post_binary(http, encode_upload({**fields_of(good), "sample_count": 2}, vector))
        assert changed.status_code == 409, changed.text  # a different field is a different upload
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:  # b and c upload (JSON), a unmasks
        list(pool.map(lambda i: drive([service], hospitals[i], 1, updates[i], weights[i], stats=statistics(i)), range(3)))
    with hospitals[0].http(service) as http:
        report = http.get(f"{PREFIX}/rounds/1").json()
        assert report["status"] == "ok" and report["contributors"] == 3, report
        assert_model(http, base, updates, weights, [0, 1, 2])


def test_binary_then_json_masked_upload(start_service) -> None:  # noqa: ANN001
    """Binary first (the participant), then the JSON form the SDK kept on disk: the same receipt."""
    service, hospitals, _, good, vector = at_masking(start_service, 1.0)
    with hospitals[0].http(service) as http:
        first = post_binary(http, encode_upload(fields_of(good), vector))
        assert first.status_code == 200 and first.json()["replayed"] is False, first.text
        again = http.post(f"{PREFIX}/gradients", json=good)
        assert again.json() == {**first.json(), "replayed": True}
        other = vector.copy()
        other[-1] ^= 1
        conflict = http.post(f"{PREFIX}/gradients", json={**good, TENSOR: "0x" + other.tobytes().hex()})
        assert conflict.status_code == 409 and conflict.json()["type"].endswith("conflicting_resubmission")


def test_sealed_update_in_both_forms(start_service) -> None:  # noqa: ANN001
    limit = 1 << 20
    service = start_service(extra=[*ROUNDS, "aggregation_config.min_participants=2", "aggregation_config.max_rounds=1",
                                   f"coordinator.max_body_bytes={limit}"])  # fmt: skip
    a, b = register_fedavg(service, 2)
    with service.client(token=a["api_key"]) as http, service.client(token=b["api_key"]) as other:
        state = wait_until(lambda: (s := status(http))["status"] == "open" and s)
        version = state["model_version"]
        good = sealed_body(http, a, 1, version, lambda x: local_model(x, 0, 1), 10)
        vector = np.frombuffer(bytes.fromhex(good[TENSOR][2:]), dtype=np.uint8)
        check_refusals(http, good, vector)
        assert post_binary(http, b"\0" * (limit + 1)).status_code == 413  # the body limit applies unchanged
        waits = http.post(f"{PREFIX}/gradients", params={"wait_seconds": 1}, json=good)  # fedavg submissions never wait
        assert waits.status_code == 422 and waits.json()["field"] == "wait_seconds", waits.text
        assert status(http)["next_action"] == "submit"  # nothing was stored
        first = post_binary(http, encode_upload(fields_of(good), vector))
        assert first.status_code == 200 and first.json()["replayed"] is False, first.text
        assert http.post(f"{PREFIX}/gradients", json=good).json() == {**first.json(), "replayed": True}
        resealed = sealed_body(http, a, 1, version, lambda x: local_model(x, 0, 1), 10)  # new ephemeral key: other bytes
        conflict = post_binary(http, encode_upload(fields_of(resealed), np.frombuffer(bytes.fromhex(resealed[TENSOR][2:]), np.uint8)))
        assert conflict.status_code == 409 and conflict.json()["type"].endswith("conflicting_resubmission")
        second = sealed_body(other, b, 1, version, lambda x: local_model(x, 1, 1), 30)
        vector_b = np.frombuffer(bytes.fromhex(second[TENSOR][2:]), dtype=np.uint8)
        assert post_binary(other, encode_upload(fields_of(second), vector_b)).status_code == 200
        closed = wait_until(lambda: (s := other.get(f"{PREFIX}/rounds/1").json())["status"] != "open" and s)
        assert closed["status"] == "ok" and closed["contributors"] == 2, closed
        base = model(http, version)[0]
        expected = [(10 * x + 30 * y) / 40 for x, y in zip(local_model(base, 0, 1), local_model(base, 1, 1), strict=True)]
        for got, want in zip(model(http)[0], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
