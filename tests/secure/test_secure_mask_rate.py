"""Mask generation runs at >= 50% of the raw AES-256-CTR keystream rate.

Raw rate: ``encryptor.update_into`` over preallocated buffers, nothing else. Timings
are the best of several interleaved repetitions, so that load on the machine affects
both sides alike (measured ~0.7-0.85 on an idle 2-core machine).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from oneliac_flwr.secure.masks import apply_masks, keystream

NBYTES = 2 << 20  # per stream
STREAMS = 4
REPEATS = 15


def raw_keystream(keys: list[bytes]) -> None:
    chunk = 1 << 20
    zeros = memoryview(bytes(chunk))
    out = bytearray(chunk + 15)
    for key in keys:
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        for _ in range(NBYTES // chunk):
            enc.update_into(zeros, out)


def best_ratio(ours: Callable[[], None], raw: Callable[[], None], *, attempts: int = 3) -> float:
    """Our rate / raw rate, from the fastest of interleaved repetitions.

    A noisy machine can only slow a run down, so up to ``attempts`` measurements are
    made and the first that reaches 0.5 (or the best) is returned.
    """
    best = 0.0
    for _ in range(attempts):
        t_ours, t_raw = [], []
        for _ in range(REPEATS):
            start = time.perf_counter()
            raw()
            t_raw.append(time.perf_counter() - start)
            start = time.perf_counter()
            ours()
            t_ours.append(time.perf_counter() - start)
        best = max(best, min(t_raw) / min(t_ours))
        if best >= 0.5:
            break
    return best


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_keystream_rate(dtype: type) -> None:
    keys = [os.urandom(32) for _ in range(STREAMS)]
    n = NBYTES // np.dtype(dtype).itemsize

    def ours() -> None:
        for key in keys:
            keystream(key, n, dtype)

    ratio = best_ratio(ours, lambda: raw_keystream(keys))
    assert ratio >= 0.5, f"keystream at {ratio:.0%} of the raw AES-256-CTR rate"


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_apply_masks_rate(dtype: type) -> None:
    keys = [os.urandom(32) for _ in range(STREAMS)]
    acc: np.ndarray = np.zeros(NBYTES // np.dtype(dtype).itemsize, dtype=dtype)
    masks = [(k, 1 if i % 2 else -1) for i, k in enumerate(keys)]
    ratio = best_ratio(lambda: apply_masks(acc, masks), lambda: raw_keystream(keys))
    assert ratio >= 0.5, f"masking at {ratio:.0%} of the raw AES-256-CTR rate"
