"""Process-wide memory settings of the coordinator: glibc's heap and the cyclic GC.

Moved out of coordinator/service.py unchanged (issue #16 kept that module small).
"""

from __future__ import annotations

import ctypes
import gc
import platform
import sys

from coordinator.events import EventName
from fedbus.protocol.messages import Event

_MODEL_LOADED = frozenset({EventName.JOB_BEGIN, EventName.JOB_RESUMED})

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Below this, allocations come from the heap instead of a fresh mmap each (glibc's own cap
# for its adaptive threshold: every received 4 MB chunk and its payload fall under it).
_MMAP_THRESHOLD = 32 << 20
# Freed memory at the top of the heap is kept mapped up to this much, not returned.
_TRIM_THRESHOLD = 1 << 30


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


def freeze_after_load(event: Event) -> None:
    """Once a job has loaded its model, keep what is alive out of the cyclic GC's way.

    Loading imports torch and the model's modules (some 180,000 objects here), after which
    a full collection takes 60-130 ms, all of it holding the GIL: whenever one falls due,
    the event loop stalls that long, also while updates stream in (bench/ingest.py). Those
    objects live as long as the process; ``gc.freeze`` moves everything alive now into
    the permanent generation, which collections skip, so later ones traverse only what
    the job creates. Objects frozen here are still freed by reference counting.
    """
    if event.event in _MODEL_LOADED:
        gc.freeze()
