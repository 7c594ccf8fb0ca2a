"""Oort (OSDI'21) as FedScale ships it, with the known defects fixed (ALGORITHMS.md §1, §0).

The knob defaults are the Oort artifact's ([O]), not FedScale's: see :class:`OortKnobs`.

Each call of ``select_participants`` is one selector round t (t counts this selector's own
non-empty calls, §7 #2). The order of work per call is [O]'s: t += 1, blacklist, pacer,
preferred duration T, normalisation, scores, ε decay (before use), exploit draw, explore
draw. Picks are explore + exploit (+ padding, see below).

Choices made where the sources are open or buggy:

- **First call.** [F]'s ClientManager makes the very first selection uniformly random; that
  is not done here. On the first call nothing is explored, so ε·K explore picks are drawn by
  size-based initial reward, and any shortfall is padded (below), which already spreads
  the first round; a uniform first round would only add a special case.
- **Clock of the bonus.** The UCB bonus is sqrt(0.1 ln t / L) with L the selector call at
  which the client last gave feedback, taken from this selector's own counter (>= 1), so t
  and L always share one clock even if the caller's round numbers skip or restart.
  The caller's ``time_stamp`` is stored as ``last_round`` for inspection only.
- **Exploration the unexplored cannot fill.** [F] returns fewer than K once too few online
  clients are unexplored (it only draws K - floor(Kε) exploit picks); [O] sets ε to 0 once
  nothing is unexplored. Here the explore picks are min(|unexplored online|, floor(Kε))
  and the rest of the K are exploit picks, drawn from the cut-off pool like the others.
  With ~8 % of a fleet online (the FLASH replay: 26 picks of ~60-110 online) the
  unexplored online run out within a few rounds while ε is still high; before, the gap
  was padded by a score-weighted draw over *every* explored candidate, which ignored the
  cut-off and picked slow clients almost as often as fast ones. Should the pool still be
  short (it holds at least exploitLen + 1 scores, or all), the rest is padded by a
  score-weighted draw over the remaining scored candidates, reported as ``"padding"``.
  Padding picks do not feed the pacer (as in [O], where padding is not part of the
  exploit list).
- **success.** [F] ignores the success flag. Here every feedback updates reward, duration
  and L (the client becomes explored), but only ``success=True`` feedback counts towards the
  pacer and towards the round mean that stragglers receive.
- **Stragglers** get the sample-weighted mean reward of this round's successes (weights:
  ``extra["num_samples"]`` when given, else the registered ``num_samples``), their own
  duration, and become explored. With no success this round they keep their own reward.
- **Initial reward** = ``num_samples`` (capped by ``initial_reward_cap`` when set, e.g. to
  local_steps × batch_size as [F] does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, cast

import numpy as np
from pydantic import Field

from client_selectors.base import (
    BASE_COLUMNS,
    ClientId,
    ClientProfile,
    ClientSelector,
    Selection,
    SelectorKnobs,
    check_duration,
    check_reward,
)
from client_selectors.oort_scoring import (
    cutoff_pool,
    exploit_len,
    exploit_scores,
    preferred_duration,
    reward_norm,
    system_penalty,
)
from client_selectors.pacer import Pacer, mean_reward
from client_selectors.sampling import top_k, weighted_sample
from client_selectors.table import Column


class OortKnobs(SelectorKnobs):
    """Oort knobs; defaults are the Oort artifact's ([O] column of ALGORITHMS.md 1.6).

    FedScale's column ([F]: exploration decay 0.98 / min 0.3, round_threshold 30,
    clip_bound 0.9, cut_off_util 0.05 with an exploit pool of at least 10 x exploitLen)
    is tuned for thousands of clients online and hundreds of rounds. With a few dozen to a
    few hundred online and 26 picks a round, its pool floor is everyone online, so the
    "exploit" draw is a near-uniform score-weighted draw, and epsilon is still 0.6-0.75
    at the rounds where a 30-round study reaches its target. Measured (issue 22, Oort
    without adaptive training, 5 seeds, smoothed): [O]'s column cut the FedScale-style
    fleet's rounds from 132 s to 57 s and its time to 75 % from 0.66 h to 0.38 h. Set
    the [F] values (and ``exploit_pool_factor: 10``) to get FedScale's behaviour.
    """

    exploration_factor: float = Field(0.9, ge=0.0, le=1.0)
    exploration_decay: float = Field(0.95, ge=0.0, le=1.0)
    exploration_min: float = Field(0.2, ge=0.0, le=1.0)
    exploration_alpha: float = Field(0.3, ge=0.0, description="accepted for [F] configs; unused")
    round_threshold: float = Field(10.0, ge=0.0, le=100.0, description="duration percentile")
    round_penalty: float = Field(2.0, ge=0.0)
    pacer_step: int = Field(20, ge=1)
    pacer_delta: float = Field(5.0, ge=0.0)
    sample_window: float = Field(5.0, ge=1.0)
    clip_bound: float = Field(0.98, gt=0.0, le=1.0)
    cut_off_util: float = Field(0.7, ge=0.0)
    blacklist_rounds: int = Field(-1, ge=-1, description="-1: no blacklist")
    blacklist_max_len: float = Field(0.3, ge=0.0, le=1.0)
    initial_reward_cap: float | None = Field(None, gt=0.0)
    # The exploit pool holds at least this many times exploitLen top scores ([F]: 10,
    # "augmentation"); 0 is [O]'s plain cut-off prefix.
    exploit_pool_factor: float = Field(0.0, ge=0.0)


OORT_COLUMNS: dict[str, Column] = {
    **BASE_COLUMNS,
    "reward": Column("float64"),
    "last_feedback": Column("int64"),  # L: selector call of the last feedback (0 = never)
    "last_round": Column("int64"),  # the caller's time_stamp of the last feedback
    "count": Column("int64"),  # number of feedbacks; > 0 means explored
}


class OortSelector(ClientSelector[OortKnobs]):
    """Oort's guided participant selection."""

    name: ClassVar[str] = "oort"
    Knobs: ClassVar[type[OortKnobs]] = OortKnobs
    columns: ClassVar[Mapping[str, Column]] = OORT_COLUMNS
    # columns whose round mean (over this round's successes) stragglers receive
    straggler_columns: ClassVar[tuple[str, ...]] = ("reward",)

    def __init__(self, knobs: OortKnobs, seed: int) -> None:
        super().__init__(knobs, seed)
        self._t = 0
        self._epsilon = knobs.exploration_factor
        self._pacer = Pacer(knobs.round_threshold, knobs.pacer_step, knobs.pacer_delta, 100.0)
        self._last_exploit: list[int] = []
        self._successful: set[int] = set()
        self._round_success: list[tuple[int, float]] = []  # (row, sample weight)

    @property
    def round_threshold(self) -> float:
        return self._pacer.value

    @property
    def epsilon(self) -> float:
        return self._epsilon

    def _on_register(self, row: int, profile: ClientProfile) -> None:
        cap = self.knobs.initial_reward_cap
        initial = float(profile.num_samples) if cap is None else min(profile.num_samples, cap)
        self._table["reward"][row] = initial

    # -- selection ------------------------------------------------------------------------
    def select_participants(self, num: int, now: float, online: Sequence[ClientId]) -> Selection:
        online_mask = self._online_mask(num, online)
        if online_mask is None:
            return Selection([], {})
        tab, k = self._table, self.knobs
        self._t += 1
        t = self._t
        candidates = online_mask & ~self._blacklist()
        self._run_pacer(t)

        t_pref = preferred_duration(tab["duration"], self._pacer.value)
        rewards, durations = tab["reward"], tab["duration"]
        norm = reward_norm(rewards[candidates], k.clip_bound)
        explored = tab["count"] > 0
        scored = np.flatnonzero(candidates & explored)
        scores = exploit_scores(
            rewards[scored],
            tab["last_feedback"][scored],
            durations[scored],
            t,
            norm,
            t_pref,
            k.round_penalty,
        )

        self._epsilon = max(self._epsilon * k.exploration_decay, k.exploration_min)
        unexplored = np.flatnonzero(candidates & ~explored)
        n_explore = min(unexplored.size, num - exploit_len(num, self._epsilon, scored.size))
        # Exploration the unexplored cannot fill is exploited ([O] turns exploration off
        # once nothing is unexplored): with few clients online the explore quota outruns
        # the unexplored within rounds.
        n_exploit = min(num - n_explore, scored.size)
        pool = cutoff_pool(scores, n_exploit, k.cut_off_util, k.exploit_pool_factor)
        exploit = pool[weighted_sample(self._rng, scores[pool], n_exploit)]

        explore = self._draw_explore(unexplored, n_explore, t_pref)

        padding = np.empty(0, dtype=np.int64)
        short = num - exploit.size - explore.size
        if short > 0 and scored.size > exploit.size:
            rest = np.ones(scored.size, dtype=bool)
            rest[exploit] = False
            rest_pos = np.flatnonzero(rest)
            padding = rest_pos[weighted_sample(self._rng, scores[rest_pos], short)]

        self._last_exploit = [int(r) for r in scored[exploit]]
        explore_ids = tab.id_list(explore)
        exploit_ids = tab.id_list(scored[exploit])
        padding_ids = tab.id_list(scored[padding])
        info: dict[str, object] = {
            "t": t,
            "explore": explore_ids,
            "exploit": exploit_ids,
            "padding": padding_ids,
            "round_threshold": self._pacer.value,
            "preferred_duration": None if math.isinf(t_pref) else t_pref,
            "epsilon": self._epsilon,
            "blacklisted": int(online_mask.sum() - candidates.sum()),
        }
        return Selection(explore_ids + exploit_ids + padding_ids, info)

    def _blacklist(self) -> np.ndarray:
        """Rows with more than blacklist_rounds feedbacks, most-used first, capped (int)."""
        n = len(self._table)
        out = np.zeros(n, dtype=bool)
        rounds = self.knobs.blacklist_rounds
        if rounds < 0:
            return out
        count = self._table["count"]
        over = np.flatnonzero(count > rounds)
        cap = int(self.knobs.blacklist_max_len * n)
        if over.size > cap:
            over = over[top_k(count[over].astype(np.float64), cap)]
        out[over] = True
        return out

    def _run_pacer(self, t: int) -> None:
        reward = self._table["reward"]
        back = [reward[r] for r in self._last_exploit if r in self._successful]
        self._pacer.update(t, mean_reward(back))
        self._successful = set()
        self._round_success = []

    def _draw_explore(self, unexplored: np.ndarray, n_explore: int, t_pref: float) -> np.ndarray:
        if n_explore <= 0:
            return np.empty(0, dtype=np.int64)
        tab = self._table
        init = tab["reward"][unexplored] * system_penalty(
            tab["duration"][unexplored], t_pref, self.knobs.round_penalty
        )
        window = top_k(init, int(self.knobs.sample_window * n_explore))
        result: np.ndarray = unexplored[window[weighted_sample(self._rng, init[window], n_explore)]]
        return result

    # -- feedback -------------------------------------------------------------------------
    def register_feedback(
        self,
        client_id: ClientId,
        reward: float,
        time_stamp: int,
        duration: float,
        success: bool,
        **extra: float,
    ) -> None:
        row = self._table.row(client_id)
        check_reward(reward)
        check_duration("duration", duration)
        self._check_extra(extra)
        tab = self._table
        tab["reward"][row] = reward
        self._mark_explored(row, duration, time_stamp)
        self._on_feedback(row, extra)
        if success:
            self._successful.add(row)
            weight = extra.get("num_samples", float(tab["num_samples"][row]))
            self._round_success.append((row, float(weight)))

    def _check_extra(self, extra: Mapping[str, float]) -> None:
        """Hook: validate policy-specific extras before anything is stored."""
        for key in ("num_samples", "trained_samples"):
            if key in extra:
                check_duration(key, extra[key])

    def _on_feedback(self, row: int, extra: Mapping[str, float]) -> None:
        """Hook: store policy-specific extras of a feedback."""

    def _mark_explored(self, row: int, duration: float, time_stamp: int) -> None:
        tab = self._table
        tab["duration"][row] = duration
        tab["last_feedback"][row] = max(1, self._t)
        tab["last_round"][row] = time_stamp
        tab["count"][row] += 1

    def register_stragglers(
        self,
        client_ids: Sequence[ClientId],
        durations: Mapping[ClientId, float],
        time_stamp: int,
    ) -> None:
        tab = self._table
        rows = [tab.row(c) for c in client_ids]
        for c in client_ids:
            if c in durations:
                check_duration("duration", durations[c])
        means = self._round_means()
        for client_id, row in zip(client_ids, rows, strict=True):
            for column, value in means.items():
                tab[column][row] = value
            duration = durations.get(client_id, float(tab["duration"][row]))
            self._mark_explored(row, duration, time_stamp)

    def _round_means(self) -> dict[str, float]:
        """Sample-weighted means of ``straggler_columns`` over this round's successes."""
        if not self._round_success:
            return {}
        rows = np.array([r for r, _ in self._round_success], dtype=np.int64)
        weights = np.array([w for _, w in self._round_success], dtype=np.float64)
        total = weights.sum()
        if total <= 0:
            weights, total = np.ones_like(weights), float(weights.size)
        return {
            col: float(np.dot(self._table[col][rows], weights) / total)
            for col in self.straggler_columns
        }

    # -- checkpoints ----------------------------------------------------------------------
    def _scalar_state(self) -> dict[str, object]:
        return {
            "t": self._t,
            "epsilon": self._epsilon,
            "pacer": self._pacer.to_state(),
            "last_exploit": list(self._last_exploit),
            "successful": sorted(self._successful),
            "round_success": [[r, w] for r, w in self._round_success],
        }

    def _load_scalar_state(self, scalars: dict[str, object]) -> None:
        self._t = int(cast(int, scalars["t"]))
        self._epsilon = float(cast(float, scalars["epsilon"]))
        self._pacer.load_state(cast(dict[str, object], scalars["pacer"]))
        self._last_exploit = [int(r) for r in cast(list[int], scalars["last_exploit"])]
        self._successful = {int(r) for r in cast(list[int], scalars["successful"])}
        self._round_success = [
            (int(r), float(w)) for r, w in cast(list[list[float]], scalars["round_success"])
        ]
