"""The ClientApp reaches the simulation engine's workers as the call that builds it."""

from __future__ import annotations

import pickle

import pytest
import ray.cloudpickle as cloudpickle

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.clientapp import build_client_app
from oneliac_flwr.flower.portable import PortableClientApp
from oneliac_flwr.flower.secure_sum import KEYS_ACTION, UNMASK_ACTION


def test_the_client_app_pickles_as_its_builder_and_rebuilds_with_the_same_config() -> None:
    config = ExperimentConfig.from_dict({"aggregation_config": {"aggregation_method": "secure_sum"}})
    app = build_client_app(config)
    blob = cloudpickle.dumps(lambda: app)  # what the Ray backend ships with every message
    assert b"_masked_reply" not in blob and len(blob) < 5_000, len(blob)
    rebuilt = pickle.loads(blob)()
    assert isinstance(rebuilt, PortableClientApp) and rebuilt is not app
    assert rebuilt._args == (config,)
    handlers = set(rebuilt._registered_funcs)
    assert handlers == set(app._registered_funcs) and {f"train.{KEYS_ACTION}", f"train.{UNMASK_ACTION}"} <= handlers
    assert pickle.loads(pickle.dumps(app)) is rebuilt, "a worker builds each app once"


def test_a_portable_app_needs_a_builder_reference_and_hashable_arguments() -> None:
    with pytest.raises(ConfigError, match="builder"):
        PortableClientApp(builder="no_colon", args=())
    with pytest.raises(ConfigError, match="args"):
        PortableClientApp(builder="m:f", args=([1],))
