"""Integrity of privacy state on disk: a secret key and an HMAC-SHA256 tag.

A ledger or DP-SGD history that can be edited without detection is a budget that can be
reset. Each state directory holds a 32-byte key (mode 0600, from :mod:`secrets`); state
files carry an HMAC-SHA256 tag over their canonical JSON, and a file whose tag does not
verify is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oneliac_flwr.atomic_files import write_json_atomic
from oneliac_flwr.errors import PrivacyError

__all__ = ["KEY_FILE", "StateIntegrityError", "canonical_json", "load_or_create_key", "read_tagged", "write_tagged"]

KEY_FILE = "state.key"
_KEY_BYTES = 32
_TAG = "hmac_sha256"


class StateIntegrityError(PrivacyError):
    """A privacy state file is missing, tampered with, or does not match its owner's policy."""


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """Sorted-key, compact JSON: the bytes a tag is computed over."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


def _tag(key: bytes, payload: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(payload), hashlib.sha256).hexdigest()


def load_or_create_key(state_dir: str | os.PathLike[str], *, filename: str = KEY_FILE) -> bytes:
    """The state directory's MAC key, created (0600, atomically, never overwritten) on first use.

    Raises
    ------
    StateIntegrityError
        If the key file is readable by group or others, or is not 32 bytes.
    """
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / filename
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process created it first: keep theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StateIntegrityError(f"{path}: a key file must be 0600, is {mode:04o}")
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise StateIntegrityError(f"{path}: expected a {_KEY_BYTES}-byte key, found {len(key)} bytes")
    return key


def write_tagged(path: str | os.PathLike[str], payload: Mapping[str, Any], *, key: bytes) -> Path:
    """Write ``payload`` with its tag, atomically (temporary file, fsync, rename), mode 0600."""
    return write_json_atomic(path, {**payload, _TAG: _tag(key, payload)}, mode=0o600, sort_keys=True)


def read_tagged(path: str | os.PathLike[str], *, key: bytes) -> dict[str, Any]:
    """Read a tagged file and verify its tag (constant-time comparison).

    Raises
    ------
    StateIntegrityError
        If the file is not JSON, has no tag, or its tag does not verify.
    """
    source = Path(path)
    try:
        document = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StateIntegrityError(f"{source}: cannot be read as JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get(_TAG), str):
        raise StateIntegrityError(f"{source}: has no {_TAG} tag; it was not written by this state directory's owner")
    tag = document.pop(_TAG)
    if not hmac.compare_digest(tag, _tag(key, document)):
        raise StateIntegrityError(f"{source}: its {_TAG} tag does not verify: the file was edited or belongs elsewhere")
    return document
