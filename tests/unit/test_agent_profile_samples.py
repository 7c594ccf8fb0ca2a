"""Agents report their partition's training-set size (the selectors' initial prior)."""

from __future__ import annotations

import argparse

import pytest
import torch

from edge_agent import cli
from edge_agent.emulation import Emulator, emulated_profile, fleet_sizes
from edge_agent.profile import DataSpec, detect_profile, partition_size
from edge_agent.trainer import LocalTrainer
from fedbus.examples.digits import load_partition
from fedbus.fleet.builders import build_synthetic
from fedbus.protocol import bus
from fedbus.protocol.messages import TrainConfig

DATA = "fedbus.examples.digits:load_partition"
DATA_ARGS = {"num_partitions": 12, "alpha": 0.5, "seed": 2}
SPEC = DataSpec(DATA, DATA_ARGS)


def _train_size(partition: int) -> int:
    return len(load_partition(partition, **DATA_ARGS)[0])  # type: ignore[arg-type]


def test_partition_size_is_the_training_split_and_warms_the_trainer_cache() -> None:
    trainer = LocalTrainer("cpu")
    assert partition_size(trainer, SPEC, 3) == _train_size(3)
    # The first task with the job's data arguments reuses the partition loaded for the profile.
    config = TrainConfig(model="m:f", data=DATA, data_args=DATA_ARGS)
    assert trainer.partition(config, 3) is trainer.load_partition(DATA, DATA_ARGS, 3)


def test_detect_profile_carries_num_samples() -> None:
    profile = detect_profile(torch.device("cpu"), partition=3, num_samples=17)
    assert profile.partition == 3 and profile.num_samples == 17
    assert detect_profile(torch.device("cpu")).num_samples is None


def test_emulated_profile_carries_partition_size_and_static() -> None:
    device = build_synthetic(2, seed=1)[1]
    profile = emulated_profile(device, 42)
    assert profile.emulated and profile.partition == device.partition
    assert profile.num_samples == 42
    assert profile.static == dict(device.static)


def test_fleet_sizes_load_each_partition_once() -> None:
    fleet = build_synthetic(12, seed=1)
    trainer = LocalTrainer("cpu")
    sizes = fleet_sizes(trainer, SPEC, list(fleet))
    assert sizes == {p.partition: _train_size(p.partition) for p in fleet}
    assert len(set(sizes.values())) > 1  # Dirichlet(0.5): sizes differ, so do the priors
    assert fleet_sizes(trainer, None, list(fleet)) == {}


def test_fleet_sizes_name_the_agent_whose_partition_fails() -> None:
    fleet = build_synthetic(13, seed=1)  # partition 12 of 12 partitions does not exist
    with pytest.raises(ValueError, match=fleet[12].client_id):
        fleet_sizes(LocalTrainer("cpu"), SPEC, list(fleet))


def test_emulator_agents_report_their_partition_sizes() -> None:
    fleet = build_synthetic(12, seed=1)
    settings = bus.BrokerSettings(port=1, prefix="t")  # never connected here
    emulator = Emulator(fleet, settings, count=4, offset=8, data=SPEC)
    reported = {a.identity.partition: a.identity.profile.num_samples for a in emulator.agents}
    assert reported == {p: _train_size(p) for p in range(8, 12)}
    without = Emulator(fleet, settings, count=2)
    assert [a.identity.profile.num_samples for a in without.agents] == [None, None]


def test_cli_data_args_parse_a_json_object_of_scalars() -> None:
    assert cli.parse_data_args('{"num_partitions": 8, "alpha": null}') == {
        "num_partitions": 8,
        "alpha": None,
    }
    for bad in ("[1]", '{"a": [1]}', "nope"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_data_args(bad)
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--id", "a", "--data-args", '{"seed": 1}'])  # args without --data
    assert info.value.code == 2
