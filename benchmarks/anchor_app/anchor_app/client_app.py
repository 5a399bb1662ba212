"""Minimal Flower ClientApp: train and evaluate a logistic regression on the node's CSV."""

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _load(context: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    path = str(context.node_config["data-path"])
    label = str(context.run_config["label-column"])
    header = open(path, encoding="utf-8").readline().strip().split(",")
    rows = np.loadtxt(path, delimiter=",", skiprows=1)
    y = rows[:, header.index(label)].astype(np.int64)
    x = np.delete(rows, header.index(label), axis=1)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    cut = int(0.8 * len(x))
    xs, ys = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return xs[:cut], ys[:cut], xs[cut:], ys[cut:]


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(30, 2))


@app.train()
def train(msg: Message, context: Context) -> Message:
    x, y, _, _ = _load(context)
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(x))
    total = 0.0
    for start in range(0, len(x), 32):
        batch = order[start : start + 32]
        optimizer.zero_grad()
        loss = loss_fn(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        total += float(loss) * len(batch)
    metrics = MetricRecord({"train_loss": total / len(x), "num-examples": len(x)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, x, y = _load(context)
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    with torch.no_grad():
        logits = model(x)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    metrics = MetricRecord({"eval_loss": loss, "eval_accuracy": accuracy, "num-examples": len(x)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
