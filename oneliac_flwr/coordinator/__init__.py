"""Transport-free coordinator core shared by the Flower adapter and the REST service.

It works on numpy arrays and small dataclasses and imports neither Flower nor HTTP:

- :mod:`~oneliac_flwr.coordinator.aggregate`: the round's :class:`Aggregate`, the plain
  weighted mean and the post-unmasking step of the secure sum;
- :mod:`~oneliac_flwr.coordinator.round`: :class:`RoundCore`, which turns an aggregate
  into the next global model (participant floor, coordinator-side privacy, the inner
  strategy's server-side update, finiteness), and the :class:`PrivacyGuard` and
  :class:`ServerUpdate` protocols the adapters implement;
- :mod:`~oneliac_flwr.coordinator.server_opt`: the inner strategy's server optimizers
  (FedAvgM, FedAdam, FedYogi, FedAdagrad) with their state as named arrays.
"""

from oneliac_flwr.coordinator.aggregate import Aggregate, SecureSumOutcome, plain_aggregate, secure_sum_aggregate
from oneliac_flwr.coordinator.round import PrivacyGuard, RoundCore, RoundOutcome, ServerUpdate, mean_server_update
from oneliac_flwr.coordinator.server_opt import (
    ServerAdaptive,
    ServerMomentum,
    StatefulServerUpdate,
    build_server_update,
    server_state,
)

__all__ = [
    "Aggregate",
    "PrivacyGuard",
    "RoundCore",
    "RoundOutcome",
    "SecureSumOutcome",
    "ServerAdaptive",
    "ServerMomentum",
    "ServerUpdate",
    "StatefulServerUpdate",
    "build_server_update",
    "mean_server_update",
    "plain_aggregate",
    "secure_sum_aggregate",
    "server_state",
]
