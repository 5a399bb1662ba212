"""The Flower strategy and the transport-free coordinator core give the same new model."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, Strategy

from oneliac_flwr.coordinator import RoundCore, plain_aggregate
from oneliac_flwr.flower.inner import InnerStrategyUpdate
from oneliac_flwr.flower.plain import PlainAggregator
from oneliac_flwr.flower.strategy import OneliacStrategy

from conftest import ScriptedGrid, train_reply

NODES = [11, 22, 33]
WEIGHTS = {11: 10, 22: 30, 33: 60}
GLOBAL = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]


def _local(node: int, server_round: int) -> list[np.ndarray]:
    rng = np.random.default_rng(node * 100 + server_round)
    return [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)]


def _inner(name: str) -> Strategy:
    common = {"min_available_nodes": 3, "min_train_nodes": 3, "min_evaluate_nodes": 0, "fraction_evaluate": 0.0}
    return {
        "fedavg": lambda: FedAvg(**common),
        "fedprox": lambda: FedProx(**common, proximal_mu=0.1),
        "fedavgm": lambda: FedAvgM(**common, server_learning_rate=1.0, server_momentum=0.9),
        "fedadam": lambda: FedAdam(**common, eta=0.1, eta_l=0.1, tau=1e-3),
    }[name]()


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedadam"])
def test_flower_path_and_core_path_give_the_same_model_over_rounds(name: str) -> None:
    strategy = OneliacStrategy(
        _inner(name), aggregator=PlainAggregator(), min_participants=3, rng=np.random.default_rng(0)
    )
    core = RoundCore(min_participants=3, server_update=InnerStrategyUpdate(_inner(name)), rng=np.random.default_rng(0))
    flower_model = [a.copy() for a in GLOBAL]
    core_model = [a.copy() for a in GLOBAL]
    for server_round in (1, 2, 3):

        def behaviour(node: int, message: Message, r: int = server_round):
            return train_reply(_local(node, r), WEIGHTS[node], f"h{node}")

        grid = ScriptedGrid(NODES, behaviour)
        messages = strategy.configure_train(server_round, ArrayRecord(numpy_ndarrays=flower_model), ConfigRecord(), grid)
        arrays, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages, timeout=1))
        assert arrays is not None, strategy.records[server_round].failure_reason
        flower_model = arrays.to_numpy_ndarrays()

        aggregate = plain_aggregate(
            participants=NODES,
            arrays=[_local(n, server_round) for n in NODES],
            weights=[float(WEIGHTS[n]) for n in NODES],
            metrics=[{"train_loss": 0.5} for _ in NODES],
            global_arrays=core_model,
        )
        outcome = core.complete(server_round, aggregate, core_model)
        assert outcome.status == "ok" and outcome.arrays is not None
        core_model = outcome.arrays
        for a, b in zip(flower_model, core_model, strict=True):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, b)
    # the server rule really acted: FedAdam's model is not the plain weighted mean
    mean = sum(WEIGHTS[n] * _local(n, 3)[0] for n in NODES) / sum(WEIGHTS.values())
    assert np.allclose(core_model[0], mean, atol=1e-5) == (name in ("fedavg", "fedprox"))
