"""The selector interface every policy implements, and the value types it speaks.

A selector is a pure, synchronous decision object: it is told who registered, how long
they take and how useful their last update was, and it answers who should train next.
It never performs I/O, never reads the clock (``now`` is passed in) and owns one seeded
``numpy.random.Generator``, so a run is reproducible from its seed and a checkpoint
(``state()`` / ``from_state()``) resumes exactly where it stopped.

Shared behaviour decided here, once for every policy:

- registration is idempotent: registering a known id again changes nothing (durations are
  updated through ``update_duration``);
- a ``select_participants`` call that cannot pick anybody (``num <= 0`` or nobody online and
  registered) returns an empty selection and is not counted as a round: counters, pacers
  and the RNG are left untouched;
- a selection never holds more than ``num`` ids, never an id outside online ∩ registered,
  and no id twice;
- bad input raises a :mod:`client_selectors.errors` exception and changes nothing;
- a selector is not thread-safe: call it from one thread at a time (running a call in a
  worker thread, off the event loop, is fine).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Self, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict

from client_selectors.errors import InvalidFeedbackError, SelectorError
from client_selectors.snapshot import pack_rng, unpack_rng
from client_selectors.table import ClientTable, Column

ClientId = str

STATE_FORMAT = 1


@dataclass(frozen=True)
class ClientProfile:
    """What the coordinator knows about a client when it registers."""

    num_samples: int
    duration: float = 1.0
    compute_time: float = 0.0
    comm_time: float = 0.0
    static: Mapping[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientOverride:
    """Per-client settings for the next round (PyramidFL).

    ``dropout_frac``: the fraction of the delta's entries the client does not send (its
    top-k keeps 1 − dropout_frac); ``local_steps``: its steps, None for the job's.
    """

    dropout_frac: float = 0.0
    local_steps: int | None = None


@dataclass(frozen=True)
class Selection:
    """The picked ids and a JSON-able account of why (goes into the ROUND_BEGIN event)."""

    clients: list[ClientId]
    info: dict[str, object]


class SelectorKnobs(BaseModel):
    """Base of every selector's knobs model: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


KnobsT = TypeVar("KnobsT", bound=SelectorKnobs)

BASE_COLUMNS: dict[str, Column] = {
    "num_samples": Column("int64"),
    "duration": Column("float64", fill=1.0),
    "compute_time": Column("float64"),
    "comm_time": Column("float64"),
}


def check_duration(what: str, value: float | None) -> None:
    """Reject a time that is negative, NaN or infinite (raises InvalidFeedbackError)."""
    if value is not None and not (math.isfinite(value) and value >= 0.0):
        raise InvalidFeedbackError(f"{what} must be a finite number >= 0, got {value!r}")


def check_reward(value: float) -> None:
    """Reject a reward that is NaN or infinite (raises InvalidFeedbackError)."""
    if not math.isfinite(value):
        raise InvalidFeedbackError(f"reward must be finite, got {value!r}")


class ClientSelector(ABC, Generic[KnobsT]):
    """A client-selection policy. Subclasses set ``name``, ``Knobs`` and the abstract methods.

    Per-client state lives in ``self._table`` (one row per registered client, parallel numpy
    columns); subclasses add columns through ``columns`` and scalar state through
    ``_scalar_state`` / ``_load_scalar_state``.
    """

    name: ClassVar[str]
    Knobs: ClassVar[type[SelectorKnobs]]
    columns: ClassVar[Mapping[str, Column]] = BASE_COLUMNS

    def __init__(self, knobs: KnobsT, seed: int) -> None:
        if not isinstance(knobs, self.Knobs):
            raise SelectorError(
                f"{type(self).__name__} needs {self.Knobs.__name__}, got {type(knobs).__name__}"
            )
        self.knobs: KnobsT = knobs
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._table = ClientTable(self.columns)

    # -- registration -------------------------------------------------------------------
    def register_client(self, client_id: ClientId, profile: ClientProfile) -> None:
        """Add a client; a second call for the same id changes nothing."""
        if client_id in self._table:
            return
        if profile.num_samples < 0:
            raise InvalidFeedbackError(f"num_samples must be >= 0, got {profile.num_samples}")
        for what in ("duration", "compute_time", "comm_time"):
            check_duration(what, getattr(profile, what))
        self._check_profile(profile)
        row = self._table.add(client_id)
        t = self._table
        t["num_samples"][row] = profile.num_samples
        t["duration"][row] = profile.duration
        t["compute_time"][row] = profile.compute_time
        t["comm_time"][row] = profile.comm_time
        self._on_register(row, profile)

    def _check_profile(self, profile: ClientProfile) -> None:
        """Hook: raise before anything is stored if the profile cannot be used."""

    def _on_register(self, row: int, profile: ClientProfile) -> None:
        """Hook: fill the subclass columns of a freshly added row."""

    def update_duration(
        self,
        client_id: ClientId,
        duration: float,
        compute_time: float | None = None,
        comm_time: float | None = None,
    ) -> None:
        """Set the client's estimated round duration (and its compute/comm parts if given)."""
        row = self._table.row(client_id)
        check_duration("duration", duration)
        check_duration("compute_time", compute_time)
        check_duration("comm_time", comm_time)
        self._table["duration"][row] = duration
        if compute_time is not None:
            self._table["compute_time"][row] = compute_time
        if comm_time is not None:
            self._table["comm_time"][row] = comm_time

    @property
    def num_registered(self) -> int:
        return len(self._table)

    # -- the policy ---------------------------------------------------------------------
    @abstractmethod
    def select_participants(self, num: int, now: float, online: Sequence[ClientId]) -> Selection:
        """Pick at most ``num`` distinct ids among ``online`` ∩ registered."""

    @abstractmethod
    def register_feedback(
        self,
        client_id: ClientId,
        reward: float,
        time_stamp: int,
        duration: float,
        success: bool,
        **extra: float,
    ) -> None:
        """Record one returning client's utility and duration."""

    @abstractmethod
    def register_stragglers(
        self,
        client_ids: Sequence[ClientId],
        durations: Mapping[ClientId, float],
        time_stamp: int,
    ) -> None:
        """Record the clients that were picked this round but not kept (policy's own rule)."""

    def plan_overrides(
        self, kept: Sequence[ClientId], local_steps: int
    ) -> dict[ClientId, ClientOverride]:
        """Per-client overrides for the kept clients of the next round; none by default."""
        return {}

    @property
    def t_budget(self) -> float | None:
        """The round time budget of a budget pacer, or None when the policy has none."""
        return None

    def _online_mask(self, num: int, online: Sequence[ClientId]) -> np.ndarray | None:
        """Mask of online registered rows, or None when this call can pick nobody."""
        if num <= 0 or len(self._table) == 0:
            return None
        mask = self._table.mask(online)
        return mask if mask.any() else None

    # -- checkpoints --------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        """Everything needed to resume exactly, as JSON/msgpack-safe plain values."""
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "knobs": self.knobs.model_dump(mode="json"),
            "seed": self.seed,
            "rng": pack_rng(self._rng),
            "table": self._table.to_state(),
            "scalars": self._scalar_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Self:
        """A selector that behaves exactly like the one that produced ``state``."""
        if state.get("format") != STATE_FORMAT or state.get("name") != cls.name:
            raise SelectorError(
                f"state is for selector {state.get('name')!r} format {state.get('format')!r}, "
                f"not {cls.name!r} format {STATE_FORMAT}"
            )
        knobs = cls.Knobs.model_validate(state["knobs"])
        selector = cls(cast(KnobsT, knobs), int(cast(int, state["seed"])))
        selector._rng = unpack_rng(cast(str, state["rng"]))
        selector._table = ClientTable.from_state(
            cls.columns, cast(Mapping[str, object], state["table"])
        )
        selector._load_scalar_state(cast(dict[str, object], state["scalars"]))
        return selector

    def _scalar_state(self) -> dict[str, object]:
        """Hook: the subclass's non-column state as plain values."""
        return {}

    def _load_scalar_state(self, scalars: dict[str, object]) -> None:
        """Hook: inverse of ``_scalar_state``."""
