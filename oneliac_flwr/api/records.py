"""The one JSON codec of secure-sum message records and coordinator state at the HTTP boundary.

Records (``to_record()`` of :mod:`oneliac_flwr.secure.messages`, and
:meth:`~oneliac_flwr.secure.SecureSumServer.state_dict`) hold ``int``, ``float``,
``str``, ``bool``, ``bytes``, ``None``, lists and string-keyed dicts. JSON has no bytes:
a ``bytes`` value is written ``0x`` + lowercase hex, and every string that starts with
``0x`` is read back as bytes. So that this is unambiguous, a text value may not start
with ``0x`` (no protocol name does: organizations are ``org_...``).
"""

from __future__ import annotations

import re
from typing import Any

from oneliac_flwr.errors import ProtocolViolation

__all__ = ["record_from_json", "record_to_json"]

_HEX = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")


def record_to_json(value: Any, *, field: str = "record") -> Any:
    """A record with every ``bytes`` value as ``0x`` hex (JSON-serializable).

    Raises
    ------
    ProtocolViolation
        A text value starts with ``0x`` or a value has a type JSON cannot hold (names it).
    """
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        if value.startswith("0x"):
            raise ProtocolViolation(f"{field}: text may not start with '0x' (reserved for bytes)")
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [record_to_json(v, field=f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): record_to_json(v, field=f"{field}.{k}") for k, v in value.items()}
    raise ProtocolViolation(f"{field}: cannot encode a {type(value).__name__}")


def record_from_json(value: Any, *, field: str = "record") -> Any:
    """The record :func:`record_to_json` wrote: ``0x`` strings become ``bytes``.

    Raises
    ------
    ProtocolViolation
        A ``0x`` string is not whole bytes of hex digits (names the field).
    """
    if isinstance(value, str):
        if value.startswith("0x"):
            if not _HEX.fullmatch(value):
                raise ProtocolViolation(f"{field}: expected 0x followed by pairs of hex digits")
            return bytes.fromhex(value[2:])
        return value
    if isinstance(value, list):
        return [record_from_json(v, field=f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: record_from_json(v, field=f"{field}.{k}") for k, v in value.items()}
    return value
