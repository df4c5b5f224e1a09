"""Taking a consumer's messages from its sources (the client's socket, the channel layer) one
at a time: Channels' ``await_many_dispatch``, without a new task and an ``asyncio.wait`` per
message.

Channels starts a task for the next receive of each source and waits on all of them with
``asyncio.wait`` for every single message: a future, callbacks on every task, a new task. At
4,000 deliveries a second that was about a tenth of the server's time (py-spy). Here each source
has one task for the life of the consumer, and a lock keeps the handlers one at a time, as before:
a handler that waits (a full frame queue) still holds up the other source.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


async def dispatch_in_turn(
    sources: list[Callable[[], Awaitable[Any]]], dispatch: Callable[[Any], Awaitable[None]]
) -> None:
    """Run until a source or a handler raises (``StopConsumer`` when the socket closed), then
    stop the other sources and raise that."""
    turn = asyncio.Lock()

    async def pump(source: Callable[[], Awaitable[Any]]) -> None:
        while True:
            message = await source()
            async with turn:
                await dispatch(message)

    tasks = [asyncio.ensure_future(pump(source)) for source in sources]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
