"""Provisioning end to end through the real ClientApp: identities on each hospital's disk,
pins by organization that survive new runs and SuperNode restarts, substitution refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.flower.records import SECURE_SUM
from oneliac_flwr.keys import main as keys_main
from oneliac_flwr.secure import Identity
from oneliac_flwr.training import get_weights

from conftest import AppGrid

ORGS = ["org-0", "org-1", "org-2", "org-3"]


def _config() -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": 4},
            "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": 2, "max_rounds": 1},
            "strategy": {"fraction_evaluate": 0.0},
        }
    )


@pytest.fixture
def provisioned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """Each hospital runs ``python -m oneliac_flwr.keys init``; fingerprints go into one pin file."""
    lines = []
    for org in ORGS:
        assert keys_main(["init", "--out", str(tmp_path / org)]) == 0
        lines.append(f"{org} {capsys.readouterr().out.strip()}\n")
    pins = tmp_path / "pins.txt"
    pins.write_text("# organization-id fingerprint\n" + "".join(lines))
    return {"root": tmp_path, "pins": pins}


def _run(paths: dict[str, Path], *, run_id: int, nodes: list[int], **grid_options):
    config = _config()
    node_config = {
        node: {"secure-identity": str(paths["root"] / ORGS[i]), "secure-pins": str(paths["pins"])}
        for i, node in enumerate(nodes)
    }
    saved = TaskIdentity.run_id
    TaskIdentity.run_id = run_id
    try:
        grid = AppGrid(config, nodes=nodes, node_config=node_config, run_id=run_id, **grid_options)
        strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=run_id)
        initial = ArrayRecord(numpy_ndarrays=get_weights(new_model(config)))
        strategy.start(grid, initial, num_rounds=1, timeout=5)
    finally:
        TaskIdentity.run_id = saved
    return strategy.records[1]


def test_pins_survive_new_runs_and_restarts_and_refuse_substitution(provisioned: dict[str, Path]) -> None:
    # Two runs in a row; the second after every SuperNode restarted (new node ids, empty state).
    for run_id, nodes in ((1, [101, 202, 303, 404]), (2, [111, 222, 333, 444])):
        record = _run(provisioned, run_id=run_id, nodes=nodes)
        assert record.status == "ok", record.failure_reason
        assert sorted(record.secure_sum["counted"]) == ORGS
        assert record.rejected == []

    # The coordinator substitutes org-1's mask key in what it sends org-0: org-0 refuses.
    def substitute(node: int, message: Message) -> None:
        if node == 121 and message.metadata.message_type == "train":
            record = dict(message.content[SECURE_SUM])
            s_pks = list(record["s_pks"])
            s_pks[1] = Identity.generate().public_bytes  # any 32 bytes the coordinator chose
            content = RecordDict(dict(message.content))  # the strategy shares one content between messages
            content[SECURE_SUM] = ConfigRecord({**record, "s_pks": s_pks})
            message.content = content

    record = _run(provisioned, run_id=3, nodes=[121, 232, 343, 454], outgoing=substitute)
    assert record.status == "ok", (record.failure_reason, record.rejected)
    (refusal,) = record.rejected
    assert (refusal.organization, refusal.check) == ("org-0", "signature_check")
    assert sorted(record.secure_sum["counted"]) == ORGS[1:]

    # org-2's key is replaced on its disk (a substituted identity): every pinned peer refuses.
    identity_file = provisioned["root"] / "org-2" / "identity.ed25519"
    identity_file.unlink()
    Identity.create(identity_file)
    record = _run(provisioned, run_id=4, nodes=[131, 242, 353, 464])
    assert record.status in ("failed", "skipped")  # too few updates: the model is left unchanged
    assert {r.check for r in record.rejected} == {"pin_check"}
    assert {r.organization for r in record.rejected} == {"org-0", "org-1", "org-3"}


def test_low_order_key_leaves_one_hospital_out_not_the_round(tmp_path: Path) -> None:
    config = _config()

    def low_order(node: int, kind: str, reply: Message) -> None:
        if node == 404 and kind == "train.secure_keys":
            reply.content[SECURE_SUM]["s_pk"] = bytes(32)

    hospital = {n: {"secure-identity": str(tmp_path / str(n)), "secure-trust-store": str(tmp_path / f"{n}.json")}
                for n in (101, 202, 303, 404)}  # fmt: skip
    grid = AppGrid(config, on_reply=low_order, node_config=hospital)
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=1)
    strategy.start(grid, ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=1, timeout=5)
    record = strategy.records[1]
    assert record.status == "ok", record.failure_reason
    assert sorted(record.secure_sum["counted"]) == ORGS[:3]


def test_without_pins_trust_on_first_use_refuses_a_changed_identity(tmp_path: Path) -> None:
    nodes = [101, 202, 303, 404]
    paths = {"root": tmp_path}
    hospital = {n: {"secure-identity": str(tmp_path / ORGS[i]), "secure-trust-store": str(tmp_path / f"{ORGS[i]}.json")}
                for i, n in enumerate(nodes)}  # fmt: skip

    def run(run_id: int):
        saved = TaskIdentity.run_id
        TaskIdentity.run_id = run_id
        try:
            config = _config()
            strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=run_id)
            grid = AppGrid(config, nodes=nodes, node_config=hospital, run_id=run_id)
            strategy.start(grid, ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=1, timeout=5)
        finally:
            TaskIdentity.run_id = saved
        return strategy.records[1]

    assert run(1).status == "ok"  # first use: every hospital records its peers' identities
    assert run(2).status == "ok"  # a new run: the same identities
    (paths["root"] / "org-2" / "identity.ed25519").unlink()  # org-2 now presents another identity
    record = run(3)
    assert {r.check for r in record.rejected} == {"tofu_check"}
    assert {r.organization for r in record.rejected} == {"org-0", "org-1", "org-3"}
