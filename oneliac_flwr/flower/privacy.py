"""Differential privacy at the Flower boundary: the coordinator's guard, from the core.

The guard (:class:`LedgerGuard`, :class:`SampleLevelGuard`, :func:`build_privacy_guard`)
and its helpers are transport-free and live in :mod:`oneliac_flwr.coordinator.privacy_guard`,
shared with the REST service; the Flower path keeps its ledger in a tagged file
(:class:`TaggedFileLedgerStore`, ``<state_dir>/<federation>/``). The hospital's side is
:mod:`oneliac_flwr.flower.client_privacy`.
"""

from __future__ import annotations

from oneliac_flwr.coordinator.privacy_guard import (
    LEDGER_FILE,
    LEDGER_KEY_FILE,
    SHARE_FAILURE_PROBABILITY,
    LedgerGuard,
    LedgerStore,
    SampleLevelGuard,
    TaggedFileLedgerStore,
    build_privacy_guard,
    distributed_noise_multiplier,
    distributed_share_std,
    expected_declaration,
    federation_state_dir,
    guaranteed_contributors,
    noise_multiplier_for,
    start_up_plan,
)

__all__ = [
    "LEDGER_FILE",
    "LEDGER_KEY_FILE",
    "SHARE_FAILURE_PROBABILITY",
    "LedgerGuard",
    "LedgerStore",
    "SampleLevelGuard",
    "TaggedFileLedgerStore",
    "build_privacy_guard",
    "distributed_noise_multiplier",
    "distributed_share_std",
    "expected_declaration",
    "federation_state_dir",
    "guaranteed_contributors",
    "noise_multiplier_for",
    "start_up_plan",
]
