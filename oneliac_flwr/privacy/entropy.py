"""Random generators for draws that a privacy guarantee depends on.

Every such draw (noise, noise shares, DP-SGD's Poisson sampling and noise) comes from a
generator seeded with 256 bits of operating-system entropy (:mod:`secrets`), never
from a seed in a config: a config is public, and noise that can be regenerated can be
subtracted. ``seed`` settings govern only what is not private (the simulation's data
partition, model initialisation, shuffling without DP).

torch is imported inside :func:`os_torch_generator` only.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

__all__ = ["os_generator", "os_torch_generator"]


def os_generator() -> np.random.Generator:
    """A numpy generator (PCG64) seeded with 256 bits from the operating system."""
    return np.random.default_rng(np.random.SeedSequence(secrets.randbits(256)))


def os_torch_generator() -> Any:
    """A ``torch.Generator`` seeded with 63 bits from the operating system.

    torch's CPU generator takes a 64-bit seed; use it for DP-SGD's Poisson sampling
    and noise, where Opacus accepts a generator.
    """
    import torch

    return torch.Generator().manual_seed(secrets.randbits(63))
