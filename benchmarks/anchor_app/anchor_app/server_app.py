"""Minimal Flower ServerApp: FedAvg over every node, timing each round."""

import json
import time

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rounds = int(context.run_config["num-server-rounds"])
    marks: list[float] = []

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord:  # called at the end of each round
        marks.append(time.time())
        return MetricRecord({"round": server_round})

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=3)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(torch.nn.Sequential(torch.nn.Linear(30, 2)).state_dict()),
        num_rounds=rounds,
        evaluate_fn=mark,
    )
    accuracy = result.evaluate_metrics_clientapp.get(rounds, {}).get("eval_accuracy")
    path = str(context.run_config["timing-path"])
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"round_ends": marks, "final_eval_accuracy": accuracy}, handle)
