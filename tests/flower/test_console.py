"""The console shows each line once, without third-party noise or misleading Flower lines."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from flwr.common.logger import console_handler, log
from flwr.serverapp.strategy import FedAvg

from oneliac_flwr.flower.console import tidy_console
from oneliac_flwr.flower.inner import InnerStrategyUpdate


@pytest.fixture
def hydra_like_root() -> Iterator[logging.Handler]:
    """A root console handler as Hydra installs one (no level of its own); Flower's logger restored afterwards."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    flower = logging.getLogger("flwr")
    filters = list(flower.filters)
    level = flower.level
    alembic_level = logging.getLogger("alembic").level
    try:
        with warnings.catch_warnings():
            yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        if console_handler not in flower.handlers:
            flower.addHandler(console_handler)
        flower.filters[:] = filters
        flower.setLevel(level)
        logging.getLogger("alembic").setLevel(alembic_level)


def test_a_flower_line_prints_twice_without_and_once_with_the_tidy_console(
    hydra_like_root: logging.Handler, capfd: pytest.CaptureFixture[str]
) -> None:
    console_handler.stream = sys.stderr  # both handlers write where the test captures
    hydra_like_root.setStream(sys.stderr)
    log(logging.INFO, "federation line one")
    assert capfd.readouterr().err.count("federation line one") == 2  # Flower's handler + the root's
    tidy_console()
    log(logging.INFO, "federation line two")
    assert capfd.readouterr().err.count("federation line two") == 1


def test_alembic_chatter_and_flower_deprecation_banners_are_dropped(
    hydra_like_root: logging.Handler, capfd: pytest.CaptureFixture[str]
) -> None:
    hydra_like_root.setStream(sys.stderr)
    tidy_console()
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    log(logging.WARNING, "DEPRECATED FEATURE: %s", "run_simulation")
    log(logging.WARNING, "fraction_evaluate is set to 0.0. Federated evaluation will be skipped.")
    log(logging.DEBUG, "Using InMemoryLinkState")
    log(logging.WARNING, "a real warning")
    err = capfd.readouterr().err
    assert "SQLiteImpl" not in err and "DEPRECATED" not in err
    assert "skipped" not in err and "InMemoryLinkState" not in err
    assert "a real warning" in err


def _inner_update() -> tuple[list[np.ndarray], list[np.ndarray]]:
    global_arrays = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]
    averaged = [np.ones((2, 3), np.float32), np.ones(2, np.float32)]
    return global_arrays, averaged


def test_the_synthetic_reply_does_not_log_received_1_results(caplog: pytest.LogCaptureFixture) -> None:
    global_arrays, averaged = _inner_update()
    caplog.set_level(logging.INFO)
    arrays, _ = InnerStrategyUpdate(FedAvg())(1, global_arrays, averaged, {"train_loss": 0.5}, 300.0)
    assert arrays is not None and np.allclose(arrays[0], 1.0)  # the update still went through FedAvg
    assert not [r for r in caplog.records if "Received" in r.getMessage()]
    # without the filter Flower logs it: the assertion above can fail
    from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

    reply = Message(
        content=RecordDict({"arrays": ArrayRecord(numpy_ndarrays=averaged), "metrics": MetricRecord({"num-examples": 3})}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )
    FedAvg().aggregate_train(1, [reply])
    assert [r for r in caplog.records if "Received 1 results" in r.getMessage()]
