"""``docs/deployment.md`` followed to the letter, with real processes on loopback.

One TLS ``flower-superlink`` (``--enable-supernode-auth``, ``--database``) and three
``flower-supernode``s, each with its own CSV, registered key, identity, pins and privacy
policy. Run 1 (secure sum, organization-level DP, 2 rounds): hospital h3's SuperNode is
killed with SIGKILL during round 2. Then the SuperLink is restarted, h3 comes back with a
table missing a column, and run 2 resumes the federation's privacy budget.
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from deployment_harness import FEATURES, HOSPITALS, ROOT, Site, write_hospital_tables

pytestmark = pytest.mark.deployment


def _copy_clone(target: Path) -> None:
    """A clone of the repository: what `flwr run .` and `pip wheel .` see."""
    import shutil

    target.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, target / name)
    shutil.copytree(ROOT / "oneliac_flwr", target / "oneliac_flwr", ignore=shutil.ignore_patterns("__pycache__"))


def _results(site: Site, run: str) -> dict[str, Any]:
    return json.loads(site.path(f"/var/lib/oneliac/runs/{run}/results.json").read_text())


def _wait_for_round(site: Site, run: str, round_number: int, process: subprocess.Popen, timeout: float = 900) -> None:
    path = site.path(f"/var/lib/oneliac/runs/{run}/results.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data = json.loads(path.read_text())
            if any(r["round"] >= round_number for r in data["rounds"]):
                return
        if process.poll() is not None:
            raise AssertionError(f"flwr run ended before round {round_number}: {process.stdout.read() if process.stdout else ''}")
        time.sleep(0.5)
    raise AssertionError(f"round {round_number} of {run} not recorded after {timeout} s")


def _wait_for_end(site: Site, run: str, process: subprocess.Popen, timeout: float = 1200) -> str:
    """Wait for `flwr run --stream` and for the final results.json."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"flwr run did not finish in {timeout} s: {out[-3000:]}")
    path = site.path(f"/var/lib/oneliac/runs/{run}/results.json")
    deadline = time.monotonic() + 60  # the ServerApp may still be writing after the stream ends
    while time.monotonic() < deadline:
        if path.exists() and json.loads(path.read_text())["stopped_reason"] != "running":
            return out
        time.sleep(0.5)
    raise AssertionError(f"{run} did not finish: {out[-3000:]}\n{site.log('superlink')}")


def _start_run(site: Site, run: str) -> subprocess.Popen:
    script = "set -euo pipefail\n" + site.command("run", output=run)
    return subprocess.Popen(
        ["bash", "-c", script], env=site.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def first_run(site: Site) -> dict[str, Any]:
    """Steps 1-9 of the guide, run 1 with h3 killed during round 2."""
    clone = site.path("/srv/oneliac-flwr")
    _copy_clone(clone)
    write_hospital_tables(site.path("/data"))
    site.run("wheel")
    wheel = clone / "dist" / "oneliac_flwr-0.1.0-py3-none-any.whl"
    site.run("install", extra=f" --no-deps --no-index --target {site.root / 'installed'} --quiet")
    site.run("certs")
    site.run("coordinator-dirs")
    site.start("superlink", "superlink")
    site.wait_for_superlink()
    config_toml = site.root / "flwr-home" / "config.toml"
    config_toml.parent.mkdir(parents=True, exist_ok=True)
    config_toml.write_text(site.localize(site.blocks["config-toml"][1]))
    fingerprints = {}
    for org in HOSPITALS:
        # each hospital on its own machine: here, its own sub-folder of /etc/oneliac
        site.run("node-key", organization=org)
        pub = site.path(f"/etc/oneliac/node/{org}.pub")
        sent = site.path(f"/etc/oneliac/supernodes/{org}.pub")
        sent.parent.mkdir(parents=True, exist_ok=True)
        sent.write_bytes(pub.read_bytes())
        site.run("register", organization=org)
    for org in HOSPITALS:
        fingerprints[org] = _identity(site, org)
        site.run("state-dir", organization=org)
    pins = "".join(f"{org} {fp}\n" for org, fp in fingerprints.items())
    for org in HOSPITALS:
        _hospital_path(site, org, "pins.txt").write_text("# organization-id fingerprint\n" + pins)
    for org in HOSPITALS:
        _start_supernode(site, org)
    site.wait_for_nodes(3)
    process = _start_run(site, "run-1")
    try:
        _wait_for_round(site, "run-1", 1, process)
        site.stop("h3", sig=signal.SIGKILL)  # mid-run: round 2 is being set up or trained
        out = _wait_for_end(site, "run-1", process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
    return {"results": _results(site, "run-1"), "stream": out, "wheel": wheel}


def _hospital_path(site: Site, org: str, name: str) -> Path:
    """Per-hospital files that the guide keeps under /etc/oneliac (one machine per hospital)."""
    return site.path(f"/etc/oneliac/{name}") if org == "h1" else site.path(f"/etc/oneliac/{org}/{name}")


def _identity(site: Site, org: str) -> str:
    if org == "h1":
        return site.run("identity").stdout.strip()
    command = site.command("identity").replace(str(site.path("/etc/oneliac")), str(site.path(f"/etc/oneliac/{org}")))
    done = subprocess.run(["bash", "-c", command], env=site.env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def _start_supernode(site: Site, org: str) -> None:
    """Step 8's command; hospitals h2 and h3 keep identity and pins in their own sub-folder."""
    if org != "h1":
        text = site.command("supernode", organization=org)
        for name in ("identity", "pins.txt"):
            text = text.replace(str(site.path(f"/etc/oneliac/{name}")), str(site.path(f"/etc/oneliac/{org}/{name}")))
        site.start_command(org, text)
    else:
        site.start(org, "supernode", organization=org)


def test_the_wheel_holds_the_package_and_its_commands(first_run: dict[str, Any], site: Site) -> None:
    names = zipfile.ZipFile(first_run["wheel"]).namelist()
    assert "oneliac_flwr/certs.py" in names and "oneliac_flwr/flower/serverapp.py" in names
    assert (site.root / "installed" / "oneliac_flwr" / "keys.py").exists()


def test_tls_material_and_node_keys_have_the_documented_modes(first_run: dict[str, Any], site: Site) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in site.path("/etc/oneliac/tls").iterdir()}
    assert modes == {"ca.pem": 0o644, "server.pem": 0o644, "ca.key": 0o600, "server.key": 0o600}
    node = site.path("/etc/oneliac/node")
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in node.iterdir()} == {
        **{f"{o}.key": 0o600 for o in HOSPITALS}, **{f"{o}.pub": 0o644 for o in HOSPITALS}
    }


def test_run_with_secure_sum_and_dp_trains_a_model_and_keeps_a_ledger(first_run: dict[str, Any], site: Site) -> None:
    results = first_run["results"]
    assert results["stopped_reason"] == "max_rounds_reached", results["final"]
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert all(r["status"] == "ok" for r in results["rounds"]), [r["failure_reason"] for r in results["rounds"]]
    assert sorted(results["rounds"][0]["participants"]) == ["h1", "h2", "h3"]
    assert sorted(results["rounds"][0]["secure_sum"]["counted"]) == sorted(results["rounds"][0]["participants"])
    report = results["privacy_report"]
    assert report["mode"] == "organization" and report["noise_multiplier"] == 1.5
    assert report["federation"] == "oncology-2027"
    assert 0 < report["epsilon_spent"] <= 8.0
    ledger = Path(report["ledger_path"])
    assert ledger.is_relative_to(site.path("/var/lib/oneliac/coordinator"))
    assert json.loads(ledger.read_text())["totals"]["releases"] == 2
    run_dir = site.path("/var/lib/oneliac/runs/run-1")
    state = torch.load(run_dir / "model.pt", weights_only=True)
    assert state["0.weight"].shape == (2, len(FEATURES))
    for output in ("results.json", "model.pt"):
        assert stat.S_IMODE((run_dir / output).stat().st_mode) == 0o644
    for org in HOSPITALS:  # each hospital's own privacy history
        assert stat.S_IMODE(site.path(f"/var/lib/oneliac/{org}/privacy_state.json").stat().st_mode) == 0o600


def test_a_supernode_killed_mid_run_is_recovered_and_named_once(first_run: dict[str, Any]) -> None:
    results = first_run["results"]
    second = results["rounds"][1]
    assert second["status"] == "ok" and sorted(second["participants"]) == ["h1", "h2"]
    text = json.dumps(results["rounds"])
    assert "node-" not in text  # organizations only, never a Flower node id
    h3 = [r for r in second["rejected"] if r["organization"] == "h3"]
    assert len(second["rejected"]) == 1 and len(h3) == 1, second["rejected"]
    assert h3[0]["check"] == "node_unavailable" and "heartbeat" in h3[0]["reason"]
    if second["secure_sum"]["dropped"]:  # sampled in the setup, then gone: masks recovered
        assert second["secure_sum"]["dropped"] == ["h3"]
        assert second["secure_sum"]["dropouts_recovered"] == 1
    assert set(results["nodes"]) == {"h1", "h2", "h3"}
    assert all(isinstance(i, int) for ids in results["nodes"].values() for i in ids)


@pytest.fixture(scope="module")
def second_run(first_run: dict[str, Any], site: Site) -> dict[str, Any]:
    """Section 11: restart the SuperLink; h3 comes back with a table missing a column."""
    site.stop("superlink")
    site.start("superlink", "superlink")
    site.wait_for_superlink()
    table = site.path("/data/h3.csv")
    pd.read_csv(table).drop(columns=["mean_texture"]).to_csv(table, index=False)
    _start_supernode(site, "h3")
    site.wait_for_nodes(3)
    process = _start_run(site, "run-2")
    try:
        out = _wait_for_end(site, "run-2", process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
    return {"results": _results(site, "run-2"), "stream": out}


def test_a_hospital_with_bad_data_is_rejected_under_its_organization_id(second_run: dict[str, Any], site: Site) -> None:
    for record in second_run["results"]["rounds"]:
        assert sorted(record["participants"]) == ["h1", "h2"]
        [rejection] = record["rejected"]
        assert rejection["organization"] == "h3" and rejection["check"] == "data_check"
        assert str(site.path("/data/h3.csv")) in rejection["reason"] and "mean_texture" in rejection["reason"]


def test_a_restarted_superlink_resumes_the_budget(first_run: dict[str, Any], second_run: dict[str, Any]) -> None:
    before = first_run["results"]["privacy_report"]
    after = second_run["results"]["privacy_report"]
    assert after["ledger_path"] == before["ledger_path"]
    assert after["epsilon_spent"] > before["epsilon_spent"]
    assert after["releases"] > before["releases"]
