"""Real processes on loopback, driven by the command blocks of ``docs/deployment.md``.

The guide's fenced blocks tagged ``step=<name>`` are read from the Markdown and run as
written, after :meth:`Site.localize` maps hosts, ports and folders to this machine
(``coordinator.example.org`` and ``10.20.0.5`` to ``127.0.0.1``, ``/etc/oneliac`` ... to a
temporary folder, ``h1`` to each hospital). Every process started here is stopped by its
process-group id in a ``finally``, also when a test fails. ``FLWR_HOME`` is a temporary
folder; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deployment.md"
BIN = Path(sys.executable).parent
HOSPITALS = ("h1", "h2", "h3")
FEATURES = ("mean_radius", "mean_texture", "mean_perimeter", "mean_area")

_BLOCK = re.compile(r"^( *)```(\w+) step=([\w-]+)\n(.*?)^\1```$", re.S | re.M)


def guide_blocks() -> dict[str, tuple[str, str]]:
    """``step -> (language, text)`` for every tagged block of the guide."""
    blocks: dict[str, tuple[str, str]] = {}
    for _indent, language, step, text in _BLOCK.findall(GUIDE.read_text()):
        if step in blocks:
            raise AssertionError(f"docs/deployment.md: step={step} appears twice")
        blocks[step] = (language, textwrap.dedent(text))
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_hospital_tables(folder: Path) -> dict[str, Path]:
    """Three hospitals' CSVs made from scikit-learn's breast-cancer table (disjoint rows)."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    frame = frame.rename(columns={"target": "diagnosis"})
    order = np.random.default_rng(7).permutation(len(frame))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, org in enumerate(HOSPITALS):
        part = frame.iloc[order[i::3]]
        paths[org] = folder / f"{org}.csv"
        part[[*FEATURES, "diagnosis"]].to_csv(paths[org], index=False)
    return paths


@dataclass
class Site:
    """One machine standing in for the coordinator and every hospital."""

    root: Path
    superlink_port: int = field(default_factory=free_port)
    supernode_ports: dict[str, int] = field(default_factory=lambda: {org: free_port() for org in HOSPITALS})
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    blocks: dict[str, tuple[str, str]] = field(default_factory=guide_blocks)

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "FLWR_HOME": str(self.root / "flwr-home"), "FLWR_DISABLE_UPDATE_CHECK": "1"}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
        env["ONELIAC_SECURE_HOME"] = str(self.root / "secure-home")
        return env

    def path(self, absolute: str) -> Path:
        """Where a folder of the guide lives here."""
        return self.root / absolute.lstrip("/")

    def localize(self, text: str, *, organization: str = "h1", output: str = "run-1") -> str:
        """The guide's text with this machine's hosts, ports and folders."""
        text = text.replace("coordinator.example.org:8000", f"127.0.0.1:{self.superlink_port}")
        text = text.replace("coordinator.example.org", "localhost").replace("10.20.0.5", "127.0.0.1")
        text = text.replace("--port 8000", f"--port {self.superlink_port}")
        text = text.replace("--port 9094", f"--port {self.supernode_ports[organization]}")
        for folder in ("/etc/oneliac", "/var/lib/oneliac", "/data/", "/srv/"):
            text = text.replace(folder, str(self.path(folder)) + ("/" if folder.endswith("/") else ""))
        text = text.replace("runs/run-1", f"runs/{output}")
        return re.sub(r"\bh1\b", organization, text)

    def command(self, step: str, **kwargs: str) -> str:
        language, text = self.blocks[step]
        if language != "bash":
            raise AssertionError(f"step={step} is a {language} block")
        return self.localize(text, **kwargs)

    def run(self, step: str, *, extra: str = "", timeout: float = 300, **kwargs: str) -> subprocess.CompletedProcess:
        """Run a one-shot block of the guide with bash; fail the test on a non-zero exit."""
        script = "set -euo pipefail\n" + self.command(step, **kwargs).rstrip("\n") + extra
        done = subprocess.run(["bash", "-c", script], env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"step={step} failed ({done.returncode}):\n{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def start(self, name: str, step: str, **kwargs: str) -> subprocess.Popen:
        """Start a long-running block of the guide in its own process group (stopped by :meth:`stop`)."""
        return self.start_command(name, self.command(step, **kwargs))

    def start_command(self, name: str, command: str) -> subprocess.Popen:
        """Start an already localized command in its own process group."""
        argv = shlex.split(command.replace("\\\n", " "))
        log = (self.root / f"{name}.log").open("a")
        self.processes[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
        )
        log.close()
        return self.processes[name]

    def stop(self, name: str, *, sig: int = signal.SIGTERM) -> None:
        """Stop one process (and its ClientApp/ServerApp children) by its process-group id."""
        process = self.processes.pop(name, None)
        if process is None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def wait_for_superlink(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes["superlink"]
            if process.poll() is not None:
                raise AssertionError(f"flower-superlink exited: {self.log('superlink')}")
            try:
                with socket.create_connection(("127.0.0.1", self.superlink_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"flower-superlink not listening after {timeout} s: {self.log('superlink')}")

    def online_nodes(self) -> int:
        done = subprocess.run(
            [str(BIN / "flwr"), "supernode", "list", "oncology", "--format", "json"],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            return 0
        try:
            nodes = json.loads(done.stdout).get("nodes", [])
        except json.JSONDecodeError:
            return 0
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.online_nodes() >= count:
                return
            for org in HOSPITALS:
                process = self.processes.get(org)
                if process is not None and process.poll() is not None:
                    raise AssertionError(f"SuperNode {org} exited: {self.log(org)}")
            time.sleep(1)
        raise AssertionError(f"fewer than {count} SuperNodes online after {timeout} s: {self.log('superlink')}")

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)
