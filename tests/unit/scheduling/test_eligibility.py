"""Eligibility: a job's requires: against agents' attributes; the columnar table agrees."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from coordinator.agent_table import AgentTable
from coordinator.eligibility import (
    ACCELERATORS,
    AgentAttributes,
    Requirements,
    attributes_of,
    is_eligible,
    why_not,
)
from fedbus.protocol.messages import AgentProfile

ORIN = AgentAttributes(
    "orin-1", "jetson", "Jetson AGX Orin", 32.0, 1000, frozenset({"lab-a", "solar"}), 1
)
LAPTOP = AgentAttributes("laptop", "cpu", "Linux x86_64", 16.0, 200, frozenset(), 1)


def test_no_requirements_admit_everyone() -> None:
    assert is_eligible(Requirements(), ORIN) and is_eligible(Requirements(), LAPTOP)
    assert Requirements().unconstrained


@pytest.mark.parametrize(
    ("requires", "reason_part"),
    [
        ({"accelerator": "cuda"}, "accelerator jetson"),
        ({"device_model": "*Xavier*"}, "does not match"),
        ({"min_memory_gb": 64}, "memory 32 GB < 64 GB"),
        ({"min_samples": 5000}, "1000 samples < 5000"),
        ({"tags": ["lab-b"]}, "missing tags ['lab-b']"),
    ],
)
def test_each_requirement_rejects_with_its_reason(requires: dict, reason_part: str) -> None:
    reason = why_not(Requirements.model_validate(requires), ORIN)
    assert reason is not None and reason_part in reason


def test_requirements_met_are_lower_bounds_and_case_insensitive_patterns() -> None:
    req = Requirements(
        accelerator=("jetson", "cuda"),
        device_model="jetson*orin",
        min_memory_gb=32,
        min_samples=1000,
        tags=("solar",),
    )
    assert why_not(req, ORIN) is None
    assert not is_eligible(req, LAPTOP)


def test_unknown_accelerator_is_a_config_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="unknown accelerator 'tpu'"):
        Requirements.model_validate({"accelerator": "tpu"})
    with pytest.raises(ValidationError):
        Requirements.model_validate({"min_memory": 4})  # a typo is not ignored


def test_attributes_come_from_the_profile_stated_or_derived() -> None:
    # Prepare: a measured GPU host, a Jetson, an emulated phone, an agent that says it all.
    gpu = AgentProfile(torch_device="cuda:0", gpu_name="NVIDIA H200", ram_gb=128, gpu_memory_gb=139)
    jetson = AgentProfile(jetson_model="NVIDIA Jetson Orin Nano", ram_gb=8, tags=["solar"])
    phone = AgentProfile(
        emulated=True, num_samples=300, static={"model": "Google Pixel 5", "ram_gb": 8.0}
    )
    stated = AgentProfile(accelerator="cuda", device_model="RTX 4090", capacity=3, gpu_memory_gb=24)
    # Execute
    a, b, c, d = (
        attributes_of(n, p) for n, p in zip("abcd", (gpu, jetson, phone, stated), strict=True)
    )
    # Assert
    assert (a.accelerator, a.device_model, a.memory_gb) == ("cuda", "NVIDIA H200", 139.0)
    assert (b.accelerator, b.memory_gb, b.tags) == ("jetson", 8.0, frozenset({"solar"}))
    assert (c.accelerator, c.device_model, c.memory_gb, c.num_samples) == (
        "cpu",
        "Google Pixel 5",
        8.0,
        300,
    )
    assert (d.accelerator, d.device_model, d.capacity) == ("cuda", "RTX 4090", 3)
    assert attributes_of("e", None) == AgentAttributes("e")


def test_the_table_mask_agrees_with_why_not_on_random_pools() -> None:
    rng = random.Random(7)
    models = ["Jetson AGX Orin", "Jetson Nano", "Google Pixel 5", "RTX 4090", ""]
    agents = [
        AgentAttributes(
            f"a{i}",
            rng.choice(ACCELERATORS),
            rng.choice(models),
            rng.choice([0.0, 4.0, 8.0, 16.0]),
            rng.choice([0, 100, 1000]),
            frozenset(rng.sample(["x", "y", "z"], rng.randint(0, 2))),
        )
        for i in range(300)
    ]
    table = AgentTable(agents)
    for _ in range(50):
        req = Requirements(
            accelerator=tuple(rng.sample(ACCELERATORS, rng.randint(0, 2))),
            device_model=rng.choice([None, "jetson*", "*5", "RTX*"]),
            min_memory_gb=rng.choice([0.0, 8.0]),
            min_samples=rng.choice([0, 100]),
            tags=tuple(rng.sample(["x", "y", "w"], rng.randint(0, 1))),
        )
        expected = [is_eligible(req, a) for a in agents]
        assert table.mask(req).tolist() == expected, req
