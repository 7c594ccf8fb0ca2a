"""Job configuration: one YAML file per job, validated by pydantic at start-up.

Errors name the file and the field: ``jobs/digits.yaml: field selector.name: ...``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from client_selectors.pacer import BudgetBounds
from coordinator.eligibility import Requirements
from coordinator.packages import apply_package, make_job_dir_importable
from coordinator.wall_clock_checks import check_wall_clock
from fedbus.protocol.topics import check_id


class JobConfigError(ValueError):
    """A job file that cannot be used; the message names the file and the field."""


class SelectorConfig(BaseModel):
    """``selector: {name: oort, seed: 1, <knobs>}``; knobs are validated by the selector."""

    model_config = ConfigDict(frozen=True, extra="allow")
    name: str = "random"
    seed: int | None = None

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AggregatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    name: Literal["fedavg", "median", "trimmed_mean", "krum"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)

    @property
    def knobs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrustConfig(BaseModel):
    """``trust:`` how far the coordinator believes what agents report
    (coordinator/aggregation/trust.py, docs/security.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Cap an update's (and a validation result's) example count at the partition size the
    # agent registered in its profile, when it registered one.
    cap_by_profile: bool = True
    # Cap every agent's example count at this (None: no job-wide cap).
    max_examples: int | None = Field(None, ge=1)
    # Cap every update's weight at this many times the round's median weight (None: off).
    median_weight_cap: float | None = Field(None, gt=0)
    # The same for validation results when the job's accuracy is averaged over agents:
    # one forged result then moves the mean by at most (1 - accuracy) x 2 / (n + 1).
    metric_median_cap: float | None = Field(2.0, gt=0)
    # Scale updates longer than this many times the round's median update norm down to it
    # (None: off, plain FedAvg).
    norm_clip: float | None = Field(None, gt=0)


class JobConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    model: str = Field(pattern=r"^[\w.]+:\w+$")
    data: str = Field(pattern=r"^[\w.]+:\w+$")
    data_args: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    seed: int = 0
    # A seed file (``coordinator seed JOB.yaml``): the initial weights, read instead of
    # running ``model`` with ``seed``; the coordinator then never imports torch.
    initial_model: str | None = None
    # A compute package (docs/jobs.md): a .tar.gz from `coordinator package build`, or a
    # package directory, relative to the job file. Agents receive it over the bus pinned
    # by SHA-256; ``model`` and ``data`` default to the package's own.
    package: str | None = None
    # The package's SHA-256, filled in when the job is loaded; one given must match.
    package_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    rounds: int = Field(20, ge=1)
    num_participants: int = Field(4, ge=1)
    overcommitment: float = Field(1.3, ge=1.0)
    buffer_size: int | None = Field(None, ge=1)
    clients_required: int = Field(1, ge=1)
    min_agents: int | None = Field(None, ge=1)
    agent_wait_timeout: float = Field(120.0, gt=0)
    round_timeout: float = Field(60.0, gt=0)

    local_steps: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    # FedProx's proximal term: keeps many local steps on skewed data near the global model.
    proximal_mu: float = Field(0.0, ge=0)

    eval_interval: int = Field(1, ge=0)
    eval_timeout: float = Field(30.0, gt=0)
    eval_max_clients: int = Field(100, ge=1)
    # Server-side evaluation: the coordinator evaluates the global model on this fixed test
    # set (an entry point returning a dataset like ``data``'s partitions) instead of asking
    # agents. One number per evaluation, no agents' time, every round if wanted.
    test_data: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    test_data_args: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    # Federated validation of round r's model runs alongside round r + 1's training (the
    # agents get both tasks back to back), not as a stop between rounds.
    eval_overlap: bool = True

    selector: SelectorConfig = Field(default_factory=SelectorConfig)
    # Which agents may train this job (accelerator, device model, memory, samples, tags);
    # the multi-job scheduler never asks the others.
    requires: Requirements = Field(default_factory=Requirements)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)

    adaptive_training: bool = False
    clock: Literal["wall", "virtual"] = "wall"
    fleet: str | None = None
    # The parameter count the time model charges for compute and transfers: a small real
    # model can stand in for a large emulated one (FedScale's clock_factor, made explicit).
    time_model_params: int | None = Field(None, ge=1)
    t_budget: float = Field(300.0, gt=0)
    # The job-level budget pacer (adaptive training, selectors without their own pacer):
    # failed rounds widen t_budget, rounds where every agent fit tighten it, within
    # [t_budget_min, t_budget_max] (defaults t_budget / 4 and 4 * t_budget).
    budget_pacer: bool = True
    t_budget_min: float | None = Field(None, gt=0)
    t_budget_max: float | None = Field(None, gt=0)
    budget_recheck_steps: int = Field(5, ge=1)
    ewma_lambda: float = Field(0.7, ge=0, le=1)
    min_payload_frac: float = Field(0.3, gt=0, le=1)
    run_phase_2: bool = True
    # Adaptive training: idle time buys at most max_steps_factor x local_steps (and never
    # more than 5 passes over the agent's data).
    max_steps_factor: int = Field(10, ge=1)
    value_dtype: Literal["float32", "float16"] = "float32"
    # Error feedback for top-k updates (edge_agent/error_feedback.py): agents resend what
    # compression dropped. Changes nothing for dense updates, so it is on by default;
    # it matters for adaptive training's payloads and PyramidFL's dropout.
    error_feedback: bool = True
    max_update_bytes: int = Field(256 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _consistent(self) -> JobConfig:
        check_id(self.name, "job name")
        if self.clients_required > self.num_participants:
            raise ValueError(
                f"clients_required ({self.clients_required}) exceeds num_participants "
                f"({self.num_participants})"
            )
        low, high = self.budget_bounds.lower, self.budget_bounds.upper
        if not low <= self.t_budget <= high:
            field = "t_budget_min" if self.t_budget < low else "t_budget_max"
            raise ValueError(
                f"{field}: t_budget ({self.t_budget}) must lie in [t_budget_min, t_budget_max]"
                f" = [{low}, {high}]"
            )
        if self.clock == "virtual" and self.fleet is None:
            raise ValueError("clock: virtual needs a fleet file (field 'fleet')")
        check_wall_clock(self)
        return self

    @property
    def selector_knobs(self) -> dict[str, Any]:
        """The selector's knobs; a selector with its own ``t_budget`` starts from the job's.

        Bliss paces t_budget itself; without this its knob default (300 s) would silently
        replace the budget the job file sets.
        """
        from client_selectors import SELECTORS

        knobs = self.selector.knobs
        cls = SELECTORS.get(self.selector.name)
        if cls is not None and "t_budget" in cls.Knobs.model_fields and "t_budget" not in knobs:
            knobs["t_budget"] = self.t_budget
        return knobs

    @property
    def budget_bounds(self) -> BudgetBounds:
        """The budget pacer's bounds: the job's, or t_budget / 4 to 4 * t_budget."""
        lower = self.t_budget_min if self.t_budget_min is not None else self.t_budget / 4.0
        upper = self.t_budget_max if self.t_budget_max is not None else self.t_budget * 4.0
        return BudgetBounds(lower=lower, upper=max(lower, upper))

    @property
    def dispatch_count(self) -> int:
        """How many agents a round asks: floor(K * overcommitment), FedScale's rule."""
        return max(self.num_participants, math.floor(self.num_participants * self.overcommitment))

    @property
    def target_updates(self) -> int:
        return self.buffer_size or self.num_participants

    @property
    def agents_needed(self) -> int:
        return self.min_agents or self.num_participants


def parse_job(data: Any, source: str) -> JobConfig:
    if not isinstance(data, dict):
        raise JobConfigError(f"{source}: a job file must be a mapping of fields")
    try:
        data = apply_package(data, source)
    except ValueError as exc:
        raise JobConfigError(f"{source}: {exc}") from exc
    try:
        config = JobConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "<job>"
            lines.append(f"{source}: field {where}: {err['msg']}")
        raise JobConfigError("\n".join(lines)) from exc
    _check_plugins(config, source)
    if config.initial_model is not None and not Path(config.initial_model).is_file():
        raise JobConfigError(
            f"{source}: field initial_model: no such file {config.initial_model!r} "
            "(make it with `coordinator seed JOB.yaml`)"
        )
    _check_resources(config, source)
    return config


def _check_resources(config: JobConfig, source: str) -> None:
    """What the coordinator itself will load is checked at submit, not when the job starts:
    its entry points import and are callable, its fleet file exists."""
    from fedbus.protocol.entry_points import EntryPointError, find_module, resolve

    for field in ("model", "test_data"):
        spec = getattr(config, field)
        if spec is None or (field == "model" and config.package is not None):
            continue  # a package's model is built from the package, in a child process
        try:
            if field == "model" and config.initial_model is not None and not config.test_data:
                # The coordinator never builds this model (the seed file has its weights)
                # and must not import torch for it: check the module exists, no more.
                find_module(spec)
            else:
                resolve(spec)
        except EntryPointError as exc:
            raise JobConfigError(f"{source}: field {field}: {exc}") from exc
    if config.fleet is not None and not Path(config.fleet).is_file():
        raise JobConfigError(f"{source}: field fleet: no such file {config.fleet!r}")


def _check_plugins(config: JobConfig, source: str) -> None:
    """Selector and aggregator knobs are validated now, not when the first round runs."""
    from client_selectors import SelectorConfigError, make_selector
    from coordinator.aggregation import AggregationError, check_knobs

    try:
        make_selector(config.selector.name, config.selector_knobs, 0)
    except SelectorConfigError as exc:
        field = exc.field if exc.field not in (None, "name", "knobs") else "name"
        raise JobConfigError(f"{source}: field selector.{field}: {exc}") from exc
    try:
        check_knobs(config.aggregator.name, config.aggregator.knobs)
    except AggregationError as exc:
        raise JobConfigError(f"{source}: field aggregator: {exc}") from exc


def load_job(path: str | Path) -> JobConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobConfigError(f"{path}: cannot read job file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobConfigError(f"{path}: not valid YAML: {exc}") from exc
    make_job_dir_importable(path)
    return parse_job(data, str(path))
