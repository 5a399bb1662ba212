"""``SecureSumServer.state_dict`` / ``from_state_dict``: a coordinator restored between
every protocol step finishes the same rounds (what the REST coordinator relies on)."""

from __future__ import annotations

from typing import Any

import pytest

from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.secure import SecureSumServer, plan_ring


class Reloading:
    """Proxy that saves and restores the server after every call."""

    def __init__(self, server: SecureSumServer) -> None:
        self.server = server
        self.reloads = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.server, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                state = self.server.state_dict()
                restored = SecureSumServer.from_state_dict(state, spec=self.server.spec)
                assert restored.state_dict() == state
                assert restored.stage == self.server.stage
                self.server = restored
                self.reloads += 1

        return call


def test_restored_between_every_step_the_rounds_unmask_the_exact_sum(federation_cls: Any, inputs_factory: Any, exact: Any) -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=100, max_participants=5)
    ids = [3, 8, 21, 40, 77]
    fed = federation_cls(ids, spec=spec, length=16)
    proxy = Reloading(fed.server)
    fed.server = proxy
    exact_sum, max_error, _ = exact
    for round_no, drops in ((1, {}), (2, {"drop_m": [21]}), (3, {"drop_u": [40], "drop_m": [8]})):
        inputs = inputs_factory(ids, length=16, spec=spec, seed=round_no)
        result = fed.run_round(round_no, inputs=inputs, threshold=3, **drops)
        dropped = set(drops.get("drop_m", []))
        assert set(result.dropped) == dropped
        counted = [n for n in ids if n not in dropped]
        assert max_error(result.weighted_sum, exact_sum(inputs, counted)) <= result.error_bound
    assert proxy.reloads > 20


def test_a_state_for_another_ring_is_refused() -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=100, max_participants=5)
    other = plan_ring(clip_bound=2.0, weight_bound=100, max_participants=5)
    state = SecureSumServer(run_id=5, spec=spec, length=4).state_dict()
    with pytest.raises(ProtocolViolation, match="server_state.ring"):
        SecureSumServer.from_state_dict(state, spec=other)
    broken = dict(state, registry=[[1, ["org", "fed"]]])
    with pytest.raises(ProtocolViolation, match="server_state"):
        SecureSumServer.from_state_dict(broken, spec=spec)
