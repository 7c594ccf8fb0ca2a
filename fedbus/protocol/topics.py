"""Every MQTT topic of fedbus is built and parsed here, and nowhere else.

Layout (prefix defaults to ``fedbus``)::

    {p}/coordinators/{id}/status      retained JSON per coordinator id, last will "offline"
    {p}/coordinator/jobs              JSON job submissions (operators only, by ACL)
    {p}/coordinator/control           JSON job controls: cancel, logs (operators only)
    {p}/coordinator/replies/{client}  JSON replies to controls, to the asking client
    {p}/agents/{agent}/status         retained JSON, last will "offline"
    {p}/agents/{agent}/telemetry      JSON, QoS 0
    {p}/agents/{agent}/tasks          msgpack tasks, QoS 1
    {p}/jobs/{job}/model              retained msgpack global model, QoS 1
    {p}/jobs/{job}/model/{index}      retained chunks of a model too large for one message
    {p}/jobs/{job}/updates/{agent}    msgpack updates, QoS 1
    {p}/jobs/{job}/results/{agent}    msgpack validation results, QoS 1
    {p}/jobs/{job}/status             retained JSON
    {p}/jobs/{job}/events             JSON events
    {p}/packages/{sha256}             retained compute package (.tar.gz), QoS 1
    {p}/packages/{sha256}/{index}     retained chunks of a package too large for one message

Ids (agents, jobs) are 1-128 characters of ``A-Z a-z 0-9 _ . : @ = -``: never the MQTT
separators and wildcards ``/ + #``, and easy to type in any client.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from fedbus.protocol.errors import InvalidTopic

_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@=-]{1,128}$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def is_id(value: str) -> bool:
    """``value`` is a valid id (see :func:`check_id`)."""
    return bool(_ID_PATTERN.fullmatch(value))


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a legal agent or job id, else raise InvalidTopic."""
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise InvalidTopic(
            f"{what} {value!r} is not allowed: use 1-128 characters of A-Z a-z 0-9 _ . : @ = -"
        )
    return value


def check_sha256(value: str) -> str:
    """Return ``value`` if it is a SHA-256 in lowercase hex (a package's name), else raise."""
    if not isinstance(value, str) or not _SHA256_PATTERN.fullmatch(value):
        raise InvalidTopic(f"package hash {value!r} is not 64 lowercase hex digits")
    return value


class TopicKind(enum.Enum):
    COORDINATOR_STATUS = "coordinator_status"
    JOB_SUBMIT = "job_submit"
    JOB_CONTROL = "job_control"
    CONTROL_REPLY = "control_reply"
    AGENT_STATUS = "agent_status"
    AGENT_TELEMETRY = "agent_telemetry"
    AGENT_TASKS = "agent_tasks"
    JOB_MODEL = "job_model"
    JOB_MODEL_CHUNK = "job_model_chunk"
    JOB_UPDATE = "job_update"
    JOB_RESULT = "job_result"
    JOB_STATUS = "job_status"
    JOB_EVENTS = "job_events"
    PACKAGE = "package"
    PACKAGE_CHUNK = "package_chunk"


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    agent: str | None = None
    job: str | None = None
    package: str | None = None  # a package's SHA-256


class Topics:
    """Topic builder for one prefix; parse() is its inverse."""

    def __init__(self, prefix: str = "fedbus") -> None:
        parts = prefix.split("/")
        for part in parts:
            check_id(part, "topic prefix segment")
        self.prefix = prefix
        self._depth = len(parts)

    # -- coordinator ------------------------------------------------------------------
    def coordinator_status(self, coordinator: str = "coordinator") -> str:
        """One retained status per coordinator id, so that a `run` and a `serve` side by
        side never overwrite each other's (and ``{p}/+/+/status`` matches it)."""
        return f"{self.prefix}/coordinators/{check_id(coordinator, 'coordinator id')}/status"

    def all_coordinator_status(self) -> str:
        return f"{self.prefix}/coordinators/+/status"

    def job_submit(self) -> str:
        return f"{self.prefix}/coordinator/jobs"

    def job_control(self) -> str:
        return f"{self.prefix}/coordinator/control"

    def control_reply(self, client: str) -> str:
        return f"{self.prefix}/coordinator/replies/{check_id(client, 'client id')}"

    # -- agents -----------------------------------------------------------------------
    def agent_status(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_id(agent, 'agent id')}/status"

    def agent_telemetry(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_id(agent, 'agent id')}/telemetry"

    def agent_tasks(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_id(agent, 'agent id')}/tasks"

    # -- jobs -------------------------------------------------------------------------
    def job_model(self, job: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/model"

    def job_model_chunk(self, job: str, index: int) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/model/{int(index)}"

    def job_update(self, job: str, agent: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/updates/{check_id(agent, 'agent id')}"

    def job_result(self, job: str, agent: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/results/{check_id(agent, 'agent id')}"

    def job_status(self, job: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/status"

    def job_events(self, job: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/events"

    # -- compute packages -------------------------------------------------------------
    def package(self, sha256: str) -> str:
        return f"{self.prefix}/packages/{check_sha256(sha256)}"

    def package_chunk(self, sha256: str, index: int) -> str:
        return f"{self.prefix}/packages/{check_sha256(sha256)}/{int(index)}"

    def package_all(self, sha256: str) -> str:
        """A package and its chunks (``#`` also matches the package level itself)."""
        return f"{self.prefix}/packages/{check_sha256(sha256)}/#"

    # -- subscriptions ----------------------------------------------------------------
    def all_agent_status(self) -> str:
        return f"{self.prefix}/agents/+/status"

    def all_agent_telemetry(self) -> str:
        return f"{self.prefix}/agents/+/telemetry"

    def all_job_status(self) -> str:
        return f"{self.prefix}/jobs/+/status"

    def all_job_events(self) -> str:
        return f"{self.prefix}/jobs/+/events"

    def all_job_models(self) -> str:
        """Models and their chunks (``#`` also matches the ``model`` level itself)."""
        return f"{self.prefix}/jobs/+/model/#"

    def all_job_updates(self) -> str:
        return f"{self.prefix}/jobs/+/updates/+"

    def all_job_results(self) -> str:
        return f"{self.prefix}/jobs/+/results/+"

    def job_updates(self, job: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/updates/+"

    def job_results(self, job: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job, 'job id')}/results/+"

    # -- parsing ----------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic:
        """Map a concrete topic back to its kind and ids; raise InvalidTopic otherwise."""
        parts = topic.split("/")
        if "/".join(parts[: self._depth]) != self.prefix:
            raise InvalidTopic(f"topic {topic!r} is outside prefix {self.prefix!r}")
        rest = parts[self._depth :]
        match rest:
            case ["coordinators", coordinator, "status"]:
                check_id(coordinator, "coordinator id")
                return ParsedTopic(TopicKind.COORDINATOR_STATUS)
            case ["coordinator", "jobs"]:
                return ParsedTopic(TopicKind.JOB_SUBMIT)
            case ["coordinator", "control"]:
                return ParsedTopic(TopicKind.JOB_CONTROL)
            case ["coordinator", "replies", client]:
                return ParsedTopic(TopicKind.CONTROL_REPLY, agent=check_id(client, "client id"))
            case ["agents", agent, "status"]:
                return ParsedTopic(TopicKind.AGENT_STATUS, agent=check_id(agent, "agent id"))
            case ["agents", agent, "telemetry"]:
                return ParsedTopic(TopicKind.AGENT_TELEMETRY, agent=check_id(agent, "agent id"))
            case ["agents", agent, "tasks"]:
                return ParsedTopic(TopicKind.AGENT_TASKS, agent=check_id(agent, "agent id"))
            case ["jobs", job, "model"]:
                return ParsedTopic(TopicKind.JOB_MODEL, job=check_id(job, "job id"))
            case ["jobs", job, "model", index] if index.isdigit() and len(index) <= 6:
                return ParsedTopic(TopicKind.JOB_MODEL_CHUNK, job=check_id(job, "job id"))
            case ["jobs", job, "updates", agent]:
                return ParsedTopic(
                    TopicKind.JOB_UPDATE,
                    job=check_id(job, "job id"),
                    agent=check_id(agent, "agent id"),
                )
            case ["jobs", job, "results", agent]:
                return ParsedTopic(
                    TopicKind.JOB_RESULT,
                    job=check_id(job, "job id"),
                    agent=check_id(agent, "agent id"),
                )
            case ["jobs", job, "status"]:
                return ParsedTopic(TopicKind.JOB_STATUS, job=check_id(job, "job id"))
            case ["jobs", job, "events"]:
                return ParsedTopic(TopicKind.JOB_EVENTS, job=check_id(job, "job id"))
            case ["packages", sha]:
                return ParsedTopic(TopicKind.PACKAGE, package=check_sha256(sha))
            case ["packages", sha, index] if index.isdigit() and len(index) <= 6:
                return ParsedTopic(TopicKind.PACKAGE_CHUNK, package=check_sha256(sha))
        raise InvalidTopic(f"topic {topic!r} is not a fedbus topic")
