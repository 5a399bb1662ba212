"""A hospital's policy and its privacy state on disk: tampering, loss and policy changes are refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from oneliac_flwr.privacy import GaussianRelease
from oneliac_flwr.privacy._validation import PrivacyConfigError
from oneliac_flwr.privacy.hospital import STATE_FILE, HospitalPolicy, HospitalPrivacyState
from oneliac_flwr.privacy.integrity import KEY_FILE, StateIntegrityError, load_or_create_key, read_tagged, write_tagged

POLICY = HospitalPolicy(unit="organization", epsilon=5.0, delta=1e-5, min_noise_multiplier=0.5)


def test_state_round_trips_and_accumulates(tmp_path: Path) -> None:
    state = HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY)
    state.record_release([GaussianRelease(2.0)], round_number=1, label="organization")
    again = HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY)
    assert again.epsilon() == pytest.approx(state.epsilon()) and again.epsilon() > 0
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["ledger"].update(entries=[]),
        lambda d: d.update(dpsgd_history=[100.0, 0.1, 1.0]),
        lambda d: d["policy"].update(epsilon=1000.0),
    ],
    ids=["ledger-emptied", "history-forged", "cap-raised"],
)
def test_an_edited_state_file_is_refused(tmp_path: Path, edit) -> None:
    state = HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY)
    state.record_release([GaussianRelease(2.0)], round_number=1, label="organization")
    data = json.loads((tmp_path / STATE_FILE).read_text())
    edit(data)
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    with pytest.raises(StateIntegrityError, match="tag does not verify"):
        HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY)


def test_a_deleted_state_file_is_refused_and_an_explicit_reset_works(tmp_path: Path) -> None:
    HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY).record_release(
        [GaussianRelease(2.0)], round_number=1, label="organization"
    )
    (tmp_path / STATE_FILE).unlink()
    with pytest.raises(StateIntegrityError, match="missing"):
        HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY)
    (tmp_path / KEY_FILE).unlink()  # the operator's explicit reset
    assert HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY).epsilon() == 0.0


def test_another_policy_or_organization_is_refused(tmp_path: Path) -> None:
    HospitalPrivacyState(tmp_path, organization="h1", policy=POLICY)
    with pytest.raises(StateIntegrityError, match="policy"):
        HospitalPrivacyState(tmp_path, organization="h1", policy=HospitalPolicy(unit="organization", epsilon=50.0, delta=1e-5))
    with pytest.raises(StateIntegrityError, match="organization"):
        HospitalPrivacyState(tmp_path, organization="h2", policy=POLICY)


def test_a_shrinking_dpsgd_history_is_refused(tmp_path: Path) -> None:
    state = HospitalPrivacyState(tmp_path, organization="h1", policy=HospitalPolicy(unit="sample", epsilon=5.0, delta=1e-5))
    state.record_dpsgd([(1.0, 0.25, 8)])
    state.record_dpsgd([(1.0, 0.25, 12)])  # Opacus merges equal consecutive entries
    with pytest.raises(StateIntegrityError, match="every step"):
        state.record_dpsgd([(1.0, 0.25, 4)])


def test_policy_values_are_validated_with_the_field_named() -> None:
    with pytest.raises(PrivacyConfigError, match="privacy-epsilon"):
        HospitalPolicy(unit="sample", epsilon=0.0, delta=1e-5)
    with pytest.raises(PrivacyConfigError, match="privacy-unit"):
        HospitalPolicy(unit="patient", epsilon=1.0, delta=1e-5)  # type: ignore[arg-type]
    with pytest.raises(PrivacyConfigError, match="privacy-delta"):
        HospitalPolicy(unit="sample", epsilon=1.0, delta=1.0)


def test_policy_refusals() -> None:
    assert POLICY.refusal(unit="organization", delta=1e-5, noise_multiplier=0.5) is None
    assert "unit" in POLICY.refusal(unit="release", delta=1e-5, noise_multiplier=None)
    assert "delta" in POLICY.refusal(unit="organization", delta=2e-5, noise_multiplier=1.0)
    assert "at least 0.5" in POLICY.refusal(unit="organization", delta=1e-5, noise_multiplier=0.1)


def test_tagged_files_detect_any_edit_and_a_missing_tag(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key and len(key) == 32
    write_tagged(tmp_path / "x.json", {"a": 1}, key=key)
    assert read_tagged(tmp_path / "x.json", key=key) == {"a": 1}
    (tmp_path / "y.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(StateIntegrityError, match="no hmac_sha256 tag"):
        read_tagged(tmp_path / "y.json", key=key)
    with pytest.raises(StateIntegrityError, match="does not verify"):
        read_tagged(tmp_path / "x.json", key=bytes(32))
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(StateIntegrityError, match="32-byte key"):
        load_or_create_key(tmp_path)
