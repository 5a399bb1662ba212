"""Repository-wide test isolation.

Every test runs in its own temporary working directory, so the default ``state_dir``
(``oneliac-state``, relative) holds a fresh federation and fresh hospitals per test:
privacy ledgers never leak from one test into another, nor into the checkout.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(directory)
    return directory
