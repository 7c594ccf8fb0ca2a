"""One job's rounds: the asyncio shell around the pure round machine, selector and aggregation.

The runner owns everything per job (model, selector, counters, run directory), so the
service can hold several. It reads agent replies from its inbox (fed by the service's
single receive loop), never from the socket itself, and publishes through the service.

A round: select ``floor(K * overcommitment)`` online agents, publish the global model once
(retained, the broker fans it out), send each agent its task, collect updates into rows
of a preallocated stack until the round machine closes (buffer full, everyone answered,
or the deadline), keep the K fastest, aggregate, feed the selector (stragglers too),
validate every ``eval_interval`` rounds, checkpoint, and emit ROUND_END. Heavy numpy work
(decoding large updates, aggregation) runs in a worker thread so keep-alives keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from client_selectors import ClientProfile, ClientSelector, make_selector
from coordinator import checkpoint, seed_model
from coordinator.aggregation import UpdateStack, aggregate
from coordinator.aggregation.trust import capped_weights, clip_rows, summarize
from coordinator.config import JobConfig
from coordinator.events import EventLog, EventName, read_events
from coordinator.registry import AgentRegistry
from coordinator.round_state import Collection, JobPhase, Phase, advance
from coordinator.server_eval import ServerEvaluator
from coordinator.update_check import (
    Assignment,
    Rejected,
    check_header,
    decode_result,
    decode_update,
    write_update,
)
from coordinator.virtual_clock import VirtualPlan, keep_fastest_replies, plan_fastest
from edge_agent.compression import upload_bytes
from edge_agent.step_cap import fixed_steps
from fedbus.fleet import Fleet, load_fleet
from fedbus.fleet.trace import dynamic_windows
from fedbus.fleet.virtual_round import RoundWork, simulate_round
from fedbus.protocol import chunking
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import (
    JobStatus,
    ModelMeta,
    ResultMeta,
    Task,
    TrainConfig,
    UpdateMeta,
    ValidateRequest,
    encode_envelope,
    encode_json,
)
from fedbus.protocol.params import ParamLayout
from fedbus.protocol.topics import Topics

log = logging.getLogger(__name__)

# Updates larger than this are decoded in a worker thread, smaller ones inline.
INLINE_DECODE_BYTES = 1 << 20


@dataclass(frozen=True)
class Inbound:
    """A reply routed to this job by the service, or word that an agent went offline."""

    kind: str  # "update" | "result" | "lost" | "joined"
    agent: str
    payload: bytes | bytearray | memoryview = b""
    received: float = 0.0


class Publish(Protocol):
    """The service's publish: chunks payloads above its chunk size (to ``chunk_topic``)."""

    def __call__(
        self,
        topic: str,
        payload: bytes | bytearray,
        qos: int,
        retain: bool,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> Awaitable[None]: ...


@dataclass
class RoundReport:
    round: int
    ok: bool
    reason: str
    selected: list[str]
    kept: list[str]
    stragglers: list[str]
    duration: float
    virtual_duration: float | None = None
    accuracy: float | None = None
    loss: float | None = None
    train_loss: float | None = None
    upload_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "ok": self.ok,
            "reason": self.reason,
            "selected": self.selected,
            "kept": self.kept,
            "stragglers": self.stragglers,
            "duration": self.duration,
            "virtual_duration": self.virtual_duration,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "train_loss": self.train_loss,
            "upload_bytes": self.upload_bytes,
            **self.extra,
        }


@dataclass
class _PendingEval:
    """A validation sent out and not yet closed, and the round it completes."""

    round: int
    entry: dict[str, Any]  # the round's history entry: accuracy and loss are filled in
    virtual_time: float | None  # when the round ended
    assignments: dict[str, Assignment]
    collection: Collection
    results: dict[str, ResultMeta] = field(default_factory=dict)
    # Not asked yet: the next round's train tasks carry their requests (validate_first),
    # and whoever that round does not train gets a validate task of its own.
    unasked: list[str] = field(default_factory=list)


@dataclass
class _Reply:
    agent: str
    meta: UpdateMeta
    row: int
    received: float
    nbytes: int


class JobRunner:
    def __init__(
        self,
        config: JobConfig,
        *,
        topics: Topics,
        publish: Publish,
        registry: AgentRegistry,
        run_dir: Path,
    ) -> None:
        self.config = config
        self.job = config.name
        self.topics = topics
        self._publish = publish
        self.registry = registry
        self.run_dir = run_dir
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self.phase = JobPhase.PENDING
        self.rejected: Counter[str] = Counter()
        self.history: list[dict[str, Any]] = []
        self.completed_rounds = 0
        self.model_version = 0
        self.virtual_time = 0.0 if config.clock == "virtual" else None
        self.last_accuracy: float | None = None
        self.last_loss: float | None = None
        self.events = EventLog(run_dir / "events.jsonl", self.job, self._publish_event)
        self.selector: ClientSelector = make_selector(
            config.selector.name,
            config.selector_knobs,
            config.selector.seed if config.selector.seed is not None else config.seed,
        )
        self._registered: set[str] = set()
        self._rng = random.Random(config.seed)
        self.fleet: Fleet | None = load_fleet(config.fleet) if config.fleet else None
        if self.fleet is not None and hasattr(self.selector, "set_dynamic_source"):
            fleet = self.fleet
            self.selector.set_dynamic_source(lambda cid, t: dynamic_windows(fleet.by_id(cid), t))
        self._stack: UpdateStack | None = None
        self._row_of: dict[str, int] = {}
        self._pending_eval: _PendingEval | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._model_sending: asyncio.Task[None] | None = None
        self.server_eval = (
            ServerEvaluator(config.model, config.test_data, config.test_data_args)
            if config.test_data
            else None
        )
        self._model_buffer = bytearray()
        self._delta_buffer: np.ndarray | None = None
        # Chunked updates: at most two in-flight rounds' worth of unfinished transfers.
        self._chunks = chunking.Reassembler(
            max_bytes=config.max_update_bytes,
            max_pending_bytes=2 * config.dispatch_count * config.max_update_bytes,
            timeout=config.round_timeout,
        )
        self._ingest_seconds = 0.0
        # Task ids of the last closed training round and the last two validations: a
        # straggler's answer that arrives after its round closed is expected with
        # over-commitment, and is dropped as late, not hostile; anything older is stale.
        self._closed_tasks: set[str] = set()
        self._recent_closed: dict[str, list[set[str]]] = {"train": [], "validate": []}
        self.late_updates = 0
        self.layout: ParamLayout
        self.global_flat: np.ndarray

    # -- publishing -------------------------------------------------------------------
    def _publish_soon(
        self,
        topic: str,
        payload: bytes | bytearray,
        retain: bool,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> asyncio.Task[None]:
        """Publish (QoS 1) without waiting here for the broker's acknowledgement.

        Events, status and the new model are for watchers and agents, not for the round
        loop's next step: waiting out each PUBACK put four or five broker round trips
        (several ms each with ten agent processes on two cores) between one round's last
        update and the next round's tasks. Publishes still leave in the order they are
        made (one connection, tasks run first in, first out); the job waits for all of
        them before it ends.
        """
        task = asyncio.ensure_future(self._publish(topic, payload, 1, retain, chunk_topic))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _flush_publishes(self) -> None:
        while self._in_flight:
            await asyncio.gather(*self._in_flight)

    async def _publish_event(self, payload: bytes) -> None:
        self._publish_soon(self.topics.job_events(self.job), payload, False)

    async def publish_status(self, state: str = "running") -> None:
        status = JobStatus(
            job=self.job,
            state=state,  # type: ignore[arg-type]
            round=self.completed_rounds,
            rounds=self.config.rounds,
            phase=self.phase.value,
            model_version=self.model_version,
            last_accuracy=self.last_accuracy,
            last_loss=self.last_loss,
            virtual_time=self.virtual_time,
            rejected=dict(self.rejected),
            late=self.late_updates,
            ts=time.time(),
        )
        self._publish_soon(self.topics.job_status(self.job), encode_json(status), True)

    async def publish_model(self) -> None:
        meta = ModelMeta(
            job=self.job,
            version=self.model_version,
            round=self.completed_rounds,
            names=self.layout.names,
        )
        # Reuse last round's buffer once its publish is acknowledged (paho let go of it):
        # the same-sized model is written into already-mapped memory every round.
        if self._model_sending is not None:
            with contextlib.suppress(Exception):  # a failed publish left no buffer to reuse
                await self._model_sending
        tensors = self.layout.unflatten(self.global_flat)
        if self.layout.num_params * 4 > INLINE_DECODE_BYTES:  # 44 MB: ~65 ms of copying
            payload = await asyncio.to_thread(
                encode_envelope, meta, tensors, into=self._model_buffer
            )
        else:
            payload = encode_envelope(meta, tensors, into=self._model_buffer)
        self._model_buffer = bytearray()
        self._model_sending = self._publish_soon(
            self.topics.job_model(self.job),
            payload,
            True,
            lambda index: self.topics.job_model_chunk(self.job, index),
        )

        def reuse(sent: asyncio.Task[None]) -> None:
            if not sent.cancelled() and sent.exception() is None:
                self._model_buffer = payload

        self._model_sending.add_done_callback(reuse)

    def expire_chunks(self, now: float) -> None:
        """Free chunked updates that stopped half way (the service calls this on a timer)."""
        self._chunks.expire(now)

    async def republish(self) -> None:
        """After a reconnect: the broker may have lost retained messages in a crash."""
        if hasattr(self, "global_flat"):
            await self.publish_model()
            await self.publish_status()

    def _set_phase(self, phase: JobPhase) -> None:
        self.phase = advance(self.phase, phase)

    # -- state ------------------------------------------------------------------------
    def _initial_model(self) -> dict[str, np.ndarray]:
        """The seed file's weights, or the model entry point's (in a worker thread: see run)."""
        if self.config.initial_model is not None:
            return seed_model.load(self.config.initial_model)
        return seed_model.build(self.config.model, self.config.seed)

    def _load_or_init(self) -> bool:
        restored = checkpoint.load(self.run_dir / "checkpoint")
        if restored is None:
            tensors = self._initial_model()
            self.layout = ParamLayout.from_tensors(tensors)
            self.global_flat = self.layout.flatten(tensors)
            return False
        state, tensors = restored
        if state.get("job") != self.job:
            raise RuntimeError(
                f"{self.run_dir}: checkpoint belongs to job {state.get('job')!r}, not {self.job!r}"
            )
        self.layout = ParamLayout.from_tensors(tensors)
        self.global_flat = self.layout.flatten(tensors)
        self.completed_rounds = int(state["completed_rounds"])
        self.model_version = int(state["model_version"])
        self.history = list(state["history"])
        self.rejected = Counter(state.get("rejected", {}))
        self.virtual_time = state.get("virtual_time")
        self.last_accuracy = state.get("last_accuracy")
        self.last_loss = state.get("last_loss")
        self._registered = set(state.get("registered", []))
        self.selector = type(self.selector).from_state(state["selector"])
        self._rng.setstate(_tuple_state(state["rng"]))
        return True

    async def _save_checkpoint(self) -> None:
        """A large model's file in a worker thread (tens of ms for 44 MB); a small one inline.

        A worker thread has to win the GIL from a loop busy with the next round's traffic:
        measured at N=10 (38 KB model) that stretched a 2-3 ms write to 10-25 ms, on the
        path from one round to the next.
        """
        if self.layout.num_params * 4 > INLINE_DECODE_BYTES:
            await asyncio.to_thread(self._checkpoint)
        else:
            self._checkpoint()

    def _checkpoint(self) -> None:
        state = {
            "job": self.job,
            "completed_rounds": self.completed_rounds,
            "model_version": self.model_version,
            "history": self.history,
            "rejected": dict(self.rejected),
            "virtual_time": self.virtual_time,
            "last_accuracy": self.last_accuracy,
            "last_loss": self.last_loss,
            "registered": sorted(self._registered),
            "selector": self.selector.state(),
            "rng": _list_state(self._rng.getstate()),
        }
        checkpoint.save(
            self.run_dir / "checkpoint",
            self.model_version,
            self.layout.unflatten(self.global_flat),
            state,
        )

    async def _reemit_missing_round_ends(self) -> None:
        """A crash between checkpoint and ROUND_END leaves the event unwritten: write it now."""
        logged = {
            e["round"]
            for e in read_events(self.events.path)
            if e["event"] in ("ROUND_END", "ROUND_FAILED")
        }
        for entry in self.history:
            if entry["round"] not in logged:
                name = EventName.ROUND_END if entry["ok"] else EventName.ROUND_FAILED
                await self.events.emit(name, entry["round"], entry, virtual_time=self.virtual_time)

    # -- the job ----------------------------------------------------------------------
    async def run(self) -> bool:
        """Run the job to its end; True when every round ran (failed rounds included)."""
        resumed = await asyncio.to_thread(self._load_or_init)
        self._set_phase(JobPhase.WAITING_FOR_AGENTS)
        if resumed:
            await self._reemit_missing_round_ends()
            await self.events.emit(
                EventName.JOB_RESUMED, self.completed_rounds, {"model_version": self.model_version}
            )
        else:
            await self.events.emit(
                EventName.JOB_BEGIN,
                0,
                {
                    "config": self.config.model_dump(mode="json"),
                    "num_params": self.layout.num_params,
                },
            )
        await self.publish_model()
        await self.publish_status()
        try:
            if not await self._wait_for_agents():
                self._set_phase(JobPhase.FAILED)
                await self.events.emit(
                    EventName.JOB_FAILED, self.completed_rounds, {"reason": "no agents"}
                )
                await self.publish_status("failed")
                await self._flush_publishes()
                return False
            while self.completed_rounds < self.config.rounds:
                await self._round(self.completed_rounds + 1)
            await self._finish_validation()
            self._set_phase(JobPhase.FINISHED)
            await self.events.emit(
                EventName.JOB_END,
                self.completed_rounds,
                {
                    "accuracy": self.last_accuracy,
                    "loss": self.last_loss,
                    "rejected": dict(self.rejected),
                },
                virtual_time=self.virtual_time,
            )
            await self.publish_status("finished")
            await self._flush_publishes()
            return True
        finally:
            self.events.close()

    async def _wait_for_agents(self) -> bool:
        await self._ask_validation([])  # an outstanding validation is not held back meanwhile
        needed = self.config.agents_needed
        deadline = time.monotonic() + self.config.agent_wait_timeout
        while len(self.registry.online()) < needed and time.monotonic() < deadline:
            await self._drain(until=min(deadline, time.monotonic() + 0.2), collection=None)
        online = self.registry.online()
        await self.events.emit(
            EventName.AGENTS_READY, self.completed_rounds, {"online": len(online)}
        )
        return len(online) >= self.config.clients_required

    def _register_new_agents(self, online: list[str]) -> None:
        for agent in online:
            if agent in self._registered:
                continue
            profile = self.registry.profile(agent)
            num_samples = (profile.num_samples if profile else None) or 1
            static = dict(profile.static) if profile else {}
            client = ClientProfile(num_samples=num_samples, static=static)
            if self.fleet is not None:
                device = self.fleet.by_id(agent)
                times = simulate_round(
                    device, self._now(), self._work(None), seed=self.config.seed, round_=0
                )
                client = ClientProfile(
                    num_samples=num_samples,
                    duration=times.total,
                    compute_time=times.t_comp,
                    comm_time=times.t_dl + times.t_ul,
                    static={**device.static, **static},
                )
            self.selector.register_client(agent, client)
            self._registered.add(agent)

    def _eligible(self) -> list[str]:
        """Online agents that may train now: on the virtual clock, fleet members that are active."""
        online = self.registry.online()
        if self.fleet is None or self.virtual_time is None:
            return online
        return [a for a in online if a in self._fleet_ids and self._is_active(a, self.virtual_time)]

    @property
    def _fleet_ids(self) -> set[str]:
        if self.fleet is None:
            return set()
        if not hasattr(self, "_fleet_id_set"):
            self._fleet_id_set = {p.client_id for p in self.fleet}
        return self._fleet_id_set

    def _is_active(self, agent: str, t: float) -> bool:
        return self.fleet is not None and self.fleet.by_id(agent).is_active(t)

    def _work(self, config: TrainConfig | None, agent: str | None = None) -> RoundWork:
        """What a round costs on the time model (``time_model_params`` stands in for P).

        Steps as the agent will run them: a raised override is capped by its data size.
        """
        params = self.config.time_model_params or self.layout.num_params
        steps = self.config.local_steps
        if config is not None:
            profile = self.registry.profile(agent) if agent is not None else None
            num_train = profile.num_samples if profile and profile.num_samples else None
            steps = config.local_steps if num_train is None else fixed_steps(config, num_train)
        keep = config.keep_frac if config else 1.0
        dtype = np.float16 if self.config.value_dtype == "float16" else np.float32
        upload = upload_bytes(params, keep, dtype)
        return RoundWork.dense(params, self.config.batch_size, steps, upload)

    def _virtual_plan(
        self, round_: int, selected: list[str], configs: dict[str, TrainConfig]
    ) -> VirtualPlan | None:
        """Virtual clock: estimate every candidate; non-adaptive rounds keep the K fastest."""
        if self.fleet is None or self.virtual_time is None:
            return None
        estimates = self._estimates(round_, selected, configs)
        k = self.config.num_participants if not self.config.adaptive_training else len(selected)
        return plan_fastest(estimates, self.virtual_time, k, self._is_active)

    def _estimates(
        self, round_: int, agents: list[str], configs: dict[str, TrainConfig]
    ) -> dict[str, float]:
        """Time-model round durations, the same numbers the agents will compute."""
        assert self.fleet is not None and self.virtual_time is not None
        return {
            a: simulate_round(
                self.fleet.by_id(a),
                self.virtual_time,
                self._work(configs[a], a),
                seed=self.config.seed,
                round_=round_,
            ).total
            for a in agents
        }

    def _replan(
        self, round_: int, plan: VirtualPlan, configs: dict[str, TrainConfig]
    ) -> VirtualPlan:
        """The dispatched agents' durations under their overridden work (steps, dropout)."""
        estimates = self._estimates(round_, plan.dispatched, configs)
        durations = {**plan.durations, **estimates}
        length = max(estimates.values(), default=plan.round_duration)
        return VirtualPlan(plan.dispatched, durations, plan.inactive, plan.not_dispatched, length)

    def _now(self) -> float:
        return self.virtual_time if self.virtual_time is not None else time.time()

    def _train_config(self, local_steps: int | None = None, keep_frac: float = 1.0) -> TrainConfig:
        c = self.config
        return TrainConfig(
            model=c.model,
            data=c.data,
            data_args=c.data_args,
            local_steps=c.local_steps if local_steps is None else local_steps,
            base_local_steps=c.local_steps,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            proximal_mu=c.proximal_mu,
            seed=c.seed,
            adaptive=c.adaptive_training,
            t_budget=self.selector.t_budget or c.t_budget,
            budget_recheck_steps=c.budget_recheck_steps,
            ewma_lambda=c.ewma_lambda,
            min_payload_frac=c.min_payload_frac,
            run_phase_2=c.run_phase_2,
            keep_frac=keep_frac,
            value_dtype=c.value_dtype,
            clock=c.clock,
            time_model_params=c.time_model_params,
        )

    async def _send_tasks(
        self,
        round_: int,
        kind: str,
        agents: list[str],
        configs: dict[str, TrainConfig],
        timeout: float,
        *,
        wait: bool = True,
        validate_first: dict[str, ValidateRequest] | None = None,
    ) -> dict[str, Assignment]:
        """Publish one task per agent; ``wait``: until the broker acknowledged them all."""
        assignments: dict[str, Assignment] = {}
        payloads: list[tuple[str, bytearray]] = []
        deadline = time.time() + timeout
        requests = validate_first or {}
        for agent in agents:
            task = Task(
                job=self.job,
                round=round_,
                task_id=uuid.uuid4().hex[:16],
                kind=kind,  # type: ignore[arg-type]
                model_version=self.model_version,
                config=configs[agent],
                deadline=deadline,
                virtual_start=self.virtual_time,
                issued_at=time.time(),
                validate_first=requests.get(agent),
            )
            assignments[agent] = Assignment(agent, task.task_id, round_, self.model_version)
            payloads.append((self.topics.agent_tasks(agent), encode_envelope(task)))
        if not wait:
            for topic, payload in payloads:
                self._publish_soon(topic, payload, False)
            return assignments
        # All in flight at once: one PUBACK round trip for the batch, not one per agent.
        await asyncio.gather(*(self._publish(topic, p, 1, False) for topic, p in payloads))
        return assignments

    async def _round(self, round_: int) -> None:
        started = time.monotonic()
        if len(self._eligible()) < self.config.clients_required:
            if self.phase is not JobPhase.WAITING_FOR_AGENTS:  # the job's start waited already
                self._set_phase(JobPhase.WAITING_FOR_AGENTS)
            await self._wait_for_agents()
            self._skip_to_enough_active()
        self._set_phase(JobPhase.TRAINING)
        online = self._eligible()
        if len(online) < self.config.clients_required:
            await self._fail_early(
                round_, [], f"only {len(online)} of {self.config.clients_required} agents online"
            )
            return
        t0 = time.perf_counter()
        self._ingest_seconds = 0.0
        self._register_new_agents(online)
        selection = self.selector.select_participants(
            self.config.dispatch_count, self._now(), online
        )
        selected = list(selection.clients)
        plan = self._virtual_plan(round_, selected, dict.fromkeys(selected, self._train_config()))
        dispatched = plan.dispatched if plan is not None else selected
        if not dispatched:
            await self._fail_early(round_, selected, "no candidate stays active through the round")
            return
        # Per-client overrides (PyramidFL) plan the round of the agents that will train:
        # on the virtual clock the K kept of the over-committed sample, whose ranks and
        # idle time are relative to each other, not to clients that were never sent.
        overrides = self.selector.plan_overrides(dispatched, self.config.local_steps)
        configs = {
            a: self._train_config(
                overrides[a].local_steps if a in overrides else None,
                1.0 - overrides[a].dropout_frac if a in overrides else 1.0,
            )
            for a in dispatched
        }
        if overrides and plan is not None:
            plan = self._replan(round_, plan, configs)
        self._row_of = {agent: row for row, agent in enumerate(dispatched)}
        begin: dict[str, Any] = {
            "selected": selected,
            "dispatched": dispatched,
            "online": len(online),
            "selector": selection.info,
            "t_budget": self.selector.t_budget,
        }
        if overrides:
            begin["overrides"] = {
                a: {"dropout_frac": o.dropout_frac, "local_steps": o.local_steps}
                for a, o in overrides.items()
            }
        if plan is not None:
            begin["estimates"] = plan.durations
            begin["inactive"] = plan.inactive
        await self.events.emit(EventName.ROUND_BEGIN, round_, begin, virtual_time=self.virtual_time)
        t1 = time.perf_counter()
        # Virtual clock: everyone dispatched must answer (arrival order means nothing);
        # wall clock: the first K successful arrivals are the K fastest.
        target = len(dispatched) if self.virtual_time is not None else self.config.target_updates
        # Waiting for every update anyway, the validations may ride in them: two messages
        # fewer per agent. Keeping the K fastest, a straggler's would hold up the results.
        requests = await self._ask_validation(dispatched, in_update=target >= len(dispatched))
        assignments = await self._send_tasks(
            round_,
            "train",
            dispatched,
            configs,
            self.config.round_timeout,
            validate_first=requests,
        )
        t2 = time.perf_counter()
        collection = Collection.start(
            dispatched,
            target=target,
            required=self.config.clients_required,
            deadline=time.monotonic() + self.config.round_timeout,
        )
        stack = self._stack_for(len(dispatched))
        replies: dict[str, _Reply] = {}
        failures: dict[str, UpdateMeta] = {}
        await self._drain(
            until=None,
            collection=collection,
            assignments=assignments,
            replies=replies,
            failures=failures,
            stack=stack,
        )
        self._remember_closed(assignments, "train")
        self._give_up_folded(requests)
        kept, durations, virtual_duration = self._choose_kept(collection, replies, plan, started)
        ok = collection.phase is Phase.COMPLETE and len(kept) >= self.config.clients_required
        reason = (
            collection.reason
            if ok or collection.phase is Phase.FAILED
            else (f"{len(kept)} of {self.config.clients_required} required updates were on time")
        )
        report = RoundReport(
            round=round_,
            ok=ok,
            reason=reason,
            selected=selected,
            kept=kept if ok else [],
            stragglers=[],
            duration=0.0,
            virtual_duration=virtual_duration,
        )
        report.extra["failed"] = sorted(failures)
        # Why each failed (an untrusted entry point, a crash in training): shown to operators.
        report.extra["failure_reasons"] = {a: failures[a].reason[:200] for a in sorted(failures)}
        report.extra["durations"] = {a: durations[a] for a in sorted(durations) if a in dispatched}
        report.extra["update_bytes"] = {a: r.nbytes for a, r in sorted(replies.items())}
        report.extra["keep_frac_all"] = {a: r.meta.keep_frac for a, r in sorted(replies.items())}
        report.extra["upload_bytes_all"] = sum(r.nbytes for r in replies.values())
        t3 = time.perf_counter()
        if ok:
            await self._aggregate(round_, report, replies, durations, stack)
        t4 = time.perf_counter()
        report.stragglers = [a for a in selected if a not in report.kept]
        if report.stragglers:
            self.selector.register_stragglers(
                report.stragglers,
                {a: durations.get(a, self.config.round_timeout) for a in report.stragglers},
                round_,
            )
        report.duration = time.monotonic() - started
        if self.virtual_time is not None:
            self.virtual_time += virtual_duration or 0.0
        if report.ok:
            await self.publish_model()
        # The last round's validation ran alongside this round's training: it ends first,
        # so ROUND_END events stay in round order.
        await self._finish_validation()
        validate = report.ok and self._eval_due(round_)
        if validate and self.server_eval is not None:
            await self._evaluate_on_server(report)
            validate = False
        self.completed_rounds = round_
        # Where the coordinator's own time went (training and waiting excluded).
        timing = {
            "select_s": t1 - t0,
            "dispatch_s": t2 - t1,
            "ingest_s": self._ingest_seconds,
            "aggregate_s": t4 - t3,
        }
        report.extra["timing"] = timing
        entry = report.as_dict()
        self.history.append(entry)
        deferred = False
        if validate:
            deferred = self.config.eval_overlap and round_ < self.config.rounds
            await self._start_validation(round_, entry, overlap=deferred)
            if not deferred:
                await self._finish_validation(emit=False)
        t5 = time.perf_counter()
        await self._save_checkpoint()
        timing["checkpoint_s"] = time.perf_counter() - t5
        timing["overhead_s"] = sum(timing.values())
        if not deferred:  # else the validation's end emits it, next round
            await self._emit_round_end(entry, self.virtual_time)
        await self.publish_status()

    async def _emit_round_end(self, entry: dict[str, Any], virtual_time: float | None) -> None:
        round_ = entry["round"]
        if entry.get("accuracy") is not None:
            await self.events.emit(
                EventName.TEST_RESULT,
                round_,
                {"accuracy": entry["accuracy"], "loss": entry["loss"]},
                virtual_time=virtual_time,
            )
        name = EventName.ROUND_END if entry["ok"] else EventName.ROUND_FAILED
        await self.events.emit(name, round_, entry, virtual_time=virtual_time)

    def _skip_to_enough_active(self) -> None:
        """Virtual clock: move on to when enough fleet members are active (FedScale waits).

        Connected agents are not enough on the virtual clock: only those whose trace says
        they are available now may train. Steps of a minute, at most one 48 h trace cycle.
        """
        if self.fleet is None or self.virtual_time is None:
            return
        for _ in range(48 * 60):
            if len(self._eligible()) >= self.config.clients_required:
                return
            self.virtual_time += 60.0

    async def _fail_early(self, round_: int, selected: list[str], reason: str) -> None:
        """A round that could not dispatch anyone: it fails without waiting for anything.

        On the virtual clock the round still costs its budget, so the next one sees a
        different fleet instead of the same empty one again.
        """
        await self._finish_validation()
        if self.virtual_time is not None:
            self.virtual_time += self.selector.t_budget or self.config.t_budget
        report = RoundReport(round_, False, reason, selected, [], list(selected), 0.0)
        report.extra.update(failed=[], durations={}, update_bytes={})
        self.completed_rounds = round_
        entry = report.as_dict()
        self.history.append(entry)
        await self._save_checkpoint()
        await self._emit_round_end(entry, self.virtual_time)
        await self.publish_status()

    def _remember_closed(self, assignments: dict[str, Assignment], kind: str) -> None:
        """Task ids of recently closed tasks, so late answers are told from forgeries.

        Counted per kind, not per closing order: validations overlap the next round's
        training, so they close in a different order than they were sent. Two of each:
        round r's validation ends after round r + 1's training closed, and a straggler's
        update for round r that a reconnect held back (the broker redelivers it) can
        arrive only then; it is late, not stale.
        """
        recent = self._recent_closed[kind]
        recent.append({a.task_id for a in assignments.values()})
        del recent[:-2]
        self._closed_tasks = set().union(
            *self._recent_closed["train"], *self._recent_closed["validate"]
        )

    def _choose_kept(
        self,
        collection: Collection,
        replies: dict[str, _Reply],
        plan: VirtualPlan | None,
        started: float,
    ) -> tuple[list[str], dict[str, float], float | None]:
        """Which successful updates count, every agent's duration, the virtual round length."""
        k = self.config.num_participants
        durations = {a: _duration(r.meta, r.received - started) for a, r in replies.items()}
        if self.virtual_time is None:
            return [a for a in collection.accepted if a in replies][:k], durations, None
        if plan is not None and not self.config.adaptive_training:
            # Non-adaptive: the K fastest were chosen up front; durations are the estimates.
            durations = {**plan.durations}
            kept = [a for a in plan.dispatched if a in replies]
            return kept, durations, max((durations[a] for a in kept), default=plan.round_duration)
        # Adaptive: keep the K fastest successful replies still active when they finish.
        fastest = keep_fastest_replies(
            {a: durations[a] for a in replies}, self.virtual_time, k, self._is_active
        )
        if plan is not None:
            durations = {**plan.durations, **durations}
        budget = self.selector.t_budget or self.config.t_budget
        length = fastest.round_duration if fastest.dispatched else budget
        return fastest.dispatched, durations, length

    async def _aggregate(
        self,
        round_: int,
        report: RoundReport,
        replies: dict[str, _Reply],
        durations: dict[str, float],
        stack: UpdateStack,
    ) -> None:
        kept = report.kept
        report.upload_bytes = sum(replies[a].nbytes for a in kept)
        rows = [replies[a].row for a in kept]
        # Issue #16 trust limits (coordinator/aggregation/trust.py): capped weights, norm clip.
        weights = self._trusted_weights(
            kept, [replies[a].meta.num_examples for a in kept], self.config.trust.median_weight_cap
        )
        if self.config.trust.norm_clip is not None:
            clipped = await asyncio.to_thread(clip_rows, stack, rows, self.config.trust.norm_clip)
            report.extra["clipped"] = len(clipped)
        if self._delta_buffer is None or self._delta_buffer.shape != self.global_flat.shape:
            self._delta_buffer = np.empty_like(self.global_flat)
        # Into a reused buffer: a fresh 47 MB result costs as much as the FedAvg itself.
        delta = await asyncio.to_thread(
            aggregate,
            self.config.aggregator.name,
            stack,
            rows,
            weights,
            out=self._delta_buffer,
            **self.config.aggregator.knobs,
        )
        if self.config.aggregator.server_lr != 1.0:
            delta *= np.float32(self.config.aggregator.server_lr)
        # Every update was checked finite, but the new model can still overflow: build it
        # in the delta buffer and take it only if finite (one more pass over P); the old
        # model's buffer becomes the next round's delta buffer.
        candidate = await asyncio.to_thread(_add_if_finite, self.global_flat, delta)
        if candidate is None:
            report.ok, report.reason = False, "the aggregated model is not finite (overflow)"
            report.kept = []
            return
        self.global_flat, self._delta_buffer = candidate, self.global_flat
        self.model_version += 1
        report.train_loss = float(np.average([replies[a].meta.loss for a in kept], weights=weights))
        report.extra["keep_frac"] = {a: replies[a].meta.keep_frac for a in kept}
        report.extra["steps"] = {a: replies[a].meta.steps for a in kept}
        for agent in kept:
            meta = replies[agent].meta
            self.selector.register_feedback(
                agent,
                meta.utility,
                round_,
                durations[agent],
                True,
                gradient_utility=meta.grad_norm
                * min(meta.num_examples, max(meta.steps, 1) * self.config.batch_size)
                / 100.0,
                num_samples=float(meta.num_examples),
            )

    def _trusted_weights(
        self, agents: list[str], counts: list[int], median_cap: float | None
    ) -> list[float]:
        """Example counts capped by what each agent registered and the job's caps (#16)."""
        registered = [getattr(self.registry.profile(a), "num_samples", None) for a in agents]
        trust = self.config.trust
        return capped_weights(
            counts,
            registered,
            max_examples=trust.max_examples,
            cap_by_profile=trust.cap_by_profile,
            median_cap=median_cap,
        )

    def _eval_due(self, round_: int) -> bool:
        interval = self.config.eval_interval
        return interval > 0 and (round_ % interval == 0 or round_ == self.config.rounds)

    def _stack_for(self, rows: int) -> UpdateStack:
        if self._stack is None:
            self._stack = UpdateStack(self.layout.num_params, max(rows, 1))
        elif self._stack.capacity < rows:
            self._stack.grow(rows)
        self._stack.reset()  # rows of earlier rounds may not be aggregated by mistake
        return self._stack

    async def _evaluate_on_server(self, report: RoundReport) -> None:
        assert self.server_eval is not None
        tensors = self.layout.unflatten(self.global_flat)
        loss, accuracy, count = await asyncio.to_thread(self.server_eval.evaluate, tensors)
        report.accuracy, report.loss = accuracy, loss
        report.extra["eval_examples"] = count
        self.last_accuracy, self.last_loss = accuracy, loss

    async def _start_validation(self, round_: int, entry: dict[str, Any], *, overlap: bool) -> None:
        """Validate the model just published; results are taken as they come.

        ``overlap``: the next round follows at once, and its train tasks carry the requests
        of the agents it trains (:meth:`_ask_validation`); otherwise everyone is asked now.
        """
        self._set_phase(JobPhase.VALIDATING)
        online = self.registry.online()
        agents = (
            online
            if len(online) <= self.config.eval_max_clients
            else sorted(self._rng.sample(online, self.config.eval_max_clients))
        )
        collection = Collection.start(
            agents,
            target=len(agents),
            required=1,
            deadline=time.monotonic() + self.config.eval_timeout,
        )
        self._pending_eval = _PendingEval(
            round_, entry, self.virtual_time, {}, collection, unasked=list(agents)
        )
        if not overlap:
            await self._ask_validation([])

    async def _ask_validation(
        self, training: list[str], *, in_update: bool = False
    ) -> dict[str, ValidateRequest]:
        """Ask the outstanding validation's agents: ``training`` ones in their train task.

        Returns the requests to fold into those train tasks (answered inside the update
        with ``in_update``); everyone else gets a validate task now. The validated model is
        the one the train tasks start from (same version).
        """
        pending = self._pending_eval
        if pending is None or not pending.unasked:
            return {}
        trained = set(training)
        folded = [a for a in pending.unasked if a in trained]
        alone = [a for a in pending.unasked if a not in trained]
        pending.unasked = []
        requests: dict[str, ValidateRequest] = {}
        for agent in folded:
            request = ValidateRequest(
                task_id=uuid.uuid4().hex[:16], round=pending.round, in_update=in_update
            )
            requests[agent] = request
            pending.assignments[agent] = Assignment(
                agent, request.task_id, pending.round, self.model_version
            )
        if alone:
            # Not waiting for the broker's acknowledgements: with 50 agents waking up on two
            # cores they took ~100 ms, all of it between this round and the next.
            config = self._train_config()
            pending.assignments.update(
                await self._send_tasks(
                    pending.round,
                    "validate",
                    alone,
                    dict.fromkeys(alone, config),
                    self.config.eval_timeout,
                    wait=False,
                )
            )
        return requests

    def _give_up_folded(self, requests: dict[str, ValidateRequest]) -> None:
        """Validations that were to ride in this round's updates and did not are lost.

        Called once the round's updates are in: an agent still pending in the validation
        sent no update, or one without its result (a failure report from an agent that
        could not build its update); it is not waited for until eval_timeout.
        """
        pending = self._pending_eval
        if pending is None:
            return
        for agent, request in requests.items():
            if pending.collection.closed:
                return
            if request.in_update and pending.collection.is_pending(agent):
                pending.collection.lose(agent, time.monotonic())

    async def _finish_validation(self, *, emit: bool = True) -> None:
        """Wait for the outstanding validation to close, record it and end its round."""
        pending = self._pending_eval
        if pending is None:
            return
        await self._ask_validation([])  # no next round took the requests along
        await self._drain(until=None, collection=pending.collection)
        self._remember_closed(pending.assignments, "validate")
        self._pending_eval = None
        answered = [r for r in pending.results.values() if r.num_examples > 0]
        entry = pending.entry
        if answered:
            weights = self._trusted_weights(
                [r.agent for r in answered],
                [r.num_examples for r in answered],
                self.config.trust.metric_median_cap,
            )
            entry["accuracy"] = float(np.average([r.accuracy for r in answered], weights=weights))
            entry.update(summarize([r.accuracy for r in answered], weights).as_fields("accuracy"))
            entry["loss"] = float(np.average([r.loss for r in answered], weights=weights))
            entry["eval_agents"] = len(answered)
            self.last_accuracy, self.last_loss = entry["accuracy"], entry["loss"]
        if emit:
            await self._emit_round_end(entry, pending.virtual_time)

    # -- the inbox --------------------------------------------------------------------
    async def _drain(
        self,
        *,
        until: float | None,
        collection: Collection | None,
        assignments: dict[str, Assignment] | None = None,
        replies: dict[str, _Reply] | None = None,
        failures: dict[str, UpdateMeta] | None = None,
        stack: UpdateStack | None = None,
    ) -> None:
        """Handle inbox items until ``until`` (monotonic) or until ``collection`` closes.

        Validation results go to the outstanding validation whatever is being waited for.
        """
        assignments = assignments or {}
        while True:
            now = time.monotonic()
            if collection is not None:
                if not collection.closed:
                    collection.tick(now)
                if collection.closed:
                    return
                limit = collection.deadline if collection.deadline is not None else now + 1.0
            else:
                limit = until if until is not None else now
            if until is not None and now >= until:
                return
            # What is queued already is taken at once; otherwise wait for the next item
            # under a timeout (wait_for would wrap every get in a task of its own).
            try:
                item = self.inbox.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(max(0.0, limit - now)):
                        item = await self.inbox.get()
                except TimeoutError:
                    continue
            if item.kind == "joined":
                if collection is None:
                    return  # _wait_for_agents counts the online agents again
                continue
            if item.kind == "lost":
                pending = self._pending_eval
                if pending is not None and pending.collection.is_pending(item.agent):
                    pending.collection.lose(item.agent, time.monotonic())
                if collection is not None and collection.is_pending(item.agent):
                    collection.lose(item.agent, time.monotonic())
                    await self.events.emit(
                        EventName.AGENT_LOST, self.completed_rounds + 1, {"agent": item.agent}
                    )
                continue
            began = time.perf_counter()
            try:
                if item.kind == "update":
                    await self._take_update(item, collection, assignments, replies, failures, stack)
                elif item.kind == "result":
                    self._take_result(item)
            except Rejected as exc:
                self._count_rejected(exc, item.kind, item.agent)
            except Exception as exc:  # issue #16: no message ends the job (counted, logged)
                self._count_rejected(
                    Rejected(f"error:{type(exc).__name__}", str(exc)), item.kind, item.agent
                )
            finally:
                self._ingest_seconds += time.perf_counter() - began

    def _count_rejected(self, exc: Rejected, kind: str, agent: str) -> None:
        self.rejected[exc.reason] += 1
        log.warning(
            "job %s round %d: rejected %s from %s: %s",
            self.job,
            self.completed_rounds + 1,
            kind,
            agent,
            exc.detail,
        )

    async def _take_update(
        self,
        item: Inbound,
        collection: Collection | None,
        assignments: dict[str, Assignment],
        replies: dict[str, _Reply] | None,
        failures: dict[str, UpdateMeta] | None,
        stack: UpdateStack | None,
    ) -> None:
        max_bytes = self.config.max_update_bytes
        if chunking.is_chunk(item.payload):
            try:
                done = self._chunks.offer_unverified(item.agent, item.payload, time.monotonic())
                if done is None:
                    return
                # SHA-256 of a whole update (~30 ms for 44 MB) off the event loop.
                whole = await asyncio.to_thread(chunking.verify, done)
            except InvalidMessage as exc:
                raise Rejected(exc.reason, exc.detail) from exc
            item = Inbound(item.kind, item.agent, whole, item.received)
        if len(item.payload) > INLINE_DECODE_BYTES:
            meta, tensors = await asyncio.to_thread(decode_update, item.payload, max_bytes)
        else:
            meta, tensors = decode_update(item.payload, max_bytes)
        if meta.task_id in self._closed_tasks and meta.agent == item.agent:
            self.late_updates += 1
            log.info("job %s: late update from %s for round %d", self.job, item.agent, meta.round)
            return
        if collection is not None and item.agent in collection.lost:
            self.late_updates += 1  # it was given up for lost (it went offline) and came back
            return
        if replies is None or failures is None or stack is None or collection is None:
            raise Rejected(
                "stale", f"update for round {meta.round} arrived outside a training round"
            )
        seen = item.agent in replies or item.agent in failures
        check_header(
            job=self.job,
            topic_agent=item.agent,
            meta_job=meta.job,
            meta_agent=meta.agent,
            task_id=meta.task_id,
            round_=meta.round,
            version=meta.base_version,
            assignment=assignments.get(item.agent),
            already_received=seen or not collection.is_pending(item.agent),
        )
        if meta.validation is not None:
            # Once the update itself is genuine, its result is one in its own right: taken
            # or refused on its own checks, whether or not the training succeeded.
            try:
                self._accept_result(item.agent, meta.validation)
            except Rejected as exc:
                self._count_rejected(exc, "result", item.agent)
        if not meta.success:
            failures[item.agent] = meta
            collection.lose(item.agent, time.monotonic())
            return
        # Row = the agent's place in the dispatch order, not its arrival: the FedAvg sum
        # (and so the whole run) is then the same whatever order the bus delivers in.
        row_index = self._row_of[item.agent]  # check_header: it holds an assignment
        row = stack.row(row_index)
        if len(item.payload) > INLINE_DECODE_BYTES:
            await asyncio.to_thread(write_update, meta, tensors, self.layout, row)
        else:
            write_update(meta, tensors, self.layout, row)
        replies[item.agent] = _Reply(
            item.agent, meta, row_index, time.monotonic(), len(item.payload)
        )
        collection.accept(item.agent, time.monotonic())

    def _take_result(self, item: Inbound) -> None:
        self._accept_result(item.agent, decode_result(item.payload, 1 << 20))

    def _accept_result(self, agent: str, meta: ResultMeta) -> None:
        """A validation result from ``agent`` (its own message, or inside its update)."""
        if meta.task_id in self._closed_tasks and meta.agent == agent:
            self.late_updates += 1
            return
        pending = self._pending_eval
        if pending is None:
            raise Rejected("stale", f"result for round {meta.round} arrived outside a validation")
        collection = pending.collection
        if agent in collection.lost:
            self.late_updates += 1  # it was given up for lost (it went offline) and came back
            return
        check_header(
            job=self.job,
            topic_agent=agent,
            meta_job=meta.job,
            meta_agent=meta.agent,
            task_id=meta.task_id,
            round_=meta.round,
            version=meta.model_version,
            assignment=pending.assignments.get(agent),
            already_received=agent in pending.results or not collection.is_pending(agent),
        )
        if not meta.success:
            collection.lose(agent, time.monotonic())
            return
        pending.results[agent] = meta
        collection.accept(agent, time.monotonic())


def _add_if_finite(model: np.ndarray, delta: np.ndarray) -> np.ndarray | None:
    """model + delta, written over ``delta``; None when the sum is not finite everywhere."""
    np.add(model, delta, out=delta)
    with np.errstate(over="ignore", invalid="ignore"):
        return delta if bool(np.isfinite(delta.sum(dtype=np.float32))) else None


def _duration(meta: UpdateMeta, measured: float) -> float:
    """The agent's round duration: its reported timings when it has them, else measured."""
    reported = meta.timings.total or meta.timings.wall_duration
    return reported if reported > 0 else max(measured, 1e-3)


def _list_state(state: Any) -> Any:
    return [_list_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state
