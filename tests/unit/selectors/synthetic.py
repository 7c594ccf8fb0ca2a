"""A seeded synthetic fleet and a broker-free round loop for selector tests.

Each client has a true utility and a true round duration drawn from known lognormal
distributions. A round follows the coordinator's non-adaptive path: select
⌊overcommit·K⌋, keep the K fastest, feed back the true utility with multiplicative noise
and the true duration, then report the rest as stragglers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from client_selectors import ClientProfile, ClientSelector, Selection


@dataclass
class Fleet:
    ids: list[str]
    utility: np.ndarray
    duration: np.ndarray
    samples: np.ndarray
    static: list[dict[str, float | str]] = field(default_factory=list)

    def index(self, client_id: str) -> int:
        return int(client_id.split("-")[1])


def make_fleet(n: int, seed: int) -> Fleet:
    rng = np.random.default_rng(seed)
    return Fleet(
        ids=[f"c-{i:04d}" for i in range(n)],
        utility=rng.lognormal(0.0, 0.8, n),
        duration=rng.lognormal(3.0, 0.6, n),
        samples=rng.integers(20, 200, n),
    )


def register_fleet(selector: ClientSelector, fleet: Fleet) -> None:
    for i, client_id in enumerate(fleet.ids):
        static = fleet.static[i] if fleet.static else {}
        profile = ClientProfile(
            num_samples=int(fleet.samples[i]),
            duration=float(fleet.duration[i]),
            compute_time=float(0.5 * fleet.duration[i]),
            comm_time=float(0.5 * fleet.duration[i]),
            static=static,
        )
        selector.register_client(client_id, profile)


def play_round(
    selector: ClientSelector,
    fleet: Fleet,
    r: int,
    k: int,
    rng: np.random.Generator,
    overcommit: float = 1.3,
    noise: float = 0.1,
    online: list[str] | None = None,
) -> Selection:
    """One round; returns the selection (feedback already given)."""
    selection = selector.select_participants(
        int(k * overcommit), float(r), fleet.ids if online is None else online
    )
    picked = selection.clients
    order = sorted(picked, key=lambda c: fleet.duration[fleet.index(c)])
    kept, stragglers = order[:k], order[k:]
    for client_id in kept:
        i = fleet.index(client_id)
        reward = float(fleet.utility[i] * max(0.0, 1.0 + noise * rng.standard_normal()))
        selector.register_feedback(
            client_id, reward, r, float(fleet.duration[i]), True, gradient_utility=reward
        )
    selector.register_stragglers(
        stragglers, {c: float(fleet.duration[fleet.index(c)]) for c in stragglers}, r
    )
    return selection
