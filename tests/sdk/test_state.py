"""The hospital's state directory: owner-only, refused when others can read it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from oneliac_flwr.errors import ConfigError, ProtocolViolation
from oneliac_flwr.privacy import GaussianRelease
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.sdk.state import StateDirectory
from oneliac_flwr.secure import fingerprint


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_everything_is_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "hospital"
    state = StateDirectory(root)
    keys = state.registration()
    policy = state.policy(HospitalPolicy(unit="release", epsilon=1.0, delta=1e-5))
    with state.privacy(organization="org_0123456789abcdef", policy=policy) as privacy:
        privacy.record_release([GaussianRelease(5.0)], round_number=1, label="release:x")
    state.pin_coordinator_key("http://127.0.0.1:1", bytes(range(1, 33)))
    state.save_submission(1, "digest", {"round": 1})
    found = modes(root)
    assert {"identity.ed25519", "encryption.x25519", "policy.json", "coordinator.json",
            "privacy/privacy_state.json", "privacy/state.key", "submissions/round-1.json"} <= set(found)  # fmt: skip
    for name, mode in found.items():
        assert mode == (0o700 if (root / name).is_dir() else 0o600), (name, oct(mode))
    # the printed keys are the stored ones, and stable
    again = StateDirectory(root)
    assert again.registration() == keys and keys["encryption_key"].startswith("0x") and len(keys["encryption_key"]) == 66
    assert keys["encryption_key_fingerprint"] == fingerprint(bytes.fromhex(keys["encryption_key"][2:]))
    assert again.policy(HospitalPolicy(unit="none", epsilon=9.0, delta=1e-5)) == policy  # the saved policy wins


def test_readable_directory_or_key_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    with pytest.raises(ConfigError, match="owner-only"):
        StateDirectory(root)
    root.chmod(0o700)
    state = StateDirectory(root)
    state.encryption_key()
    (root / "encryption.x25519").chmod(0o644)
    with pytest.raises(ConfigError, match="must be 0600"):
        state.encryption_key()


def test_a_changed_coordinator_key_is_refused(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "h")
    state.pin_coordinator_key("https://coordinator", b"\x01" * 32)
    state.pin_coordinator_key("https://coordinator", b"\x01" * 32)
    with pytest.raises(ProtocolViolation, match="coordinator_key_check"):
        state.pin_coordinator_key("https://coordinator", b"\x02" * 32)


def test_pending_secure_round_is_kept_owner_only_once_per_round_and_forgotten(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "hospital")
    assert state.pending_round() is None and state.saved_policy() is None
    upload = {"organization_id": "org_a", "round": 3, "model_version": "1.0.2", "gradients_encrypted": "0x00ff",
              "sample_count": 1, "secure_sum": {"x": 1}}  # fmt: skip
    state.save_pending_round(organization="org_a", run_id=7, node_id=11, upload=upload)
    file = tmp_path / "hospital" / "secure-round.json"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert state.pending_round() == {"organization": "org_a", "round": 3, "model_version": "1.0.2", "run_id": 7,
                                     "node_id": 11, "upload": upload}  # fmt: skip
    state.save_pending_round(organization="org_a", run_id=7, node_id=11, upload=upload)  # the same bytes again: fine
    with pytest.raises(ProtocolViolation, match="different masked upload for round 3"):
        state.save_pending_round(organization="org_a", run_id=7, node_id=11, upload={**upload, "gradients_encrypted": "0x01"})
    state.clear_pending_round(2)  # another round: kept
    assert state.pending_round()["round"] == 3
    state.clear_pending_round(3)
    assert state.pending_round() is None and not file.exists()
    file.write_text('{"round": 1}')
    file.chmod(0o600)
    with pytest.raises(ConfigError, match="not a pending secure-sum round"):
        state.pending_round()
    file.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        state.pending_round()


def test_the_secure_client_is_raised_to_malicious_mode_and_never_lowered(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "hospital")
    ids = {"organization": "org_0123456789abcdef", "node_id": 7, "run_id": 11}
    first = state.secure_client(**ids)
    assert first.state_dict()["mode"] == "semi-honest"
    first.advertise_keys(round=1)  # it holds keys now: the saved client is the one to continue
    state.save_secure_client(first)
    raised = state.secure_client(**ids, mode="malicious")  # the federation runs malicious mode
    assert raised.state_dict()["mode"] == "malicious" and raised.has_keys
    assert raised.state_dict()["c_sk"] == first.state_dict()["c_sk"]  # the same client, its keys kept
    state.save_secure_client(raised)
    kept = state.secure_client(**ids, mode="semi-honest")  # a saved malicious-mode client is never lowered
    assert kept.state_dict()["mode"] == "malicious"
    fresh = state.secure_client(**{**ids, "run_id": 12}, mode="malicious")  # another run: a new client, in its mode
    assert fresh.state_dict()["mode"] == "malicious" and not fresh.has_keys
