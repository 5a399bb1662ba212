"""Files that are never half-written: a temporary file, fsync, then ``os.replace``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic"]


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, mode: int | None = None, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically.

    Parameters
    ----------
    path : path
        The file; its folder is created if missing.
    data : Any
        JSON-compatible data (NaN and infinities are refused).
    mode : int, optional
        Permission bits set on the file before any byte is written (e.g. ``0o600``).
    sort_keys : bool
        Sort object keys.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            json.dump(data, handle, indent=2, allow_nan=False, sort_keys=sort_keys)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
