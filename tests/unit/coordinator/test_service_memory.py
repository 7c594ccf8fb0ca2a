"""Process-wide memory settings the coordinator's entry points apply (process_tuning.py)."""

from __future__ import annotations

import gc
import platform
import sys
from collections.abc import Iterator

import pytest

from coordinator.events import EventName
from coordinator.process_tuning import GcFreeze, keep_freed_memory_mapped
from fedbus.protocol.messages import Event


def event(job: str, name: EventName, round_: int = 0) -> Event:
    return Event(job=job, event=name.value, round=round_, ts=0.0)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_objects_alive_when_a_job_has_loaded_its_model_are_frozen(unfrozen: None) -> None:
    freeze = GcFreeze()
    freeze.on_event(event("j", EventName.AGENTS_READY))
    assert gc.get_freeze_count() == 0
    freeze.on_event(event("j", EventName.JOB_BEGIN))
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    freeze.on_event(event("j", EventName.JOB_RESUMED, 3))
    assert gc.get_freeze_count() > 0


def test_they_are_unfrozen_once_no_loaded_job_runs(unfrozen: None) -> None:
    # A long-running serve: two jobs load, one ends (the other still needs its objects
    # out of the collector's way), then the other fails: nothing stays frozen.
    freeze = GcFreeze()
    freeze.on_event(event("a", EventName.JOB_BEGIN))
    freeze.on_event(event("b", EventName.JOB_BEGIN))
    freeze.on_event(event("a", EventName.JOB_END))
    assert gc.get_freeze_count() > 0
    freeze.on_event(event("b", EventName.JOB_FAILED))
    assert gc.get_freeze_count() == 0


def test_a_job_that_never_loaded_does_not_unfreeze_the_others(unfrozen: None) -> None:
    freeze = GcFreeze()
    freeze.on_event(event("a", EventName.JOB_BEGIN))
    freeze.on_event(event("never-loaded", EventName.JOB_FAILED))
    assert gc.get_freeze_count() > 0


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_heap_memory_stays_mapped_on_glibc() -> None:
    assert keep_freed_memory_mapped() is True
    assert keep_freed_memory_mapped() is True  # and again: idempotent
