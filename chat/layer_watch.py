"""Noticing that the channel layer's Redis lost events, and telling this process's sockets.

Live events travel through Redis (pub/sub) and are never stored there: whatever was published
while Redis was down, restarting, or while its data was being flushed, is gone for every socket
that should have had it, and nothing in the socket shows it (no later message means no seq gap).
The store has it all, so the answer is to close such sockets with 4503: the client reconnects and
resumes by seq (PROTOCOL.md sections 4 and 7).

One task per server process checks every ``CHAT_LAYER_WATCH_SECONDS``: Redis must answer, keep
its ``run_id`` (a restart changes it), and still hold this process's mark in the epoch hash (a
flush removes it, and with it presence and rate-limit state; each process has its own mark, so
one that notices first and writes its mark again cannot hide the flush from the others). Any of
those failing closes every socket of the process with 4503, once per incident.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Protocol

from django.conf import settings

from . import metrics, shared_state
from .watched_sockets import Watch, WatchedSockets

logger = logging.getLogger(__name__)


class Closable(Protocol):
    async def close(self, code: int | None = None) -> None: ...


class _Watch(Watch):
    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None
        self.mark = uuid.uuid4().hex
        self.marked = False
        self.healthy = True


def _epoch_key() -> str:
    return f"{shared_state.key_prefix()}layer-epoch"


def watch(socket: Closable) -> None:
    """Close ``socket`` with 4503 when Redis loses events (called by each socket as it opens)."""
    if not shared_state.uses_redis():
        return  # the in-memory layer lives and dies with the process
    _sockets.add(socket)


def unwatch(socket: Closable) -> None:
    _sockets.discard(socket)


async def _run(state: _Watch) -> None:
    # The first check at once: it notes the Redis this process talks to (run_id, its mark), and
    # a loss can only be seen against that.
    while state.sockets:
        problem = await _check(state)
        if problem is None:
            state.healthy = True
        elif state.healthy:
            state.healthy = False
            await _close_all(state, problem)
        else:
            metrics.layer_error()  # the same incident: its sockets were closed already
        await asyncio.sleep(settings.CHAT_LAYER_WATCH_SECONDS)


_sockets = WatchedSockets(_Watch, _run)


async def _close_all(state: _Watch, problem: str) -> None:
    metrics.layer_error()
    sockets = list(state.sockets)
    logger.warning("channel layer: %s; closing %d socket(s) with 4503 so they resume", problem, len(sockets))
    for socket in sockets:
        try:
            await socket.close(code=4503)
        except Exception:
            logger.exception("a socket could not be closed")


async def _check(state: _Watch) -> str | None:
    """None while Redis is the one this process has been talking to, with nothing lost; else
    what happened."""
    client = shared_state.async_client()
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.hexists(_epoch_key(), state.mark)
            info, marked = await pipe.execute()
        if not marked:
            await client.hset(_epoch_key(), state.mark, "1")
    except shared_state.UNREACHABLE as error:
        return f"Redis unreachable ({error})"
    run_id = info.get("run_id")
    restarted = state.run_id is not None and run_id != state.run_id
    state.run_id = run_id
    lost = state.marked and not marked
    state.marked = True
    if restarted:
        return "Redis restarted"
    if lost:
        return "Redis lost its data (flushed)"
    return None
