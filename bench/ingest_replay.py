"""The replay publisher of ``bench/ingest.py``: answers each task at once with a ready-made
dense update of the real format, sent as an agent sends it (no download, no training)."""

from __future__ import annotations

import time

import numpy as np

from bench.ingest_common import IN_FEATURES, OUT_FEATURES, speedups_from_env
from fedbus.protocol import bus
from fedbus.protocol.messages import (
    AgentProfile,
    AgentStatus,
    Task,
    UpdateMeta,
    decode_envelope,
    encode_envelope,
    encode_json,
)
from fedbus.protocol.topics import Topics


async def child_replay(port: int, agent: str, partition: int) -> None:
    """Answers every train task at once with a ready-made dense 11M-parameter update."""
    settings = bus.BrokerSettings(port=port, speedups=speedups_from_env())
    topics = Topics(settings.prefix)
    tensors = {
        "weight": np.full((OUT_FEATURES, IN_FEATURES), 1e-4, np.float32),
        "bias": np.full((OUT_FEATURES,), 1e-4, np.float32),
    }

    def status(state: str) -> bytes:
        profile = AgentProfile(partition=partition, num_samples=8) if state == "online" else None
        return encode_json(AgentStatus(agent=agent, state=state, profile=profile, ts=time.time()))  # type: ignore[arg-type]

    buffer = bytearray()
    client = bus.make_client(
        settings,
        f"agent-{agent}",
        will_topic=topics.agent_status(agent),
        will_payload=status("offline"),
        persistent=False,
    )
    async with client:
        await client.subscribe(topics.agent_tasks(agent), qos=1)
        await client.publish(topics.agent_status(agent), status("online"), qos=1, retain=True)
        async for message in client.messages:
            task, _ = decode_envelope(Task, bytes(message.payload))  # type: ignore[arg-type]
            if task.kind != "train":
                continue
            meta = UpdateMeta(
                job=task.job,
                round=task.round,
                agent=agent,
                task_id=task.task_id,
                base_version=task.model_version,
                num_examples=8,
                encoding="dense",
                utility=1.0,
                grad_norm=1.0,
                loss=1.0,
                steps=1,
            )
            payload = encode_envelope(meta, tensors, into=buffer)
            await bus.publish_large(
                client,
                topics.job_update(task.job, agent),
                payload,
                transfer=task.task_id,
                chunk_size=settings.chunk_size,
            )
            buffer = payload
