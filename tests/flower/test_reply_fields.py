"""Every field of every reply the ClientApp sends, in every mode, is accounted or data-independent.

A curious coordinator reads every reply. This test runs the real ClientApp for two rounds
in each mode, collects every (record, key) of every reply (training, key advertisement,
unmasking, evaluation and refusals) and fails on any field that is neither

- accounted: the DP release itself (``arrays`` under DP) or the masked vector, or
- declared data-independent below (identity, status, protocol fields, policy values),

and checks that the values declared data-independent really are (placeholders equal 1,
refusals carry no detail).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.training import get_weights

from conftest import NODES, RUN_ID, AppGrid

# Data-independent by construction: who, what status, which check refused (a name).
IDENTITY = {("oneliac", "organization-id"), ("oneliac", "status"), ("oneliac", "check"), ("oneliac", "reason")}
# Values of the policy the hospital declares: the same for every hospital with the same policy.
DECLARED = {("oneliac", "declared-clip_norm"), ("oneliac", "declared-mechanism"), ("oneliac", "declared-noise_multiplier")}
PLACEHOLDER = {("metrics", "num-examples")}  # must be 1: the real weight is inside the masked vector or unused
MASKED = {("masked", "*")}  # uniformly random ring elements without the other parties' masks
RELEASE = {("arrays", "*")}  # the accounted DP release (clipped and noised update)
# Sent in the clear by design, only by plain aggregation without DP, which protects nothing from the coordinator.
PLAIN_NO_DP = {("arrays", "*"), ("metrics", "num-examples"), ("metrics", "train_loss"), ("metrics", "train_accuracy"),
               ("metrics", "eval_loss"), ("metrics", "eval_accuracy"), ("oneliac", "label-counts"),
               # the received global model's evaluation, carried by the training reply (no evaluate exchange)
               ("metrics", "received_eval_loss"), ("metrics", "received_eval_accuracy"),
               ("metrics", "received_eval_examples")}  # fmt: skip


def _protocol(key: str) -> bool:
    return True  # every secure-sum record field is a protocol field (keys, envelopes, indices)


MODES = {
    "none-fedavg": ({}, PLAIN_NO_DP | IDENTITY),
    "none-secure_sum": ({"aggregation_config": {"aggregation_method": "secure_sum"}}, IDENTITY | PLACEHOLDER | MASKED),
    "sample-fedavg": ({"privacy_budget": {"mode": "sample", "epsilon": 50.0}}, IDENTITY | DECLARED | PLACEHOLDER | RELEASE),
    "sample-secure_sum": (
        {"privacy_budget": {"mode": "sample", "epsilon": 50.0}, "aggregation_config": {"aggregation_method": "secure_sum"}},
        IDENTITY | DECLARED | PLACEHOLDER | MASKED,
    ),
    "organization-central": ({"privacy_budget": {"mode": "organization", "epsilon": 50.0}}, IDENTITY | DECLARED | PLACEHOLDER | RELEASE),
    "organization-distributed": (
        {
            "privacy_budget": {"mode": "organization", "epsilon": 8.0, "noise_placement": "distributed"},
            "aggregation_config": {"aggregation_method": "secure_sum"},
        },
        IDENTITY | DECLARED | PLACEHOLDER | MASKED,
    ),
    "release-fedavg": ({"privacy_budget": {"mode": "release", "epsilon": 50.0}}, IDENTITY | DECLARED | PLACEHOLDER | RELEASE),
    "release-secure_sum": (
        {"privacy_budget": {"mode": "release", "epsilon": 50.0}, "aggregation_config": {"aggregation_method": "secure_sum"}},
        IDENTITY | DECLARED | PLACEHOLDER | MASKED,
    ),
}


class RecordingGrid(AppGrid):
    """Delivers to the real ClientApp and keeps every reply."""

    def __init__(self, config: ExperimentConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.replies: list[tuple[str, Message]] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        kind = messages[0].metadata.message_type if messages else ""
        self.replies.extend((kind, r) for r in replies)
        return replies


def _config(groups: dict) -> ExperimentConfig:
    data: dict = {
        "federation": {"num_organizations": len(NODES)},
        "aggregation_config": {"max_rounds": 2, "min_participants": 2},
        "faults": {"nan": [3], "bypass_client_checks": False},  # org-3 refuses: refusals are audited too
    }
    for group, values in groups.items():
        data.setdefault(group, {}).update(values)
    return ExperimentConfig.from_dict(data)


def _fields(message: Message) -> set[tuple[str, str]]:
    fields: set[tuple[str, str]] = set()
    for name, record in message.content.items():
        if isinstance(record, ArrayRecord):
            fields.add((name, "*"))
        else:
            fields.update((name, str(key)) for key in record)
    return fields


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_reply_field_is_accounted_or_data_independent(mode: str) -> None:
    groups, allowed = MODES[mode]
    config = _config(groups)
    grid = RecordingGrid(config)
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    strategy.start(grid, ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=2, timeout=5)
    assert grid.replies, "no reply was sent"
    kinds = {kind for kind, _ in grid.replies}
    assert "train" in kinds
    refusals = 0
    for kind, reply in grid.replies:
        assert not reply.has_error(), f"{mode}: {kind} error reply carries text: {reply.error.reason}"
        for record_name, key in _fields(reply):
            if record_name == "secure-sum" and _protocol(key):
                continue
            assert (record_name, key) in allowed, f"{mode}: {kind} reply sends {record_name}.{key}, neither accounted nor data-independent"
        info = reply.content.get("oneliac")
        if isinstance(info, ConfigRecord) and info.get("status") == "rejected":
            refusals += 1
            assert info.get("reason") == "", f"{mode}: a refusal sends a detail: {info.get('reason')!r}"
        metrics = reply.content.get("metrics")
        if isinstance(metrics, MetricRecord) and ("metrics", "num-examples") in allowed - PLAIN_NO_DP:
            assert metrics["num-examples"] == 1, f"{mode}: num-examples {metrics['num-examples']} is a sample count"
        if mode.startswith("sample") and isinstance(info, ConfigRecord):
            # z and epsilon of DP-SGD follow from a hospital's row count
            assert "declared-noise_multiplier" not in info and "declared-epsilon_spent" not in info
    assert refusals >= 1  # org-3's NaN update was refused, and the refusal was audited


def test_a_secure_sum_round_without_dp_still_reports_loss_accuracy_and_labels() -> None:
    """The statistics moved inside the masked vector: the coordinator gets their sums only."""
    config = _config({"aggregation_config": {"aggregation_method": "secure_sum"}, "faults": {"nan": []}})
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    strategy.start(AppGrid(config), ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=2, timeout=5)
    first, second = strategy.records[1], strategy.records[2]
    assert 0 < first.train_loss < 1.5 and 0.3 < first.train_accuracy <= 1
    labels = first.secure_sum["label_distribution"]
    assert len(labels) == 2 and abs(sum(labels) - 1) < 1e-3 and 0.5 < labels[1] < 0.75  # about 63% benign
    # round 2's clients evaluated the model of round 1: that is recorded on round 1
    assert first.federated_accuracy is not None and 0.3 < first.federated_accuracy <= 1
    assert first.per_organization == {}  # nothing per organization
