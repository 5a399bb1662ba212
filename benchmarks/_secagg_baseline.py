"""Flower's SecAgg+ as the baseline of ``benchmarks/secure_sum.py`` (legacy API, flwr 1.42).

Two ways of running the same protocol code (nothing of SecAgg+ is re-implemented here):

- :func:`build_secaggplus_apps`: a legacy ``ServerApp`` (``LegacyContext``, ``DefaultWorkflow``
  with ``SecAggPlusWorkflow`` as fit workflow, a legacy ``FedAvg``) and a legacy ``ClientApp``
  (``NumPyClient`` behind ``secaggplus_mod``), for ``flwr.simulation.run_simulation``;
- :func:`secaggplus_in_process`: the very same ``SecAggPlusWorkflow`` stages and the very same
  ``ClientApp`` + ``secaggplus_mod``, connected by an in-memory grid that calls the ClientApp
  synchronously, so that the client-side masking (flwr's own ``_collect_masked_vectors``) and
  the server-side unmasking (flwr's ``SecAggPlusWorkflow.unmask_stage``) can be timed apart.

The synthetic clients are injected (``update_fn(partition_id, server_round) -> float32 vector``,
``weight_fn(partition_id) -> int``) so that every method of the benchmark sees the same updates.
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

UpdateFn = Callable[[int, int], np.ndarray]
WeightFn = Callable[[int], int]
ReferenceFn = Callable[[int], np.ndarray]

ROUND_KEY = "server-round"


@dataclass(frozen=True)
class SecAggSettings:
    """Parameters of ``SecAggPlusWorkflow`` (see its docstring in flwr 1.42)."""

    num_shares: int
    reconstruction_threshold: int
    max_weight: float
    clipping_range: float
    quantization_range: int = 1 << 22  # flwr default
    modulus_range: int = 1 << 32  # flwr default
    timeout: float | None = 600.0

    @classmethod
    def for_clients(cls, num_clients: int, *, max_weight: float, clipping_range: float) -> SecAggSettings:
        """Complete graph with a majority threshold: the same structure as our secure sum.

        ``num_shares = num_clients`` makes every node a neighbour of every other (n - 1
        pairwise masks per client, as in ours), and ``num_shares == num_samples`` never takes
        the workflow's "even num_shares" branch, which would send one share count to the
        clients and use another (the round then halts silently). The threshold is
        ``floor(n/2) + 1`` (ours: ``threshold_for``), which is < ``num_shares`` as required.
        """
        return cls(
            num_shares=num_clients,
            reconstruction_threshold=num_clients // 2 + 1,
            max_weight=max_weight,
            clipping_range=clipping_range,
        )

    def workflow(self) -> Any:
        from flwr.server.workflow import SecAggPlusWorkflow

        return SecAggPlusWorkflow(
            num_shares=self.num_shares,
            reconstruction_threshold=self.reconstruction_threshold,
            max_weight=self.max_weight,
            clipping_range=self.clipping_range,
            quantization_range=self.quantization_range,
            modulus_range=self.modulus_range,
            timeout=self.timeout,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_shares": self.num_shares,
            "reconstruction_threshold": self.reconstruction_threshold,
            "max_weight": self.max_weight,
            "clipping_range": self.clipping_range,
            "quantization_range": self.quantization_range,
            "modulus_range": self.modulus_range,
        }


# --------------------------------------------------------------------------- legacy apps
def _numpy_client(partition_id: int, size: int, update_fn: UpdateFn, weight_fn: WeightFn) -> Any:
    from flwr.client import NumPyClient

    class SyntheticClient(NumPyClient):
        """Returns the synthetic update of this round as its "parameters" (no training)."""

        def get_parameters(self, config: dict) -> list[np.ndarray]:
            return [np.zeros(size, dtype=np.float32)]

        def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
            server_round = int(config.get(ROUND_KEY, 0))
            return [update_fn(partition_id, server_round)], int(weight_fn(partition_id)), {}

    return SyntheticClient()


def _capturing_fedavg(num_clients: int, size: int, reference_fn: ReferenceFn, results: dict[str, Any]) -> Any:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    class CapturingFedAvg(FedAvg):
        """Legacy FedAvg that records what SecAgg+ handed it (the unmasked weighted mean)."""

        def aggregate_fit(self, server_round: int, fit_results: list, failures: list) -> Any:
            if fit_results:
                # SecAggPlusWorkflow.unmask_stage sets every FitRes.parameters to its aggregate.
                aggregate = np.concatenate([a.ravel() for a in parameters_to_ndarrays(fit_results[0][1].parameters)])
                exact = reference_fn(server_round)
                results["max_abs_error"][server_round] = float(np.max(np.abs(aggregate.astype(np.float64) - exact)))
                results["counted"][server_round] = len(fit_results)
                results["failures"][server_round] = len(failures)
            started = time.perf_counter()
            out = super().aggregate_fit(server_round, fit_results, failures)
            results["aggregate_fit_seconds"][server_round] = time.perf_counter() - started
            return out

    return CapturingFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=num_clients,
        min_evaluate_clients=0,
        min_available_clients=num_clients,
        on_fit_config_fn=lambda server_round: {ROUND_KEY: server_round},
        initial_parameters=ndarrays_to_parameters([np.zeros(size, dtype=np.float32)]),
    )


#: Optional metric a benchmark ClientApp may put in its reply: seconds spent in its handler.
CLIENT_SECONDS = "bench-client-seconds"


class TimingGrid:
    """Delegates to a Grid and records every ``send_and_receive``.

    Each record is ``(message type, start, end, client seconds)``, the last being the
    :data:`CLIENT_SECONDS` metric of every reply that carries one.
    """

    def __init__(self, grid: Any, sink: list[tuple[str, float, float, list[float]]]) -> None:
        self._grid = grid
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else "none"
        started = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        ended = time.perf_counter()
        client_seconds = []
        for reply in replies:
            if reply.has_content():
                for record in reply.content.metric_records.values():
                    if CLIENT_SECONDS in record:
                        client_seconds.append(float(record[CLIENT_SECONDS]))
        self._sink.append((kind, started, ended, client_seconds))
        return replies


def exchange_breakdown(windows: list[tuple[float, float]], exchanges: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Per round window: each exchange (message type, seconds, client handler seconds), their total, the rest."""
    rows = []
    for start, end in windows:
        inside = [(kind, b - a, list(cs)) for kind, a, b, cs in exchanges if a >= start and b <= end]
        total = sum(seconds for _, seconds, _ in inside)
        rows.append(
            {
                "exchanges": [[kind, seconds, cs] for kind, seconds, cs in inside],
                "exchange_seconds": total,
                "outside_exchanges_seconds": (end - start) - total,
            }
        )
    return rows


class _TimedWorkflow:
    """Wraps the fit workflow (one call per round): records its wall time and its exchanges."""

    def __init__(self, inner: Callable[[Any, Any], None], results: dict[str, Any]) -> None:
        self.inner = inner
        self.results = results

    def __call__(self, grid: Any, context: Any) -> None:
        started = time.perf_counter()
        self.inner(TimingGrid(grid, self.results["exchanges"]), context)
        ended = time.perf_counter()
        self.results["round_seconds"].append(ended - started)
        self.results["round_windows"].append((started, ended))


def new_results() -> dict[str, Any]:
    return {
        "round_seconds": [],
        "round_windows": [],
        "exchanges": [],
        "max_abs_error": {},
        "counted": {},
        "failures": {},
        "aggregate_fit_seconds": {},
    }


def build_secaggplus_apps(
    *,
    size: int,
    num_clients: int,
    rounds: int,
    settings: SecAggSettings,
    update_fn: UpdateFn,
    weight_fn: WeightFn,
    reference_fn: ReferenceFn,
    results: dict[str, Any],
) -> tuple[Any, Any]:
    """Legacy ServerApp + ClientApp running SecAgg+ over the synthetic clients.

    ``results`` (from :func:`new_results`) is filled by the server: per-round wall time of the
    fit workflow (configure_fit .. aggregate_fit: the 4 SecAgg+ exchanges), max abs error of
    the aggregate against ``reference_fn(round)``, counted clients.
    """
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.workflow import DefaultWorkflow

    def client_fn(context: Any) -> Any:
        pid = int(context.node_config["partition-id"])
        return _numpy_client(pid, size, update_fn, weight_fn).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        strategy = _capturing_fedavg(num_clients, size, reference_fn, results)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=_TimedWorkflow(settings.workflow(), results))
        workflow(grid, legacy)

    return server_app, client_app


# --------------------------------------------------------------------------- in-process harness
class _InMemoryGrid:
    """Calls the ClientApp synchronously for each message; accounts client time and bytes."""

    def __init__(self, app: Any, contexts: dict[int, Any], run_id: int) -> None:
        self.app = app
        self.contexts = contexts
        self.run_id = run_id
        self.client_seconds = 0.0
        self.transport_seconds = 0.0
        self.replies: list[Any] = []

    @property
    def run(self) -> Any:
        class _Run:
            pass

        run = _Run()
        run.run_id = self.run_id  # type: ignore[attr-defined]
        return run

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        replies = []
        for message in messages:
            # The engine serializes messages: each node gets its own copy (the workflow sends one
            # RecordDict object to every node, and secaggplus_mod pops keys from it).
            # Copying stands for transport; it is timed apart and counted as neither side.
            started = time.perf_counter()
            delivered = copy.deepcopy(message)
            copied = time.perf_counter()
            reply = self.app(delivered, self.contexts[message.metadata.dst_node_id])
            answered = time.perf_counter()
            replies.append(copy.deepcopy(reply))
            self.client_seconds += answered - copied
            self.transport_seconds += (copied - started) + (time.perf_counter() - answered)
        self.replies = replies
        return replies


def _config_bytes(reply: Any, key: str) -> int:
    record = reply.content.config_records[key]
    total = 0
    for value in record.values():
        for item in value if isinstance(value, list) else [value]:
            total += len(item) if isinstance(item, (bytes, str)) else 8
    return total


def secaggplus_in_process(
    *,
    size: int,
    num_clients: int,
    rounds: int,
    settings: SecAggSettings,
    update_fn: UpdateFn,
    weight_fn: WeightFn,
    reference_fn: ReferenceFn,
) -> dict[str, Any]:
    """Run ``rounds`` SecAgg+ rounds in-process and time client masking and server unmasking.

    Returns, for the last round (every SecAgg+ round is identical: all 4 stages each round):
    mean time of flwr's ``_collect_masked_vectors`` per client (quantize + private mask +
    pairwise masks, plus decrypting the received shares), per-client time of every client
    stage, server time of ``unmask_stage`` without the client calls, without the grid's message
    copies (which stand for transport) and without the legacy ``aggregate_fit`` that follows it, bytes uploaded per client and the max abs error.
    """
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
    from flwr.supercore.task_identity import TaskIdentity

    mod_module = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")

    run_id = 7
    node_ids = [1000 + 17 * i for i in range(num_clients)]
    contexts = {
        nid: Context(
            run_id=run_id,
            node_id=nid,
            node_config={"partition-id": i, "num-partitions": num_clients},
            state=RecordDict(),
            run_config={},
        )
        for i, nid in enumerate(node_ids)
    }

    def client_fn(context: Any) -> Any:
        pid = int(context.node_config["partition-id"])
        return _numpy_client(pid, size, update_fn, weight_fn).to_client()

    app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    grid = _InMemoryGrid(app, contexts, run_id)
    results = new_results()
    strategy = _capturing_fedavg(num_clients, size, reference_fn, results)
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=run_id))  # type: ignore[arg-type]
    base = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(context=base, config=ServerConfig(num_rounds=rounds), strategy=strategy, client_manager=manager)
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(numpy_ndarrays=[np.zeros(size, dtype=np.float32)])
    cfg = ConfigRecord()
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = cfg
    workflow = settings.workflow()

    # Time flwr's own client stage functions by wrapping the module attributes the mod calls.
    stage_names = ("_setup", "_share_keys", "_collect_masked_vectors", "_unmask")
    originals = {name: getattr(mod_module, name) for name in stage_names}
    client_stage_seconds: dict[str, list[float]] = {name: [] for name in stage_names}

    def timed(name: str) -> Callable[..., Any]:
        original = originals[name]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            out = original(*args, **kwargs)
            client_stage_seconds[name].append(time.perf_counter() - started)
            return out

        return wrapper

    saved_identity = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    if TaskIdentity._run_id is None:  # Messages need a run identity outside a real run.
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, 0
    for name in stage_names:
        setattr(mod_module, name, timed(name))
    per_round: list[dict[str, Any]] = []
    try:
        for server_round in range(1, rounds + 1):
            cfg[WorkflowKey.CURRENT_ROUND] = server_round
            for values in client_stage_seconds.values():
                values.clear()
            state = WorkflowState()
            stage_seconds: dict[str, float] = {}
            client_seconds: dict[str, float] = {}
            upload: dict[str, float] = {}
            for stage in ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage"):
                grid.client_seconds = grid.transport_seconds = 0.0
                started = time.perf_counter()
                ok = getattr(workflow, stage)(grid, legacy, state)
                stage_seconds[stage] = time.perf_counter() - started
                client_seconds[stage] = grid.client_seconds + grid.transport_seconds
                upload[stage] = float(np.mean([_config_bytes(r, RECORD_KEY_CONFIGS) for r in grid.replies]))
                if stage == "collect_masked_vectors_stage":
                    masked = [
                        sum(len(b) for b in r.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])
                        for r in grid.replies
                    ]
                    upload["masked_vector"] = float(np.mean(masked))
                if not ok:
                    raise RuntimeError(f"SecAgg+ halted at {stage} in round {server_round}")
            if server_round not in results["max_abs_error"]:
                raise RuntimeError(f"SecAgg+ produced no aggregate in round {server_round}")
            agg_fit = results["aggregate_fit_seconds"][server_round]
            per_round.append(
                {
                    "round": server_round,
                    "client_seconds_per_client": {
                        name.lstrip("_"): float(np.mean(v)) for name, v in client_stage_seconds.items()
                    },
                    "server_seconds": {
                        stage: stage_seconds[stage] - client_seconds[stage] for stage in stage_seconds
                    },
                    "aggregate_fit_seconds": agg_fit,
                    "upload_bytes_per_client": upload,
                    "max_abs_error": results["max_abs_error"][server_round],
                }
            )
    finally:
        for name, original in originals.items():
            setattr(mod_module, name, original)
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved_identity

    last = per_round[-1]
    server = last["server_seconds"]
    client = last["client_seconds_per_client"]
    upload = last["upload_bytes_per_client"]
    total_upload = upload["setup_stage"] + upload["share_keys_stage"] + upload["collect_masked_vectors_stage"] + upload["unmask_stage"]
    return {
        "rounds_run": rounds,
        "timed_round": last["round"],
        "client_mask_seconds": client["collect_masked_vectors"],
        "client_seconds_per_stage": client,
        "client_protocol_seconds": float(sum(client.values())),
        "server_unmask_seconds": server["unmask_stage"] - last["aggregate_fit_seconds"],
        "server_seconds_per_stage": server,
        "legacy_aggregate_fit_seconds": last["aggregate_fit_seconds"],
        "upload_bytes_per_client": {
            "masked_vector": upload["masked_vector"],
            "masked_vector_per_parameter": upload["masked_vector"] / size,
            "share_ciphertexts": upload["share_keys_stage"],
            "all_stages": total_upload,
            "all_stages_per_parameter": total_upload / size,
        },
        "max_abs_error": max(r["max_abs_error"] for r in per_round),
        "per_round": per_round,
    }


__all__ = [
    "CLIENT_SECONDS",
    "SecAggSettings",
    "TimingGrid",
    "exchange_breakdown",
    "build_secaggplus_apps",
    "new_results",
    "secaggplus_in_process",
]

