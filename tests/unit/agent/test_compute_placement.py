"""Short computations run on the event loop, long or unmeasured ones in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

from edge_agent.compute_placement import INLINE_CPU_SECONDS, ComputePlacement


def where() -> int:
    return threading.get_ident()


def test_first_run_goes_to_a_thread_and_a_cheap_kind_comes_back_to_the_loop() -> None:
    async def main() -> list[bool]:
        placement = ComputePlacement()
        loop_thread = threading.get_ident()
        ran = [await placement.run("train", where) == loop_thread for _ in range(2)]
        ran.append(await placement.run("train", where, may_inline=False) == loop_thread)
        ran.append(await placement.run("validate", where) == loop_thread)
        return ran

    # unmeasured -> thread; measured cheap -> loop; forced off the loop; another kind unmeasured
    assert asyncio.run(main()) == [False, True, False, False]


def test_a_kind_that_took_long_stays_off_the_loop() -> None:
    def spin() -> int:
        began = time.thread_time()
        while time.thread_time() - began < 1.5 * INLINE_CPU_SECONDS:  # over the CPU bound
            pass
        return threading.get_ident()

    async def main() -> bool:
        placement = ComputePlacement()
        await placement.run("train", spin)
        return placement.inline("train")

    assert asyncio.run(main()) is False
