"""Process-wide settings that keep the coordinator's event loop from stalling.

Both change the whole process (the allocator, the cyclic GC), so the library never applies
them: the ``coordinator run`` / ``serve`` entry points do (``coordinator/cli.py``), as may a
benchmark that hosts a coordinator in its own process (``bench/ingest.py``).

- :func:`keep_freed_memory_mapped`: glibc keeps freed heap memory for reuse.
- :class:`GcFreeze`: after a job loads its model, what is alive is moved out of the cyclic
  GC's way (``gc.freeze``); when no job that did so is running any more, it is moved back
  (``gc.unfreeze``), so a long-running ``serve`` does not keep a finished job's objects out
  of every later collection.
"""

from __future__ import annotations

import ctypes
import gc
import platform
import sys
from typing import TYPE_CHECKING

from coordinator.events import EventName

if TYPE_CHECKING:
    from coordinator.job_runner import JobRunner
    from fedbus.protocol.messages import Event

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Below this, allocations come from the heap instead of a fresh mmap each (glibc's own cap
# for its adaptive threshold: every received 4 MB chunk and its payload fall under it).
_MMAP_THRESHOLD = 32 << 20
# Freed memory at the top of the heap is kept mapped up to this much, not returned.
_TRIM_THRESHOLD = 1 << 30

_MODEL_LOADED = frozenset({EventName.JOB_BEGIN, EventName.JOB_RESUMED})
_JOB_OVER = frozenset({EventName.JOB_END, EventName.JOB_FAILED})


def keep_freed_memory_mapped() -> bool:
    """Let glibc reuse freed heap memory instead of handing it back to the kernel.

    The event loop allocates every received 4 MB update chunk twice (paho's socket reads,
    then the payload), and frees a round's worth when the updates are in. glibc returned
    that memory to the kernel (its trim threshold follows its mmap threshold, 8 MB after a
    4 MB block), so each round faulted it in again, page by page, on the loop: with this,
    the loop's CPU time per round of bench/ingest.py's replay phase fell from about 0.5 s
    to 0.25-0.33 s. The price: the process keeps up to 1 GiB of freed heap (a round's
    chunks, needed again next round) resident. Only on glibc; True when applied.
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


class GcFreeze:
    """Freeze what is alive once a job has loaded its model; unfreeze when no such job runs.

    Loading imports torch and the model's modules (some 180,000 objects here), after which
    a full collection takes 60-130 ms, all of it holding the GIL: whenever one falls due,
    the event loop stalls that long, also while updates stream in (bench/ingest.py). Those
    objects live as long as the process; ``gc.freeze`` moves everything alive now into
    the permanent generation, which collections skip. Frozen objects are still freed by
    reference counting, but a cycle among them would never be collected: so once the last
    job that froze has ended, ``gc.unfreeze`` hands them back to the collector.

    ``attach`` it to each runner (``CoordinatorService(on_runner=...)``).
    """

    def __init__(self) -> None:
        self.loaded: set[str] = set()  # jobs that froze and have not ended

    def attach(self, runner: JobRunner) -> None:
        runner.events.listeners.append(self.on_event)

    def on_event(self, event: Event) -> None:
        if event.event in _MODEL_LOADED:
            self.loaded.add(event.job)
            gc.freeze()
        elif event.event in _JOB_OVER and event.job in self.loaded:
            self.loaded.discard(event.job)
            if not self.loaded:
                gc.unfreeze()
