"""The REST coordinator as a real uvicorn process: organizations, model registry, problems, TLS."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load
from sqlalchemy import create_engine, text

from oneliac_flwr.certs import make_server_certificates

from conftest import ADMIN, PREFIX, ROOT, hospital

PROBLEM_KEYS = {"type", "title", "status", "detail", "field"}


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) == PROBLEM_KEYS and body["status"] == status and body["type"].startswith("urn:oneliac:problem:")
    assert "Traceback" not in response.text
    return body


def test_registration_returns_id_key_once_and_stores_only_its_hash(service, database_url: str, tmp_path: Path) -> None:
    with service.client() as admin:
        created = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A"))
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["organization_id"].startswith("org_") and body["api_key"].startswith("sk_live_")
        assert body["api_key_fingerprint"] == hashlib.sha256(body["api_key"].encode()).hexdigest()[:16]
        raw = bytes.fromhex(hospital_key := body["encryption_key_fingerprint"])
        assert len(raw) == 32 and hospital_key
        listed = admin.get(f"{PREFIX}/organizations").json()
        assert [o["organization_id"] for o in listed] == [body["organization_id"]]
        assert "api_key" not in listed[0]
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("select api_key_hash from organizations")).fetchall()
        dumped = repr(connection.execute(text("select * from organizations")).fetchall())
    engine.dispose()
    assert [tuple(r) for r in stored] == [(hashlib.sha256(body["api_key"].encode()).hexdigest(),)]
    assert body["api_key"] not in dumped
    if database_url.startswith("sqlite"):
        assert body["api_key"].encode() not in (tmp_path / "coordinator.db").read_bytes()


def test_bad_registrations_are_problems_naming_the_field(service) -> None:
    with service.client() as admin:
        good = hospital("Hospital A")
        assert admin.post(f"{PREFIX}/organizations", json=good).status_code == 201
        assert problem(admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")), 409)["field"] == "organization_name"
        cases = {
            "encryption_key": {**hospital("B"), "encryption_key": "key_abc123"},
            "endpoint": {**hospital("C"), "endpoint": "http://c.example.org/federated"},
            "identity_key": {**hospital("D"), "identity_key": "0x" + "zz" * 32},
        }
        for field, body in cases.items():
            assert problem(admin.post(f"{PREFIX}/organizations", json=body), 422)["field"] == field
        low_order = {**hospital("E"), "encryption_key": "0x" + "00" * 32}
        assert problem(admin.post(f"{PREFIX}/organizations", json=low_order), 422)["field"] == "encryption_key"
        extra = {**hospital("F"), "role": "admin"}
        assert problem(admin.post(f"{PREFIX}/organizations", json=extra), 422)["field"] == "role"
        wrong_type = {**hospital("G"), "organization_name": 7}
        assert problem(admin.post(f"{PREFIX}/organizations", json=wrong_type), 422)["field"] == "organization_name"
        malformed = admin.post(f"{PREFIX}/organizations", content=b'{"organization_name": ', headers={"content-type": "application/json"})
        assert problem(malformed, 422)["type"].endswith("malformed_json")
        assert len(admin.get(f"{PREFIX}/organizations").json()) == 1  # nothing half-stored
    with service.client(token=None) as anonymous:
        assert problem(anonymous.post(f"{PREFIX}/organizations", json=hospital("H")), 401)
    with service.client(token="not-the-admin-token-xxxxxxxx") as stranger:
        assert problem(stranger.post(f"{PREFIX}/organizations", json=hospital("H")), 401)
        assert problem(stranger.get(f"{PREFIX}/model"), 401)


def test_unknown_paths_methods_and_oversized_bodies_are_problems(start_service) -> None:
    service = start_service(extra=["coordinator.max_body_bytes=4096"])
    with service.client() as admin:
        assert problem(admin.get("/no/such/path"), 404)
        assert problem(admin.delete(f"{PREFIX}/model"), 405)
        big = admin.post(f"{PREFIX}/organizations", content=b"{" + b" " * 10_000 + b"}", headers={"content-type": "application/json"})
        assert problem(big, 413)

        def chunks():
            for _ in range(10):
                yield b" " * 1000

        chunked = admin.post(f"{PREFIX}/organizations", content=chunks(), headers={"content-type": "application/json"})
        assert problem(chunked, 413)
        assert problem(admin.post(f"{PREFIX}/organizations/org_missing/deactivate"), 404)["field"] == "organization_id"


def test_operator_deactivates_and_rotates_keys(service) -> None:
    with service.client() as admin:
        a = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).json()
        b = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital B")).json()
        with service.client(token=a["api_key"]) as org_a:
            assert org_a.get(f"{PREFIX}/model").status_code == 200
            assert problem(org_a.get(f"{PREFIX}/organizations"), 403)  # not an operator
        rotated = admin.post(f"{PREFIX}/organizations/{a['organization_id']}/api-key").json()
        assert rotated["api_key"] != a["api_key"]
        with service.client(token=a["api_key"]) as old:
            assert problem(old.get(f"{PREFIX}/model"), 401)
        with service.client(token=rotated["api_key"]) as new:
            assert new.get(f"{PREFIX}/model").status_code == 200
        assert admin.post(f"{PREFIX}/organizations/{b['organization_id']}/deactivate").json()["active"] is False
        with service.client(token=b["api_key"]) as inactive:
            assert problem(inactive.get(f"{PREFIX}/model"), 403)
        actions = [e["action"] for e in admin.get(f"{PREFIX}/audit").json() if e["action"].startswith("organization.")]
        assert actions == [
            "organization.deactivated",
            "organization.api_key_rotated",
            "organization.registered",
            "organization.registered",
        ]
        audit_text = admin.get(f"{PREFIX}/audit").text
        assert a["api_key"] not in audit_text and rotated["api_key"] not in audit_text


def test_model_is_safetensors_hex_with_checksum_and_raw_download(service) -> None:
    with service.client() as admin:
        model = admin.get(f"{PREFIX}/model").json()
        assert model["model_version"] == "1.0.0" and model["training_round"] == 0
        assert model["organizations_contributed"] == 0 and model["accuracy"] is None
        raw = bytes.fromhex(model["weights"][2:])
        assert model["weights"].startswith("0x") and hashlib.sha256(raw).hexdigest() == model["checksum_sha256"]
        tensors = safetensors_load(raw)
        assert tensors and all(isinstance(t, np.ndarray) and np.isfinite(t).all() for t in tensors.values())
        octet = admin.get(f"{PREFIX}/model", params={"version": "1.0.0"}, headers={"Accept": "application/octet-stream"})
        assert octet.headers["content-type"] == "application/octet-stream" and octet.content == raw
        assert octet.headers["x-checksum-sha256"] == model["checksum_sha256"]
        assert problem(admin.get(f"{PREFIX}/model", params={"version": "9.9.9"}), 404)["field"] == "version"


def test_openapi_lists_the_documented_endpoints(service) -> None:
    with service.client(token=None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    assert {f"{PREFIX}/organizations", f"{PREFIX}/model"} <= set(spec["paths"])
    assert "post" in spec["paths"][f"{PREFIX}/organizations"]


def test_state_survives_sigkill_and_a_second_process_serves_it(start_service) -> None:
    first = start_service()
    with first.client() as admin:
        a = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).json()
        checksum = admin.get(f"{PREFIX}/model").json()["checksum_sha256"]
    first.stop(signal.SIGKILL)
    second = start_service()
    third = start_service()  # two processes on one database
    with second.client(token=a["api_key"]) as org, third.client() as admin:
        assert org.get(f"{PREFIX}/model").json()["checksum_sha256"] == checksum
        assert problem(admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")), 409)
        b = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital B")).json()
    with second.client() as admin:
        assert {o["organization_id"] for o in admin.get(f"{PREFIX}/organizations").json()} == {
            a["organization_id"],
            b["organization_id"],
        }


def test_concurrent_registrations_of_one_name_give_one_201(start_service) -> None:
    import concurrent.futures

    services = [start_service(), start_service()]
    body = hospital("Hospital Z")

    def register(i: int) -> int:
        with services[i % 2].client() as admin:
            return admin.post(f"{PREFIX}/organizations", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(register, range(20)))
    assert sorted(codes) == [201] + [409] * 19


def test_refuses_to_start_without_an_admin_token(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "ONELIAC_ADMIN_TOKEN"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "oneliac_flwr.api", "serve", f"coordinator.database_url=sqlite:///{tmp_path / 'x.db'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "ONELIAC_ADMIN_TOKEN" in done.stderr
    assert not (tmp_path / "x.db").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "oneliac_flwr.api", "serve", "coordinator.port=99999"],
        cwd=tmp_path, env=env | {"ONELIAC_ADMIN_TOKEN": ADMIN}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "coordinator.port" in bad.stderr


def test_generated_admin_token_is_printed_once_and_works(start_service) -> None:
    import os

    env = {"ONELIAC_ADMIN_TOKEN": ""}
    service = start_service(env=env, args=["--generate-admin-token"])
    lines = [ln for ln in service.log.read_text().splitlines() if ln.startswith("admin token")]
    assert len(lines) == 1
    token = lines[0].rsplit(" ", 1)[1]
    assert len(token) >= 32 and token != os.environ.get("ONELIAC_ADMIN_TOKEN")
    with service.client(token=token) as admin:
        assert admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).status_code == 201
    with service.client() as old_default:
        assert problem(old_default.post(f"{PREFIX}/organizations", json=hospital("Hospital B")), 401)


def test_tls_with_a_generated_certificate(start_service, tmp_path: Path) -> None:
    # the certificates the deployment guide makes (python -m oneliac_flwr.certs server --ip 127.0.0.1)
    files = make_server_certificates(tmp_path / "tls", names=[], ips=["127.0.0.1"])
    cert, key, ca = files.server_cert, files.server_key, str(files.ca_cert)
    service = start_service(
        scheme="https", verify=ca, extra=[f"coordinator.ssl_certfile={cert}", f"coordinator.ssl_keyfile={key}"]
    )
    with service.client(verify=ca) as admin:
        assert admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).status_code == 201
    with pytest.raises(httpx.HTTPError):  # an unverified certificate is refused by the client
        httpx.get(service.base_url + "/healthz", trust_env=False, timeout=5)
    plain = f"http://127.0.0.1:{service.port}/healthz"
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on a TLS port
        httpx.get(plain, trust_env=False, timeout=5)


def test_a_nul_byte_in_a_version_or_organization_id_is_a_4xx(service) -> None:  # noqa: ANN001
    """Found by schemathesis on PostgreSQL (which refuses NUL in text): a 500 before."""
    with service.client() as admin:
        assert problem(admin.get(f"{PREFIX}/model", params={"version": "1.0\x000"}), 422)["field"] == "version"
        assert problem(admin.post(f"{PREFIX}/organizations/org_%00/deactivate"), 404)
