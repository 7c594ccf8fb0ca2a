"""Oort selector behaviour on small hand-checked fleets (ALGORITHMS.md §1, §7 #1-#7)."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest

from client_selectors import (
    ClientProfile,
    InvalidFeedbackError,
    OortKnobs,
    OortSelector,
    UnknownClientError,
)
from client_selectors.snapshot import pack_rng, unpack_array


def oort(
    n: int, seed: int = 0, durations: list[float] | None = None, **knobs: object
) -> OortSelector:
    selector = OortSelector(OortKnobs.model_validate(knobs), seed)
    for i in range(n):
        duration = 1.0 if durations is None else durations[i]
        selector.register_client(f"c{i}", ClientProfile(num_samples=10 + i, duration=duration))
    return selector


def column(selector: OortSelector, name: str) -> np.ndarray:
    table = cast(dict[str, object], selector.state()["table"])
    return unpack_array(cast(dict[str, dict[str, object]], table["columns"])[name])


def ids(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


def test_epsilon_decays_before_use_and_sets_the_explore_share() -> None:
    selector = oort(100)
    for i in range(50):  # half the fleet explored
        selector.register_feedback(f"c{i}", 1.0 + i, 0, 1.0, True)
    selection = selector.select_participants(10, 0.0, ids(100))
    assert selection.info["epsilon"] == pytest.approx(0.9 * 0.95)
    assert len(selection.info["exploit"]) == 10 - int(10 * 0.855) == 2
    assert len(selection.info["explore"]) == 8
    assert all(int(c[1:]) >= 50 for c in selection.info["explore"])
    assert all(int(c[1:]) < 50 for c in selection.info["exploit"])


def test_epsilon_is_clamped_at_exploration_min() -> None:
    selector = oort(30, exploration_decay=0.5, exploration_min=0.3)
    for _ in range(5):
        selection = selector.select_participants(10, 0.0, ids(30))
    assert selection.info["epsilon"] == 0.3


def test_first_call_draws_explore_by_initial_reward_not_uniformly() -> None:
    # initial reward = num_samples; sample_window 1 -> exactly the top-K by size
    selector = oort(20, sample_window=1.0)
    selection = selector.select_participants(5, 0.0, ids(20))
    assert sorted(selection.clients) == sorted(f"c{i}" for i in range(15, 20))


def test_initial_reward_cap() -> None:
    selector = oort(3, initial_reward_cap=11.0)
    np.testing.assert_array_equal(column(selector, "reward"), [10.0, 11.0, 11.0])


def test_preferred_duration_uses_all_registered_clients() -> None:
    durations = [float(d) for d in range(1, 11)]
    selector = oort(10, durations=durations, round_threshold=30.0)  # sorted[int(10 * 0.3)] = 4
    selection = selector.select_participants(3, 0.0, [f"c{i}" for i in range(5, 10)])
    assert selection.info["preferred_duration"] == 4.0  # online alone would give 7


def test_explore_penalises_clients_slower_than_the_preferred_duration() -> None:
    # equal size; the fast half has duration 1, the slow half 100 -> penalty (T/100)^2
    durations = [1.0] * 10 + [100.0] * 10
    selector = OortSelector(OortKnobs(round_threshold=30.0, sample_window=1.0), 0)
    for i in range(20):
        selector.register_client(f"c{i}", ClientProfile(num_samples=50, duration=durations[i]))
    selection = selector.select_participants(10, 0.0, ids(20))
    assert sorted(selection.clients) == sorted(ids(10))


def test_ucb_bonus_uses_the_selector_clock_not_the_callers_round() -> None:
    selector = oort(5)
    selector.select_participants(2, 0.0, ids(5))
    selector.select_participants(2, 0.0, ids(5))
    selector.register_feedback("c1", 1.0, 1000, 2.0, True)  # caller says round 1000
    assert column(selector, "last_feedback")[1] == 2  # L = selector call 2
    assert column(selector, "last_round")[1] == 1000
    fresh = oort(5)
    fresh.register_feedback("c0", 1.0, 0, 2.0, True)  # before any call: L = 1
    assert column(fresh, "last_feedback")[0] == 1


def test_exploit_draw_follows_scores_with_the_ucb_bonus() -> None:
    # all explored with equal reward: c0 last fed at call 1, the others at call 29
    selector = oort(10, exploration_factor=0.0, exploration_min=0.0)
    selector.register_feedback("c0", 1.0, 0, 1.0, True)
    for _ in range(29):
        selector.select_participants(1, 0.0, ["c9"])
    for i in range(1, 10):
        selector.register_feedback(f"c{i}", 1.0, 0, 1.0, True)
    state = selector.state()
    trials = 3000
    wins = 0
    for seed in range(trials):  # same state, only the draw varies
        clone = OortSelector.from_state(state | {"rng": pack_rng(np.random.default_rng(seed))})
        wins += clone.select_participants(1, 0.0, ids(10)).clients == ["c0"]
    # t = 30; normalised reward (1 - 0.999) / 0.001 = 1 for everyone; pool = all 10
    stale = 1.0 + math.sqrt(0.1 * math.log(30) / 1)
    fresh = 1.0 + math.sqrt(0.1 * math.log(30) / 29)
    expected = stale / (stale + 9 * fresh)  # ~0.137, against 0.1 without the bonus
    assert abs(wins / trials - expected) < 0.02


def test_stragglers_get_the_sample_weighted_round_mean_and_become_explored() -> None:
    selector = oort(6)  # num_samples 10, 11, ..., 15
    selector.select_participants(6, 0.0, ids(6))
    selector.register_feedback("c0", 1.0, 1, 5.0, True)  # weight 10
    selector.register_feedback("c1", 3.0, 1, 5.0, True, num_samples=30.0)  # weight 30 (extra)
    selector.register_feedback("c2", 100.0, 1, 5.0, False)  # failed: not in the mean
    selector.register_stragglers(["c3", "c4"], {"c3": 42.0}, 1)
    rewards = column(selector, "reward")
    assert rewards[3] == pytest.approx((1.0 * 10 + 3.0 * 30) / 40)
    assert rewards[4] == pytest.approx(2.5)
    assert column(selector, "duration")[3] == 42.0
    assert column(selector, "duration")[4] == 1.0  # no estimate given: keeps its own
    np.testing.assert_array_equal(column(selector, "count"), [1, 1, 1, 1, 1, 0])
    assert rewards[2] == 100.0  # the failed client still records its reward ([F])


def test_stragglers_keep_their_reward_when_nobody_succeeded() -> None:
    selector = oort(3)
    selector.select_participants(3, 0.0, ids(3))
    selector.register_stragglers(["c2"], {"c2": 9.0}, 1)
    assert column(selector, "reward")[2] == 12.0
    assert column(selector, "count")[2] == 1


def test_round_successes_reset_at_the_next_selection() -> None:
    selector = oort(4)
    selector.select_participants(4, 0.0, ids(4))
    selector.register_feedback("c0", 8.0, 1, 1.0, True)
    selector.select_participants(4, 0.0, ids(4))
    selector.register_feedback("c1", 2.0, 2, 1.0, True)
    selector.register_stragglers(["c3"], {}, 2)
    assert column(selector, "reward")[3] == pytest.approx(2.0)


def test_blacklist_caps_at_an_integer_share_of_the_fleet() -> None:
    selector = oort(10, blacklist_rounds=1, blacklist_max_len=0.35)  # cap int(3.5) = 3
    feedbacks = {"c0": 5, "c1": 4, "c2": 3, "c3": 2, "c4": 1}
    for client_id, times in feedbacks.items():
        for _ in range(times):
            selector.register_feedback(client_id, 1.0, 0, 1.0, True)
    for _ in range(20):
        selection = selector.select_participants(10, 0.0, ids(10))
        assert selection.info["blacklisted"] == 3
        assert not {"c0", "c1", "c2"} & set(selection.clients)
        assert "c3" in selection.clients  # count 2 > 1 but beyond the cap


def test_exploration_the_unexplored_cannot_fill_is_exploited() -> None:
    # epsilon 0.9 * 0.98 asks for 8 explore picks of 10; nobody is unexplored
    selector = oort(20)
    for i in range(20):
        selector.register_feedback(f"c{i}", 1.0 + i, 0, 1.0, True)
    selection = selector.select_participants(10, 0.0, ids(20))
    assert len(selection.info["exploit"]) == 10
    assert selection.info["explore"] == [] and selection.info["padding"] == []
    assert len(set(selection.clients)) == 10


def test_a_partly_filled_explore_quota_hands_the_rest_to_the_cut_off_pool() -> None:
    # 3 unexplored for a quota of 8: 3 explore, 7 exploit drawn from the cut-off pool,
    # which with cut_off_util 0.7 and no pool floor leaves the low scorers out
    # (normalised scores: c0-c9 1.0, c10-c18 0.5, c19 0)
    def picks(**knobs: object) -> tuple[list[str], list[str]]:
        selector = oort(23, cut_off_util=0.7, exploration_factor=0.9, **knobs)
        for i in range(20):
            reward = 100.0 if i < 10 else 55.0 if i < 19 else 10.0
            selector.register_feedback(f"c{i}", reward, 0, 1.0, True)
        selection = selector.select_participants(10, 0.0, ids(23))
        return selection.info["explore"], selection.info["exploit"]

    explore, exploit = picks(exploit_pool_factor=0.0)
    assert sorted(explore) == ["c20", "c21", "c22"]
    assert len(exploit) == 7
    assert all(int(c[1:]) < 10 for c in exploit)  # only scores >= 0.7 x the 7th are eligible
    # FedScale's floor of 10x the exploit count opens the pool to everyone scored
    _, wide = picks(exploit_pool_factor=10.0, seed=0)
    assert any(int(c[1:]) >= 10 for c in wide)


def test_pacer_uses_only_exploit_picks_that_succeeded() -> None:
    # pacer_step 1: every call compares the last two round averages
    selector = oort(
        10,
        pacer_step=1,
        pacer_delta=5.0,
        round_threshold=30.0,
        exploration_factor=0.0,
        exploration_min=0.0,
    )
    for i in range(10):
        selector.register_feedback(f"c{i}", 1.0, 0, 1.0, True)
    first = selector.select_participants(3, 0.0, ids(10))
    for client_id in first.clients:
        selector.register_feedback(client_id, 1.0, 1, 1.0, True)
    second = selector.select_participants(3, 0.0, ids(10))  # t = 2: A = 0 (nothing) vs B = 1
    assert second.info["round_threshold"] == 25.0  # [O]: |1 - 0| >= 5 * 0 -> tighten
    for client_id in second.clients:
        selector.register_feedback(client_id, 1.0, 2, 1.0, False)  # failures do not count
    third = selector.select_participants(3, 0.0, ids(10))  # A = 1, B = 0: change 1 < 5
    assert third.info["round_threshold"] == 25.0


def test_bad_feedback_raises_and_changes_nothing() -> None:
    selector = oort(3)
    selector.select_participants(2, 0.0, ids(3))
    before = selector.state()
    with pytest.raises(InvalidFeedbackError):
        selector.register_feedback("c0", float("nan"), 1, 1.0, True)
    with pytest.raises(InvalidFeedbackError):
        selector.register_feedback("c0", 1.0, 1, -1.0, True)
    with pytest.raises(InvalidFeedbackError):
        selector.register_stragglers(["c1"], {"c1": float("inf")}, 1)
    with pytest.raises(UnknownClientError):
        selector.register_stragglers(["c1", "nobody"], {}, 1)
    with pytest.raises(InvalidFeedbackError):
        selector.update_duration("c0", float("nan"))
    assert selector.state() == before
