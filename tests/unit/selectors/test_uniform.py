"""The random policy: uniform without replacement, no learning state."""

from __future__ import annotations

import numpy as np

from client_selectors import ClientProfile, RandomKnobs, RandomSelector


def test_uniform_over_online_registered() -> None:
    selector = RandomSelector(RandomKnobs(), 0)
    for i in range(10):
        selector.register_client(f"c{i}", ClientProfile(num_samples=1 + 100 * i))
    online = [f"c{i}" for i in range(0, 10, 2)]  # c0, c2, c4, c6, c8
    counts: dict[str, int] = dict.fromkeys(online, 0)
    for _ in range(4000):
        picked = selector.select_participants(2, 0.0, online).clients
        assert len(set(picked)) == 2
        for client_id in picked:
            counts[client_id] += 1
    share = np.array(list(counts.values())) / 8000
    np.testing.assert_allclose(share, 0.2, atol=0.02)  # sample size plays no part


def test_feedback_changes_nothing() -> None:
    selector = RandomSelector(RandomKnobs(), 0)
    selector.register_client("a", ClientProfile(num_samples=1))
    before = selector.state()
    selector.register_feedback("a", 5.0, 1, 2.0, True)
    selector.register_stragglers(["a"], {"a": 3.0}, 1)
    assert selector.state() == before
