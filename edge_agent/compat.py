"""The few Python 3.11 pieces the agent side uses, on Python 3.10 too.

NVIDIA's PyTorch wheels for JetPack 6 are built for Python 3.10, so ``edge_agent`` and
``fedbus.protocol`` must import and run there (CI checks with ``vermin --target=3.10``).
On 3.11+ these names are the standard library's own; on 3.10 they are small stand-ins
with the behaviour the agent relies on.
"""

# ruff: noqa: UP036, UP042  (the 3.10 branch is the point of this module)
from __future__ import annotations

import asyncio
import enum
import sys
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

if sys.version_info >= (3, 11):
    StrEnum = enum.StrEnum  # novm
    TaskGroup = asyncio.TaskGroup  # novm
else:  # pragma: no cover - exercised on Python 3.10 only

    class StrEnum(str, enum.Enum):
        """``enum.StrEnum``: members are strings and ``str()`` gives the value."""

        def __str__(self) -> str:
            return str(self.value)

    class TaskGroup:
        """``asyncio.TaskGroup`` as the agent uses it: the first failure cancels the rest.

        Unlike 3.11's, it re-raises the first failure itself rather than an
        ``ExceptionGroup`` (which 3.10 lacks); the agent's tasks only fail on a bug.
        """

        def __init__(self) -> None:
            self._tasks: set[asyncio.Task[Any]] = set()

        async def __aenter__(self) -> TaskGroup:
            return self

        def create_task(
            self, coro: Coroutine[Any, Any, T], *, name: str | None = None
        ) -> asyncio.Task[T]:
            task = asyncio.ensure_future(coro)
            if name is not None:
                task.set_name(name)
            self._tasks.add(task)
            return task

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            if exc is not None:
                for task in self._tasks:
                    task.cancel()
            pending = set(self._tasks)
            try:
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                    failed = [t for t in done if not t.cancelled() and t.exception() is not None]
                    if failed:
                        for task in pending:
                            task.cancel()
                        await asyncio.gather(*pending, return_exceptions=True)
                        raise failed[0].exception()  # type: ignore[misc]
            except asyncio.CancelledError:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise
