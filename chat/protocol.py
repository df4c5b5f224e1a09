"""The wire protocol (PROTOCOL.md version 1): frames in, frames out. Pure: no I/O, no database.

``parse`` turns a text frame into one typed request or raises ``FrameError`` carrying everything
an ``error`` frame needs. The ``*_frame`` builders shape every server frame; the consumer and the
REST API use the same ``message_payload``, so a message looks the same whichever door shows it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .exceptions import ChatError

PROTOCOL_VERSION = 1

# Close codes (PROTOCOL section 4): 4000 + the HTTP status they correspond to.
CLOSE_AUTH_REQUIRED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SLOW_READER = 4408
CLOSE_FRAME_TOO_LARGE = 4413
CLOSE_FLOODING = 4429
CLOSE_SERVER_ERROR = 4500
CLOSE_GOING_AWAY = 4503

MAX_CLIENT_ID = 64
MAX_SLUG = 64
# The largest whole number any door accepts (ids, seq, change numbers, sizes, indexes): well
# inside a database bigint (below 2**63), with room for the +1 of a next seq.
MAX_INT = 2**62
# The longest ``seconds`` of a ``moderate`` frame or REST body, socket and REST alike: a mute
# of 10**12 s would overflow the datetime of its end.
MAX_MODERATION_SECONDS = 10**9

# NUL cannot be stored in a PostgreSQL text column, and a lone UTF-16 surrogate (json.loads
# turns "\ud800" into one) cannot be encoded as UTF-8: no text field may hold either.
_SURROGATES = re.compile("[\ud800-\udfff]")


class FrameError(Exception):
    """A frame refused before it reached any rule; carries the refused frame's identifiers."""

    def __init__(self, code: str, message: str, context: RequestContext) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.context = context


@dataclass(frozen=True)
class RequestContext:
    """What an ``error`` frame echoes back of the frame it answers."""

    request_type: str | None = None
    message_id: str | None = None
    extra_id: Any = None
    upload_id: str | None = None
    room: str | None = None


# --- Typed requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    context: RequestContext = field(repr=False)


@dataclass(frozen=True)
class Connect(Request):
    pass


@dataclass(frozen=True)
class Ping(Request):
    pass


@dataclass(frozen=True)
class JoinRoom(Request):
    room: str
    since: int | None
    changes_since: int | None


@dataclass(frozen=True)
class LeaveRoom(Request):
    room: str


@dataclass(frozen=True)
class SendMessage(Request):
    to: str
    content: str
    message_id: str | None
    reply_to: int | None


@dataclass(frozen=True)
class Typing(Request):
    to: str
    state: str


@dataclass(frozen=True)
class Read(Request):
    to: str
    seq: int


@dataclass(frozen=True)
class Edit(Request):
    id: int
    content: str


@dataclass(frozen=True)
class Delete(Request):
    id: int


@dataclass(frozen=True)
class Moderate(Request):
    to: str
    action: str
    user: str | None
    seconds: int | None
    reason: str
    topic: str | None


@dataclass(frozen=True)
class Report(Request):
    id: int
    reason: str


@dataclass(frozen=True)
class FileStart(Request):
    to: str
    message_id: str | None
    name: str
    size: int
    mime: str
    sha256: str | None
    upload_id: str | None


@dataclass(frozen=True)
class FileChunk(Request):
    upload_id: str
    index: int
    data: bytes


@dataclass(frozen=True)
class FileEnd(Request):
    upload_id: str


MODERATION_ACTIONS = frozenset({"mute", "unmute", "kick", "ban", "unban", "lock", "unlock", "slow_mode", "topic"})
TYPING_STATES = frozenset({"start", "stop"})


# --- Parsing -------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def replace_surrogates(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD: for human messages that quote input."""
    return _SURROGATES.sub("\ufffd", text)


def unfit_text(value: str) -> str | None:
    """What makes ``value`` unfit to be stored or sent as text (NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "a NUL character"
    if _SURROGATES.search(value):
        return "a lone surrogate"
    return None


def _context(frame: dict[str, Any]) -> RequestContext:
    """Collect the ids of a frame defensively: they are echoed even when the frame is bad."""
    extra = frame.get("extra") if isinstance(frame.get("extra"), dict) else {}
    request_type = frame.get("type") if isinstance(frame.get("type"), str) else None
    message_id = frame.get("messageId") if isinstance(frame.get("messageId"), str) else None
    extra_id = extra.get("id") if _is_int(extra.get("id")) or isinstance(extra.get("id"), str) else None
    upload_id = extra.get("uploadId") if isinstance(extra.get("uploadId"), str) else None
    room = None
    for key in ("to", "roomId"):
        if isinstance(frame.get(key), str):
            room = frame[key]
            break
    return RequestContext(request_type, message_id, extra_id, upload_id, room)


def _check_identity(frame: dict[str, Any], ctx: RequestContext, username: str, user_id: int) -> None:
    """``from`` and ``userId`` may be absent, null, or name the authenticated user; nothing else."""
    for key in ("from", "userId"):
        value = frame.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value in (username, str(user_id)):
            continue
        if _is_int(value) and value == user_id:
            continue
        raise FrameError("identity_mismatch", f"'{key}' does not name you", ctx)


class _Fields:
    """Typed field access that raises ``invalid`` with a message naming the field."""

    def __init__(self, frame: dict[str, Any], ctx: RequestContext) -> None:
        self.frame = frame
        self.extra = frame.get("extra") if isinstance(frame.get("extra"), dict) else {}
        self.ctx = ctx

    def _fail(self, message: str) -> FrameError:
        return FrameError("invalid", message, self.ctx)

    def _name(self, key: str, source: dict[str, Any] | None) -> str:
        return key if source is None or source is self.frame else f"extra.{key}"

    def _fit(self, value: str, name: str) -> str:
        # Every text a frame hands on passes here: such input must be refused by name, before
        # it reaches the database (a DataError) or an error frame that echoes it.
        unfit = unfit_text(value)
        if unfit is not None:
            raise self._fail(f"'{name}' must not contain {unfit}")
        return value

    def target(self, key: str = "to") -> str:
        value = self.frame.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self._fail(f"'{key}' must name a room")
        if len(value) > MAX_SLUG + 1:
            raise self._fail(f"'{key}' is too long")
        return self._fit(value, key).strip()

    def text(self, key: str, *, source: dict[str, Any] | None = None, default: str | None = None) -> str:
        value = (self.frame if source is None else source).get(key, default)
        if not isinstance(value, str):
            raise self._fail(f"'{self._name(key, source)}' must be text")
        return self._fit(value, self._name(key, source))

    def optional_text(self, key: str, *, source: dict[str, Any] | None = None) -> str | None:
        value = (self.frame if source is None else source).get(key)
        if value is None:
            return None
        return self.text(key, source=source)

    def choice(self, key: str, choices: frozenset[str], *, default: str | None = None) -> str:
        """An ``extra`` enum: only a string can be one of its values (a dict or list is not
        even hashable)."""
        value = self.extra.get(key, default)
        if not isinstance(value, str) or value not in choices:
            raise self._fail(f"'extra.{key}' must be one of {', '.join(sorted(choices))}")
        return value

    def message_id(self, *, required: bool = False) -> str | None:
        value = self.frame.get("messageId")
        if value is None and not required:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID:
            raise self._fail(f"'messageId' must be 1 to {MAX_CLIENT_ID} characters")
        return self._fit(value, "messageId")

    def integer(
        self, key: str, *, source: dict[str, Any], required: bool = True, minimum: int = 0, maximum: int = MAX_INT
    ) -> int | None:
        value = source.get(key)
        if value is None and not required:
            return None
        if not _is_int(value) or not minimum <= value <= maximum:
            raise self._fail(f"'{self._name(key, source)}' must be a whole number from {minimum} to {maximum}")
        return value


def _parse_join(f: _Fields, ctx: RequestContext) -> JoinRoom:
    return JoinRoom(
        ctx,
        room=f.target("roomId"),
        since=f.integer("since", source=f.frame, required=False),
        changes_since=f.integer("changesSince", source=f.frame, required=False),
    )


def _parse_message(f: _Fields, ctx: RequestContext) -> SendMessage:
    reply_to = f.integer("replyTo", source=f.extra, required=False, minimum=1)
    return SendMessage(ctx, to=f.target(), content=f.text("content"), message_id=f.message_id(), reply_to=reply_to)


def _parse_typing(f: _Fields, ctx: RequestContext) -> Typing:
    return Typing(ctx, to=f.target(), state=f.choice("state", TYPING_STATES, default="start"))


def _parse_moderate(f: _Fields, ctx: RequestContext) -> Moderate:
    return Moderate(
        ctx,
        to=f.target(),
        action=f.choice("action", MODERATION_ACTIONS),
        user=f.optional_text("user", source=f.extra),
        seconds=f.integer("seconds", source=f.extra, required=False, maximum=MAX_MODERATION_SECONDS),
        reason=f.optional_text("reason", source=f.extra) or "",
        topic=f.optional_text("topic", source=f.extra),
    )


def _parse_file_start(f: _Fields, ctx: RequestContext) -> FileStart:
    sha256 = f.optional_text("sha256", source=f.extra)
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        raise FrameError("invalid", "'extra.sha256' must be 64 hex digits", ctx)
    return FileStart(
        ctx,
        to=f.target(),
        message_id=f.message_id(),
        name=f.text("name", source=f.extra),
        size=f.integer("size", source=f.extra, minimum=1),
        mime=f.optional_text("mime", source=f.extra) or "",
        sha256=sha256.lower() if sha256 else None,
        upload_id=f.optional_text("uploadId", source=f.extra),
    )


def _parse_file_chunk(f: _Fields, ctx: RequestContext) -> FileChunk:
    encoded = f.text("data", source=f.extra)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("invalid", "'extra.data' must be base64", ctx) from None
    return FileChunk(
        ctx, upload_id=f.text("uploadId", source=f.extra), index=f.integer("index", source=f.extra), data=data
    )


_PARSERS = {
    "connect": lambda f, ctx: Connect(ctx),
    "ping": lambda f, ctx: Ping(ctx),
    "join_room": _parse_join,
    "leave_room": lambda f, ctx: LeaveRoom(ctx, room=f.target("roomId")),
    "message": _parse_message,
    "typing": _parse_typing,
    "read": lambda f, ctx: Read(ctx, to=f.target(), seq=f.integer("seq", source=f.extra)),
    "edit": lambda f, ctx: Edit(ctx, id=f.integer("id", source=f.extra, minimum=1), content=f.text("content")),
    "delete": lambda f, ctx: Delete(ctx, id=f.integer("id", source=f.extra, minimum=1)),
    "moderate": _parse_moderate,
    "report": lambda f, ctx: Report(
        ctx, id=f.integer("id", source=f.extra, minimum=1), reason=f.optional_text("reason", source=f.extra) or ""
    ),
    "file_start": _parse_file_start,
    "file_chunk": _parse_file_chunk,
    "file_end": lambda f, ctx: FileEnd(ctx, upload_id=f.text("uploadId", source=f.extra)),
}

CLIENT_TYPES = frozenset(_PARSERS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str | bytes, *, username: str, user_id: int) -> Request:
    """Parse one client frame, or raise ``FrameError`` (``bad_json``, ``unknown_type``,
    ``identity_mismatch`` or ``invalid``). The frame's ``type`` only ever selects a parser
    from the table above: it never reaches the channel layer or a handler name."""
    try:
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise FrameError("bad_json", "the frame is not valid JSON", RequestContext()) from None
    if not isinstance(frame, dict):
        raise FrameError("bad_json", "a frame must be a JSON object", RequestContext())
    ctx = _context(frame)
    parser = _PARSERS.get(frame.get("type")) if isinstance(frame.get("type"), str) else None
    if parser is None:
        raise FrameError("unknown_type", "unknown frame type", ctx)
    _check_identity(frame, ctx, username, user_id)
    if "extra" in frame and frame["extra"] is not None and not isinstance(frame["extra"], dict):
        raise FrameError("invalid", "'extra' must be an object", ctx)
    return parser(_Fields(frame, ctx), ctx)


# --- Building server frames ----------------------------------------------------------------


def to_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def encode(frame: dict[str, Any]) -> str:
    """Encode a frame once; the same text goes to every receiver. The text is always valid
    UTF-8, whatever a refused frame put into the fields its error echoes."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    # isascii() is a flag test, so the common case costs nothing more.
    if text.isascii() or not _SURROGATES.search(text):
        return text
    # A lone surrogate can only have come from a client's "\ud800"-style escape: escaped the
    # same way, it is plain ASCII, and the client's JSON.parse gives back the very string it sent.
    return json.dumps(frame, ensure_ascii=True, separators=(",", ":"))


def message_payload(message: Any) -> dict[str, Any]:
    """The one shape of a message, for the socket's ``message`` frame and the REST API alike.
    Expects ``room``, ``author`` and ``attachment`` to be loaded (no query happens here)."""
    author = message.author
    deleted = message.deleted_at is not None
    attachment = None
    if not deleted:
        attachment = getattr(message, "attachment_payload", None)
    return {
        "type": "message",
        "id": message.id,
        "seq": message.seq,
        "room": message.room.slug,
        "from": author.username if author else None,
        "content": "" if deleted else message.content,
        "timestamp": to_ms(message.created_at),
        "messageId": message.client_id,
        "extra": {
            "displayName": (author.display_name or author.username) if author else None,
            "kind": message.kind,
            "replyTo": message.reply_to_id,
            "mentions": [] if deleted else list(message.mentions or []),
            "attachment": attachment,
            "editedAt": to_ms(message.edited_at),
            "deletedAt": to_ms(message.deleted_at),
        },
    }


def ack_frame(message: Any, *, now_ms: int) -> dict[str, Any]:
    return {
        "type": "ack",
        "messageId": message.client_id,
        "id": message.id,
        "seq": message.seq,
        "room": message.room.slug,
        "timestamp": now_ms,
    }


def room_summary(room: Any, membership: Any) -> dict[str, Any]:
    return {
        "room": room.slug,
        "name": room.name,
        "kind": room.kind,
        "lastSeq": room.last_seq,
        "lastChange": room.last_change,
        "readSeq": membership.read_seq,
        "unread": max(0, room.last_seq - membership.read_seq),
    }


def welcome_frame(*, user: Any, rooms: list[dict[str, Any]], limits: dict[str, int], now_ms: int) -> dict[str, Any]:
    return {
        "type": "welcome",
        "timestamp": now_ms,
        "extra": {
            "protocol": PROTOCOL_VERSION,
            "user": {"id": user.id, "username": user.username, "displayName": user.display_name or user.username},
            "rooms": rooms,
            "limits": limits,
        },
    }


def room_state_frame(*, room: Any, membership: Any, members: int, now_ms: int) -> dict[str, Any]:
    return {
        "type": "room_state",
        "room": room.slug,
        "timestamp": now_ms,
        "extra": {
            "name": room.name,
            "topic": room.topic,
            "kind": room.kind,
            "members": members,
            "lastSeq": room.last_seq,
            "lastChange": room.last_change,
            "readSeq": membership.read_seq,
            "role": membership.role,
            "locked": room.locked,
            "slowMode": room.slow_mode_seconds,
        },
    }


def history_frame(
    *,
    room_slug: str,
    messages: list[dict[str, Any]],
    has_more: bool,
    changes: list[dict[str, Any]],
    changes_has_more: bool = False,
    now_ms: int,
) -> dict[str, Any]:
    """``changesHasMore`` (our addition): more than one page of changes remain; the client
    continues with REST ``changed_after``."""
    return {
        "type": "history",
        "room": room_slug,
        "timestamp": now_ms,
        "extra": {"messages": messages, "hasMore": has_more, "changes": changes, "changesHasMore": changes_has_more},
    }


def user_list_frame(*, room_slug: str, users: list[dict[str, str]], now_ms: int) -> dict[str, Any]:
    return {"type": "user_list", "room": room_slug, "timestamp": now_ms, "extra": {"users": users}}


def typing_frame(*, username: str, room_slug: str, state: str, now_ms: int) -> dict[str, Any]:
    return {"type": "typing", "from": username, "room": room_slug, "timestamp": now_ms, "extra": {"state": state}}


def read_frame(*, room_slug: str, seq: int, now_ms: int) -> dict[str, Any]:
    return {"type": "read", "room": room_slug, "timestamp": now_ms, "extra": {"seq": seq}}


def message_changed_frame(message: Any, *, now_ms: int) -> dict[str, Any]:
    """``message_deleted`` for a tombstone, ``message_updated`` for an edit."""
    extra: dict[str, Any] = {"id": message.id, "seq": message.seq, "change": message.change}
    if message.deleted_at is not None:
        frame_type = "message_deleted"
    else:
        frame_type = "message_updated"
        extra.update(content=message.content, editedAt=to_ms(message.edited_at))
    return {"type": frame_type, "room": message.room.slug, "timestamp": now_ms, "extra": extra}


def room_updated_frame(room: Any, *, now_ms: int) -> dict[str, Any]:
    return {
        "type": "room_updated",
        "room": room.slug,
        "timestamp": now_ms,
        "extra": {"topic": room.topic, "locked": room.locked, "slowMode": room.slow_mode_seconds},
    }


def room_membership_frame(frame_type: str, *, room_slug: str, reason: str, now_ms: int) -> dict[str, Any]:
    """``room_added`` or ``room_removed``."""
    return {"type": frame_type, "room": room_slug, "timestamp": now_ms, "extra": {"reason": reason}}


def moderated_frame(
    *, room_slug: str, action: str, username: str | None, until: datetime | None, now_ms: int
) -> dict[str, Any]:
    """The answer to a ``moderate`` frame (to the actor; for mute/unmute to the target too).
    PROTOCOL.md leaves its shape open; docs/protocol.md describes it."""
    return {
        "type": "moderated",
        "room": room_slug,
        "timestamp": now_ms,
        "extra": {"action": action, "user": username, "until": to_ms(until)},
    }


def reported_frame(*, message_id: int, now_ms: int) -> dict[str, Any]:
    """The answer to a ``report`` frame, to the reporter alone."""
    return {"type": "reported", "timestamp": now_ms, "extra": {"id": message_id}}


def pong_frame(*, now_ms: int) -> dict[str, Any]:
    return {"type": "pong", "timestamp": now_ms}


def error_frame(
    code: str, message: str, context: RequestContext, *, now_ms: int, extra: dict | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "requestType": context.request_type}
    if context.extra_id is not None:
        body["id"] = context.extra_id
    if context.upload_id is not None:
        body["uploadId"] = context.upload_id
    if extra:
        body.update(extra)
    frame: dict[str, Any] = {"type": "error", "content": message, "timestamp": now_ms, "extra": body}
    if context.message_id is not None:
        frame["messageId"] = context.message_id
    if context.room is not None and not context.room.startswith("@"):
        frame["room"] = context.room
    return frame


def error_from_exception(exc: ChatError, context: RequestContext, *, now_ms: int) -> dict[str, Any]:
    extra = {"retryAfterMs": exc.retry_after_ms} if exc.retry_after_ms is not None else None
    return error_frame(exc.code, exc.message, context, now_ms=now_ms, extra=extra)


def retry_after_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


# --- Uploads (PROTOCOL section 5) ----------------------------------------------------------


def _upload_frame(frame_type: str, status: Any, *, now_ms: int) -> dict[str, Any]:
    return {
        "type": frame_type,
        "messageId": status.client_id,
        "room": status.room_slug,
        "timestamp": now_ms,
        "extra": {
            "uploadId": status.upload_id,
            "chunkSize": status.chunk_size,
            "received": status.received,
            "nextIndex": status.next_index,
            "size": status.size,
        },
    }


def file_ready_frame(status: Any, *, now_ms: int) -> dict[str, Any]:
    """The answer to ``file_start``; ``status`` is an ``uploads.UploadStatus``."""
    return _upload_frame("file_ready", status, now_ms=now_ms)


def file_progress_frame(status: Any, *, now_ms: int) -> dict[str, Any]:
    """The answer to each accepted ``file_chunk``."""
    return _upload_frame("file_progress", status, now_ms=now_ms)


# A binary frame carries one chunk without base64 (docs/uploads.md):
#   byte 0      format version, 1
#   byte 1      n, the length of the upload id in bytes (1-64)
#   n bytes     the upload id, ASCII
#   4 bytes     the chunk index, unsigned, big-endian
#   the rest    the chunk's raw bytes
BINARY_CHUNK_VERSION = 1


def binary_chunk_header(upload_id: str, index: int) -> bytes:
    """The header a client puts before a chunk's bytes in a binary frame."""
    raw_id = upload_id.encode("ascii")
    if not 1 <= len(raw_id) <= MAX_CLIENT_ID:
        raise ValueError("an upload id is 1 to 64 ASCII characters")
    return bytes((BINARY_CHUNK_VERSION, len(raw_id))) + raw_id + index.to_bytes(4, "big")


def parse_binary_chunk(data: bytes) -> FileChunk:
    """A binary frame as a ``file_chunk`` request, or ``FrameError`` (``invalid``)."""
    ctx = RequestContext(request_type="file_chunk")
    if len(data) < 2 or data[0] != BINARY_CHUNK_VERSION:
        raise FrameError("invalid", "a binary frame must start with format version 1", ctx)
    id_end = 2 + data[1]
    if data[1] == 0 or data[1] > MAX_CLIENT_ID or len(data) < id_end + 4:
        raise FrameError("invalid", "the binary frame's header is cut short", ctx)
    try:
        upload_id = data[2:id_end].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("invalid", "the upload id must be ASCII", ctx) from None
    ctx = RequestContext(request_type="file_chunk", upload_id=upload_id)
    index = int.from_bytes(data[id_end : id_end + 4], "big")
    return FileChunk(ctx, upload_id=upload_id, index=index, data=bytes(data[id_end + 4 :]))
