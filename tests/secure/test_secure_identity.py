"""Hospital identities: key files, the CLI, signature bindings, pins and trust on first use."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from oneliac_flwr.errors import ConfigError, ProtocolViolation
from oneliac_flwr.keys import main
from oneliac_flwr.secure import Identity, PinnedTrust, TofuTrust, identity_fingerprint, load_pins
from oneliac_flwr.secure.identity import ANY_ROUND, key_statement, verify_key_signature

KEY = bytes(range(32))
BINDING = {"federation": "fed", "organization": "h1", "run_id": 7, "kind": "mask", "round": 3, "public_key": KEY}


def test_identity_file_is_created_once_and_loaded(tmp_path: Path) -> None:
    created = Identity.create(tmp_path / "h1")
    file = tmp_path / "h1" / "identity.ed25519"
    assert file.stat().st_mode & 0o777 == 0o600
    assert Identity.load(tmp_path / "h1").fingerprint == created.fingerprint
    assert Identity.load(file).public_bytes == created.public_bytes
    assert created.fingerprint == hashlib.sha256(created.public_bytes).hexdigest()
    with pytest.raises(ConfigError, match="exists; refusing to replace an identity"):
        Identity.create(tmp_path / "h1")
    assert Identity.load_or_create(tmp_path / "h1").fingerprint == created.fingerprint
    fresh = Identity.load_or_create(tmp_path / "h2" / "key.ed25519")
    assert (tmp_path / "h2" / "key.ed25519").exists() and fresh.fingerprint != created.fingerprint
    (tmp_path / "short.ed25519").write_bytes(b"x" * 31)
    with pytest.raises(ConfigError, match="expected a raw 32-byte Ed25519 key, got 31 bytes"):
        Identity.load(tmp_path / "short.ed25519")
    with pytest.raises(ConfigError, match="cannot read the identity key"):
        Identity.load(tmp_path / "absent.ed25519")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(ConfigError, match="cannot create"):
        Identity.create(tmp_path / "blocker" / "x.ed25519")
    with pytest.raises(ConfigError, match="expected an Ed25519 private key"):
        Identity("not a key")  # type: ignore[arg-type]


def test_load_or_create_loses_a_race_gracefully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    winner = Identity.create(tmp_path / "h1")
    monkeypatch.setattr(Path, "exists", lambda self: False)  # the file appears between check and create
    assert Identity.load_or_create(tmp_path / "h1").fingerprint == winner.fingerprint


def test_cli_init_prints_the_fingerprint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--out", str(tmp_path / "id")]) == 0
    printed = capsys.readouterr().out.strip()
    assert len(printed) == 64 and printed == Identity.load(tmp_path / "id").fingerprint
    assert main(["fingerprint", "--key", str(tmp_path / "id")]) == 0
    assert capsys.readouterr().out.strip() == printed
    assert main(["init", "--out", str(tmp_path / "id")]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    out = subprocess.run(
        [sys.executable, "-m", "oneliac_flwr.keys", "init", "--out", str(tmp_path / "other")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == Identity.load(tmp_path / "other").fingerprint


def test_signatures_bind_every_field() -> None:
    me = Identity.generate()
    sig = me.sign_key(**BINDING)
    verify_key_signature(sig, identity_pk=me.public_bytes, **BINDING)
    changes = [("federation", "other"), ("organization", "h2"), ("run_id", 8), ("kind", "envelope"),
               ("round", 4), ("round", ANY_ROUND), ("public_key", bytes(32))]  # fmt: skip
    for name, value in changes:
        with pytest.raises(ProtocolViolation, match="signature_check"):
            verify_key_signature(sig, identity_pk=me.public_bytes, **{**BINDING, name: value})
    with pytest.raises(ProtocolViolation, match="signature_check: the mask key of organization 'h1'"):
        verify_key_signature(sig, identity_pk=Identity.generate().public_bytes, **BINDING)
    with pytest.raises(ProtocolViolation, match="signature_check"):
        verify_key_signature(sig[:10], identity_pk=me.public_bytes, **BINDING)
    # Names are length-prefixed: ("ab", "c") and ("a", "bc") are different statements.
    assert key_statement(**{**BINDING, "federation": "ab", "organization": "c"}) != key_statement(
        **{**BINDING, "federation": "a", "organization": "bc"}
    )
    with pytest.raises(ProtocolViolation, match="kind: expected 'envelope' or 'mask'"):
        key_statement(**{**BINDING, "kind": "other"})
    for bad in ("", "two words", "x" * 257):
        with pytest.raises(ProtocolViolation, match="organization: expected a non-empty name"):
            key_statement(**{**BINDING, "organization": bad})
    with pytest.raises(ProtocolViolation, match="public_key: expected 32 bytes"):
        key_statement(**{**BINDING, "public_key": b"short"})
    with pytest.raises(ProtocolViolation, match="identity key: expected 32 bytes"):
        identity_fingerprint(b"short")


def test_pin_file(tmp_path: Path) -> None:
    a, b = Identity.generate().fingerprint, Identity.generate().fingerprint
    pins = tmp_path / "pins"
    pins.write_text(f"# organization-id fingerprint\nh1 {a}\n\nh2 {b.upper()}   # upper case is fine\n")
    assert load_pins(pins) == {"h1": a, "h2": b}
    trust = PinnedTrust(load_pins(pins))
    trust.check(federation="f", organization="h1", fingerprint=a)
    with pytest.raises(ProtocolViolation, match=f"pin_check: organization 'h2' presents identity {a}, pinned {b}"):
        trust.check(federation="f", organization="h2", fingerprint=a)
    with pytest.raises(ProtocolViolation, match="pin_check: organization 'h3' has no pin"):
        trust.check(federation="f", organization="h3", fingerprint=a)
    with pytest.raises(ConfigError, match="cannot read the pin file"):
        load_pins(tmp_path / "absent")
    for bad, why in ((f"h1 {a} extra", "expected 'organization-id"), (f"h1 {a}\nh1 {b}", "pinned twice")):
        pins.write_text(bad)
        with pytest.raises(ConfigError, match=why):
            load_pins(pins)


def test_trust_on_first_use_records_and_refuses_a_changed_key(tmp_path: Path) -> None:
    store = tmp_path / "state" / "known.json"
    a, b = Identity.generate().fingerprint, Identity.generate().fingerprint
    tofu = TofuTrust(store)
    assert tofu.known() == {}
    tofu.check(federation="f", organization="h1", fingerprint=a)  # first use: recorded
    TofuTrust(store).check(federation="f", organization="h1", fingerprint=a)  # survives a restart
    TofuTrust(store).check(federation="g", organization="h1", fingerprint=b)  # federations are separate
    with pytest.raises(ProtocolViolation, match=rf"tofu_check: organization 'h1' changed its identity from {a} to {b}"):
        TofuTrust(store).check(federation="f", organization="h1", fingerprint=b)
    assert TofuTrust(store).known() == {"f": {"h1": a}, "g": {"h1": b}}
    store.write_text("{not json")
    with pytest.raises(ConfigError, match="secure-trust-store: cannot read"):
        tofu.check(federation="f", organization="h1", fingerprint=a)
    store.write_text("[]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        tofu.known()
