"""The core's server optimizers against Flower's own strategies, across a state round trip."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi, Strategy
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from oneliac_flwr.config import StrategyConfig
from oneliac_flwr.coordinator import ServerAdaptive, ServerMomentum, build_server_update, server_state
from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.flower.inner import InnerStrategyUpdate, server_update_for

GLOBAL = [np.full((3, 2), 0.25, np.float32), np.zeros(4, np.float32)]


def _flower(name: str) -> Strategy:
    common = {"min_available_nodes": 1, "min_train_nodes": 1, "min_evaluate_nodes": 0, "fraction_evaluate": 0.0}
    return {
        "fedavgm": lambda: FedAvgM(**common, server_learning_rate=0.7, server_momentum=0.9),
        "fedadam": lambda: FedAdam(**common, eta=0.1, tau=1e-3),
        "fedyogi": lambda: FedYogi(**common, eta=0.05, tau=1e-2),
        "fedadagrad": lambda: FedAdagrad(**common, eta=0.1, tau=1e-3),
    }[name]()


def _mean(server_round: int, model: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(server_round)
    return [m + rng.normal(scale=0.3, size=m.shape).astype(np.float32) for m in model]


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_core_optimizer_equals_flower_strategy_with_state_stored_between_rounds(name: str) -> None:
    reference = InnerStrategyUpdate(_flower(name))
    flower_model = [a.copy() for a in GLOBAL]
    core_model = [a.copy() for a in GLOBAL]
    stored = safetensors_save({})
    for server_round in (1, 2, 3, 4):
        averaged = _mean(server_round, flower_model)
        arrays, _ = reference(server_round, flower_model, averaged, {}, 10.0)
        assert arrays is not None
        flower_model = [np.asarray(a).astype(np.float32) for a in arrays]
        # a fresh optimizer each round, restored from bytes, as the REST service does
        core = server_update_for(_flower(name))
        core.load_state_dict(safetensors_load(stored))  # type: ignore[union-attr]
        new, _ = core(server_round, core_model, [a.copy() for a in averaged], {}, 10.0)
        assert new is not None
        core_model = [np.asarray(a).astype(np.float32) for a in new]
        state = server_state(core)
        assert state  # the optimizer really has state to carry
        stored = safetensors_save(state)
        for a, b in zip(flower_model, core_model, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(core_model[0], _mean(4, core_model)[0])


def test_build_server_update_follows_the_strategy_settings() -> None:
    assert server_state(build_server_update(StrategyConfig(name="fedavg"))) is None
    momentum = build_server_update(StrategyConfig(name="fedavgm", server_momentum=0.5))
    assert isinstance(momentum, ServerMomentum) and momentum.server_momentum == 0.5
    adam = build_server_update(StrategyConfig(name="fedadam", eta=0.3))
    assert isinstance(adam, ServerAdaptive) and (adam.rule, adam.eta, adam.beta_1, adam.beta_2) == ("adam", 0.3, 0.9, 0.99)
    # the core's defaults are Flower's
    flower = FedAdam()
    assert (flower.beta_1, flower.beta_2) == (adam.beta_1, adam.beta_2)
    assert (FedYogi().beta_1, FedYogi().beta_2) == (0.9, 0.99) and (FedAdagrad().beta_1, FedAdagrad().beta_2) == (0.0, 0.0)


def test_a_foreign_or_mismatched_state_is_refused() -> None:
    adam = build_server_update(StrategyConfig(name="fedadam"))
    assert isinstance(adam, ServerAdaptive)
    with pytest.raises(ProtocolViolation, match="unknown state arrays"):
        adam.load_state_dict({"momentum.0": np.zeros(3, np.float32)})
    with pytest.raises(ProtocolViolation, match="together"):
        adam.load_state_dict({"m_t.0": np.zeros(3, np.float32)})
    adam.load_state_dict({"m_t.0": np.zeros(5, np.float32), "v_t.0": np.zeros(5, np.float32)})
    with pytest.raises(ProtocolViolation, match="do not match"):
        adam(1, [np.zeros(3, np.float32)], [np.ones(3, np.float32)], {}, 1.0)
