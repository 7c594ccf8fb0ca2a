"""Flower's own simulation of the quickstart client: FedAvg, every client every round.

``python -m tests.integration.flower_simulation ROUNDS SEED.npz`` runs Flower's simulation
engine (``flwr.simulation.run_simulation``, what ``flwr run`` drives for a local
simulation federation) with the seed file's initial parameters and prints the federated
accuracy after each round as JSON. A separate process: ray starts its own workers.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from flwr.client import ClientApp
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation

from tests.integration.flower_quickstart import client_fn

NUM_CLIENTS = 4
FIT_CONFIG = {"local_steps": 10, "batch_size": 16, "learning_rate": 0.1}


def main(rounds: int, seed_file: str) -> list[float]:
    with np.load(seed_file) as archive:
        initial = [archive[name] for name in sorted(archive.files)]
    accuracies: list[float] = []

    def weighted_accuracy(metrics: list[tuple[int, dict]]) -> dict:
        total = sum(count for count, _ in metrics)
        value = sum(count * m["accuracy"] for count, m in metrics) / total
        accuracies.append(value)
        return {"accuracy": value}

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=NUM_CLIENTS,
            min_evaluate_clients=NUM_CLIENTS,
            min_available_clients=NUM_CLIENTS,
            initial_parameters=ndarrays_to_parameters(initial),
            on_fit_config_fn=lambda r: {"server_round": r, **FIT_CONFIG},
            evaluate_metrics_aggregation_fn=weighted_accuracy,
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(
        ServerApp(server_fn=server_fn),
        ClientApp(client_fn=client_fn),
        num_supernodes=NUM_CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    return accuracies


if __name__ == "__main__":
    print("ACCURACIES " + json.dumps(main(int(sys.argv[1]), sys.argv[2])))
