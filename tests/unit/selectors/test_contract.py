"""The interface contract, checked for every registered selector."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from client_selectors import (
    SELECTORS,
    BlissSelector,
    ClientProfile,
    ClientSelector,
    SelectorError,
    UnknownClientError,
    make_selector,
)

from .synthetic import make_fleet, play_round, register_fleet

FAST_KNOBS: dict[str, dict[str, object]] = {"bliss": {"n_estimators": 10}}
NAMES = sorted(SELECTORS)


def make(name: str, seed: int = 1) -> ClientSelector:
    selector = make_selector(name, FAST_KNOBS.get(name, {}), seed)
    if isinstance(selector, BlissSelector):
        selector.set_dynamic_source(windows)
    return selector


def windows(client_id: str, now: float) -> np.ndarray:
    phase = (int(client_id.split("-")[1]) % 7) / 7.0
    return (np.sin(np.arange(15) + now / 10.0 + phase) + 1.0) / 2.0


def run(selector: ClientSelector, rounds: range, seed: int = 5) -> list[list[str]]:
    fleet = make_fleet(60, seed=2)
    rng = np.random.default_rng(seed + rounds.start)
    out = []
    for r in rounds:
        online = [c for c in fleet.ids if rng.random() < 0.8]
        out.append(play_round(selector, fleet, r, k=6, rng=rng, online=online).clients)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_selections(name: str) -> None:
    a, b, c = make(name, 1), make(name, 1), make(name, 2)
    fleet = make_fleet(60, seed=2)
    for s in (a, b, c):
        register_fleet(s, fleet)
    first, second, other = run(a, range(1, 11)), run(b, range(1, 11)), run(c, range(1, 11))
    assert first == second
    assert first != other


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_state_round_trip_mid_run(name: str, codec: str) -> None:
    original = make(name)
    register_fleet(original, make_fleet(60, seed=2))
    run(original, range(1, 9))
    state = original.state()
    if codec == "json":
        plain = json.loads(json.dumps(state))
    else:
        plain = msgpack.unpackb(msgpack.packb(state), strict_map_key=False)
    restored = type(original).from_state(plain)
    if isinstance(restored, BlissSelector):
        restored.set_dynamic_source(windows)
    assert restored.state() == state
    assert run(restored, range(9, 17)) == run(original, range(9, 17))


@pytest.mark.parametrize("name", NAMES)
def test_from_state_rejects_another_policys_state(name: str) -> None:
    other = "random" if name != "random" else "oort"
    with pytest.raises(SelectorError, match="state is for selector"):
        SELECTORS[name].from_state(make(other).state())


@pytest.mark.parametrize("name", NAMES)
def test_empty_pools(name: str) -> None:
    selector = make(name)
    assert selector.select_participants(5, 0.0, []).clients == []
    assert selector.select_participants(5, 0.0, ["ghost"]).clients == []  # not registered
    register_fleet(selector, make_fleet(10, seed=1))
    before = selector.state()
    assert selector.select_participants(5, 0.0, []).clients == []  # all offline
    assert selector.select_participants(0, 0.0, make_fleet(10, 1).ids).clients == []
    assert selector.state() == before  # a call that can pick nobody is not a round


@pytest.mark.parametrize("name", NAMES)
def test_tiny_pool_and_num_larger_than_the_pool(name: str) -> None:
    selector = make(name)
    register_fleet(selector, make_fleet(10, seed=1))
    online = ["c-0003", "c-0007", "c-0001", "c-0003", "stranger"]  # duplicate + unknown
    for r in range(1, 6):
        selection = selector.select_participants(50, float(r), online)
        assert sorted(selection.clients) == ["c-0001", "c-0003", "c-0007"]
        for client_id in selection.clients:
            selector.register_feedback(client_id, 1.0, r, 2.0, True)


@pytest.mark.parametrize("name", NAMES)
def test_picks_are_distinct_online_registered_and_at_most_num(name: str) -> None:
    selector = make(name)
    fleet = make_fleet(80, seed=4)
    register_fleet(selector, fleet)
    rng = np.random.default_rng(0)
    for r in range(1, 25):
        online = [c for c in fleet.ids if rng.random() < 0.5] + ["stranger"]
        num = int(rng.integers(1, 30))
        picked = selector.select_participants(num, float(r), online).clients
        assert len(picked) == len(set(picked)) == min(num, len(online) - 1)
        assert set(picked) <= set(online) - {"stranger"}
        for client_id in picked[: max(1, len(picked) // 2)]:
            reward = float(fleet.utility[fleet.index(client_id)])
            selector.register_feedback(client_id, reward, r, 3.0, True)
        selector.register_stragglers(picked[len(picked) // 2 + 1 :], {}, r)


@pytest.mark.parametrize("name", NAMES)
def test_registration_is_idempotent(name: str) -> None:
    once, twice = make(name), make(name)
    profile = ClientProfile(num_samples=5, duration=2.0, static={"brand": "apple"})
    once.register_client("a", profile)
    twice.register_client("a", profile)
    twice.register_client("a", ClientProfile(num_samples=99))
    assert once.state() == twice.state()
    assert twice.num_registered == 1


@pytest.mark.parametrize("name", NAMES)
def test_unknown_clients_are_rejected(name: str) -> None:
    selector = make(name)
    selector.register_client("a", ClientProfile(num_samples=5))
    with pytest.raises(UnknownClientError):
        selector.register_feedback("zz", 1.0, 1, 1.0, True)
    with pytest.raises(UnknownClientError):
        selector.update_duration("zz", 1.0)
    with pytest.raises(UnknownClientError):
        selector.register_stragglers(["zz"], {}, 1)


@pytest.mark.parametrize("name", NAMES)
def test_budget_and_overrides_defaults(name: str) -> None:
    selector = make(name)
    selector.register_client("a", ClientProfile(num_samples=5, compute_time=1.0, comm_time=1.0))
    assert selector.t_budget == (300.0 if name == "bliss" else None)
    overrides = selector.plan_overrides(["a"], 5)
    assert (overrides != {}) == (name == "pyramidfl")


@pytest.mark.parametrize("name", NAMES)
def test_update_duration(name: str) -> None:
    selector = make(name)
    selector.register_client("a", ClientProfile(num_samples=5))
    selector.update_duration("a", 7.0, compute_time=3.0, comm_time=4.0)
    selector.update_duration("a", 8.0)
    columns = selector._table
    assert (columns["duration"][0], columns["compute_time"][0], columns["comm_time"][0]) == (
        8.0,
        3.0,
        4.0,
    )


@pytest.mark.parametrize("name", NAMES)
def test_selection_info_is_json(name: str) -> None:
    selector = make(name)
    register_fleet(selector, make_fleet(30, seed=1))
    for r in range(1, 6):
        selection = selector.select_participants(5, float(r), make_fleet(30, 1).ids)
        assert json.loads(json.dumps(selection.info)) == selection.info
        for client_id in selection.clients:
            selector.register_feedback(client_id, 2.0, r, 1.0, True)
