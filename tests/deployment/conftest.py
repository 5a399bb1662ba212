"""Fixtures of the deployment tests (the harness is in ``deployment_harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployment_harness import Site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A machine for the guide; every process it starts is stopped at the end, even on failure."""
    here = Site(tmp_path_factory.mktemp("deployment"))
    try:
        yield here
    finally:
        here.stop_all()
