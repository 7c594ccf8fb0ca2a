"""Local training and validation with PyTorch: the agent's compute, no I/O.

The trainer builds each model instance (a :class:`ModelSlot`) and each data partition
once from the job's entry points and reuses them every round (an emulator with many
agents shares one model instance per entry point, so idle agents cost only their data).
``train`` loads the global weights, runs SGD for the task's steps (or as the adaptive
budget planner says), and returns the update as a flat float32 delta from the global
model, with the statistical utility over every sample the round trained on.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from edge_agent.sgd import MomentumSGD
from edge_agent.step_cap import fixed_steps
from edge_agent.torch_state import floating_state, load_numpy_state, state_to_numpy
from edge_agent.utility import UtilityAccumulator
from fedbus.protocol.entry_points import DEFAULT_TRUSTED, resolve
from fedbus.protocol.messages import Scalar, TrainConfig
from fedbus.protocol.params import ParamLayout


@dataclass
class Partition:
    """One agent's data, as tensors on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_y.shape[0])


def as_tensors(ds: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        return ds.tensors[0], ds.tensors[1]
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)  # type: ignore[arg-type]
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys)


@dataclass
class TrainOutcome:
    delta: np.ndarray
    num_examples: int
    trained_samples: int
    loss: float
    utility: float
    steps: int
    compute_seconds: float
    steps_phase1: int = 0
    steps_phase2: int = 0
    keep_frac: float = 1.0
    success: bool = True
    reason: str = ""
    extra: dict[str, float] = field(default_factory=dict)


StepHook = Callable[[int], bool]


@dataclass
class ModelSlot:
    """One model instance of the trainer, and what is known about the weights in it.

    ``state`` is the model's floating state, read once: its tensors alias the module's, so
    copying into them loads weights and reading them reads the trained ones, without a
    ``state_dict()`` walk of the module tree per load and per delta. ``holds`` are the
    arrays the weights were loaded from, while nothing has changed them since: a train
    task's folded validation loads the round's global model, and the training right after
    it starts from that same model.
    """

    module: nn.Module
    state: dict[str, torch.Tensor]
    holds: tuple[np.ndarray, ...] | None = None

    @classmethod
    def of(cls, module: nn.Module) -> ModelSlot:
        return cls(module, floating_state(module))

    def load(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Make the weights equal ``tensors``; a no-op when they already hold these arrays."""
        if self.holds is not None and all(
            tensors.get(name) is held for name, held in zip(self.state, self.holds, strict=True)
        ):
            return
        self.holds = None
        load_numpy_state(self.module, tensors, self.state)
        arrays = tuple(tensors[name] for name in self.state)
        # Only arrays nobody can write to (the wire's: views of an immutable payload) are
        # known to hold the same values the next time they are offered.
        if all(isinstance(a, np.ndarray) and not a.flags.writeable for a in arrays):
            self.holds = arrays

    def changed(self) -> None:
        """The weights are about to change (training): they no longer equal what was loaded."""
        self.holds = None

    def to_numpy(self) -> dict[str, np.ndarray]:
        return state_to_numpy(self.module, self.state)


def set_training(model: nn.Module, mode: bool) -> None:
    """``model.train(mode)``: what it does, with less of the machinery around it.

    Skipped when every module is in that mode already. Where no module overrides
    ``train`` or ``__setattr__``, ``train`` only sets each module's ``training`` through
    ``Module.__setattr__`` (which checks the name against parameters, buffers and
    submodules first): set directly. An agent switches twice a round (evaluation, then
    training); ``train`` on the digits MLP was ~5 % of its CPU outside the SGD steps.
    """
    modules = list(model.modules())
    if all(m.training == mode for m in modules):
        return
    if all(_plain_mode_switch(type(m)) for m in modules):  # type: ignore[arg-type]  # classes hash
        for m in modules:
            object.__setattr__(m, "training", mode)
    else:
        model.train(mode)


@functools.cache
def _plain_mode_switch(cls: type[nn.Module]) -> bool:
    return cls.train is nn.Module.train and cls.__setattr__ is nn.Module.__setattr__


class LocalTrainer:
    """Builds model slots and partitions from entry points; trains and validates on a device."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        *,
        slowdown: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        trusted: Sequence[str] = DEFAULT_TRUSTED,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if not (math.isfinite(slowdown) and slowdown >= 1.0):
            raise ValueError(f"slowdown must be a finite number >= 1, got {slowdown}")
        self.device = torch.device(device)
        # A test aid (``edge-agent run --slowdown X``): every computation is followed by a
        # real sleep of (X - 1) times its own duration, so it takes X times as long.
        self.slowdown = slowdown
        self._sleep = sleep
        # Module prefixes whose entry points tasks may name (fedbus.protocol.entry_points).
        self.trusted = tuple(trusted)
        self._models: dict[str, ModelSlot] = {}
        self._partitions: dict[tuple[str, str, int], Partition] = {}

    # -- set-up -----------------------------------------------------------------------
    def trust(self, modules: Sequence[str]) -> None:
        """Also trust ``modules`` (a compute package's, once verified against its pin)."""
        self.trusted = tuple(dict.fromkeys((*self.trusted, *modules)))

    def warm_up(self) -> None:
        """Two SGD steps and an evaluation of a tiny model, once, before any task.

        torch initialises autograd, its allocator and dispatch caches on first use: the
        first round's training of the digits MLP took 20.9 ms of CPU cold against 9.8 ms
        after this (3 ms, at start-up, where the agent is importing anyway); rounds after
        that are ~7 ms either way. On a GPU it also creates the CUDA context up front.
        """
        # The layers' initialisation draws from torch's global RNG: put it back after.
        with torch.random.fork_rng(devices=[]):
            generator = torch.Generator(device="cpu").manual_seed(0)
            model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to(self.device)
            optimizer = MomentumSGD(list(model.parameters()), lr=0.1, momentum=0.9)
            x = torch.randn(5, 4, generator=generator).to(self.device)
            y = torch.tensor([0, 1, 0, 1, 1], device=self.device)
            for _ in range(2):
                losses = nn.functional.cross_entropy(model(x), y, reduction="none")
                optimizer.step_on(losses.mean())
            evaluate_model(model, x, y)

    def slow_down(self, seconds: float) -> None:
        """Sleep (slowdown - 1) x ``seconds``: a computation of that length, X times slower."""
        if self.slowdown > 1.0 and seconds > 0.0:
            self._sleep((self.slowdown - 1.0) * seconds)

    def measure_step_seconds(self, config: TrainConfig, partition: int, steps: int = 3) -> float:
        """Seconds per SGD step of the job's model on this device, slowdown included.

        One untimed step first (the model's first step allocates and warms its kernels),
        then ``steps`` timed ones on a scratch optimiser. The weights they change are
        reloaded from the global model by the training that follows (the slot is marked
        changed), so the measurement costs time but no accuracy.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        data = self.partition(config, partition)
        if data.num_train == 0:
            raise ValueError("no training data to time a step on")
        model = self.model(config.model)
        set_training(model, True)
        optimizer = MomentumSGD(list(model.parameters()), lr=0.0, momentum=0.0)
        batch = min(config.batch_size, data.num_train)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        elapsed = 0.0
        for i in range(steps + 1):
            idx = torch.randint(0, data.num_train, (batch,), generator=generator)
            idx = idx.to(data.train_x.device)
            began = time.perf_counter()
            losses = nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            optimizer.step_on(losses)
            if data.train_x.device.type == "cuda":
                torch.cuda.synchronize(data.train_x.device)
            took = time.perf_counter() - began
            self.slow_down(took)
            if i > 0:
                elapsed += took * self.slowdown
        return elapsed / steps

    def model(self, spec: str) -> nn.Module:
        """The model instance of ``spec``, for a caller that may change its weights."""
        slot = self._slot(spec)
        slot.changed()
        return slot.module

    def _slot(self, spec: str) -> ModelSlot:
        if spec not in self._models:
            self._models[spec] = ModelSlot.of(resolve(spec, self.trusted)().to(self.device))
        return self._models[spec]

    def partition(self, config: TrainConfig, partition: int) -> Partition:
        return self.load_partition(config.data, config.data_args, partition)

    def load_partition(
        self, data: str, data_args: Mapping[str, Scalar], partition: int
    ) -> Partition:
        """A partition, loaded once: by the first task, or at start-up for the profile."""
        key = (data, repr(sorted(data_args.items())), partition)
        if key not in self._partitions:
            train, test = resolve(data, self.trusted)(partition, **data_args)
            tx, ty = as_tensors(train)
            vx, vy = as_tensors(test)
            self._partitions[key] = Partition(*(self._to_device(t) for t in (tx, ty, vx, vy)))
        return self._partitions[key]

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A partition's tensor on the training device (through pinned memory to a GPU)."""
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def forget_partition(self, config: TrainConfig, partition: int) -> None:
        key = (config.data, repr(sorted(config.data_args.items())), partition)
        self._partitions.pop(key, None)

    # -- training ---------------------------------------------------------------------
    def train(
        self,
        config: TrainConfig,
        partition: int,
        global_tensors: Mapping[str, np.ndarray],
        layout: ParamLayout,
        *,
        seed: int,
        steps: int | None = None,
        plan: Callable[[TrainSession], None] | None = None,
    ) -> TrainOutcome:
        """Train from the global weights; ``plan`` (adaptive training) drives the steps.

        Without a plan the session runs :func:`~edge_agent.step_cap.fixed_steps`, which may
        be fewer than ``config.local_steps``; ``TrainOutcome.steps`` says how many ran.
        """
        data = self.partition(config, partition)
        slot = self._slot(config.model)
        slot.load(global_tensors)
        slot.changed()
        session = TrainSession(self, slot, data, config, layout, global_tensors, seed)
        started = time.perf_counter()
        if plan is None:
            # An explicit ``steps`` is the caller's decision; the task's own steps get
            # PyramidFL's learner cap where an override raised them above the job's.
            session.run_steps(fixed_steps(config, data.num_train) if steps is None else steps)
        else:
            plan(session)
        outcome = session.outcome(time.perf_counter() - started)
        return outcome

    def evaluate(
        self, config: TrainConfig, partition: int, global_tensors: Mapping[str, np.ndarray]
    ) -> tuple[float, float, int]:
        """(mean loss, accuracy, examples) of the global model on this agent's test split."""
        data = self.partition(config, partition)
        slot = self._slot(config.model)
        slot.load(global_tensors)
        began = time.perf_counter()
        result = evaluate_model(slot.module, data.test_x, data.test_y)
        self.slow_down(time.perf_counter() - began)
        return result


@torch.no_grad()
def evaluate_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024
) -> tuple[float, float, int]:
    """(mean cross-entropy, accuracy, examples) of ``model`` on (x, y), in batches."""
    set_training(model, False)
    count = int(y.shape[0])
    if count == 0:
        return 0.0, 0.0, 0
    total_loss, correct = 0.0, 0
    for start in range(0, count, batch):
        whole = start == 0 and count <= batch  # an agent's test split: one batch, no slice
        logits = model(x if whole else x[start : start + batch])
        labels = y if whole else y[start : start + batch]
        total_loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(dim=1) == labels).sum())
    return total_loss / count, correct / count, count


class TrainSession:
    """One round's training: SGD steps on demand, and the current delta on demand."""

    def __init__(
        self,
        trainer: LocalTrainer,
        slot: ModelSlot,
        data: Partition,
        config: TrainConfig,
        layout: ParamLayout,
        global_tensors: Mapping[str, np.ndarray],
        seed: int,
    ) -> None:
        self.slot = slot
        self.slow_down = trainer.slow_down
        self.model = slot.module
        self.data = data
        self.config = config
        self.layout = layout
        self.global_flat = layout.flatten(global_tensors)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.optimizer = MomentumSGD(
            list(self.model.parameters()),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            proximal_mu=config.proximal_mu,
        )
        self.utility = UtilityAccumulator()
        self.steps = 0
        self.loss_sum = 0.0
        self.samples = 0
        # Per-sample losses of the steps since the last fold: summed once per run_steps
        # call, not per step (a per-step .item() is a device sync and ~10 us on a CPU).
        self._losses: list[torch.Tensor] = []
        self._order = torch.empty(0, dtype=torch.long)
        self._order_len = 0
        self._cursor = 0
        self._batch_size = min(config.batch_size, data.num_train)
        # Indices are drawn on the CPU (the generator's device) and moved only when needed.
        self._index_device = None if data.train_x.device.type == "cpu" else data.train_x.device
        self.steps_phase1 = 0
        self.steps_phase2 = 0
        self.keep_frac = 1.0
        self.success = True
        self.reason = ""

    def _next_batch(self) -> torch.Tensor:
        size = self._batch_size
        if self._cursor + size > self._order_len:
            self._order = torch.randperm(self.data.num_train, generator=self.generator)
            self._order_len = self.data.num_train
            self._cursor = 0
        # A partition no larger than a batch trains on a whole fresh shuffle every step.
        batch = (
            self._order
            if size == self._order_len
            else self._order[self._cursor : self._cursor + size]
        )
        self._cursor += size
        return batch if self._index_device is None else batch.to(self._index_device)

    def run_steps(self, count: int) -> None:
        if self.data.num_train == 0:
            self.success, self.reason = False, "no training data"
            return
        set_training(self.model, True)
        loss_fn = nn.functional.cross_entropy
        # Locals: a step of a small model is ~30 torch calls, each lookup saved counts.
        model, step_on, keep = self.model, self.optimizer.step_on, self._losses.append
        train_x, train_y, index_select = self.data.train_x, self.data.train_y, torch.index_select
        began = time.perf_counter()
        try:
            for _ in range(count):
                idx = self._next_batch()
                # index_select: the same rows as x[idx], without advanced indexing's setup.
                losses = loss_fn(
                    model(index_select(train_x, 0, idx)),
                    index_select(train_y, 0, idx),
                    reduction="none",
                )
                step_on(losses.mean())
                keep(losses.detach())
                self.steps += 1
        finally:
            self._fold_losses()
            self.slow_down(time.perf_counter() - began)

    def _fold_losses(self) -> None:
        """Move the pending per-sample losses into the utility and the loss sum."""
        if not self._losses:
            return
        losses = torch.cat(self._losses).to("cpu", torch.float64).numpy()
        self._losses.clear()
        self.samples += int(losses.shape[0])
        self.loss_sum += float(losses.sum())
        self.utility.add_batch(losses)  # raises on a non-finite loss

    def delta(self) -> np.ndarray:
        """Current weights minus the global weights, flat float32."""
        current = self.layout.flatten(self.slot.to_numpy())
        np.subtract(current, self.global_flat, out=current)
        return current

    def outcome(self, compute_seconds: float) -> TrainOutcome:
        delta = self.delta()
        trained = self.samples
        utility = (
            self.utility.utility(self.data.num_train, self.steps, self.config.batch_size)
            if self.steps > 0
            else 0.0
        )
        loss = self.loss_sum / trained if trained else 0.0
        if self.success and not (math.isfinite(loss) and np.isfinite(delta).all()):
            self.success, self.reason = False, "training diverged (non-finite loss or weights)"
        return TrainOutcome(
            delta=delta,
            num_examples=self.data.num_train,
            trained_samples=trained,
            loss=loss if math.isfinite(loss) else 0.0,
            utility=utility if math.isfinite(utility) else 0.0,
            steps=self.steps,
            compute_seconds=compute_seconds,
            steps_phase1=self.steps_phase1,
            steps_phase2=self.steps_phase2,
            keep_frac=self.keep_frac,
            success=self.success and self.steps > 0,
            reason=self.reason or ("" if self.steps > 0 else "no steps run"),
        )
