"""RoundCore and the aggregates: transport-free, Flower-free."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from oneliac_flwr.coordinator import Aggregate, RoundCore, plain_aggregate, secure_sum_aggregate
from oneliac_flwr.errors import RoundFailed

GLOBAL = [np.zeros(3, np.float32)]


def _mean_update(round_: int, start: list[np.ndarray], averaged: list[np.ndarray], metrics: dict[str, float], weight: float):
    return averaged, metrics


def test_the_core_imports_neither_flower_nor_http() -> None:
    code = (
        "import sys, oneliac_flwr.coordinator; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flwr', 'fastapi', 'httpx', 'starlette')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_plain_aggregate_is_the_weighted_mean_of_differences() -> None:
    agg = plain_aggregate(
        participants=[1, 2],
        arrays=[[np.array([1.0, 1.0, 1.0], np.float32)], [np.array([4.0, 4.0, 4.0], np.float32)]],
        weights=[1.0, 2.0],
        metrics=[{"train_loss": 1.0}, {"train_loss": 4.0}],
        global_arrays=[np.ones(3, np.float32)],
    )
    np.testing.assert_allclose(agg.mean_update[0], [2.0, 2.0, 2.0])
    assert agg.total_weight == 3.0 and agg.metrics == {"train_loss": 3.0}


def test_zero_weights_fail_the_round() -> None:
    with pytest.raises(RoundFailed):
        plain_aggregate(participants=[1], arrays=[GLOBAL], weights=[0.0], metrics=[{}], global_arrays=GLOBAL)


def test_too_few_counted_is_skipped_and_non_finite_fails() -> None:
    core = RoundCore(min_participants=2, server_update=_mean_update, rng=np.random.default_rng(0))
    one = Aggregate(mean_update=[np.ones(3)], total_weight=1.0, counted=[1], metrics={})
    assert core.complete(1, one, GLOBAL).status == "skipped"
    nan = Aggregate(mean_update=[np.full(3, np.nan)], total_weight=2.0, counted=[1, 2], metrics={})
    outcome = core.complete(1, nan, GLOBAL)
    assert outcome.status == "failed" and "not finite" in (outcome.reason or "")
    ok = Aggregate(
        mean_update=[np.ones(3)], total_weight=2.0, counted=[1, 2], metrics={"received_eval_accuracy": 0.8, "x": 1.0}
    )
    outcome = core.complete(1, ok, GLOBAL)
    assert outcome.status == "ok" and outcome.arrays[0].dtype == np.float32
    assert outcome.received_evaluation == {"received_eval_accuracy": 0.8} and outcome.metrics == {"x": 1.0}


def _unmasked(weighted_sum: list[float]):
    return secure_sum_aggregate(
        np.array(weighted_sum),
        counted=[1, 2],
        global_arrays=[np.zeros((2, 2), np.float32)],
        statistics_slots=0,
        clip_bound=1.0,
        frac_bits=16,
        noise_std=0.0,
        central_noise=False,
    )


def test_secure_sum_aggregate_checks_the_bound_and_divides_by_the_weight() -> None:
    good = _unmasked([0.5, -0.5, 0.25, 0.0])
    assert good.failure is None and good.aggregate.total_weight == 2.0
    np.testing.assert_allclose(good.aggregate.mean_update[0], [[0.25, -0.25], [0.125, 0.0]])
    bad = _unmasked([100.0, 0.0, 0.0, 0.0])
    assert bad.failure is not None and "aggregate_bounds_check" in bad.failure and bad.aggregate.mean_update == []
