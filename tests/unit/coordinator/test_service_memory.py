"""Process-wide memory settings of the service that keep its event loop from stalling."""

from __future__ import annotations

import gc
import platform
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import parse_job
from coordinator.events import EventName
from coordinator.service import CoordinatorService, keep_freed_memory_mapped
from fedbus.protocol import bus


class _Group:
    """Stands in for the service's TaskGroup: the job is created, not run."""

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        coro.close()


async def test_objects_alive_when_a_job_has_loaded_its_model_are_frozen(tmp_path: Path) -> None:
    service = CoordinatorService(bus.BrokerSettings(), runs_dir=tmp_path)
    service._group = _Group()  # type: ignore[assignment]
    model = "fedbus.examples.digits:make_model"  # checked at submit: it must import
    service.submit(parse_job({"name": "j", "model": model, "data": "m:load"}, "<test>"))
    runner = service.runners["j"]
    runner.events.publish = None  # no broker here
    gc.unfreeze()
    try:
        await runner.events.emit(EventName.AGENTS_READY, 0, {})
        assert gc.get_freeze_count() == 0
        await runner.events.emit(EventName.JOB_BEGIN, 0, {})
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        await runner.events.emit(EventName.JOB_RESUMED, 3, {})
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        runner.events.close()


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_heap_memory_stays_mapped_on_glibc() -> None:
    assert keep_freed_memory_mapped() is True
    assert keep_freed_memory_mapped() is True  # and again, as each serve() does
