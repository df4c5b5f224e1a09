"""The open sockets of this process that one task looks after (``layer_watch``,
``session_watch``): kept per event loop (a server process has one; tests run one each), held
weakly, and the task started with the first socket and ended when none is left."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar


class Watch:
    """One loop's sockets and its task; subclasses add what their task keeps between rounds."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[Any] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None


W = TypeVar("W", bound=Watch)


class WatchedSockets(Generic[W]):
    def __init__(self, new_watch: Callable[[], W], run: Callable[[W], Awaitable[None]]) -> None:
        self.new_watch = new_watch
        self.run = run
        self.watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, W] = weakref.WeakKeyDictionary()

    def add(self, socket: Any) -> None:
        loop = asyncio.get_running_loop()
        watch = self.watches.get(loop)
        if watch is None:
            watch = self.watches[loop] = self.new_watch()
        watch.sockets.add(socket)
        if watch.task is None or watch.task.done():
            watch.task = loop.create_task(self.run(watch))

    def discard(self, socket: Any) -> None:
        watch = self.watches.get(asyncio.get_running_loop())
        if watch is not None:
            watch.sockets.discard(socket)
