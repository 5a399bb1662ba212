"""Typed readers and checks for record fields (private helpers of ``secure``).

Every failure raises :class:`~oneliac_flwr.errors.ProtocolViolation` naming the field
(``<message>.<key>``) and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from oneliac_flwr.errors import ProtocolViolation

U64_MAX = 2**64 - 1


def _bad(where: str, expected: str, got: object) -> ProtocolViolation:
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ProtocolViolation(f"{where}: expected {expected}, got {shown}")


def check_u64(value: object, where: str) -> int:
    """Return ``value`` if it is an int (not bool) in ``[0, 2^64)``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise _bad(where, "an integer in [0, 2^64)", value)
    return value


def check_u64_fields(**named: object) -> tuple[int, ...]:
    """Return the values (in argument order) if each is an int (not bool) in ``[0, 2^64)``.

    The error names the first bad field (by its keyword).
    """
    values = tuple(named.values())
    if all(type(v) is int and 0 <= v <= U64_MAX for v in values):  # fast path
        return values  # type: ignore[return-value]
    return tuple(check_u64(v, name) for name, v in named.items())


def check_int(value: object, where: str, *, lo: int, hi: int | None = None) -> int:
    """Return ``value`` if it is an int (not bool) with ``lo <= value <= hi``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise _bad(where, f"an integer {rng}", value)
    return value


def check_float(value: object, where: str, *, positive: bool = True) -> float:
    """Return ``value`` if it is a finite float (strictly positive by default)."""
    if not isinstance(value, float) or not math.isfinite(value) or (positive and value <= 0):
        raise _bad(where, "a finite float > 0" if positive else "a finite float", value)
    return value


def check_bytes(value: object, where: str, *, length: int | None = None) -> bytes:
    """Return ``value`` if it is ``bytes`` (of ``length`` bytes when given)."""
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        exp = "bytes" if length is None else f"{length} bytes"
        got: object = f"{len(value)} bytes" if isinstance(value, bytes) else value
        raise _bad(where, exp, got)
    return value


def check_u64_tuple(values: object, where: str, *, unique: bool = True) -> tuple[int, ...]:
    """Return a tuple of u64 ids (pairwise distinct when ``unique``)."""
    if not isinstance(values, (list, tuple)):
        raise _bad(where, "a list of integers", values)
    out = tuple(values)
    if not all(type(v) is int and 0 <= v <= U64_MAX for v in out):  # fast path; else name the bad element
        out = tuple(check_u64(v, f"{where}[{i}]") for i, v in enumerate(values))
    if unique and len(set(out)) != len(out):
        raise _bad(where, "distinct node ids", list(out))
    return out


def check_bytes_tuple(values: object, where: str, *, length: int | None = None) -> tuple[bytes, ...]:
    """Return a tuple of ``bytes`` (each of ``length`` bytes when given)."""
    if not isinstance(values, (list, tuple)):
        raise _bad(where, "a list of bytes", values)
    out = tuple(values)
    if all(type(v) is bytes and (length is None or len(v) == length) for v in out):  # fast path
        return out
    return tuple(check_bytes(v, f"{where}[{i}]", length=length) for i, v in enumerate(values))


def check_int_tuple(values: object, where: str, *, lo: int) -> tuple[int, ...]:
    """Return a tuple of ints ``>= lo``."""
    if not isinstance(values, (list, tuple)):
        raise _bad(where, "a list of integers", values)
    return tuple(check_int(v, f"{where}[{i}]", lo=lo) for i, v in enumerate(values))


def check_same_length(where: str, **columns: Sequence[Any]) -> None:
    """Raise unless all parallel lists have the same length."""
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n}={k}" for n, k in lengths.items())
        raise ProtocolViolation(f"{where}: parallel lists must have equal lengths ({detail})")


def require(record: Mapping[str, Any], key: str, message: str) -> Any:
    """Return ``record[key]`` or raise naming the missing field."""
    if not isinstance(record, Mapping):
        raise _bad(message, "a mapping", type(record).__name__)
    if key not in record:
        raise ProtocolViolation(f"{message}.{key}: missing")
    return record[key]


def check_message_tag(record: Mapping[str, Any], expected: str) -> None:
    """Raise unless ``record['message'] == expected``."""
    tag = require(record, "message", expected)
    if tag != expected:
        raise _bad(f"{expected}.message", repr(expected), tag)
