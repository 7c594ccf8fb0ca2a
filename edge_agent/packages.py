"""The agent's side of compute packages: trust, fetch over the bus, verify, cache, run.

A task whose config names a package (by SHA-256) is served only when the agent trusts
that hash: listed with ``--trust-package SHA``, or any hash its coordinator pins when the
agent runs with ``--trust-packages-from-coordinator`` (the broker's ACL lets only the
coordinator publish tasks). A trusted package already in the cache is used as it is (no
transfer); otherwise the agent subscribes to the package's retained topic, takes the
archive (whole, or as chunks), checks its SHA-256 against the pin, unpacks it into the
cache and runs its ``startup`` once per process. Every refusal raises
:class:`~fedbus.packages.PackageRefused` with the reason, which the agent reports to the
coordinator as the task's failure.

Python 3.10: no ``asyncio.timeout`` here (``asyncio.wait_for`` instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.trainer import TrainOutcome
from fedbus.packages import PackageRefused, PackageRunError, PackageUnavailable
from fedbus.packages.cache import PackageCache
from fedbus.packages.entry import TaskContext, activate, run_startup, run_train, run_validate
from fedbus.packages.requirements import unmet
from fedbus.packages.spec import PackageSpec
from fedbus.protocol import bus, chunking
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import Task
from fedbus.protocol.params import ParamLayout
from fedbus.protocol.topics import Topics

log = logging.getLogger(__name__)

MAX_PACKAGE_BYTES = 256 * 1024 * 1024
FETCH_TIMEOUT_S = 120.0
DEFAULT_CACHE = Path.home() / ".cache" / "fedbus" / "packages"


@dataclass(frozen=True)
class PackageTrust:
    """Which package hashes an agent runs; nothing unless told."""

    hashes: frozenset[str] = frozenset()
    from_coordinator: bool = False

    def check(self, sha: str) -> None:
        if self.from_coordinator or sha in self.hashes:
            return
        raise PackageRefused(
            f"package {sha[:12]}... is not trusted by this agent (start it with "
            f"--trust-package {sha} or --trust-packages-from-coordinator)"
        )


@dataclass(frozen=True)
class LoadedPackage:
    sha: str
    directory: Path
    spec: PackageSpec

    @property
    def trains(self) -> bool:
        """The package brings its own training (a train entry point or a Flower client)."""
        return self.spec.train is not None or self.spec.flower_client is not None

    @property
    def validates(self) -> bool:
        return self.spec.validate_entry is not None or self.spec.flower_client is not None

    @property
    def modules(self) -> tuple[str, ...]:
        """The top-level modules its entry points name and it ships: trusted with the
        package's pinned hash, so the built-in trainer may import them (the agent's
        ``--trust`` prefixes are for code installed on the device). A name the package
        does not ship (``os``, an installed library) is not made trusted by naming it."""
        s = self.spec
        names = (s.model, s.data, s.flower_client, s.startup, s.build, s.train, s.validate_)
        tops = dict.fromkeys(n.split(":")[0].split(".")[0] for n in names if isinstance(n, str))
        return tuple(name for name in tops if self.ships(name))

    def ships(self, module: str) -> bool:
        """Whether ``module`` (a top-level name) is a file or package of this package."""
        return (self.directory / f"{module}.py").is_file() or (self.directory / module).is_dir()


@dataclass
class PackageStats:
    """What the agent did with packages: transfers, cache hits, refusals (for operators)."""

    fetched: int = 0
    fetched_bytes: int = 0
    fetch_seconds: float = 0.0  # subscribe to verified and unpacked, summed over fetches
    cache_hits: int = 0
    refused: list[str] = field(default_factory=list)


class AgentPackages:
    """Packages for one agent (or several in one process, sharing a cache directory)."""

    def __init__(
        self,
        cache: PackageCache,
        trust: PackageTrust,
        *,
        fetch_timeout: float = FETCH_TIMEOUT_S,
        max_bytes: int = MAX_PACKAGE_BYTES,
    ) -> None:
        self.cache = cache
        self.trust = trust
        self.fetch_timeout = fetch_timeout
        self.stats = PackageStats()
        self._loaded: dict[str, LoadedPackage] = {}
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._lock = asyncio.Lock()
        self._chunks = chunking.Reassembler(
            max_bytes=max_bytes, max_pending_bytes=2 * max_bytes, timeout=fetch_timeout
        )

    def loaded(self, sha: str | None) -> LoadedPackage | None:
        return None if sha is None else self._loaded.get(sha)

    async def ensure(self, sha: str, link: bus.Link, topics: Topics) -> LoadedPackage:
        """The package ``sha``, trusted, verified, unpacked and started; or PackageRefused."""
        try:
            self.trust.check(sha)
            async with self._lock:
                if sha in self._loaded:
                    return self._loaded[sha]
                if self.cache.has(sha):
                    self.stats.cache_hits += 1
                else:
                    started = time.perf_counter()
                    payload = await self._fetch(sha, link, topics)
                    await asyncio.to_thread(self.cache.install, sha, payload)
                    self.stats.fetch_seconds += time.perf_counter() - started
                    self.stats.fetched += 1
                    self.stats.fetched_bytes += len(payload)
                    log.info("package %s: fetched %d bytes, verified", sha[:12], len(payload))
                directory = self.cache.path(sha)
                spec = self.cache.spec(sha)
                if missing := unmet(spec.requirements):
                    raise PackageRefused(
                        f"package {spec.name} needs {', '.join(missing)} on this agent"
                    )
                activate(directory)
                if spec.startup is not None:
                    await asyncio.to_thread(run_startup, spec.startup, directory)
                loaded = LoadedPackage(sha, directory, spec)
                self._loaded[sha] = loaded
                return loaded
        except PackageRefused as exc:
            self.stats.refused.append(str(exc))
            raise

    async def _fetch(self, sha: str, link: bus.Link, topics: Topics) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[sha] = future
        topic = topics.package_all(sha)
        client: bus.Client | None = None
        try:
            await asyncio.wait_for(link.connected.wait(), self.fetch_timeout)
            client = link.client
            assert client is not None
            await client.subscribe(topic, qos=1)
            return await asyncio.wait_for(future, self.fetch_timeout)
        except asyncio.TimeoutError as exc:  # noqa: UP041 (not the builtin on Python 3.10)
            raise PackageUnavailable(
                f"package {sha[:12]}... did not arrive within {self.fetch_timeout:.0f} s "
                "(is the job's coordinator publishing it?)"
            ) from exc
        finally:
            self._waiting.pop(sha, None)
            if client is not None:
                with contextlib.suppress(bus.MqttError):
                    await client.unsubscribe(topic)

    async def offer(self, sha: str, payload: bytes | bytearray) -> None:
        """A message on a package topic: handed to the fetch waiting for it, else ignored."""
        future = self._waiting.get(sha)
        if future is None or future.done() or not payload:
            return  # nobody asked (or a cleared retained message)
        if chunking.is_chunk(payload):
            try:
                done = self._chunks.offer_unverified(sha, payload, time.monotonic())
                if done is None:
                    return
                whole = await asyncio.to_thread(chunking.verify, done)
            except FedbusProtocolError as exc:
                future.set_exception(PackageRefused(f"package {sha[:12]}... chunks: {exc}"))
                return
            if not future.done():
                future.set_result(bytes(whole))
        else:
            future.set_result(bytes(payload))


def context_for(task: Task, partition: int, loaded: LoadedPackage) -> TaskContext:
    return TaskContext(
        partition=partition,
        seed=task.config.seed * 1_000_003 + task.round * 7919 + partition,
        config=task.config.model_dump(mode="json"),
        package_dir=str(loaded.directory),
    )


def train_with_package(
    task: Task,
    tensors: dict[str, np.ndarray],
    layout: ParamLayout,
    partition: int,
    loaded: LoadedPackage,
) -> TrainOutcome:
    """The package's own ``train``, as the outcome the agent uploads (a delta)."""
    if loaded.spec.flower_client is not None and loaded.spec.train is None:
        from edge_agent.flower import FlowerClientRunner, num_partitions_of

        runner = FlowerClientRunner(loaded.spec.flower_client, num_partitions_of(task))
        return runner.train_outcome(task, tensors, layout, partition)
    assert loaded.spec.train is not None
    started = time.perf_counter()
    result = run_train(
        loaded.spec.train, tensors, context_for(task, partition, loaded), loaded.directory
    )
    delta = layout.flatten(result.weights)
    np.subtract(delta, layout.flatten(tensors), out=delta)
    if not np.isfinite(delta).all():
        raise PackageRunError("the package's train returned non-finite weights")
    loss = result.metrics.get("loss", 0.0)
    return TrainOutcome(
        delta=delta,
        num_examples=result.num_examples,
        trained_samples=result.num_examples,
        loss=loss,
        utility=0.0,
        steps=task.config.local_steps,
        compute_seconds=time.perf_counter() - started,
        success=result.num_examples > 0,
        reason="" if result.num_examples > 0 else "the package's train saw no examples",
        extra=result.metrics,
    )


def validate_with_package(
    task: Task, tensors: dict[str, np.ndarray], partition: int, loaded: LoadedPackage
) -> tuple[float, float, int, dict[str, float]]:
    """(loss, accuracy, examples, custom metrics) of the package's own ``validate``."""
    entry = loaded.spec.validate_entry
    if entry is None and loaded.spec.flower_client is not None:
        from edge_agent.flower import FlowerClientRunner, num_partitions_of

        runner = FlowerClientRunner(loaded.spec.flower_client, num_partitions_of(task))
        return runner.validate_tensors(task, tensors, ParamLayout.from_tensors(tensors), partition)
    assert entry is not None
    metrics = run_validate(entry, tensors, context_for(task, partition, loaded), loaded.directory)
    count = int(metrics.pop("num_examples", 0))
    loss = metrics.get("loss", 0.0)
    accuracy = metrics.get("accuracy", 0.0)
    if not 0.0 <= accuracy <= 1.0:
        accuracy = 0.0  # kept among the metrics; the protocol's accuracy is a fraction
    return loss, accuracy, max(count, 0), metrics
