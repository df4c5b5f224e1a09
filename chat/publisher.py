"""After-commit sends of one server process: in commit order, on the server's event loop, as
few and as cheap as the channel layer allows.

The services queue their sends with ``transaction.on_commit`` (``chat.broadcast``); the hook hands
each to the publisher, so the database thread goes straight on. The publisher takes everything
waiting at once, in order:

- a room's consecutive new messages go out as one ``chat.frames`` event (each socket of the room
  then handles one event, not one per message);
- with the pub/sub layer on one Redis, the events of the round go out in one pipelined round
  trip. The layer's own ``group_send`` waits for its reply under a lock shared by every send of
  the process, and under load each reply takes a turn of the busy event loop: one send per turn
  was the ceiling of the whole server (py-spy at 200 posts/s);
- other jobs (subscriptions, closes) run as they come, between those.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from . import metrics, shared_state

logger = logging.getLogger(__name__)

# How many waiting sends one round takes at most.
ROUND_MAX = 1000

Job = Callable[[], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class GroupSend:
    group: str
    event: dict[str, Any]


Item = GroupSend | Job


class _Publisher:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: asyncio.Queue[tuple[float, Item]] = asyncio.Queue()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            committed_at, item = await self.items.get()
            metrics.observe_broadcast_lag(time.monotonic() - committed_at)
            round_ = [item]
            while not self.items.empty() and len(round_) < ROUND_MAX:
                round_.append(self.items.get_nowait()[1])
            for batch in _runs(round_):
                try:
                    if isinstance(batch, list):
                        await _send_all(_merged(batch))
                    else:
                        await batch()
                except Exception:
                    # The write is committed and acknowledged; whoever missed it finds it by seq.
                    metrics.layer_error()
                    logger.exception("broadcast after commit failed")

    def take(self, item: Item, committed_at: float) -> None:
        """On the loop: queue ``item``, unless the queue is over its bound (the channel layer is
        that far behind); then it is dropped, as the layer itself may drop an event."""
        if self.items.qsize() >= settings.CHAT_BROADCAST_QUEUE_MAX:
            metrics.layer_error()
            logger.error("broadcast queue full (%d); an event is dropped", self.items.qsize())
            return
        self.items.put_nowait((committed_at, item))

    def usable(self) -> bool:
        return not self.loop.is_closed() and self.loop.is_running() and not self.task.done()


def _runs(items: list[Item]) -> list[list[GroupSend] | Job]:
    """The round in order: runs of consecutive group sends, and the jobs between them."""
    runs: list[list[GroupSend] | Job] = []
    for item in items:
        if isinstance(item, GroupSend):
            if runs and isinstance(runs[-1], list):
                runs[-1].append(item)
            else:
                runs.append([item])
        else:
            runs.append(item)
    return runs


def _merged(sends: list[GroupSend]) -> list[GroupSend]:
    """One ``chat.frames`` event per group for its consecutive ``chat.frame`` events (their
    order kept); anything else as it is."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    order: list[str | GroupSend] = []
    for send in sends:
        if send.event.get("type") != "chat.frame":
            order.append(send)
            continue
        if send.group not in by_group:
            by_group[send.group] = []
            order.append(send.group)
        by_group[send.group].append(send.event)
    merged = []
    for entry in order:
        if isinstance(entry, GroupSend):
            merged.append(entry)
            continue
        events = by_group[entry]
        if len(events) == 1:
            merged.append(GroupSend(entry, events[0]))
        else:
            merged.append(GroupSend(entry, {"type": "chat.frames", "events": events}))
    return merged


async def group_send(group: str, event: dict[str, Any]) -> None:
    """The layer's ``group_send``, now, for sends that are not after a commit (typing, presence).
    On the pub/sub layer, a PUBLISH of our own: the layer's holds the lock that every socket's
    SUBSCRIBE of the process also needs, for a whole round trip (a connect storm queued behind
    the presence announcements it caused: 2,000 sockets took 56 s)."""
    await _send_all([GroupSend(group, event)])


async def _send_all(sends: list[GroupSend]) -> None:
    layer = get_channel_layer()
    pipelined = _pubsub_single_host(layer)
    if not pipelined:
        for send in sends:
            await layer.group_send(send.group, send.event)
        return
    # What the pub/sub layer's group_send does, for many events in one round trip: the same
    # channel name and the same serializer (channels_redis 4.3, pinned).
    client = shared_state.async_client()
    if len(sends) == 1:
        await client.publish(layer._get_group_channel_name(sends[0].group), layer.serialize(sends[0].event))
        return
    async with client.pipeline(transaction=False) as pipe:
        for send in sends:
            pipe.publish(layer._get_group_channel_name(send.group), layer.serialize(send.event))
        await pipe.execute()


def _pubsub_single_host(layer: Any) -> bool:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    if not isinstance(layer, RedisPubSubChannelLayer):
        return False
    hosts = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("hosts", [])
    # Several hosts shard groups over them by a hash: leave that to the layer.
    return len(hosts) == 1 and hosts[0].get("address") == settings.REDIS_URL


_publisher: _Publisher | None = None


def start() -> None:
    """Called on the server's event loop (by each socket as it opens): after-commit sends from
    any thread of this process are handed to it from now on."""
    global _publisher
    if _publisher is None or not _publisher.usable():
        _publisher = _Publisher(asyncio.get_running_loop())


def waiting() -> int:
    """How many committed sends wait for their turn in this process (shutdown waits)."""
    publisher = _publisher
    return publisher.items.qsize() if publisher is not None and publisher.usable() else 0


async def _run_now(item: Item) -> None:
    if isinstance(item, GroupSend):
        await group_send(item.group, item.event)
    else:
        await item()


def hand_over(item: Item) -> None:
    """From any thread, right after a commit: queue ``item`` for the publisher, or send it at once
    when this process has no publisher (a management command, the shell, a sync test, a process
    that has served no socket yet) or it has stopped (shutting down)."""
    publisher = _publisher
    if publisher is not None and publisher.usable():
        # call_soon_threadsafe runs callbacks in the order given: commit order is kept.
        publisher.loop.call_soon_threadsafe(publisher.take, item, time.monotonic())
        return
    try:
        # A loop of this call's own; never the stopped one: a job handed to it would wait for ever.
        async_to_sync(_run_now, force_new_loop=publisher is not None)(item)
    except Exception:
        # Committed already: the write stands, whoever missed the event finds it by seq.
        metrics.layer_error()
        logger.exception("broadcast after commit failed")
