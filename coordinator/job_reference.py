"""docs/jobs.md, generated from the pydantic job model: every field, its type, default, meaning.

``python -m coordinator.job_reference --write docs/jobs.md`` regenerates the page; a test
checks that the page equals what this module renders and that every field of
:class:`~coordinator.config.JobConfig` (and of a package's ``fedbus.yaml``) has a meaning
here, so a field added without a line of documentation fails the suite.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from coordinator.config import AggregatorConfig, JobConfig, SelectorConfig, TrustConfig
from fedbus.packages.spec import PackageSpec

JOB_FIELDS: dict[str, str] = {
    "name": "The job id: names its topics and its run directory (1-128 of `A-Z a-z 0-9 _ . : @ = -`).",
    "model": "`module:callable` returning the `torch.nn.Module` to train. Optional with `package` (the package's own).",
    "data": "`module:callable`, called as `data(partition, **data_args)` on each agent, returning `(train, test)` datasets of `(x, label)`. Optional with `package`.",
    "data_args": "Keyword arguments for `data` (scalars only), the same on every agent.",
    "seed": "Seeds the initial model, the selector (unless `selector.seed`) and each agent's batch order.",
    "initial_model": "A seed file (`.npz`, from `coordinator seed JOB.yaml`) with the initial weights, read instead of building `model`.",
    "package": "A compute package: a `.tar.gz` from `coordinator package build DIR`, or a package directory, relative to this file. Agents get it over the bus, pinned by SHA-256; they must trust it (`edge-agent run --trust-package SHA`).",
    "package_sha256": "The package's SHA-256. Filled in when the job is loaded; one written here pins the exact build (loading fails if the archive differs).",
    "trust": "How far the coordinator believes what agents report (below; docs/security.md).",
    "requires": "Which agents the job may use (docs/scheduling.md): `accelerator` (any of these kinds), `device_model` (a case-insensitive shell pattern), `min_memory_gb`, `min_samples`, `tags` (all of the operator's `edge-agent run --tag` labels). Empty: every agent.",
    "rounds": "How many training rounds the job runs.",
    "num_participants": "K: the updates a round aggregates (the K first successful arrivals on the wall clock).",
    "overcommitment": "Dispatch floor(K x overcommitment) agents per round, so stragglers do not hold the round up (FedScale's rule).",
    "buffer_size": "Close the round after this many updates (default: `num_participants`).",
    "clients_required": "Fewest updates for a round to count; with fewer it fails and the model stays.",
    "min_agents": "Agents that must be online before the first round (default: `num_participants`).",
    "agent_wait_timeout": "Seconds to wait for `min_agents` before the job fails with `no agents`.",
    "round_timeout": "Seconds a round waits for its updates.",
    "local_steps": "E: SGD mini-batch steps each agent trains per round (the built-in trainer).",
    "batch_size": "Mini-batch size of local training.",
    "learning_rate": "Local SGD learning rate.",
    "momentum": "Local SGD momentum.",
    "weight_decay": "Local SGD weight decay (L2).",
    "proximal_mu": "FedProx: `mu/2 * ||w - w_global||^2` added to the local loss (0: plain FedAvg).",
    "eval_interval": "Validate the global model every this many rounds (0: never).",
    "eval_timeout": "Seconds a federated validation waits for agents' results.",
    "eval_max_clients": "At most this many agents validate (a seeded sample when more are online).",
    "test_data": "Server-side evaluation: `module:callable` returning one test dataset; the coordinator scores the model itself instead of asking agents.",
    "test_data_args": "Keyword arguments for `test_data`.",
    "eval_overlap": "Validate round r's model alongside round r+1's training instead of between rounds.",
    "selector": "Client selection policy and its knobs (below).",
    "aggregator": "Aggregation rule and its knobs (below).",
    "adaptive_training": "Agents plan their own work against a time budget (`t_budget`) instead of fixed `local_steps`.",
    "clock": "`wall` for real devices; `virtual` for emulated heterogeneity (needs `fleet`).",
    "fleet": "Fleet file (`fedbus-fleet build ...`) of emulated devices, for the virtual clock.",
    "time_model_params": "Virtual clock: the parameter count the time model charges for (a small model standing in for a large one).",
    "t_budget": "Adaptive training: each agent's time budget per round, seconds.",
    "budget_pacer": "Adaptive training: move `t_budget` after every round (failed rounds widen it, rounds where every agent fit tighten it); a selector with its own budget rule keeps precedence.",
    "t_budget_min": "Budget pacer: the lowest `t_budget`, seconds (default `t_budget` / 4).",
    "t_budget_max": "Budget pacer: the highest `t_budget`, seconds (default 4 × `t_budget`).",
    "budget_recheck_steps": "Adaptive training: steps between budget re-checks.",
    "ewma_lambda": "Adaptive training: smoothing of the measured step time.",
    "max_steps_factor": "Adaptive training: at most this many times local_steps per round.",
    "min_payload_frac": "Adaptive training: the smallest fraction of the update an agent may send.",
    "run_phase_2": "Adaptive training: trade further steps against a smaller payload at the end of the budget.",
    "value_dtype": "Dtype of the update values on the wire.",
    "error_feedback": "Agents add back what top-k compression dropped in earlier rounds (no effect on dense updates).",
    "max_update_bytes": "Largest update the coordinator accepts from one agent, bytes.",
}

SELECTOR_FIELDS: dict[str, str] = {
    "name": "`random`, `oort`, `pyramidfl` or `bliss`; any other key is a knob of that selector.",
    "seed": "The selector's RNG seed (default: the job's `seed`).",
}

TRUST_FIELDS: dict[str, str] = {
    "cap_by_profile": "Cap an update's (and a validation result's) example count at the partition size the agent registered.",
    "max_examples": "Cap every agent's example count at this (none: no job-wide cap).",
    "median_weight_cap": "Cap every update's weight at this many times the round's median weight (none: off).",
    "metric_median_cap": "The same for validation results when the job's accuracy is averaged over agents.",
    "norm_clip": "Scale updates longer than this many times the round's median update norm down to it (none: plain FedAvg).",
}

AGGREGATOR_FIELDS: dict[str, str] = {
    "name": "`fedavg`, `median`, `trimmed_mean` or `krum`; other keys are its knobs (`trim_frac`, `num_byzantine`, `multi`, `block_columns`).",
    "server_lr": "Server learning rate: the global model moves by `server_lr` x the aggregated delta.",
}

PACKAGE_FIELDS: dict[str, str] = {
    "name": "The package's name (the default archive name).",
    "model": "`module:callable` returning the `torch.nn.Module`, imported from the package. Required unless `flower_client`.",
    "data": "`module:callable(partition, **data_args)` returning `(train, test)`. Required unless `flower_client`.",
    "flower_client": "A Flower `client_fn` (`NumPyClient` or `Client`), run unchanged: train tasks call its `fit`, validate tasks its `evaluate`; its `get_parameters` seeds the job. Its `num-partitions` is the job's `data_args.num_partitions`.",
    "startup": "Run once per agent process before the first task: `module:callable` or `{command: ...}`.",
    "build": "Reserved for a build step (FEDn's `build`); not run by fedbus yet.",
    "train": "The package's own training: `module:callable(weights, context) -> (weights, num_examples[, metrics])` or `{command: CMD}` run as `CMD MODEL_IN.npz MODEL_OUT.npz`. Default: fedbus's SGD trainer.",
    "validate": "The package's own validation: `module:callable(weights, context) -> {metric: number}` or `{command: CMD}` run as `CMD MODEL_IN.npz METRICS.json`. Default: loss and accuracy.",
    "requirements": "PEP 508 requirements (`numpy>=1.26`) the code needs beyond fedbus: an agent checks them against what it has installed before running any of the package's code, and refuses the package, naming what is missing (it installs nothing).",
}


def _type(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    text = text.replace("|", "\\|")  # inside a Markdown table cell
    for long, short in (
        ("coordinator.config.", ""),
        ("fedbus.packages.spec.", ""),
        ("NoneType", "None"),
        ("<class '", ""),
        ("'>", ""),
    ):
        text = text.replace(long, short)
    return text


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return (
            "`{}`"
            if info.default_factory is dict
            else "`[]`"
            if info.default_factory is list
            else "(table)"
        )
    value = info.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                parts.append(f"{sign} {getattr(item, attr)}")
    return f" ({', '.join(parts)})" if parts else ""


def table(model: type[BaseModel], meanings: dict[str, str]) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        key = info.alias or name
        meaning = meanings.get(key)
        if meaning is None:
            raise KeyError(f"{model.__name__}.{key} has no line in coordinator/job_reference.py")
        rows.append(
            f"| `{key}` | `{_type(info.annotation)}`{_bounds(info)} | {_default(info)} | {meaning} |"
        )
    return rows


def render() -> str:
    lines = [
        "# Job reference",
        "",
        "<!-- Generated by `python -m coordinator.job_reference --write docs/jobs.md` from the",
        "     pydantic models; edit the meanings in coordinator/job_reference.py. -->",
        "",
        "A job is one YAML file, validated when it is loaded: an error names the file and",
        "the field (`jobs/x.yaml: field rounds: Input should be greater than or equal to 1`).",
        "Run it with `coordinator run JOB.yaml`, or hand it to a running service with",
        "`coordinator submit JOB.yaml`. The directory of the job file is importable while the",
        "coordinator runs it, so `model: my_model:make_model` finds `my_model.py` beside it.",
        "",
        "## Job fields",
        "",
        *table(JobConfig, JOB_FIELDS),
        "",
        "## `selector`",
        "",
        *table(SelectorConfig, SELECTOR_FIELDS),
        "",
        "## `aggregator`",
        "",
        *table(AggregatorConfig, AGGREGATOR_FIELDS),
        "",
        "## `trust`",
        "",
        *table(TrustConfig, TRUST_FIELDS),
        "",
        "## A compute package's `fedbus.yaml`",
        "",
        "A package carries the job's code to agents that do not have it (docs/protocol.md",
        "§4b). Build it with `coordinator package build DIR`, try an entry point locally with",
        "`edge-agent package run train|validate DIR`, and name it in a job as `package:`.",
        "",
        *table(PackageSpec, PACKAGE_FIELDS),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", default=None, help="write the page here (default: stdout)")
    args = parser.parse_args(argv)
    page = render()
    if args.write:
        Path(args.write).write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
