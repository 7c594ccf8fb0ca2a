"""A real agent's measured profile as the selectors' registration: durations, not a default.

On the wall clock without a fleet file, a selector used to register every real agent with
the default duration (1 s) and nothing else: Oort's first rounds and Bliss's features saw
identical clients. Agents now measure themselves (``edge_agent.measurements``) and put the
numbers in their profile's ``static``: ``step_time_s`` (on the job's model, when started
with ``--model``/``--data`` or after a task), ``download_bytes_per_s`` and
``upload_bytes_per_s`` (after a model and an update). This turns them into the round
estimate the time model gives an emulated agent:
``local_steps x step_time + model bytes / download + model bytes / upload``, the parts not
measured yet left out (pure: no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping

from client_selectors.base import ClientProfile

FLOAT32_BYTES = 4


def measured_client_profile(
    num_samples: int,
    static: Mapping[str, float | str | int | bool | None],
    local_steps: int,
    num_params: int | None,
) -> ClientProfile:
    """The ClientProfile of a real agent; the selector's default duration if nothing is measured."""
    numeric = {
        k: float(v)
        for k, v in static.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    rates = [numeric.get(k) for k in ("download_bytes_per_s", "upload_bytes_per_s")]
    measured = [r for r in rates if r is not None and r > 0]
    if measured and "peak_throughput_mbps" not in static:
        # Bliss's link feature, from the link the agent measured rather than a fleet file.
        static = {**static, "peak_throughput_mbps": max(measured) * 8 / 1e6}
    step = numeric.get("step_time_s")
    if step is None or step <= 0:
        return ClientProfile(num_samples=num_samples, static=dict(static))  # type: ignore[arg-type]
    compute = step * local_steps
    comm = 0.0
    if num_params is not None:
        model_bytes = num_params * FLOAT32_BYTES
        for key in ("download_bytes_per_s", "upload_bytes_per_s"):
            rate = numeric.get(key)
            if rate is not None and rate > 0:
                comm += model_bytes / rate
    return ClientProfile(
        num_samples=num_samples,
        duration=compute + comm,
        compute_time=compute,
        comm_time=comm,
        static=dict(static),  # type: ignore[arg-type]
    )
