"""The ``random`` policy: uniform sampling without replacement over online ∩ registered.

The baseline every paper compares against ([F] ``sample_mode: random``). It keeps no
learning state: feedback and stragglers are accepted (and checked) but change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from client_selectors.base import (
    ClientId,
    ClientSelector,
    Selection,
    SelectorKnobs,
    check_duration,
    check_reward,
)
from client_selectors.sampling import uniform_sample


class RandomKnobs(SelectorKnobs):
    """The random policy has no knobs (only the seed, passed separately)."""


class RandomSelector(ClientSelector[RandomKnobs]):
    """Uniform random selection."""

    name: ClassVar[str] = "random"
    Knobs: ClassVar[type[RandomKnobs]] = RandomKnobs

    def select_participants(self, num: int, now: float, online: Sequence[ClientId]) -> Selection:
        mask = self._online_mask(num, online)
        if mask is None:
            return Selection([], {})
        pool = np.flatnonzero(mask)
        picks = pool[uniform_sample(self._rng, pool.size, num)]
        return Selection(self._table.id_list(picks), {"pool": int(pool.size)})

    def register_feedback(
        self,
        client_id: ClientId,
        reward: float,
        time_stamp: int,
        duration: float,
        success: bool,
        **extra: float,
    ) -> None:
        self._table.row(client_id)
        check_reward(reward)
        check_duration("duration", duration)

    def register_stragglers(
        self,
        client_ids: Sequence[ClientId],
        durations: Mapping[ClientId, float],
        time_stamp: int,
    ) -> None:
        for client_id in client_ids:
            self._table.row(client_id)
