"""Every payload of fedbus: one frozen pydantic v2 model per topic kind.

JSON for what people watch (status, telemetry, events, job submissions); the tensor
envelope of :mod:`fedbus.protocol.codec` for what machines exchange (tasks, models,
updates, results). ``encode_*`` / ``decode_*`` below are the only functions that turn
models into bytes and back; decoding raises :class:`InvalidMessage` with a reason slug.

Every model carries ``schema_version``; a receiver rejects versions it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedbus.protocol.codec import Envelope, Tensor, decode, encode
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.json_bounds import MAX_JSON_BYTES, load_json
from fedbus.protocol.topics import check_id

SCHEMA_VERSION: Final = 1

Scalar = str | int | float | bool | None
AgentId = Annotated[str, Field(min_length=1, max_length=128)]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


# ---------------------------------------------------------------- status (JSON, retained)
class AgentProfile(BaseModel):
    """What an agent says about itself once, in its retained status."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hostname: str = ""
    platform: str = ""
    cpu_count: int = 0
    ram_gb: float = 0.0
    torch_device: str = "cpu"
    gpu_name: str | None = None
    jetson_model: str | None = None
    emulated: bool = False
    partition: int | None = None
    num_samples: int | None = None
    # Device metadata for selectors and the time model (emulated fleets fill it).
    static: dict[str, Scalar] = Field(default_factory=dict)
    # What the multi-job scheduler matches against a job's ``requires:`` (all optional:
    # left out, the coordinator derives them from the fields above).
    accelerator: Literal["cpu", "cuda", "jetson"] | None = None
    device_model: str | None = Field(None, max_length=128)
    gpu_memory_gb: float | None = Field(None, ge=0)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32
    )
    # How many jobs' tasks the agent takes at once (the scheduler's rule is one).
    capacity: int = Field(1, ge=1, le=64)


class AgentStatus(Message):
    agent: AgentId
    state: Literal["online", "offline"]
    profile: AgentProfile | None = None
    ts: float = 0.0


class CoordinatorStatus(Message):
    coordinator: str
    state: Literal["online", "offline"]
    jobs: list[str] = Field(default_factory=list)
    ts: float = 0.0
    # A `coordinator serve` (subscribed to job submissions), not a one-job `run`.
    accepts_jobs: bool = False
    # Jobs that wait for agents, and why (requirements no agent meets, agents held by
    # other jobs): the scheduler's reason, in words.
    waiting: dict[str, str] = Field(default_factory=dict)
    # The scheduling policy of a `coordinator serve` (fifo, srsf, random, scarcity).
    policy: str | None = None
    # Inbound messages dropped since start, by reason (coordinator/rejections.py).
    rejected: dict[str, int] = Field(default_factory=dict)
    # Set in the last will: the jobs this coordinator was running when its connection was
    # lost without a clean shutdown. Their retained job status still says "running".
    orphaned: list[str] = Field(default_factory=list)


class JobStatus(Message):
    job: str
    # "stopped": its coordinator shut down cleanly mid-job; it resumes when one restarts.
    # "cancelled": `coordinator jobs cancel` ended it.
    state: Literal["pending", "running", "finished", "failed", "stopped", "cancelled"]
    round: int = 0
    rounds: int = 0
    phase: str = ""
    model_version: int = 0
    last_accuracy: float | None = None
    last_loss: float | None = None
    virtual_time: float | None = None
    rejected: dict[str, int] = Field(default_factory=dict)
    late: int = 0  # answers that came after their round closed (expected with over-commitment)
    ts: float = 0.0
    reason: str | None = None  # why the job failed or was refused
    coordinator: str | None = None  # the coordinator id running it


class Telemetry(Message):
    agent: AgentId
    ts: float
    cpu_percent: float | None = None
    mem_used_mb: float | None = None
    gpu_util_percent: float | None = None
    gpu_mem_used_mb: float | None = None
    power_w: float | None = None
    extra: dict[str, Scalar] = Field(default_factory=dict)
    # Added with the reference agent's publisher; optional, so older senders stay valid.
    rss_mb: float | None = None  # the agent process's resident memory
    net_sent_bytes: int | None = None  # host counters since boot (rates: differences)
    net_recv_bytes: int | None = None
    gpu_temp_c: float | None = None
    interval_s: float | None = None  # the publisher's interval: a gap longer than it is a loss


class Event(Message):
    job: str
    event: str
    round: int
    ts: float
    virtual_time: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class JobSubmission(Message):
    """A job handed to ``coordinator serve`` on the control topic: the parsed job YAML."""

    config: dict[str, Any]
    source: str = "<submitted>"
    # Start afresh when a run of this name exists with another configuration (the old
    # run directory is moved aside); without it such a submission is refused.
    new_run: bool = False


class JobControl(Message):
    """An operator's request to ``coordinator serve`` on the control topic.

    ``cancel`` ends the job now (its agents go back to the pool); ``logs`` asks for the
    last ``tail`` lines of its event log. The reply goes to the ``reply_to`` client's
    reply topic (none without it).
    """

    action: Literal["cancel", "logs"]
    job: str = Field(min_length=1, max_length=128)
    reply_to: str | None = Field(None, min_length=1, max_length=128)
    tail: int = Field(50, ge=0, le=10_000)


class ControlReply(Message):
    job: str
    action: str
    ok: bool
    message: str = ""
    lines: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- tasks (msgpack)
class TrainConfig(BaseModel):
    """What an agent needs to train or validate: entry points and hyper-parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    data: str
    data_args: dict[str, Scalar] = Field(default_factory=dict)
    local_steps: int = Field(20, ge=0)
    # The job's own local steps (E) when a selector's override raised ``local_steps``: the
    # agent caps raised steps at max(5 * batches, E) and needs E to do so. None: same as
    # local_steps.
    base_local_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    # FedProx: mu/2 * ||w - w_global||^2 added to the local loss (0: plain FedAvg SGD).
    proximal_mu: float = Field(0.0, ge=0)
    seed: int = 0
    # Adaptive training and compression.
    adaptive: bool = False
    t_budget: float | None = None
    budget_recheck_steps: int = 5
    ewma_lambda: float = 0.7
    min_payload_frac: float = 0.3
    run_phase_2: bool = True
    # Adaptive training: idle time buys at most this many times the job's local steps.
    max_steps_factor: int = Field(10, ge=1)
    keep_frac: float = Field(1.0, gt=0, le=1)
    # Error feedback: add what top-k dropped from this job's last update to the next one.
    error_feedback: bool = False
    value_dtype: Literal["float32", "float16"] = "float32"
    # Virtual clock: the agent reports the time model's durations instead of measured ones.
    clock: Literal["wall", "virtual"] = "wall"
    # Parameter count the time model charges for (a small model standing in for a big one).
    time_model_params: int | None = None
    # The job's compute package, by SHA-256 (lowercase hex): the agent fetches it from
    # ``{prefix}/packages/{sha}``, checks the hash, and runs model, data, train and
    # validate from it. None: the entry points are installed on the agent.
    package: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ValidateRequest(BaseModel):
    """A validation folded into a train task: the same model, evaluated before training.

    The model a round trains from is the one the previous round produced and validates,
    so an agent in both gets one task instead of two (half the control messages per agent
    and round). It replies with a ResultMeta exactly as to a ``validate`` task with this
    ``task_id`` and ``round``, before it starts training; with ``in_update`` it puts that
    ResultMeta in the task's UpdateMeta (``validation``) instead of publishing it apart.
    The coordinator asks for that only when the round waits for every agent it trains,
    so a result never waits on a straggler's update.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    task_id: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=0)
    in_update: bool = False


class Task(Message):
    job: str
    round: int = Field(ge=0)
    task_id: str = Field(min_length=1, max_length=64)
    kind: Literal["train", "validate"]
    model_version: int = Field(ge=0)
    config: TrainConfig
    deadline: float | None = None  # wall-clock epoch seconds; None: no deadline
    # Seconds from the agent's receipt of the task, on its monotonic clock: what an agent
    # with a wrong calendar clock (no RTC battery, no NTP) still judges right. Preferred to
    # ``deadline`` when present; None (an older coordinator): ``deadline`` alone.
    timeout: float | None = Field(None, gt=0)
    virtual_start: float | None = None  # virtual time at round start (virtual clock)
    issued_at: float = 0.0
    # Train tasks only: validate model_version first and reply to this request.
    validate_first: ValidateRequest | None = None
    # The coordinator run that sent it: train/validate the model of this run, not an older
    # run's retained model of the same version ("" = any run, from an older coordinator).
    run_epoch: str = Field(default="", max_length=64)

    @model_validator(mode="after")
    def _validate_first_on_train_only(self) -> Task:
        if self.validate_first is not None and self.kind != "train":
            raise ValueError("validate_first is for train tasks only")
        return self


# ---------------------------------------------------------------- model, update, result
class ModelMeta(Message):
    job: str
    version: int = Field(ge=0)
    round: int = Field(ge=0)
    names: list[str]
    # The coordinator run that published it: a model of another run replaces the one held
    # whatever its version (a re-run restarts at version 0).
    run_epoch: str = Field(default="", max_length=64)


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    t_dl: float = 0.0
    t_comp: float = 0.0
    t_ul: float = 0.0
    wall_duration: float = 0.0

    @property
    def total(self) -> float:
        return self.t_dl + self.t_comp + self.t_ul


class ResultMeta(Message):
    job: str
    round: int = Field(ge=0)
    agent: AgentId
    task_id: str
    model_version: int = Field(ge=0)
    success: bool = True
    reason: str = ""
    num_examples: int = Field(0, ge=0)
    loss: float = 0.0
    accuracy: float = Field(0.0, ge=0.0, le=1.0)
    metrics: dict[str, float] = Field(default_factory=dict)

    _check = field_validator("loss", "accuracy")(_finite)

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        for v in value.values():
            _finite(v)
        return value


class UpdateMeta(Message):
    job: str
    round: int = Field(ge=0)
    agent: AgentId
    task_id: str
    base_version: int = Field(ge=0)
    success: bool = True
    reason: str = ""
    num_examples: int = Field(0, ge=0)
    encoding: Literal["dense", "sparse", "none"] = "dense"
    utility: float = 0.0
    grad_norm: float = 0.0
    loss: float = 0.0
    steps: int = 0
    steps_phase1: int = 0
    steps_phase2: int = 0
    keep_frac: float = 1.0
    timings: Timings = Field(default_factory=Timings)
    # The reply to the task's ``validate_first`` when it asked for it here (``in_update``).
    validation: ResultMeta | None = None
    # Per-round resource summary where measurable: peak_rss_mb (process), gpu_peak_mb
    # (CUDA allocator, this round), energy_j (NVML counter, this round).
    resources: dict[str, float] = Field(default_factory=dict)

    # A compute package's own training metrics (any finite numbers), kept per agent.
    metrics: dict[str, float] = Field(default_factory=dict)

    _check = field_validator("utility", "grad_norm", "loss", "keep_frac")(_finite)

    @field_validator("resources", "metrics")
    @classmethod
    def _finite_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for v in value.values():
            _finite(v)
        return value


# ---------------------------------------------------------------- encoding
M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any, what: str) -> M:
    if isinstance(data, Mapping) and data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise InvalidMessage(
            "schema", f"{what}: unknown schema_version {data.get('schema_version')!r}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise InvalidMessage("schema", f"{what}: field {where}: {first['msg']}") from exc


def encode_json(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def decode_json(
    model: type[M],
    payload: bytes | bytearray,
    what: str | None = None,
    *,
    max_bytes: int = MAX_JSON_BYTES,
) -> M:
    """Parse and validate a JSON payload within the bounds of :mod:`json_bounds`.

    Every defect, however hostile (nesting that would exhaust the stack, integers of
    thousands of digits, invalid UTF-8, NaN), is an InvalidMessage, never another error.
    """
    what = what or model.__name__
    data = load_json(payload, what, max_bytes=max_bytes)
    return _validate(model, data, what)


def encode_envelope(
    message: BaseModel,
    tensors: Mapping[str, Tensor] | None = None,
    *,
    into: bytearray | None = None,
) -> bytearray:
    return encode(message.model_dump(mode="json"), tensors, into=into)


def decode_envelope(
    model: type[M], payload: bytes | bytearray | memoryview, *, max_bytes: int | None = None
) -> tuple[M, dict[str, Tensor]]:
    envelope: Envelope = decode(payload, max_bytes=max_bytes)
    return _validate(model, envelope.meta, model.__name__), envelope.tensors


def check_agent(agent: str) -> str:
    return check_id(agent, "agent id")
