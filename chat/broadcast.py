"""Getting events to sockets: group names, and sends that leave only after the commit.

Every frame is encoded once here and handed to the channel layer as text; each socket's handler
sends that text as it is. Layer event types are ours alone (``chat.*``): a client's frame type
never becomes one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from typing import Any

from django.conf import settings
from django.db import transaction

from . import presence, publisher, selectors
from .clock import now_ms
from .protocol import encode, user_list_frame
from .threads import on_read_threads

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _room_event(
    room_id: int, frame: dict[str, Any], *, exclude_user_id: int | None = None, author_id: int | None = None
) -> dict[str, Any]:
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
    return event


async def send_to_room(room_id: int, frame: dict[str, Any], *, exclude_user_id: int | None = None) -> None:
    event = _room_event(room_id, frame, exclude_user_id=exclude_user_id)
    await publisher.group_send(room_group(room_id), event)


def _user_event(frame: dict[str, Any]) -> dict[str, Any]:
    return {"type": "chat.frame", "text": encode(frame), "personal": True}


async def send_to_user(user_id: int, frame: dict[str, Any]) -> None:
    await publisher.group_send(user_group(user_id), _user_event(frame))


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
        # A short wait first: in a connect storm every socket of the room asks within moments,
        # and all of them are answered by this one list.
        await asyncio.sleep(settings.CHAT_PRESENCE_COALESCE_SECONDS)
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
    await publisher.group_send(
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
    await publisher.group_send(
        user_group(user_id),
        {"type": "chat.unsubscribed", "room_id": room_id, "slug": room_slug, "text": encode(frame), "personal": True},
    )
    if await presence.online_user_ids([user_id]):
        await announce_presence(room_id=room_id, room_slug=room_slug)


async def close_user_sockets(*, user_id: int, code: int) -> None:
    await publisher.group_send(user_group(user_id), {"type": "chat.close", "code": code})


# --- After-commit versions, for the service layer -------------------------------------------
# A rolled-back write never reaches anyone: these only queue the send with on_commit, and the
# commit hook hands it to this process's publisher (chat/publisher.py).


def _after_commit(item: publisher.Item) -> None:
    transaction.on_commit(lambda: publisher.hand_over(item))


def send_to_room_on_commit(room_id: int, frame: dict[str, Any], *, author_id: int | None = None) -> None:
    _after_commit(publisher.GroupSend(room_group(room_id), _room_event(room_id, frame, author_id=author_id)))


def send_to_user_on_commit(user_id: int, frame: dict[str, Any]) -> None:
    _after_commit(publisher.GroupSend(user_group(user_id), _user_event(frame)))


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
