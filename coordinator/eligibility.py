"""Which agents a job may use: its ``requires:`` against what agents advertise (pure).

A job declares lower bounds and patterns (Propius's constraints, ALGORITHMS.md 5.1:
every numeric constraint is a lower bound, a missing value counts as 0); an agent
advertises attributes from its measured profile, its fleet entry and the operator's
``--tag``. :class:`AgentAttributes` is what the scheduler sees of one agent;
:func:`attributes_of` derives it from an :class:`AgentProfile`. :func:`why_not` says in
words why an agent does not qualify, :func:`is_eligible` is its boolean. The scheduler's
vectorised check (:mod:`coordinator.pool`) implements the same rules over arrays and is
tested against these.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedbus.protocol.messages import AgentProfile

ACCELERATORS = ("cpu", "cuda", "jetson")
"""What an agent computes on: a plain CPU, a CUDA GPU, or a Jetson (CUDA, unified memory)."""


class Requirements(BaseModel):
    """A job's ``requires:`` block; every field optional, all must hold.

    ``accelerator``: any of these kinds. ``device_model``: a case-insensitive shell
    pattern (``"*Orin*"``) on the advertised device model. ``min_memory_gb``: the memory
    the job trains in (GPU memory on a CUDA GPU, RAM otherwise). ``min_samples``: the
    agent's training partition. ``tags``: labels the operator gave the agent, all needed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    accelerator: tuple[str, ...] = ()
    device_model: str | None = None
    min_memory_gb: float = Field(0.0, ge=0)
    min_samples: int = Field(0, ge=0)
    tags: tuple[str, ...] = ()

    @field_validator("accelerator", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("accelerator")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            if kind not in ACCELERATORS:
                raise ValueError(f"unknown accelerator {kind!r}; use one of {ACCELERATORS}")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_list(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @property
    def unconstrained(self) -> bool:
        return self == Requirements()

    def describe(self) -> str:
        """The requirements in the job file's words, for waiting reasons and `jobs status`."""
        parts = []
        if self.accelerator:
            parts.append(f"accelerator in {list(self.accelerator)}")
        if self.device_model:
            parts.append(f"device_model ~ {self.device_model!r}")
        if self.min_memory_gb:
            parts.append(f"memory >= {self.min_memory_gb:g} GB")
        if self.min_samples:
            parts.append(f"samples >= {self.min_samples}")
        if self.tags:
            parts.append(f"tags {list(self.tags)}")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class AgentAttributes:
    """What the scheduler knows of one agent; missing numbers are 0 (Propius's rule)."""

    agent: str
    accelerator: str = "cpu"
    device_model: str = ""
    memory_gb: float = 0.0
    num_samples: int = 0
    tags: frozenset[str] = frozenset()
    capacity: int = 1


def attributes_of(agent: str, profile: AgentProfile | None) -> AgentAttributes:
    """An agent's attributes from its retained profile (measured, fleet entry, tags).

    What the agent states outright (``accelerator``, ``device_model``, ``gpu_memory_gb``)
    wins; otherwise it is derived: a Jetson model or a CUDA torch device, the GPU or Jetson
    name, an emulated device's fleet ``model`` and ``ram_gb``.
    """
    if profile is None:
        return AgentAttributes(agent)
    static = profile.static
    accelerator = profile.accelerator or (
        "jetson"
        if profile.jetson_model
        else "cuda"
        if profile.torch_device.startswith("cuda")
        else "cpu"
    )
    model = (
        profile.device_model
        or profile.jetson_model
        or profile.gpu_name
        or _text(static.get("model"))
        or profile.platform
    )
    ram = profile.ram_gb or _number(static.get("ram_gb"))
    memory = profile.gpu_memory_gb if accelerator == "cuda" and profile.gpu_memory_gb else ram
    return AgentAttributes(
        agent=agent,
        accelerator=accelerator,
        device_model=model,
        memory_gb=float(memory or 0.0),
        num_samples=int(profile.num_samples or 0),
        tags=frozenset(profile.tags),
        capacity=max(1, profile.capacity),
    )


def why_not(requirements: Requirements, agent: AgentAttributes) -> str | None:
    """The first requirement ``agent`` misses, in words; None when it qualifies."""
    if requirements.accelerator and agent.accelerator not in requirements.accelerator:
        return f"accelerator {agent.accelerator} not in {list(requirements.accelerator)}"
    if requirements.device_model and not model_matches(
        requirements.device_model, agent.device_model
    ):
        return f"device model {agent.device_model!r} does not match {requirements.device_model!r}"
    if agent.memory_gb < requirements.min_memory_gb:
        return f"memory {agent.memory_gb:g} GB < {requirements.min_memory_gb:g} GB"
    if agent.num_samples < requirements.min_samples:
        return f"{agent.num_samples} samples < {requirements.min_samples}"
    missing = [t for t in requirements.tags if t not in agent.tags]
    if missing:
        return f"missing tags {missing}"
    return None


def is_eligible(requirements: Requirements, agent: AgentAttributes) -> bool:
    return why_not(requirements, agent) is None


def model_matches(pattern: str, model: str) -> bool:
    return fnmatch.fnmatchcase(model.casefold(), pattern.casefold())


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
