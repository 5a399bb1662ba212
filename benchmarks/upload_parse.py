"""CPU cost of one masked upload's body, in one process (no HTTP): the two forms of ``POST /gradients``.

    python benchmarks/upload_parse.py                 # 1M parameters (4 MB of uint32 ring elements)
    python benchmarks/upload_parse.py --parameters 100000 --repeats 9

Server side: ``decode_upload`` and ``upload_digest`` of the JSON form (``0x`` hex) and of the
safetensors form, next to the path they replaced (pydantic's capture-group pattern on the
hex string, ``json.loads``, the digest as ``json.dumps`` of the whole body, then
``bytes.fromhex``). Client side: building each body. Median and minimum milliseconds over
``--repeats`` runs; stdout carries the JSON only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from oneliac_flwr.api.uploads import OCTET_STREAM, decode_upload, encode_upload, upload_digest


class _Before(BaseModel):
    """The JSON body's model as it was validated before the binary form (the pattern only)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    organization_id: str
    round: int
    gradients_encrypted: str = Field(pattern=r"^0x([0-9a-fA-F]{2})+$")
    model_version: str
    sample_count: int
    privacy: dict[str, Any] | None = None
    secure_sum: dict[str, Any] | None = None


def _timed(run: Callable[[], object], repeats: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return {"median_ms": round(float(np.median(seconds)) * 1000, 2), "min_ms": round(min(seconds) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    vector = np.random.default_rng(0).integers(0, 2**32, size=args.parameters, dtype=np.uint32)
    fields = {"organization_id": "org_0123456789abcdef", "round": 1, "model_version": "1.0.0", "sample_count": 1,
              "secure_sum": {"envelopes": ["0x" + "ab" * 200] * 10}}  # fmt: skip
    dtype = np.dtype("<u4")

    def json_body() -> bytes:
        return json.dumps({**fields, "gradients_encrypted": "0x" + vector.tobytes().hex()}).encode()

    def binary_body() -> bytes:
        return encode_upload(fields, vector)

    as_json, as_binary = json_body(), binary_body()

    def before() -> tuple[bytes, str]:
        body = _Before.model_validate(json.loads(as_json))
        digest = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return bytes.fromhex(body.gradients_encrypted[2:]), digest

    def parse(raw: bytes, content_type: str) -> Callable[[], tuple[bytes, str]]:
        def run() -> tuple[bytes, str]:
            body = decode_upload(raw, content_type, dtype=dtype)
            return body.gradients_encrypted, upload_digest(body)

        return run

    json_now, binary_now = parse(as_json, "application/json"), parse(as_binary, OCTET_STREAM)
    if not before()[0] == json_now()[0] == binary_now()[0] or json_now()[1] != binary_now()[1]:
        raise SystemExit("the two forms do not decode to the same upload")
    print(json.dumps({
        "parameters": args.parameters, "repeats": args.repeats,
        "body_bytes": {"json": len(as_json), "safetensors": len(as_binary)},
        "server": {"json_before": _timed(before, args.repeats), "json": _timed(json_now, args.repeats),
                   "safetensors": _timed(binary_now, args.repeats)},
        "client": {"json": _timed(json_body, args.repeats), "safetensors": _timed(binary_body, args.repeats)},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
