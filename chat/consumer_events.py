"""The socket's channel-layer events: our own ``chat.*`` types only (a client's frame type never
becomes one). A mixin of ``ChatConsumer``, which keeps the state these read: the socket's rooms,
what it fetched on joining a group (``caught_up``), and the events held while it answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import broadcast, protocol, selectors
from .threads import on_read_threads


class LayerEvents:
    user: Any
    rooms: dict[int, str]
    caught_up: dict[int, int]
    answering: bool
    held_events: list[tuple[Callable[[dict], Awaitable[None]], dict]]
    channel_layer: Any
    channel_name: str
    # The consumer's own, used here.
    send: Callable[..., Awaitable[None]]
    close: Callable[..., Awaitable[None]]
    _send_frame: Callable[[dict[str, Any]], Awaitable[None]]
    _announce_presence: Callable[[int, str], Awaitable[None]]

    async def _deliver(self, event: dict[str, Any], action: Callable[[dict], Awaitable[None]]) -> None:
        """Act on an event now, unless this socket is answering one of its own frames and the
        event is this user's (an echo of their message, a personal notice such as
        ``room_added``): those follow the answer, as they would if the socket handled one thing
        at a time (its ``ack`` before its copy of the ``message``; ``room_state`` and
        ``history`` of a join before its ``room_added``). Other people's traffic goes on."""
        if self.answering and (event.get("personal") or event.get("author_id") == self.user.pk):
            self.held_events.append((action, event))
        else:
            await action(event)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        if event.get("exclude_user_id") == self.user.pk:
            return
        room_id = event.get("room_id")
        if room_id is not None:
            if room_id not in self.rooms:
                return  # left meanwhile: the event was on its way before the group was
            caught_up = self.caught_up.get(room_id)
            if caught_up is not None and "seq" in event:
                if event["seq"] <= caught_up:
                    return  # fetched from the store already, when this socket joined the group
                del self.caught_up[room_id]
        await self._deliver(event, self._send_event_text)

    async def chat_frames(self, event: dict[str, Any]) -> None:
        """Several ``chat.frame`` events of one room, sent as one (chat.publisher)."""
        for single in event["events"]:
            await self.chat_frame(single)

    async def _send_event_text(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])

    async def chat_subscribed(self, event: dict[str, Any]) -> None:
        await self._deliver(event, self._subscribed)

    async def _subscribed(self, event: dict[str, Any]) -> None:
        room_id, slug = event["room_id"], event["slug"]
        new_here = room_id not in self.rooms
        self.rooms[room_id] = slug
        await self.channel_layer.group_add(broadcast.room_group(room_id), self.channel_name)
        await self.send(text_data=event["text"])
        if new_here:
            # What the room got before this socket joined its group was published to a group
            # it was not in yet: fetch it (broadcast.subscribe_user), and skip its live copies.
            missed = await on_read_threads(selectors.messages_after)(room_id=room_id, seq=event["after_seq"])
            for message in missed:
                await self._send_frame(protocol.message_payload(message))
            if missed:
                self.caught_up[room_id] = missed[-1].seq
        if event.get("announce"):
            await self._announce_presence(room_id, slug)

    async def chat_unsubscribed(self, event: dict[str, Any]) -> None:
        await self._deliver(event, self._unsubscribed)

    async def _unsubscribed(self, event: dict[str, Any]) -> None:
        self.rooms.pop(event["room_id"], None)
        await self.channel_layer.group_discard(broadcast.room_group(event["room_id"]), self.channel_name)
        await self.send(text_data=event["text"])

    async def chat_close(self, event: dict[str, Any]) -> None:
        await self.close(code=event["code"])
