"""Custom metrics from agents: kept per agent, summarised across agents. Pure, no I/O.

A compute package's ``validate`` (and ``train``) may return any numbers besides loss and
accuracy. Each round keeps every agent's numbers as it sent them and, per metric name, a
summary over the agents that reported it: the mean weighted by their example counts (the
federated figure), the median and the spread (min, max, standard deviation), so an
agent far from the rest shows instead of vanishing into an average.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Summary = dict[str, float]


def summarize(
    per_agent: Mapping[str, Mapping[str, float]], weights: Mapping[str, int]
) -> dict[str, Summary]:
    """Per metric: weighted mean, median, min, max, std and how many agents reported it."""
    names = sorted({name for metrics in per_agent.values() for name in metrics})
    out: dict[str, Summary] = {}
    for name in names:
        agents = [a for a in sorted(per_agent) if name in per_agent[a]]
        values = np.array([per_agent[a][name] for a in agents], dtype=np.float64)
        w = np.array([max(weights.get(a, 0), 0) for a in agents], dtype=np.float64)
        mean = float(np.average(values, weights=w)) if w.sum() > 0 else float(values.mean())
        out[name] = {
            "mean": mean,
            "median": float(np.median(values)),
            "min": float(values.min()),
            "max": float(values.max()),
            "std": float(values.std()),
            "agents": float(len(agents)),
        }
    return out


def round_entry(
    per_agent: Mapping[str, Mapping[str, float]], weights: Mapping[str, int], key: str = "metrics"
) -> dict[str, object]:
    """The fields a ROUND_END event gets: ``{key}`` (summaries) and ``{key}_by_agent``."""
    kept = {a: dict(m) for a, m in sorted(per_agent.items()) if m}
    if not kept:
        return {}
    return {key: summarize(kept, weights), f"{key}_by_agent": kept}
