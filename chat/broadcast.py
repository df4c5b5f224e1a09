"""Getting events to sockets: group names, and sends that leave only after the commit.

Every frame is encoded once here and handed to the channel layer as text; each socket's handler
sends that text as it is. Layer event types are ours alone (``chat.*``): a client's frame type
never becomes one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from . import metrics, presence, selectors
from .clock import now_ms
from .protocol import encode, user_list_frame
from .threads import on_read_threads

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


async def send_to_room(
    room_id: int, frame: dict[str, Any], *, exclude_user_id: int | None = None, author_id: int | None = None
) -> None:
    """``author_id`` marks a new message, so that the posting socket can put its ack first."""
    # The room, so that a socket that has just left it drops what was on its way already.
    event: dict[str, Any] = {"type": "chat.frame", "text": encode(frame), "room_id": room_id}
    if frame.get("type") == "message":
        # A socket that has just fetched the room's latest messages skips those it sent already.
        event["seq"] = frame["seq"]
    if exclude_user_id is not None:
        event["exclude_user_id"] = exclude_user_id
    if author_id is not None:
        event["author_id"] = author_id
    await get_channel_layer().group_send(room_group(room_id), event)


async def send_to_user(user_id: int, frame: dict[str, Any]) -> None:
    await get_channel_layer().group_send(
        user_group(user_id), {"type": "chat.frame", "text": encode(frame), "personal": True}
    )


@dataclasses.dataclass
class _Announcements:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    waiting: bool = False


# Per event loop (tests run one loop each) and room: the room's presence announcements.
_announcements: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Announcements]] = (
    weakref.WeakKeyDictionary()
)


async def announce_presence(*, room_id: int, room_slug: str) -> None:
    """Send the room its ``user_list``: the members with a live socket anywhere.

    One announcement at a time per room in this process, so that an older list never goes out
    after a newer one (their reads run on several threads). A request made while another one
    waits for its turn is left to that one: it reads after this request's change, and a
    connect storm sends each room a few lists instead of one per socket."""
    rooms = _announcements.setdefault(asyncio.get_running_loop(), {})
    room = rooms.setdefault(room_id, _Announcements())
    if room.waiting:
        return
    room.waiting = True
    try:
        await room.lock.acquire()
    finally:
        # Also when cancelled while waiting (a socket that went away mid-join): left set, it
        # would make every later request of this room leave its list to a waiter that is gone.
        room.waiting = False
    try:
        members = await on_read_threads(selectors.member_profiles)(room_id=room_id)
        online = await presence.online_user_ids([m["user_id"] for m in members])
        users = [
            {"username": m["user__username"], "displayName": m["user__display_name"] or m["user__username"]}
            for m in members
            if m["user_id"] in online
        ]
        await send_to_room(room_id, user_list_frame(room_slug=room_slug, users=users, now_ms=now_ms()))
    finally:
        room.lock.release()
        if not room.waiting and not room.lock.locked():
            # Nobody else is on this room's turn: forget it, so the map holds busy rooms only.
            rooms.pop(room_id, None)


async def subscribe_user(
    *, user_id: int, room_id: int, room_slug: str, frame: dict[str, Any], after_seq: int, announce: bool = True
) -> None:
    """Tell every live socket of the user, on any process, that it is now in the room.

    Each socket joins the room's group itself (a process can subscribe only its own sockets to
    a group), then fetches from the store what the room got after ``after_seq`` (its last seq
    when the membership was written), so that a message sent right after, such as the first
    message of a new direct room, reaches it once even if it was published before the socket
    had joined. ``announce`` asks each socket to send the room its new ``user_list`` once
    subscribed; a socket's own ``join_room`` does that itself, after ``room_state`` and
    ``history``."""
    await get_channel_layer().group_send(
        user_group(user_id),
        {
            "type": "chat.subscribed",
            "room_id": room_id,
            "slug": room_slug,
            "text": encode(frame),
            "after_seq": after_seq,
            "announce": announce,
            "personal": True,
        },
    )


async def unsubscribe_user(*, user_id: int, room_id: int, room_slug: str, frame: dict[str, Any]) -> None:
    """Tell every socket of the user to leave the room's group, and tell the room."""
    await get_channel_layer().group_send(
        user_group(user_id),
        {"type": "chat.unsubscribed", "room_id": room_id, "slug": room_slug, "text": encode(frame), "personal": True},
    )
    if await presence.online_user_ids([user_id]):
        await announce_presence(room_id=room_id, room_slug=room_slug)


async def close_user_sockets(*, user_id: int, code: int) -> None:
    await get_channel_layer().group_send(user_group(user_id), {"type": "chat.close", "code": code})


# --- After-commit versions, for the service layer -------------------------------------------
# A rolled-back write never reaches anyone: these only queue the send with on_commit. The send
# itself is handed to the server's event loop, so the database thread (one per process, shared
# by every socket) goes straight on to the next request instead of waiting for the channel layer.


class _Publisher:
    """Sends, one after the other and in the order they were committed, on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.jobs: asyncio.Queue[tuple[float, Callable[[], Awaitable[None]]]] = asyncio.Queue()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            committed_at, job = await self.jobs.get()
            metrics.observe_broadcast_lag(time.monotonic() - committed_at)
            try:
                await job()
            except Exception:
                # The write is committed and acknowledged; whoever missed it finds it by seq.
                metrics.layer_error()
                logger.exception("broadcast after commit failed")

    def take(self, job: Callable[[], Awaitable[None]], committed_at: float) -> None:
        """On the loop: queue ``job``, unless the queue is over its bound (the channel layer is
        that far behind); then it is dropped, as the layer itself may drop an event."""
        if self.jobs.qsize() >= settings.CHAT_BROADCAST_QUEUE_MAX:
            metrics.layer_error()
            logger.error("broadcast queue full (%d); an event is dropped", self.jobs.qsize())
            return
        self.jobs.put_nowait((committed_at, job))

    def usable(self) -> bool:
        return not self.loop.is_closed() and self.loop.is_running() and not self.task.done()


_publisher: _Publisher | None = None


def start_publisher() -> None:
    """Called on the server's event loop (by each socket as it opens): after-commit sends from
    any thread of this process are handed to it from now on."""
    global _publisher
    if _publisher is None or not _publisher.usable():
        _publisher = _Publisher(asyncio.get_running_loop())


def broadcasts_waiting() -> int:
    """How many committed broadcasts wait for their turn in this process (shutdown waits)."""
    publisher = _publisher
    return publisher.jobs.qsize() if publisher is not None and publisher.usable() else 0


async def _run_job(job: Callable[[], Awaitable[None]]) -> None:
    await job()


def _after_commit(job: Callable[[], Awaitable[None]]) -> None:
    def publish() -> None:
        publisher = _publisher
        if publisher is not None and publisher.usable():
            # call_soon_threadsafe runs callbacks in the order given: commit order is kept.
            publisher.loop.call_soon_threadsafe(publisher.take, job, time.monotonic())
            return
        try:
            # No event loop of ours (a management command, the shell, a sync test, a process
            # that has served no socket yet), or it has stopped (shutting down): a loop of this
            # call's own. Never the stopped one: a job handed to it would wait for ever.
            async_to_sync(_run_job, force_new_loop=publisher is not None)(job)
        except Exception:
            # Committed already: the write stands, whoever missed the event finds it by seq.
            metrics.layer_error()
            logger.exception("broadcast after commit failed")

    transaction.on_commit(publish)


def send_to_room_on_commit(room_id: int, frame: dict[str, Any], *, author_id: int | None = None) -> None:
    _after_commit(lambda: send_to_room(room_id, frame, author_id=author_id))


def send_to_user_on_commit(user_id: int, frame: dict[str, Any]) -> None:
    _after_commit(lambda: send_to_user(user_id, frame))


def subscribe_user_on_commit(
    *, user_id: int, room_id: int, room_slug: str, frame: dict[str, Any], after_seq: int, announce: bool = True
) -> None:
    _after_commit(
        lambda: subscribe_user(
            user_id=user_id, room_id=room_id, room_slug=room_slug, frame=frame, after_seq=after_seq, announce=announce
        )
    )


def unsubscribe_user_on_commit(*, user_id: int, room_id: int, room_slug: str, frame: dict[str, Any]) -> None:
    _after_commit(lambda: unsubscribe_user(user_id=user_id, room_id=room_id, room_slug=room_slug, frame=frame))


def close_user_sockets_on_commit(*, user_id: int, code: int) -> None:
    _after_commit(lambda: close_user_sockets(user_id=user_id, code=code))
