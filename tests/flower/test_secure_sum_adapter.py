"""Secure sum through the real ClientApp and strategy (no simulation engine).

An in-memory grid delivers each message to the real ClientApp with a per-node Context,
so the whole protocol runs: stage K, masked training replies, stage U. Dropouts and bad
payloads are scripted per node, stage and round.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.flower.records import MASKED
from oneliac_flwr.training import get_weights

from conftest import NODES, RUN_ID, AppGrid

def _config(method: str, **extra: dict) -> ExperimentConfig:
    data = {
        "federation": {"num_organizations": len(NODES)},
        "aggregation_config": {"aggregation_method": method, "min_participants": 2, "max_rounds": 2},
        "strategy": {"fraction_evaluate": 0.0},
    }
    for group, values in extra.items():
        data.setdefault(group, {}).update(values)
    return ExperimentConfig.from_dict(data)


def _run(config: ExperimentConfig, grid: AppGrid, rounds: int = 2):
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    initial = ArrayRecord(numpy_ndarrays=get_weights(new_model(config)))
    result = strategy.start(grid, initial, num_rounds=rounds, timeout=5)
    return strategy, result


def _flat(result) -> np.ndarray:
    return np.concatenate([a.ravel() for a in result.arrays.to_numpy_ndarrays()])


@pytest.fixture(scope="module")
def plain_result():
    return _run(_config("fedavg"), AppGrid(_config("fedavg")))


def test_secure_sum_gives_the_plain_weighted_mean(plain_result) -> None:
    _, plain = plain_result
    strategy, secure = _run(_config("secure_sum"), AppGrid(_config("secure_sum")))
    assert np.max(np.abs(_flat(secure) - _flat(plain))) < 1e-5
    record = strategy.records[1].secure_sum
    assert record["ring_bits"] == 32 and record["dropouts_recovered"] == 0
    assert sorted(record["counted"]) == ["org-0", "org-1", "org-2", "org-3"]
    assert record["bytes_uploaded_per_client"] >= 4 * 62


def test_three_exchanges_in_the_first_round_then_two() -> None:
    config = _config("secure_sum")
    grid = AppGrid(config)
    strategy, _ = _run(config, grid, rounds=3)
    assert grid.exchanges == [
        "train.secure_keys", "train", "train.secure_unmask",
        "train", "train.secure_unmask",
        "train", "train.secure_unmask",
    ]
    assert [strategy.records[r].secure_sum["exchanges"] for r in (1, 2, 3)] == [3, 2, 2]


def test_dropout_at_key_advertisement_leaves_the_node_out() -> None:
    config = _config("secure_sum")
    grid = AppGrid(config, drop=lambda n, kind, rnd: n == 101 and kind == "train.secure_keys")
    strategy, _ = _run(config, grid, rounds=1)
    record = strategy.records[1]
    assert record.status == "ok"
    assert sorted(record.participants) == ["org-1", "org-2", "org-3"]
    assert record.sampled == ["org-1", "org-2", "org-3"]


@pytest.mark.parametrize("round_of_drop", [1, 2])
def test_dropout_after_setup_before_masking_is_recovered(round_of_drop: int, plain_result) -> None:
    config = _config("secure_sum")
    grid = AppGrid(config, drop=lambda n, kind, rnd: n == 303 and kind == "train" and rnd == round_of_drop)
    strategy, _ = _run(config, grid, rounds=2)
    record = strategy.records[round_of_drop]
    assert record.status == "ok", record.failure_reason
    assert record.secure_sum["dropouts_recovered"] == 1
    assert sorted(record.secure_sum["counted"]) == ["org-0", "org-1", "org-3"]
    assert [(r.organization, r.check) for r in record.rejected] == [("org-2", "no_reply")]  # the grid did not wait


def test_exact_sum_over_the_counted_organizations_after_a_dropout() -> None:
    """With org-2 dropped in round 1, the secure aggregate equals the plain mean of the other three."""
    drop = lambda n, kind, rnd: n == 303 and kind == "train" and rnd == 1  # noqa: E731
    _, secure = _run(_config("secure_sum"), AppGrid(_config("secure_sum"), drop=drop), rounds=1)
    _, plain = _run(_config("fedavg"), AppGrid(_config("fedavg"), drop=drop), rounds=1)
    assert np.max(np.abs(_flat(secure) - _flat(plain))) < 1e-5


def test_dropout_during_unmasking_still_counts_the_node() -> None:
    config = _config("secure_sum")
    grid = AppGrid(config, drop=lambda n, kind, rnd: n == 404 and kind == "train.secure_unmask")
    strategy, _ = _run(config, grid, rounds=2)
    for rnd in (1, 2):
        record = strategy.records[rnd]
        assert record.status == "ok", record.failure_reason
        assert "org-3" in record.secure_sum["counted"]
        assert record.secure_sum["silent_in_unmask"] == ["org-3"]


def test_below_threshold_the_round_fails_loudly_and_the_model_is_unchanged() -> None:
    config = _config("secure_sum", aggregation_config={"min_participants": 2})
    # t = 3 of 4; only 2 masked updates arrive in round 1
    grid = AppGrid(config, drop=lambda n, kind, rnd: n in (101, 202) and kind == "train" and rnd == 1)
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    initial = ArrayRecord(numpy_ndarrays=get_weights(new_model(config)))
    result = strategy.start(grid, initial, num_rounds=2, timeout=5)
    first = strategy.records[1]
    assert first.status == "failed"
    assert "RoundFailed" in first.failure_reason and "threshold" in first.failure_reason.lower()
    assert strategy.records[2].status == "ok"  # the run goes on
    assert result.arrays is not None


def test_wrong_shape_update_is_refused_by_the_client_and_the_round_goes_on() -> None:
    config = _config("secure_sum", faults={"wrong_shape": [0]})
    strategy, _ = _run(config, AppGrid(config), rounds=1)
    record = strategy.records[1]
    assert record.status == "ok", record.failure_reason
    (bad,) = [r for r in record.rejected if r.node_id == 101]
    assert bad.check == "secure_sum_encoding"
    assert bad.reason == "refused by the client"  # the detail (a shape, a norm) stays in the hospital's log
    assert sorted(record.secure_sum["counted"]) == ["org-1", "org-2", "org-3"]
    assert record.secure_sum["dropouts_recovered"] == 1


def test_wrong_length_payload_is_rejected_by_the_coordinator() -> None:
    def truncate(node: int, reply: Message) -> None:
        if node == 303 and not reply.has_error():
            masked = reply.content[MASKED].to_numpy_ndarrays()[0]
            reply.content[MASKED] = ArrayRecord(numpy_ndarrays=[masked[:-1]])

    config = _config("secure_sum")
    strategy, _ = _run(config, AppGrid(config, tamper=truncate), rounds=1)
    record = strategy.records[1]
    assert record.status == "ok", record.failure_reason
    (bad,) = [r for r in record.rejected if r.organization == "org-2"]
    assert bad.check == "secure_sum_payload" and "expected shape (70,), got (69,)"  # 62 parameters + 8 masked statistics in bad.reason
    assert sorted(record.secure_sum["counted"]) == ["org-0", "org-1", "org-3"]


def test_wrong_ring_payload_is_rejected() -> None:
    def widen(node: int, reply: Message) -> None:
        if node == 202 and not reply.has_error():
            masked = reply.content[MASKED].to_numpy_ndarrays()[0]
            reply.content[MASKED] = ArrayRecord(numpy_ndarrays=[masked.astype(np.uint64)])

    config = _config("secure_sum")
    strategy, _ = _run(config, AppGrid(config, tamper=widen), rounds=1)
    record = strategy.records[1]
    assert record.status == "ok", record.failure_reason
    (bad,) = [r for r in record.rejected if r.organization == "org-1"]
    assert bad.check == "secure_sum_payload" and "uint32" in bad.reason
    assert record.secure_sum["dropouts_recovered"] == 1


def test_nan_update_under_secure_sum_never_enters_the_ring() -> None:
    config = _config("secure_sum", faults={"nan": [1]})
    strategy, _ = _run(config, AppGrid(config), rounds=1)
    record = strategy.records[1]
    assert record.status == "ok"
    assert "org-1" not in record.secure_sum["counted"]
    assert any(r.organization in ("org-1", "node-202") for r in record.rejected)


def test_malicious_mode_adds_the_consistency_exchange_and_gives_the_same_mean(plain_result) -> None:
    _, plain = plain_result
    config = _config("secure_sum", secure_sum={"mode": "malicious"})
    grid = AppGrid(config)
    strategy, secure = _run(config, grid, rounds=2)
    assert np.max(np.abs(_flat(secure) - _flat(plain))) < 1e-5
    assert grid.exchanges == [
        "train.secure_keys", "train", "train.secure_confirm", "train.secure_unmask",
        "train", "train.secure_confirm", "train.secure_unmask",
    ]
    assert [strategy.records[r].secure_sum["exchanges"] for r in (1, 2)] == [4, 3]


def test_a_shifted_masked_input_fails_the_aggregate_check_and_leaves_the_model(plain_result) -> None:
    """A client shifts its masked vector (undetectable before unmasking): the unmasked sum is
    out of bounds, the round fails loudly and the model is left unchanged."""

    def shift(node: int, reply: Message) -> None:
        if node == 202 and not reply.has_error():
            masked = reply.content[MASKED].to_numpy_ndarrays()[0].copy()
            masked[:] += np.uint32(2**29)
            reply.content[MASKED] = ArrayRecord(numpy_ndarrays=[masked])

    config = _config("secure_sum")
    strategy, result = _run(config, AppGrid(config, tamper=shift), rounds=1)
    record = strategy.records[1]
    assert record.status == "failed"
    assert "aggregate_bounds_check" in record.failure_reason
    assert record.secure_sum["aggregate_check"]["passed"] is False
    initial = np.concatenate([a.ravel() for a in get_weights(new_model(config))])
    assert np.array_equal(_flat(result), initial)


def test_stage_u_asks_only_the_needed_survivors_and_replaces_silent_ones() -> None:
    """10 organizations, complete graph, t = 6: stage U asks t + 2 = 8 of them; when 3 of
    those stay silent, a further exchange asks the 2 others and the round completes."""
    nodes = [1000 + 7 * i for i in range(10)]
    config = _config("secure_sum", federation={"num_organizations": len(nodes)})
    fed_config = _config("fedavg", federation={"num_organizations": len(nodes)})
    silent = set(nodes[:3])
    asked: dict[int, list[int]] = {}

    def drop(node: int, kind: str, rnd: int) -> bool:
        if kind == "train.secure_unmask":
            asked.setdefault(rnd, []).append(node)
            return rnd == 1 and node in silent
        return False

    strategy, secure = _run(config, AppGrid(config, drop=drop, nodes=nodes), rounds=2)
    _, plain = _run(fed_config, AppGrid(fed_config, nodes=nodes), rounds=2)
    assert np.max(np.abs(_flat(secure) - _flat(plain))) < 1e-5
    first, steady = strategy.records[1].secure_sum, strategy.records[2].secure_sum
    assert sorted(asked[1]) == sorted(nodes)  # 8, then the 2 others after 3 stayed silent
    assert first["exchanges"] == 4 and len(first["silent_in_unmask"]) == 3
    assert len(first["counted"]) == 10
    assert len(asked[2]) == 8 and steady["exchanges"] == 2 and steady["silent_in_unmask"] == []


def test_attack_under_central_noise_a_shifted_masked_input_is_projected_and_the_round_completes() -> None:
    """Organization-level DP with central noise: a client shifts its masked vector so the
    unmasked sum is far out of bounds. Failing the round would tell that client one bit about
    the others' un-noised updates, so the round completes like an honest one (the same
    published check) and the mean is projected onto the bound before the noise: the model
    moves by at most the bound plus the noise."""
    import math

    def shift(node: int, reply: Message) -> None:
        if node == 202 and not reply.has_error() and reply.has_content() and MASKED in reply.content:
            masked = reply.content[MASKED].to_numpy_ndarrays()[0].copy()
            masked[:] += np.uint32(2**29)
            reply.content[MASKED] = ArrayRecord(numpy_ndarrays=[masked])

    config = _config("secure_sum", privacy_budget={"mode": "organization", "noise_placement": "central", "epsilon": 100.0,
                                                   "delta": 1e-5, "noise_multiplier": 0.2, "clip_norm": 1.0})  # fmt: skip
    honest, _ = _run(config, AppGrid(config), rounds=1)
    strategy, result = _run(config, AppGrid(config, tamper=shift), rounds=1)
    record = strategy.records[1]
    assert honest.records[1].status == "ok" and record.status == "ok", record.failure_reason
    check = record.secure_sum["aggregate_check"]
    assert check == honest.records[1].secure_sum["aggregate_check"]  # nothing tells the two sums apart
    assert check["passed"] is True and check["details"]["enforced_by"] == "projection"
    assert len(record.secure_sum["counted"]) == len(NODES) and record.privacy["recorded"] == "when noised"
    initial = np.concatenate([a.ravel() for a in get_weights(new_model(config))]).astype(np.float64)
    moved = _flat(result).astype(np.float64) - initial
    guard = strategy.privacy
    sigma_mean = guard.z * guard.sensitivity / len(NODES)
    d = moved.size
    # ||projected mean + noise|| <= bound + sigma (sqrt d + sqrt(2 ln 1e9)), except with probability 1e-9
    assert np.linalg.norm(moved) <= check["details"]["bound"] + sigma_mean * (math.sqrt(d) + math.sqrt(2 * math.log(1e9)))
    # the shift (2^29 in every coordinate, far beyond the others' updates) is projected onto the
    # bound: along (1, ..., 1) the model moved by the bound, give or take the noise (6 sigma)
    along = float(np.mean(moved)) * math.sqrt(d)
    assert abs(along - check["details"]["bound"]) < 6 * sigma_mean + 0.01
