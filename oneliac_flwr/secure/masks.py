"""Mask generation: AES-256-CTR keystreams read as ring elements.

Every mask key is used for exactly one keystream (it is derived for one run, round,
purpose and pair, or from a fresh per-round seed), so the all-zero initial counter
block is safe: no key ever encrypts two different plaintexts. Parties that compute the
same mask compute the same keystream. Arithmetic is numpy ``uint32``/``uint64``, which
wraps modulo ``2^k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from numpy.typing import DTypeLike

from oneliac_flwr.errors import ProtocolViolation

__all__ = ["CHUNK_BYTES", "apply_masks", "keystream", "pairwise_sign"]

#: Keystream is produced in chunks of this many bytes (cache-sized, so that adding a
#: chunk to the accumulator happens while both are in cache).
CHUNK_BYTES = 1 << 18
_ZERO_IV = bytes(16)
_ZEROS = memoryview(bytes(CHUNK_BYTES))
_BLOCK_SLACK = 15  # update_into needs len(out) >= len(data) + block_size - 1


def _ring_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    dt: np.dtype[Any] = np.dtype(dtype)
    if dt not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        raise ProtocolViolation(f"dtype: expected uint32 or uint64, got {dt}")
    return dt


def _encryptor(key: bytes) -> CipherContext:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ProtocolViolation("mask key: expected 32 bytes (AES-256)")
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()


def keystream(key: bytes, n: int, dtype: DTypeLike) -> np.ndarray:
    """Return ``n`` ring elements of the AES-256-CTR keystream of ``key``.

    Parameters
    ----------
    key : bytes
        32-byte AES key, used for this one stream only.
    n : int
        Number of elements.
    dtype : numpy dtype-like
        ``uint32`` or ``uint64``; bytes are read little-endian.

    Returns
    -------
    numpy.ndarray
        Writable 1-D array of ``n`` elements of ``dtype`` (native byte order).
    """
    dt = _ring_dtype(dtype)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ProtocolViolation(f"n: expected an integer >= 0, got {n!r}")
    nbytes = n * dt.itemsize
    enc = _encryptor(key)
    buf = bytearray(nbytes + _BLOCK_SLACK)
    out = memoryview(buf)
    for start in range(0, nbytes, CHUNK_BYTES):
        size = min(CHUNK_BYTES, nbytes - start)
        enc.update_into(_ZEROS[:size], out[start : start + size + _BLOCK_SLACK])
    stream = np.frombuffer(buf, dtype=dt.newbyteorder("<"), count=n)
    return stream if stream.dtype == dt else stream.astype(dt)


def pairwise_sign(me: int, peer: int) -> int:
    """Sign with which ``me`` adds the pairwise mask shared with ``peer``.

    Returns
    -------
    int
        ``+1`` if ``me < peer``, ``-1`` if ``me > peer``.
    """
    if me == peer:
        raise ProtocolViolation(f"pairwise mask of node {me} with itself")
    return 1 if me < peer else -1


def apply_masks(acc: np.ndarray, masks: Sequence[tuple[bytes, int]]) -> None:
    """Add ``sum(sign * keystream(key))`` to ``acc`` in place, modulo ``2^k``.

    The accumulator is walked in cache-sized chunks; for each chunk every keystream is
    continued and added, so the accumulator chunk stays in cache.

    Parameters
    ----------
    acc : numpy.ndarray
        1-D, C-contiguous, writable ``uint32``/``uint64`` array.
    masks : sequence of (bytes, int)
        ``(key, sign)`` pairs, ``sign`` in ``{+1, -1}``.
    """
    dt = _ring_dtype(acc.dtype)
    if acc.ndim != 1 or not acc.flags.c_contiguous or not acc.flags.writeable:
        raise ProtocolViolation("acc: expected a writable, contiguous 1-D array")
    if any(sign not in (1, -1) for _, sign in masks):
        raise ProtocolViolation("mask sign: expected +1 or -1")
    streams = [(_encryptor(key), sign) for key, sign in masks]
    if not streams:
        return
    little = dt.newbyteorder("<")
    chunk = CHUNK_BYTES // dt.itemsize
    buf = bytearray(CHUNK_BYTES + _BLOCK_SLACK)
    n = acc.shape[0]
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        part = acc[start : start + count]
        for enc, sign in streams:
            enc.update_into(_ZEROS[: count * dt.itemsize], buf)
            mask = np.frombuffer(buf, dtype=little, count=count)
            if sign > 0:
                np.add(part, mask, out=part, casting="unsafe")
            else:
                np.subtract(part, mask, out=part, casting="unsafe")
