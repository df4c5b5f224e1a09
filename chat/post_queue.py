"""Group commit for the socket door: the posts of every socket of this process that arrive while
a batch is being stored wait together and are stored by the next batch, in one transaction
(``posting.store_posts``).

Under light load a batch holds one post and nothing waits longer than before; as load rises,
batches grow and the database work per post shrinks, so the writer keeps up where one
transaction per post fell behind. Batches run on the database thread that every write of the
socket door shares, one at a time, so commits (and the broadcasts after them) keep their order.

When the writer is this far behind, a new post is refused with ``rate_limited`` rather than
queued without bound: its sender learns it at once, and other people's deliveries stay fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref

from channels.db import database_sync_to_async
from django.conf import settings

from . import posting, protocol
from .exceptions import RateLimited


@dataclasses.dataclass
class _Queue:
    waiting: list[tuple[posting.Post, asyncio.Future[posting.Outcome]]] = dataclasses.field(default_factory=list)
    writing: bool = False


# One per event loop (tests run one loop each; a server process has one).
_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()


async def submit(post: posting.Post) -> posting.PostResult:
    """Store ``post`` with whatever else is waiting; returns its result or raises its refusal
    (or the failure of its whole batch)."""
    loop = asyncio.get_running_loop()
    queue = _queues.setdefault(loop, _Queue())
    if len(queue.waiting) >= settings.CHAT_POST_QUEUE_MAX:
        raise RateLimited("the server is busy; send again shortly", retry_after_ms=protocol.retry_after_ms(1.0))
    future: asyncio.Future[posting.Outcome] = loop.create_future()
    queue.waiting.append((post, future))
    if not queue.writing:
        queue.writing = True
        loop.create_task(_write(queue))
    outcome = await future
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def _write(queue: _Queue) -> None:
    try:
        while queue.waiting:
            batch = queue.waiting[: settings.CHAT_POST_BATCH_MAX]
            del queue.waiting[: len(batch)]
            try:
                outcomes = await database_sync_to_async(posting.store_posts)([post for post, _ in batch])
            except Exception as exc:  # the database is gone: every post of the batch fails with it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                # A socket that went away meanwhile cancelled its wait; its post is stored
                # anyway, and its client's re-send will get the ack.
                if not future.done():
                    future.set_result(outcome)
    finally:
        queue.writing = False
