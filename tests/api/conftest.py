"""A real coordinator process (uvicorn on loopback) per test, stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "test-admin-token-0123456789abcdef"
PREFIX = "/api/v1/federated"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``python -m oneliac_flwr.api serve`` in a subprocess."""

    def __init__(self, workdir: Path, *, database_url: str, extra: Sequence[str] = (), scheme: str = "http",
                 env: dict[str, str] | None = None, args: Sequence[str] = ()) -> None:  # fmt: skip
        self.port = free_port()
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.log = workdir / f"service-{self.port}.log"
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "ONELIAC_ADMIN_TOKEN": ADMIN, **(env or {})}
        command = [sys.executable, "-m", "oneliac_flwr.api", "serve", *args, f"coordinator.port={self.port}",
                   f"coordinator.database_url={database_url}", *extra]  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=workdir, env=environment, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, verify: bool | str = True, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.base_url + "/healthz", verify=verify, trust_env=False, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"service not ready in {timeout} s:\n{self.log.read_text()}")

    def client(self, token: str | None = ADMIN, verify: bool | str = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, trust_env=False, timeout=30, verify=verify)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


PG_ENV = "ONELIAC_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh coordinator database: a SQLite file, or a new database on the PostgreSQL
    server named by ``ONELIAC_TEST_DATABASE_URL`` (``.ci/run`` starts one; skipped without it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(f"{PG_ENV} is not set (.ci/run starts a throwaway PostgreSQL)")
    import secrets

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = "oneliac_" + secrets.token_hex(6)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def start_service(tmp_path: Path, database_url: str) -> Iterator:
    """Factory of services on one database; every one is stopped by its PID at the end."""
    started: list[Service] = []

    def start(*, ready: bool = True, verify: bool | str = True, **kwargs) -> Service:
        url = database_url
        service = Service(tmp_path, database_url=url, **kwargs)
        started.append(service)
        if ready:
            service.wait_ready(verify=verify)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop(signal.SIGKILL)


@pytest.fixture
def service(start_service) -> Service:  # noqa: ANN001 - fixture factory
    """One running coordinator on a fresh SQLite database."""
    return start_service()


def hospital(name: str, seed: int = 9) -> dict[str, str]:
    """A registration body with a real X25519 public key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    public = X25519PrivateKey.generate().public_key().public_bytes_raw()
    return {"organization_name": name, "endpoint": f"https://{seed}.example.org/federated", "encryption_key": "0x" + public.hex()}


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Flower messages (a reference Flower strategy) need a run identity outside a run."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved
