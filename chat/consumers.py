"""The socket door: frames in, one service call, frames out (PROTOCOL.md sections 1-4, 6, 7).

One socket carries every room of its user. It sits in the channel-layer group of each of those
rooms and in the user's own group; layer events are our own ``chat.*`` types, and a client's
frame type only ever selects a parser in ``protocol`` (never a handler or a layer type).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError

from . import (
    broadcast,
    event_loop,
    layer_watch,
    metrics,
    moderation,
    post_queue,
    posting,
    presence,
    protocol,
    publisher,
    ratelimit,
    selectors,
    services,
    session_watch,
    uploads,
)
from .clock import now_ms
from .consumer_events import LayerEvents
from .exceptions import ChatError
from .protocol import FrameError, RequestContext
from .threads import on_read_threads, on_upload_threads

logger = logging.getLogger(__name__)

# Frames a socket may have waiting to be handled before its consumer stops taking more.
FRAMES_WAITING_MAX = 64


def _limits() -> dict[str, int]:
    return {
        "maxContent": settings.CHAT_MAX_CONTENT,
        "maxFrameBytes": settings.CHAT_MAX_FRAME_BYTES,
        "maxUpload": settings.CHAT_MAX_UPLOAD_BYTES,
        "chunkSize": settings.CHAT_UPLOAD_CHUNK_BYTES,
    }


INFRASTRUCTURE_ERRORS = (DatabaseError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _close_code_for(exc: BaseException) -> int:
    """4503 when a service we depend on is unreachable (retry will work), else 4500."""
    # DataError and IntegrityError are about the data of one request, not an outage.
    if isinstance(exc, INFRASTRUCTURE_ERRORS) and not isinstance(exc, DataError | IntegrityError):
        return protocol.CLOSE_GOING_AWAY
    return protocol.CLOSE_SERVER_ERROR


class ChatConsumer(LayerEvents, AsyncWebsocketConsumer):
    user: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__``, with the socket's and the layer's messages taken
        by ``event_loop.dispatch_in_turn``."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        try:
            await event_loop.dispatch_in_turn([receive, self.channel_receive], self.dispatch)
        except StopConsumer:
            pass
        except INFRASTRUCTURE_ERRORS:
            # The channel layer's receive failed (its Redis is gone): not a crash of ours, and
            # the client should reconnect and resume (PROTOCOL.md section 4: 4503).
            logger.warning("channel layer lost; closing with 4503", exc_info=True)
            metrics.layer_error()
            await self.close(code=protocol.CLOSE_GOING_AWAY)
            await self.disconnect(protocol.CLOSE_GOING_AWAY)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch first runs ``close_old_connections`` through the one database
        thread for every event and frame, so each delivery of every message to every socket
        queued behind the writes. Our database work runs in ``database_sync_to_async`` calls,
        which clean up their connections themselves; the handlers are called directly."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- Lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            code = await on_read_threads(selectors.unauthenticated_close_code)(scope=self.scope)
            await self.close(code=code)
            return
        try:
            await self._open(user)
        except Exception as exc:
            logger.exception("socket setup failed")
            await self.close(code=_close_code_for(exc))

    async def _open(self, user: Any) -> None:
        self.user = user
        metrics.socket_opened()
        layer_watch.watch(self)
        # The client's frames are handled one after the other by a task of their own, so that
        # while one of them waits for the database, other people's messages still reach this
        # socket (the consumer's own loop goes on taking channel-layer events).
        self.frames_waiting: asyncio.Queue[tuple[str | None, bytes | None]] = asyncio.Queue(FRAMES_WAITING_MAX)
        self.frame_task = asyncio.ensure_future(self._handle_frames_in_order())
        # Events caused by the frame being answered wait for its answer (``_deliver``).
        self.answering = False
        self.held_events: list[tuple[Callable[[dict], Awaitable[None]], dict]] = []
        publisher.start()
        self.rooms: dict[int, str] = {}
        # Per room, the newest seq this socket fetched from the store on joining its group.
        self.caught_up: dict[int, int] = {}
        self.refusals: collections.deque[float] = collections.deque()
        # The user's group first, memberships second: a join committed in between either
        # reaches this socket as chat.subscribed or is seen by the membership read below.
        came_online = await presence.socket_connected(user_id=user.pk, channel_name=self.channel_name)
        await self.channel_layer.group_add(broadcast.user_group(user.pk), self.channel_name)
        memberships = await on_read_threads(selectors.user_memberships)(user=user)
        for membership in memberships:
            self.rooms[membership.room_id] = membership.room.slug
            await self.channel_layer.group_add(broadcast.room_group(membership.room_id), self.channel_name)
        if came_online:
            # Before the welcome: a client that has its welcome knows the room has heard it
            # arrive (this socket gets the same user_list right after the welcome).
            for room_id, slug in self.rooms.items():
                await self._announce_presence(room_id, slug)
        await self._send_frame(self._welcome(memberships))
        session_watch.watch(self)

    async def disconnect(self, code: int) -> None:
        if self.user is None or getattr(self, "gone", False):
            return
        self.gone = True
        metrics.socket_closed()
        layer_watch.unwatch(self)
        # Frames not yet handled are dropped with the socket: the client re-sends unacknowledged
        # messages when it reconnects, and their messageId makes that safe.
        session_watch.unwatch(self)
        frame_task = getattr(self, "frame_task", None)
        if frame_task is not None:
            frame_task.cancel()
        try:
            went_offline = await presence.socket_disconnected(user_id=self.user.pk, channel_name=self.channel_name)
            await self.channel_layer.group_discard(broadcast.user_group(self.user.pk), self.channel_name)
            for room_id in list(self.rooms):
                await self.channel_layer.group_discard(broadcast.room_group(room_id), self.channel_name)
            if went_offline:
                for room_id, slug in list(self.rooms.items()):
                    await self._announce_presence(room_id, slug)
        except INFRASTRUCTURE_ERRORS:
            # Redis is gone: this socket's presence entry ages out by itself (its expiry).
            logger.warning("a socket's presence could not be cleared", exc_info=True)

    # --- Frames in ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.user is None:
            return
        if text_data is None:
            # A binary frame is a ``file_chunk`` without base64 (header in docs/uploads.md).
            too_large = len(bytes_data or b"") > settings.CHAT_MAX_FRAME_BYTES
        else:
            too_large = len(text_data) > settings.CHAT_MAX_FRAME_BYTES // 4 and (
                len(text_data.encode("utf-8")) > settings.CHAT_MAX_FRAME_BYTES
            )
        if too_large:
            await self.close(code=protocol.CLOSE_FRAME_TOO_LARGE)
            return
        # A full queue holds up this socket's consumer, and so its reading: the client cannot
        # pile up work faster than it is done.
        await self.frames_waiting.put((text_data, bytes_data))

    async def _handle_frames_in_order(self) -> None:
        while True:
            text_data, bytes_data = await self.frames_waiting.get()
            self.answering = True
            try:
                await self._answer(text_data, bytes_data)
            except Exception:
                # _handle answers every failure of a rule; this is a failure to answer (the
                # socket went away mid-send). The next frame still gets its turn.
                logger.exception("a frame could not be answered")
            finally:
                # Still "answering" while the held events go out, so that newer ones queue
                # behind them rather than overtake them.
                while self.held_events:
                    action, event = self.held_events.pop(0)
                    try:
                        await action(event)
                    except Exception:
                        # One event that cannot be sent must not stop this socket's frames.
                        logger.exception("a held event could not be delivered")
                self.answering = False

    async def _answer(self, text_data: str | None, bytes_data: bytes | None) -> None:
        try:
            if text_data is None:
                request = protocol.parse_binary_chunk(bytes_data or b"")
            else:
                request = protocol.parse(text_data, username=self.user.username, user_id=self.user.pk)
        except FrameError as exc:
            metrics.frame_in(exc.context.request_type or "unknown")
            await self._refuse(exc.code, exc.message, exc.context)
            return
        metrics.frame_in(request.context.request_type or "unknown")
        await self._handle(request)

    async def _handle(self, request: protocol.Request) -> None:
        """Run one parsed request's handler; every failure becomes an error frame or a close."""
        handler = self._handlers[type(request)]
        try:
            await handler(self, request)
        except ChatError as exc:
            await self._refuse_with(exc, request.context)
        except Exception as exc:
            logger.exception("frame %s failed", request.context.request_type)
            if _close_code_for(exc) == protocol.CLOSE_GOING_AWAY:
                # The database or the channel layer is gone: the client reconnects and resumes.
                await self.close(code=protocol.CLOSE_GOING_AWAY)
            else:
                await self._refuse("server_error", "the server failed to handle this frame", request.context)

    async def on_connect_frame(self, request: protocol.Connect) -> None:
        memberships = await on_read_threads(selectors.user_memberships)(user=self.user)
        await self._send_frame(self._welcome(memberships))

    async def on_ping(self, request: protocol.Ping) -> None:
        await self._send_frame(protocol.pong_frame(now_ms=now_ms()))

    async def on_join(self, request: protocol.JoinRoom) -> None:
        access = await database_sync_to_async(services.room_join)(user=self.user, slug=request.room)
        room = access.room
        if room.pk not in self.rooms:
            self.rooms[room.pk] = room.slug
            await self.channel_layer.group_add(broadcast.room_group(room.pk), self.channel_name)
        state, history = await on_read_threads(self._join_replay)(access, request)
        await self._send_frame(state)
        await self._send_frame(history)
        await self._announce_presence(room.pk, room.slug)

    def _join_replay(self, access: selectors.RoomAccess, request: protocol.JoinRoom) -> tuple[dict, dict]:
        """``room_state`` and ``history`` for a join, read in one trip to the read threads. The
        room as the join just read it: a post committed since shows in ``history`` (read after
        the socket joined the group) even if ``lastSeq`` missed it, and clients take the higher."""
        room = access.room
        state = protocol.room_state_frame(
            room=room,
            membership=access.membership,
            members=selectors.member_count(room=room),
            now_ms=now_ms(),
        )
        if request.since is None:
            messages, has_more = selectors.history_latest(room=room, limit=settings.CHAT_HISTORY_PAGE)
        else:
            messages, has_more = selectors.history_after(room=room, seq=request.since, limit=settings.CHAT_REPLAY_MAX)
        changes: list = []
        changes_more = False
        if request.changes_since is not None:
            changes, changes_more = selectors.changes_after(
                room=room, change=request.changes_since, limit=settings.CHAT_REPLAY_MAX
            )
        history = protocol.history_frame(
            room_slug=room.slug,
            messages=[protocol.message_payload(m) for m in messages],
            has_more=has_more,
            changes=[protocol.message_payload(m) for m in changes],
            changes_has_more=changes_more,
            now_ms=now_ms(),
        )
        return state, history

    async def on_leave(self, request: protocol.LeaveRoom) -> None:
        # The service tells every socket of the user and the room (after commit).
        await database_sync_to_async(services.room_leave)(user=self.user, slug=request.room)

    async def on_message(self, request: protocol.SendMessage) -> None:
        post = posting.Post(
            user=self.user,
            to=request.to,
            content=request.content,
            client_id=request.message_id,
            reply_to=request.reply_to,
        )
        result = await post_queue.submit(post)
        # This socket's copy of the message waits in held_events until the answer is out.
        await self._send_frame(protocol.ack_frame(result.message, now_ms=now_ms()))

    async def on_typing(self, request: protocol.Typing) -> None:
        room_id = next((rid for rid, slug in self.rooms.items() if slug == request.to), None)
        if room_id is None:
            access = await database_sync_to_async(services.room_for_target)(user=self.user, to=request.to)
            room_id, slug = access.room.pk, access.room.slug
        else:
            slug = request.to
        if not await ratelimit.claim_interval_async(
            f"typing:{self.user.pk}:{room_id}", settings.CHAT_TYPING_INTERVAL_SECONDS
        ):
            return  # dropped silently, never counted as flooding
        frame = protocol.typing_frame(username=self.user.username, room_slug=slug, state=request.state, now_ms=now_ms())
        await broadcast.send_to_room(room_id, frame, exclude_user_id=self.user.pk)

    async def on_read(self, request: protocol.Read) -> None:
        await database_sync_to_async(services.read_mark)(user=self.user, to=request.to, seq=request.seq)

    async def on_edit(self, request: protocol.Edit) -> None:
        await database_sync_to_async(services.message_edit)(
            user=self.user, message_id=request.id, content=request.content
        )

    async def on_delete(self, request: protocol.Delete) -> None:
        await database_sync_to_async(services.message_delete)(user=self.user, message_id=request.id)

    # --- Uploads (PROTOCOL section 5; the rules are in chat/uploads.py) ------------------------

    async def _upload_call(self, request: protocol.Request, rule: Any, **kwargs: Any) -> Any:
        """Run an upload rule on the upload threads (``chat.threads``). A refusal about a known
        upload names its room even when the refused frame did not."""
        try:
            return await on_upload_threads(rule)(user=self.user, **kwargs)
        except ChatError as exc:
            room = getattr(exc, "room", None)
            if room is None or request.context.room is not None:
                raise
            await self._refuse_with(exc, dataclasses.replace(request.context, room=room))
            return None

    async def on_file_start(self, request: protocol.FileStart) -> None:
        status = await self._upload_call(
            request,
            uploads.upload_start,
            to=request.to,
            client_id=request.message_id,
            name=request.name,
            size=request.size,
            mime=request.mime,
            sha256=request.sha256,
            upload_id=request.upload_id,
        )
        if status is not None:
            await self._send_frame(protocol.file_ready_frame(status, now_ms=now_ms()))

    async def on_file_chunk(self, request: protocol.FileChunk) -> None:
        status = await self._upload_call(
            request, uploads.upload_chunk, upload_id=request.upload_id, index=request.index, data=request.data
        )
        if status is not None:
            await self._send_frame(protocol.file_progress_frame(status, now_ms=now_ms()))

    async def on_file_end(self, request: protocol.FileEnd) -> None:
        result = await self._upload_call(request, uploads.upload_finish, upload_id=request.upload_id)
        if result is not None:
            await self._send_frame(protocol.ack_frame(result.message, now_ms=now_ms()))

    async def on_moderate(self, request: protocol.Moderate) -> None:
        result = await database_sync_to_async(moderation.room_moderate)(
            actor=self.user,
            slug=request.to,
            action=request.action,
            username=request.user,
            seconds=request.seconds,
            reason=request.reason,
            topic=request.topic,
        )
        # The target of a mute or unmute hears of it from the service (after commit).
        await self._send_frame(moderation.moderated_frame(result))

    async def on_report(self, request: protocol.Report) -> None:
        await database_sync_to_async(moderation.message_report)(
            user=self.user, message_id=request.id, reason=request.reason
        )
        await self._send_frame(protocol.reported_frame(message_id=request.id, now_ms=now_ms()))

    async def on_not_yet(self, request: protocol.Request) -> None:
        await self._refuse("invalid", "this server does not handle that frame yet", request.context)

    _handlers = {
        protocol.Connect: on_connect_frame,
        protocol.Ping: on_ping,
        protocol.JoinRoom: on_join,
        protocol.LeaveRoom: on_leave,
        protocol.SendMessage: on_message,
        protocol.Typing: on_typing,
        protocol.Read: on_read,
        protocol.Edit: on_edit,
        protocol.Delete: on_delete,
        protocol.Moderate: on_moderate,
        protocol.Report: on_report,
        protocol.FileStart: on_file_start,
        protocol.FileChunk: on_file_chunk,
        protocol.FileEnd: on_file_end,
    }

    # --- Frames out --------------------------------------------------------------------------

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        metrics.frame_out(frame["type"])
        await self.send(text_data=protocol.encode(frame))

    def _welcome(self, memberships: list) -> dict[str, Any]:
        rooms = [protocol.room_summary(m.room, m) for m in memberships]
        return protocol.welcome_frame(user=self.user, rooms=rooms, limits=_limits(), now_ms=now_ms())

    async def _refuse_with(self, exc: ChatError, context: RequestContext) -> None:
        metrics.refusal(exc.code)
        await self._send_frame(protocol.error_from_exception(exc, context, now_ms=now_ms()))
        await self._count_refusal()

    async def _refuse(self, code: str, message: str, context: RequestContext) -> None:
        metrics.refusal(code)
        await self._send_frame(protocol.error_frame(code, message, context, now_ms=now_ms()))
        await self._count_refusal()

    async def _count_refusal(self) -> None:
        now = time.monotonic()
        self.refusals.append(now)
        while self.refusals and self.refusals[0] < now - settings.CHAT_FLOOD_WINDOW_SECONDS:
            self.refusals.popleft()
        if len(self.refusals) > settings.CHAT_FLOOD_REFUSALS:
            await self.close(code=protocol.CLOSE_FLOODING)

    async def _announce_presence(self, room_id: int, slug: str) -> None:
        await broadcast.announce_presence(room_id=room_id, room_slug=slug)
