"""The device pool as columns: eligibility of 10,000 agents in a few numpy operations (pure).

The scheduler checks every job's ``requires:`` against every agent on each decision;
per agent in Python that is ~200,000 calls at 10,000 agents and 20 jobs, far over the
10 ms a decision may take. Here each attribute is one array, a device-model pattern is
matched once per distinct model, tags are one boolean column each, and a job's mask is
cached by its requirements (they never change while the table lives: the table is
rebuilt when agents come or go). Same rules as :func:`coordinator.eligibility.why_not`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from coordinator.eligibility import AgentAttributes, Requirements, model_matches


class AgentTable:
    """Attributes of a fixed set of agents, in columns indexed like ``ids``."""

    def __init__(self, agents: Sequence[AgentAttributes]) -> None:
        self.ids: list[str] = [a.agent for a in agents]
        self.index: dict[str, int] = {agent: i for i, agent in enumerate(self.ids)}
        self._id_array = np.array(self.ids, dtype=object)
        self.attributes: dict[str, AgentAttributes] = {a.agent: a for a in agents}
        n = len(agents)
        self.memory_gb = np.fromiter((a.memory_gb for a in agents), np.float64, n)
        self.num_samples = np.fromiter((a.num_samples for a in agents), np.int64, n)
        self.capacity = np.fromiter((a.capacity for a in agents), np.int64, n)
        self._accelerators = _codes([a.accelerator for a in agents])
        self._models = _codes([a.device_model for a in agents])
        tags = sorted({t for a in agents for t in a.tags})
        self._tag_column = {tag: np.zeros(n, dtype=bool) for tag in tags}
        for i, a in enumerate(agents):
            for tag in a.tags:
                self._tag_column[tag][i] = True
        self._masks: dict[Requirements, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, requirements: Requirements) -> np.ndarray:
        """Boolean array: which agents meet ``requirements`` (cached; do not mutate)."""
        cached = self._masks.get(requirements)
        if cached is None:
            cached = self._compute(requirements)
            cached.setflags(write=False)
            self._masks[requirements] = cached
        return cached

    def ids_at(self, chosen: np.ndarray) -> list[str]:
        """The ids where boolean ``chosen`` is set, in table order."""
        return self._id_array[chosen].tolist()  # type: ignore[no-any-return]

    def positions(self, agents: Iterable[str]) -> np.ndarray:
        """Indices of the known ones of ``agents`` (unknown ids are skipped)."""
        index = self.index
        return np.fromiter((index[a] for a in agents if a in index), np.int64)

    def _compute(self, req: Requirements) -> np.ndarray:
        n = len(self.ids)
        ok = np.ones(n, dtype=bool)
        if req.accelerator:
            ok &= self._accelerators.any_of(lambda kind: kind in req.accelerator)
        if req.device_model:
            pattern = req.device_model
            ok &= self._models.any_of(lambda model: model_matches(pattern, model))
        if req.min_memory_gb:
            ok &= self.memory_gb >= req.min_memory_gb
        if req.min_samples:
            ok &= self.num_samples >= req.min_samples
        for tag in req.tags:
            column = self._tag_column.get(tag)
            if column is None:
                return np.zeros(n, dtype=bool)
            ok &= column
        return ok


class _Codes:
    """A text column as small integer codes: a predicate runs once per distinct value."""

    def __init__(self, values: list[str], codes: np.ndarray) -> None:
        self.values = values
        self.codes = codes

    def any_of(self, predicate: Callable[[str], bool]) -> np.ndarray:
        chosen = np.fromiter((bool(predicate(v)) for v in self.values), bool, len(self.values))
        if not len(self.values):
            return np.zeros(len(self.codes), dtype=bool)
        return chosen[self.codes]


def _codes(column: list[str]) -> _Codes:
    values: dict[str, int] = {}
    codes = np.fromiter((values.setdefault(v, len(values)) for v in column), np.int64, len(column))
    return _Codes(list(values), codes)
