"""What ``coordinator watch`` shows, kept from the bus's messages (pure: no I/O, no clock).

Jobs from their retained status and the coordinator's waiting reasons; agents from their
retained status (online, what they advertise), telemetry, and the jobs' round events
(ROUND_BEGIN marks the dispatched agents busy for that job, the round's end frees them
and records each one's round time). :meth:`WatchState.render` draws it with rich.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text

from coordinator.eligibility import attributes_of
from fedbus.protocol.messages import AgentStatus, CoordinatorStatus, Event, JobStatus, Telemetry

_ROUND_CLOSED = ("ROUND_END", "ROUND_FAILED")
_JOB_CLOSED = ("JOB_END", "JOB_FAILED")
MAX_AGENT_ROWS = 40


@dataclass
class AgentRow:
    online: bool = False
    kind: str = ""
    tags: str = ""
    busy_for: str | None = None
    last_round_s: float | None = None
    telemetry: Telemetry | None = None


class WatchState:
    def __init__(self) -> None:
        self.coordinator: CoordinatorStatus | None = None
        self.jobs: dict[str, JobStatus] = {}
        self.agents: dict[str, AgentRow] = {}

    # -- inputs ----------------------------------------------------------------------
    def coordinator_status(self, status: CoordinatorStatus) -> None:
        self.coordinator = status

    def job_status(self, status: JobStatus) -> None:
        self.jobs[status.job] = status

    def agent_status(self, status: AgentStatus) -> None:
        row = self.agents.setdefault(status.agent, AgentRow())
        row.online = status.state == "online"
        if status.profile is not None:
            attributes = attributes_of(status.agent, status.profile)
            row.kind = f"{attributes.accelerator} {attributes.device_model}".strip()
            row.tags = ",".join(sorted(attributes.tags))
        if not row.online:
            row.busy_for = None

    def telemetry(self, telemetry: Telemetry) -> None:
        self.agents.setdefault(telemetry.agent, AgentRow()).telemetry = telemetry

    def event(self, event: Event) -> None:
        data = event.data
        if event.event == "ROUND_BEGIN":
            for agent in data.get("dispatched", []):
                self.agents.setdefault(agent, AgentRow()).busy_for = event.job
        elif event.event in _ROUND_CLOSED:
            for agent, seconds in (data.get("durations") or {}).items():
                if agent in self.agents and isinstance(seconds, int | float):
                    self.agents[agent].last_round_s = float(seconds)
            self._free(event.job)
        elif event.event in _JOB_CLOSED:
            self._free(event.job)

    def _free(self, job: str) -> None:
        for row in self.agents.values():
            if row.busy_for == job:
                row.busy_for = None

    # -- output ----------------------------------------------------------------------
    def render(self) -> Group:
        # Waiting reasons are sentences: under the table, not squeezed into a column.
        waiting = self.coordinator.waiting if self.coordinator is not None else {}
        reasons = [
            Text(f"{job} waits: {why}", style="yellow") for job, why in sorted(waiting.items())
        ]
        return Group(self._jobs_table(), *reasons, self._agents_table())

    def _jobs_table(self) -> Table:
        c = self.coordinator
        title = "coordinator: none seen" if c is None else (
            f"coordinator {c.coordinator} {c.state}  policy {c.policy or '-'}  jobs {len(c.jobs)}"
        )  # fmt: skip
        table = Table(title=title, title_justify="left", expand=True)
        for column in ("job", "state", "round", "phase", "accuracy", "loss"):
            table.add_column(column)
        waiting = c.waiting if c is not None else {}
        running = set(c.jobs) if c is not None else set()
        for name in sorted(set(self.jobs) | running):
            s = self.jobs.get(name)
            state = "waiting" if name in waiting else (s.state if s else "pending")
            table.add_row(
                name,
                state,
                f"{s.round}/{s.rounds}" if s else "-",
                s.phase if s else "-",
                _num(s.last_accuracy if s else None),
                _num(s.last_loss if s else None),
            )
        return table

    def _agents_table(self) -> Table:
        online = sum(r.online for r in self.agents.values())
        busy = sum(r.busy_for is not None for r in self.agents.values())
        table = Table(
            title=f"agents: {online} online, {busy} busy, {len(self.agents)} known",
            title_justify="left",
            expand=True,
        )
        for column in (
            "agent",
            "state",
            "busy for",
            "last round",
            "device",
            "tags",
            "cpu %",
            "mem MB",
        ):
            table.add_column(column)
        # Busy first, then online, then by id; a fleet of thousands shows its first rows.
        rows = sorted(
            self.agents.items(), key=lambda kv: (kv[1].busy_for is None, not kv[1].online, kv[0])
        )
        for agent, row in rows[:MAX_AGENT_ROWS]:
            t = row.telemetry
            table.add_row(
                agent,
                "online" if row.online else "offline",
                row.busy_for or "",
                "" if row.last_round_s is None else f"{row.last_round_s:.2f}s",
                row.kind,
                row.tags,
                _num(t.cpu_percent if t else None, 0),
                _num(t.mem_used_mb if t else None, 0),
            )
        if len(rows) > MAX_AGENT_ROWS:
            table.caption = f"... and {len(rows) - MAX_AGENT_ROWS} more"
        return table


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
