"""A Flower client in the shape of Flower's PyTorch quickstart, with no fedbus imports.

``client_fn(context)`` builds a ``NumPyClient`` for ``context.node_config["partition-id"]``
(an IID share of scikit-learn's digits); ``fit`` trains ``local_steps`` SGD mini-batches,
seeded by partition and round so a run repeats exactly; ``evaluate`` returns the loss and
an ``accuracy`` metric. ``client_fn`` hands Flower a ``Client`` (``to_client()``, as the
quickstart does); ``numpy_client_fn`` the ``NumPyClient`` itself.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import Context
from sklearn.datasets import load_digits
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def load_data(partition_id: int, num_partitions: int):
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = np.random.default_rng(0).permutation(len(y))
    mine = np.array_split(order, num_partitions)[partition_id]
    cut = int(len(mine) * 0.8)
    return (x[mine[:cut]], y[mine[:cut]]), (x[mine[cut:]], y[mine[cut:]])


def train(net, data, steps: int, batch_size: int, lr: float, seed: int) -> float:
    x, y = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    total = 0.0
    order, cursor = torch.randperm(len(y), generator=generator), 0
    for _ in range(steps):
        if cursor + batch_size > len(y):
            order, cursor = torch.randperm(len(y), generator=generator), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / max(steps, 1)


@torch.no_grad()
def test(net, data) -> tuple[float, float]:
    x, y = data
    net.eval()
    logits = net(x)
    loss = float(nn.functional.cross_entropy(logits, y))
    return loss, float((logits.argmax(dim=1) == y).float().mean())


def get_weights(net) -> list[np.ndarray]:
    return [v.cpu().numpy() for v in net.state_dict().values()]


def set_weights(net, parameters) -> None:
    state = OrderedDict(
        (k, torch.tensor(np.asarray(v)))
        for k, v in zip(net.state_dict().keys(), parameters, strict=True)
    )
    net.load_state_dict(state, strict=True)


class FlowerClient(NumPyClient):
    def __init__(self, net, trainset, testset, partition_id: int) -> None:
        self.net, self.trainset, self.testset = net, trainset, testset
        self.partition_id = partition_id

    def get_parameters(self, config):
        return get_weights(self.net)

    def fit(self, parameters, config):
        set_weights(self.net, parameters)
        loss = train(
            self.net,
            self.trainset,
            int(config["local_steps"]),
            int(config["batch_size"]),
            float(config["learning_rate"]),
            seed=1000 * self.partition_id + int(config["server_round"]),
        )
        return get_weights(self.net), len(self.trainset[1]), {"train_loss": loss}

    def evaluate(self, parameters, config):
        set_weights(self.net, parameters)
        loss, accuracy = test(self.net, self.testset)
        return loss, len(self.testset[1]), {"accuracy": accuracy}


def client_fn(context: Context):
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    torch.manual_seed(0)  # every client starts from the same initial weights
    trainset, testset = load_data(partition_id, num_partitions)
    return FlowerClient(Net(), trainset, testset, partition_id).to_client()


def numpy_client_fn(context: Context):
    """The same client, handed over as the NumPyClient itself (Flower accepts both)."""
    return client_fn(context).numpy_client
