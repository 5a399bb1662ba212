"""SDK tests run against a real coordinator process: the fixtures of ``tests/api``, imported."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("api_conftest", Path(__file__).resolve().parents[1] / "api" / "conftest.py")
assert _spec is not None and _spec.loader is not None
api_conftest = importlib.util.module_from_spec(_spec)
sys.modules["api_conftest"] = api_conftest
_spec.loader.exec_module(api_conftest)

start_service = api_conftest.start_service


@pytest.fixture(params=["sqlite"])
def database_url(tmp_path: Path) -> str:
    """The coordinator's database in SDK tests: a SQLite file. The SDK only speaks HTTP; the
    coordinator on PostgreSQL is tested in ``tests/api``, where every integration test runs on both
    (running the SDK's process tests twice as well would only add minutes to the suite)."""
    return f"sqlite:///{tmp_path / 'coordinator.db'}"


@pytest.fixture
def hospital_dirs(tmp_path: Path) -> Iterator[Callable[[int], list[Path]]]:
    def make(n: int) -> list[Path]:
        return [tmp_path / f"hospital-{i}" for i in range(n)]

    yield make
