"""A hospital's update-level release: clip, noise (or noise share), record, declare.

Transport-free, shared by the Flower ClientApp (:mod:`oneliac_flwr.flower.client_privacy`)
and the REST SDK (:mod:`oneliac_flwr.sdk`). The coordinator's instruction is the mapping
its guard publishes (:meth:`LedgerGuard.client_config
<oneliac_flwr.coordinator.privacy_guard.LedgerGuard.client_config>`): ``mode``,
``clip-norm``, ``noise-multiplier``, ``delta``, ``mechanism``, ``release-epsilon`` and,
for distributed noise, ``frac-bits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.privacy.clipping import clip_l2
from oneliac_flwr.privacy.distributed import client_noise_std, distributed_noise_share, distributed_release
from oneliac_flwr.privacy.entropy import os_generator
from oneliac_flwr.privacy.events import GaussianRelease
from oneliac_flwr.privacy.hospital import HospitalPrivacyState
from oneliac_flwr.privacy.mechanisms import DifferentialPrivacy
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = ["UpdateRelease", "privatize_update"]


class UpdateRelease:
    """A privatized model update, ready to send, and what the hospital declares about it.

    Parameters
    ----------
    update : list of numpy.ndarray
        float64 arrays (distributed shares lie exactly on the fixed-point grid).
    declared : DeclaredPrivacy
        Clip, noise and mechanism: values of the policy, independent of the data.
    """

    def __init__(self, update: list[np.ndarray], declared: DeclaredPrivacy) -> None:
        self.update = update
        self.declared = declared


def privatize_update(
    update: list[np.ndarray],
    instruction: Mapping[str, Any],
    *,
    state: HospitalPrivacyState,
    server_round: int,
    threshold: int | None,
) -> UpdateRelease | str:
    """Clip and noise one update (``organization`` and ``release`` units), and record the
    release in the hospital's ledger before it leaves.

    Parameters
    ----------
    update : list of numpy.ndarray
        The model update (trained minus global weights).
    instruction : mapping
        The coordinator's privacy record (mode, clip, noise multiplier, release epsilon,
        delta, fractional bits of the ring for distributed noise).
    state : HospitalPrivacyState
        The hospital's policy and ledger; the release is refused when it would exceed
        the hospital's own cap.
    server_round : int
        Round number recorded with the release.
    threshold : int or None
        The secure-sum threshold this hospital enforces (distributed noise: its share is
        sized so that ``threshold`` honest shares give the announced noise).

    Returns
    -------
    UpdateRelease or str
        The release, or the reason it is refused (a local detail, never sent).
    """
    policy = state.policy
    mode = str(instruction["mode"])
    clip = float(instruction["clip-norm"])
    rng = os_generator()
    clipped, _norm = clip_l2([np.asarray(u, np.float64) for u in update], clip)
    if mode == "organization":
        z = max(float(instruction["noise-multiplier"]), policy.min_noise_multiplier)
        if "frac-bits" in instruction:  # distributed: this hospital adds its own share
            if threshold is None:
                return "distributed noise needs the secure-sum threshold of the round"
            frac_bits = int(instruction["frac-bits"])
            std = client_noise_std(noise_multiplier=z, clip_norm=clip, min_contributors=threshold)
            private = list(distributed_noise_share(clipped, noise_std=std, fractional_bits=frac_bits, rng=rng))
            dimension = int(sum(u.size for u in private))
            event: Any = distributed_release(
                noise_std=std, clip_norm=clip, dimension=dimension, fractional_bits=frac_bits, min_contributors=threshold
            )
        else:  # central: the coordinator adds the noise; the hospital still counts the release
            private, event = list(clipped), GaussianRelease(z)
        declared = DeclaredPrivacy(clip_norm=clip, noise_multiplier=z, mechanism="gaussian")
    elif mode == "release":
        mechanism = str(instruction.get("mechanism", "gaussian"))
        delta = float(instruction["delta"]) if mechanism == "gaussian" else None
        if mechanism == "laplace":
            # Laplace needs L1 sensitivity: scale the update so its L1 norm is at most `clip`.
            l1 = float(sum(np.abs(u).sum() for u in clipped))
            if l1 > clip:
                clipped = [u * (clip / l1) for u in clipped]
        dp = DifferentialPrivacy(float(instruction["release-epsilon"]), delta, mechanism, rng=rng)
        if dp.noise_multiplier < policy.min_noise_multiplier:
            return f"release noise multiplier {dp.noise_multiplier:.4g} < this hospital's minimum {policy.min_noise_multiplier:.4g}"
        private = [np.asarray(u, np.float64) for u in dp.add_noise_to_gradients(list(clipped), sensitivity=clip)]
        event = dp.release_event()
        declared = DeclaredPrivacy(clip_norm=clip, mechanism=mechanism, noise_multiplier=dp.noise_multiplier)
    else:
        raise ConfigError("privacy_budget.mode", f"no update-level privacy for mode {mode!r}")
    if state.ledger.would_exceed([event]):
        return (
            f"{mode}-level budget: epsilon spent {state.epsilon():.4f}; this release would raise it to "
            f"{state.ledger.epsilon_if([event]):.4f} > this hospital's cap {policy.epsilon}"
        )
    state.record_release([event], round_number=server_round, label=mode)  # recorded before it leaves
    return UpdateRelease(private, declared)
