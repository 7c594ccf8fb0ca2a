"""Emulated fleets: N agents in one process, real training, timings from the time model.

Each emulated agent is a full :class:`EdgeAgent` — its own MQTT connection, client id,
last will, retained status and profile — but they share one torch runtime (one model
instance per entry point, one compute lock) and one decoded copy of each global model,
fed by a single model listener connection instead of N model subscriptions. An idle
agent therefore costs its connection and its small data partition.

On the virtual clock a task carries the round's virtual start; the agent trains for real
and reports the time model's durations (:mod:`fedbus.fleet.virtual_round`), with adaptive
training driven by the budget planner on simulated step and upload times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Sequence

import numpy as np

from edge_agent.adaptive import StepCost, run_adaptive
from edge_agent.agent import MODEL_QOS, AgentIdentity, EdgeAgent, UpdatePlan
from edge_agent.compat import TaskGroup
from edge_agent.compression import upload_bytes
from edge_agent.error_feedback import ResidualStore
from edge_agent.model_store import GlobalModel, ModelStore
from edge_agent.packages import AgentPackages
from edge_agent.profile import DataSpec, partition_size
from edge_agent.trainer import LocalTrainer, TrainOutcome, TrainSession
from fedbus.fleet import DeviceProfile, Fleet
from fedbus.fleet.time_model import workload_flops
from fedbus.fleet.virtual_round import (
    FLOAT32_BYTES,
    RoundWork,
    download_seconds,
    noise_factor,
    simulate_round,
    step_seconds,
    upload_seconds,
)
from fedbus.protocol import bus, formulas
from fedbus.protocol.entry_points import DEFAULT_TRUSTED
from fedbus.protocol.messages import AgentProfile, Task, Timings
from fedbus.protocol.topics import Topics

log = logging.getLogger(__name__)


def training_seed(task: Task, partition: int) -> int:
    return formulas.training_seed(task.config.seed, task.round, partition)


class VirtualTraining:
    """``train_fn`` for emulated agents: real SGD, virtual timings, adaptive on request."""

    def __init__(self, trainer: LocalTrainer, fleet: Fleet) -> None:
        self.trainer = trainer
        self.fleet = fleet

    def __call__(self, task: Task, model: GlobalModel, identity: AgentIdentity) -> UpdatePlan:
        config = task.config
        profile = self.fleet.by_id(identity.agent_id)
        params = config.time_model_params or model.layout.num_params
        value_dtype = np.float16 if config.value_dtype == "float16" else np.float32
        start = task.virtual_start or 0.0
        seed = training_seed(task, identity.partition)
        if not config.adaptive:
            outcome = self.trainer.train(
                config, identity.partition, model.tensors, model.layout, seed=seed
            )
            outcome.keep_frac = config.keep_frac
            # Charge the steps that ran: the learner cap may have cut a raised step count.
            work = RoundWork.dense(
                params,
                config.batch_size,
                outcome.steps,
                upload_bytes(params, config.keep_frac, value_dtype),
            )
            times = simulate_round(profile, start, work, seed=config.seed, round_=task.round)
            return UpdatePlan(
                outcome, Timings(t_dl=times.t_dl, t_comp=times.t_comp, t_ul=times.t_ul)
            )
        return self._adaptive(task, model, identity, profile, params, value_dtype, start, seed)

    def _adaptive(
        self,
        task: Task,
        model: GlobalModel,
        identity: AgentIdentity,
        profile: DeviceProfile,
        params: int,
        value_dtype: type[np.floating],
        start: float,
        seed: int,
    ) -> UpdatePlan:
        config = task.config
        noise = noise_factor(profile, seed=config.seed, round_=task.round)
        t_dl = download_seconds(profile, start, params * FLOAT32_BYTES)
        flops_per_step = workload_flops(params, config.batch_size, 1)
        clock = {"t": start + t_dl}

        def charge(steps: int, _measured: float) -> float:
            seconds = step_seconds(profile, clock["t"], flops_per_step, noise, steps)
            clock["t"] += seconds
            return seconds

        cost = StepCost(
            steps=charge,
            upload=lambda keep: upload_seconds(
                profile, clock["t"], upload_bytes(params, keep, value_dtype)
            ),
            step_estimate=step_seconds(profile, clock["t"], flops_per_step, noise),
            charge_measurement=False,  # a simulated device's measurement is not on its clock
        )
        budget = (config.t_budget or 0.0) - t_dl

        def plan(session: TrainSession) -> None:
            run_adaptive(session, budget, cost)

        outcome: TrainOutcome = self.trainer.train(
            config, identity.partition, model.tensors, model.layout, seed=seed, plan=plan
        )
        t_comp = clock["t"] - (start + t_dl)
        t_ul = (
            upload_seconds(
                profile, clock["t"], upload_bytes(params, outcome.keep_frac, value_dtype)
            )
            if outcome.success
            else 0.0
        )
        return UpdatePlan(outcome, Timings(t_dl=t_dl, t_comp=t_comp, t_ul=t_ul))


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit toward ``wanted`` (one socket per agent)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class ModelListener:
    """One connection that feeds every emulated agent's shared model store."""

    def __init__(self, broker: bus.BrokerSettings, models: ModelStore, client_id: str) -> None:
        self.broker = broker
        self.models = models
        self.client_id = client_id
        self.topics = Topics(broker.prefix)
        self.connected = asyncio.Event()

    async def run(self) -> None:
        await bus.run_with_reconnect(self._session, "model listener", self.connected.clear)

    async def _session(self) -> None:
        async with bus.make_client(self.broker, self.client_id) as client:
            await client.subscribe(self.topics.all_job_models(), qos=MODEL_QOS)
            self.connected.set()
            async for message in bus.messages(client):
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    try:
                        await self.models.offer(payload, key=str(message.topic).split("/model")[0])
                    except Exception as exc:  # no message ends the emulator (issue #16)
                        log.warning("model listener: dropped model: %s", exc)


def emulated_profile(device: DeviceProfile, num_samples: int | None) -> AgentProfile:
    """An emulated agent's profile: its fleet entry's partition and metadata, its data size."""
    return AgentProfile(
        emulated=True,
        partition=device.partition,
        num_samples=num_samples,
        static=dict(device.static),
    )


def fleet_sizes(
    trainer: LocalTrainer, data: DataSpec | None, devices: Sequence[DeviceProfile]
) -> dict[int, int]:
    """Training samples per partition of ``devices``; empty without the job's data.

    Partitions are loaded once each into the trainer's cache, which the first round's
    tasks then reuse (the data entry point is expected to cache its file and partition
    table, as fedbus.examples.mnist does: an emulator loads up to 1,000 partitions here).
    """
    if data is None:
        return {}
    sizes: dict[int, int] = {}
    for device in devices:
        if device.partition in sizes:
            continue
        try:
            sizes[device.partition] = partition_size(trainer, data, device.partition)
        except Exception as exc:  # the data entry point's own errors: say which agent
            raise ValueError(
                f"{device.client_id}: cannot load partition {device.partition} "
                f"of {data.data}: {exc}"
            ) from exc
    return sizes


class Emulator:
    """Runs ``count`` emulated agents of a fleet (from ``offset``) in this event loop."""

    def __init__(
        self,
        fleet: Fleet,
        broker: bus.BrokerSettings,
        *,
        count: int | None = None,
        offset: int = 0,
        device: str = "cpu",
        name: str = "emulator",
        data: DataSpec | None = None,
        packages: AgentPackages | None = None,
        trusted: Sequence[str] = DEFAULT_TRUSTED,
    ) -> None:
        """``data``: the job's data, to report each agent's training-set size in its profile.

        ``packages``: compute packages, shared by every emulated agent (one fetch per process).
        ``trusted``: the module prefixes whose entry points tasks may name.
        """
        profiles = list(fleet)[offset : offset + count if count is not None else None]
        self.broker = broker
        self.trainer = LocalTrainer(device, trusted=trusted)
        sizes = fleet_sizes(self.trainer, data, profiles)
        self.models = ModelStore()
        self.lock = asyncio.Lock()
        self.listener = ModelListener(broker, self.models, f"{name}-models")
        train_fn = VirtualTraining(self.trainer, fleet)
        # One bounded error-feedback memory for every agent of the process.
        self.residuals = ResidualStore()
        self.agents = [
            EdgeAgent(
                AgentIdentity(
                    p.client_id, p.partition, emulated_profile(p, sizes.get(p.partition))
                ),
                broker,
                self.trainer,
                self.models,
                compute_lock=self.lock,
                train_fn=train_fn,
                subscribe_models=False,
                packages=packages,
                residuals=self.residuals,
            )
            for p in profiles
        ]

    async def run(
        self, *, connected: asyncio.Event | None = None, connect_concurrency: int = 64
    ) -> None:
        raise_fd_limit(len(self.agents) + 256)
        async with TaskGroup() as group:
            group.create_task(self.listener.run(), name="model-listener")
            started = time.monotonic()
            gate = asyncio.Semaphore(connect_concurrency)

            async def start(agent: EdgeAgent) -> None:
                # A bounded number of CONNECT handshakes at once: the broker accepts them
                # faster than when a thousand arrive in the same millisecond.
                async with gate:
                    group.create_task(agent.run(), name=agent.agent_id)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(agent.connected.wait(), 30)

            await asyncio.gather(*(start(a) for a in self.agents))
            await self.listener.connected.wait()
            log.info(
                "emulator: %d agents connected in %.1fs",
                len(self.agents),
                time.monotonic() - started,
            )
            if connected is not None:
                connected.set()
