"""Helpers of the SDK tests (a module name of its own: every test folder has a conftest)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

api_conftest = sys.modules["api_conftest"]  # loaded by tests/sdk/conftest.py
ADMIN = api_conftest.ADMIN
PREFIX = api_conftest.PREFIX

FEDAVG = ["aggregation_config.aggregation_method=fedavg", "strategy=fedavg", "privacy_budget=none"]


def fedavg_settings(*, min_participants: int = 3, max_rounds: int = 3, timeout_minutes: float = 5.0,
                    extra: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """Coordinator overrides of a plain (sealed fedavg) federation."""
    return FEDAVG + [
        f"aggregation_config.min_participants={min_participants}",
        f"aggregation_config.max_rounds={max_rounds}",
        f"aggregation_config.timeout_minutes={timeout_minutes}",
        *extra,
    ]


def register(service, state_dirs: list[Path]) -> list[dict]:  # noqa: ANN001 - Service
    """Register one organization per state directory, with its own keys (as ``init`` prints them)."""
    from oneliac_flwr.sdk.state import StateDirectory

    out = []
    with service.client() as admin:
        for folder in state_dirs:
            keys = StateDirectory(folder).registration()
            body = {"organization_name": folder.name, "endpoint": f"https://{folder.name}.example.org/federated",
                    "encryption_key": keys["encryption_key"], "identity_key": keys["identity_key"]}  # fmt: skip
            response = admin.post(f"{PREFIX}/organizations", json=body)
            assert response.status_code == 201, response.text
            out.append(response.json())
    return out


def breast_cancer_frames(parts: int) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """The built-in table as hospital DataFrames (sklearn names, ``target``) and a held-out frame."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.2, random_state=0, stratify=frame["target"])
    return [train.iloc[i::parts].reset_index(drop=True) for i in range(parts)], test.reset_index(drop=True)
