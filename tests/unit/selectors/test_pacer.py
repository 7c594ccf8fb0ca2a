"""The pacer's window rule (ALGORITHMS.md §1.4, §4.5, §7 #4)."""

from __future__ import annotations

import pytest

from client_selectors.pacer import Pacer, mean_reward


def feed(pacer: Pacer, rewards: list[float]) -> list[str | None]:
    return [pacer.update(t, r) for t, r in enumerate(rewards, start=1)]


def test_round_reward_is_an_average_not_a_sum() -> None:
    assert mean_reward([2.0, 4.0]) == pytest.approx(6.0 / (2 + 1e-4), rel=1e-12)
    assert mean_reward([]) == 0.0


def test_relaxes_only_every_step_once_two_windows_exist() -> None:
    pacer = Pacer(30.0, step=3, delta=5.0, upper=100.0)
    moves = feed(pacer, [1.0] * 9)
    assert moves == [None] * 5 + ["relax", None, None, "relax"]  # t = 6 and t = 9
    assert pacer.value == 40.0


def test_compares_sums_of_the_last_two_windows() -> None:
    pacer = Pacer(30.0, step=2, delta=5.0, upper=100.0)
    # A = 1 + 1 = 2, B = 1 + 1.125: change 0.125 <= 0.1 * 2 -> relax
    assert feed(pacer, [1.0, 1.0, 1.0, 1.125])[-1] == "relax"
    pacer = Pacer(30.0, step=2, delta=5.0, upper=100.0)
    # A = 2, B = 2.5: 0.5 is neither <= 0.2 nor >= 10 -> no move
    assert feed(pacer, [1.0, 1.0, 1.0, 1.5])[-1] is None
    assert pacer.value == 30.0


def test_tightens_on_a_five_fold_jump_with_a_floor_of_delta() -> None:
    pacer = Pacer(7.0, step=2, delta=5.0, upper=100.0)
    assert feed(pacer, [1.0, 1.0, 6.0, 6.0])[-1] == "tighten"  # |12 - 2| >= 5 * 2
    assert pacer.value == 5.0  # max(delta, 7 - 5)
    assert feed(pacer, [1.0, 1.0, 6.0, 6.0])[-1] == "tighten"
    assert pacer.value == 5.0


def test_upper_cap_and_no_cap() -> None:
    oort = Pacer(98.0, step=1, delta=5.0, upper=100.0)
    feed(oort, [1.0, 1.0])
    assert oort.value == 100.0
    bliss = Pacer(300.0, step=1, delta=5.0, upper=None, skip_when_zero=True)
    feed(bliss, [1.0, 1.0, 1.0])
    assert bliss.value == 310.0


def test_zero_older_window() -> None:
    oort = Pacer(30.0, step=1, delta=5.0, upper=100.0)
    assert feed(oort, [0.0, 0.0]) == [None, "relax"]  # |0 - 0| <= 0
    oort = Pacer(30.0, step=1, delta=5.0, upper=100.0)
    assert feed(oort, [0.0, 1.0]) == [None, "tighten"]  # [O]: |1 - 0| >= 5 * 0
    bliss = Pacer(300.0, step=1, delta=5.0, skip_when_zero=True)
    assert feed(bliss, [0.0, 0.0, 1.0]) == [None, None, None]
    assert bliss.value == 300.0


def test_history_is_bounded_and_state_round_trips() -> None:
    pacer = Pacer(30.0, step=3, delta=5.0, upper=100.0)
    feed(pacer, [float(i) for i in range(50)])
    assert len(pacer.history) == 6
    copy = Pacer(30.0, step=3, delta=5.0, upper=100.0)
    copy.load_state(pacer.to_state())
    assert copy.value == pacer.value and copy.history == pacer.history
