"""Every write of the chat, whatever door it comes in by (socket, REST, admin).

Each function checks its rules, writes in one short transaction, and queues its broadcast with
``transaction.on_commit``: a rolled-back write never reaches anyone. Failures raise the
exceptions of ``chat.exceptions``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import User

from . import broadcast, protocol, ratelimit, selectors
from .clock import now_ms
from .exceptions import Forbidden, Invalid, NotFound, RateLimited
from .models import Membership, Message, Room, WebSocketTicket
from .selectors import RoomAccess

MENTION_RE = re.compile(r"(?<![\w@])@([\w.@+-]+)")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class PostResult:
    message: Message
    repeated: bool


# --- Rooms ---------------------------------------------------------------------------------


def room_create(*, user: User, slug: str, name: str, kind: str = Room.Kind.PUBLIC, topic: str = "") -> Room:
    """Create a public or private room; the creator becomes its owner."""
    slug = (slug or "").strip().lower()
    if not SLUG_RE.match(slug) or slug.startswith("dm-"):
        raise Invalid("a room's slug is 1-64 lowercase letters, digits, '-' or '_'")
    if kind not in (Room.Kind.PUBLIC, Room.Kind.PRIVATE):
        raise Invalid("a room is 'public' or 'private'")
    name = (name or slug).strip()[:100]
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, name=name, kind=kind, topic=(topic or "")[:500], created_by=user)
            Membership.objects.create(room=room, user=user, role=Membership.Role.OWNER)
    except IntegrityError:
        raise Invalid("that slug is taken") from None
    broadcast.subscribe_user_on_commit(
        user_id=user.pk, room_id=room.pk, room_slug=room.slug, frame=_room_added(room, "joined")
    )
    return room


def _room_added(room: Room, reason: str) -> dict:
    return protocol.room_membership_frame("room_added", room_slug=room.slug, reason=reason, now_ms=now_ms())


def room_join(*, user: User, slug: str) -> RoomAccess:
    """Join a public room (members of private and direct rooms "join" to re-subscribe; one of a
    direct room's pair who left it may come back)."""
    partner = _direct_partner(user=user, slug=slug)
    if partner is not None and Room.objects.filter(slug=slug).exists():
        direct_room_open(user=user, username=partner.username)
    access = selectors.room_access(user=user, slug=slug)
    if access.membership is not None:
        if access.membership.banned:
            raise Forbidden("you are banned from this room")
        return access
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(room=access.room, user=user)
        if created:
            broadcast.subscribe_user_on_commit(
                user_id=user.pk,
                room_id=access.room.pk,
                room_slug=access.room.slug,
                frame=_room_added(access.room, "joined"),
                # The joining socket sends the room its user_list after room_state and history.
                announce=False,
            )
    return RoomAccess(access.room, membership)


def room_leave(*, user: User, slug: str) -> Room:
    """End the user's membership; every socket of theirs stops receiving the room."""
    access = selectors.room_for_member(user=user, slug=slug)
    with transaction.atomic():
        Membership.objects.filter(pk=access.membership.pk).delete()
        broadcast.unsubscribe_user_on_commit(
            user_id=user.pk,
            room_id=access.room.pk,
            room_slug=access.room.slug,
            frame=protocol.room_membership_frame(
                "room_removed", room_slug=access.room.slug, reason="left", now_ms=now_ms()
            ),
        )
    return access.room


def direct_room_open(*, user: User, username: str) -> Room:
    """The one direct room of a pair of users, created on first use. Both are (again) members
    afterwards, so a user who left a conversation gets it back when either side writes."""
    other = selectors.user_by_username(username=username)
    if other.pk == user.pk:
        raise Invalid("a direct message to yourself is not possible")
    low, high = sorted((user.pk, other.pk))
    slug = f"dm-{low}-{high}"
    room = Room.objects.filter(slug=slug).first()
    if room is not None and Membership.objects.filter(room=room).count() == 2:
        return room
    try:
        with transaction.atomic():
            if room is None:
                room = Room.objects.create(
                    slug=slug, name=f"{user.username}, {other.username}", kind=Room.Kind.DIRECT, created_by=user
                )
            for member in (user, other):
                _, created = Membership.objects.get_or_create(room=room, user=member)
                if created:
                    broadcast.subscribe_user_on_commit(
                        user_id=member.pk, room_id=room.pk, room_slug=slug, frame=_room_added(room, "direct")
                    )
    except IntegrityError:
        # Both opened it at once: the other transaction's room is the one.
        room = Room.objects.get(slug=slug)
    return room


def _direct_partner(*, user: User, slug: str) -> User | None:
    """The other user of direct room ``slug`` if ``user`` is one of its pair, else None."""
    parts = slug.split("-")
    if len(parts) != 3 or parts[0] != "dm" or not all(p.isdigit() for p in parts[1:]):
        return None
    ids = {int(parts[1]), int(parts[2])}
    if user.pk not in ids or len(ids) != 2:
        return None
    return User.objects.filter(pk=(ids - {user.pk}).pop(), is_active=True).first()


def room_for_target(*, user: User, to: str) -> RoomAccess:
    """Resolve a frame's ``to``: a room slug, or ``@username`` (opening the direct room)."""
    if to.startswith("@"):
        to = direct_room_open(user=user, username=to[1:]).slug
    return selectors.room_for_member(user=user, slug=to)


# --- Messages ------------------------------------------------------------------------------


def clean_content(content: str) -> str:
    content = (content or "").strip()
    if not content:
        raise Invalid("a message needs text")
    if "\x00" in content:
        raise Invalid("a message cannot contain NUL characters")
    if len(content) > settings.CHAT_MAX_CONTENT:
        raise Invalid(f"a message is at most {settings.CHAT_MAX_CONTENT} characters")
    return content


def _existing_post(*, user: User, client_id: str | None) -> Message | None:
    if not client_id:
        return None
    return selectors.messages_with_relations().filter(author=user, client_id=client_id).first()


def _check_may_post(*, user: User, access: RoomAccess) -> None:
    membership = access.membership
    moderator = membership.is_moderator or user.is_staff
    if membership.muted_until and membership.muted_until > timezone.now():
        remaining = (membership.muted_until - timezone.now()).total_seconds()
        raise Forbidden("you are muted in this room", retry_after_ms=protocol.retry_after_ms(remaining))
    if access.room.locked and not moderator:
        raise Forbidden("the room is locked")
    if access.room.slow_mode_seconds and not moderator:
        wait = ratelimit.claim_interval(f"slow:{access.room.pk}:{user.pk}", access.room.slow_mode_seconds)
        if wait:
            raise RateLimited("slow mode is on", retry_after_ms=protocol.retry_after_ms(wait))


def _take_post_token(user: User) -> None:
    wait = ratelimit.take_token(
        f"post:{user.pk}",
        capacity=settings.CHAT_POST_BURST,
        refill_per_second=settings.CHAT_POST_REFILL_PER_SECOND,
    )
    if wait:
        raise RateLimited("you are sending too fast", retry_after_ms=protocol.retry_after_ms(wait))


def _mentions(*, room: Room, content: str) -> list[str]:
    names = {match.rstrip(".") for match in MENTION_RE.findall(content)}
    if not names:
        return []
    return sorted(
        Membership.objects.filter(room=room, banned=False, user__username__in=names).values_list(
            "user__username", flat=True
        )
    )


def message_create(
    *,
    user: User,
    to: str,
    content: str,
    client_id: str | None = None,
    reply_to: int | None = None,
    kind: str = Message.Kind.TEXT,
    before_commit=None,
) -> PostResult:
    """Store a message and broadcast it after commit. A repeated ``client_id`` of the same
    author returns the stored message (``repeated``) before any limit is consulted.

    ``before_commit(message)`` runs inside the transaction (an upload attaches its file there),
    so the broadcast already carries everything."""
    existing = _existing_post(user=user, client_id=client_id)
    if existing is not None:
        return PostResult(existing, repeated=True)
    access = room_for_target(user=user, to=to)
    if kind == Message.Kind.TEXT:
        content = clean_content(content)
    if reply_to is not None and not Message.objects.filter(pk=reply_to, room=access.room).exists():
        raise Invalid("the message replied to is not in this room")
    _check_may_post(user=user, access=access)
    _take_post_token(user)
    mentions = _mentions(room=access.room, content=content)
    try:
        with transaction.atomic():
            room = access.room
            seq = _advance_room_counter(room.pk, "last_seq")
            message = Message.objects.create(
                room=room,
                author=user,
                seq=seq,
                kind=kind,
                content=content,
                client_id=client_id,
                reply_to_id=reply_to,
                mentions=mentions,
            )
            Membership.objects.filter(pk=access.membership.pk, read_seq__lt=seq).update(read_seq=seq)
            if before_commit is not None:
                before_commit(message)
                message = selectors.messages_with_relations().get(pk=message.pk)
            else:
                # Everything the payload reads is at hand: the room, the author, and no file.
                Message.attachment.related.set_cached_value(message, None)
            broadcast.send_to_room_on_commit(room.pk, protocol.message_payload(message), author_id=user.pk)
    except IntegrityError:
        existing = _existing_post(user=user, client_id=client_id)
        if existing is None:
            raise
        return PostResult(existing, repeated=True)
    return PostResult(message, repeated=False)


def _advance_room_counter(room_id: int, counter: str) -> int:
    """Add one to the room's ``last_seq`` or ``last_change`` and return it, in one statement.

    Call inside a transaction: the UPDATE locks the room's row until commit, so writers of one
    room take numbers one at a time and they are gap-free in commit order (on SQLite the
    IMMEDIATE transaction mode serialises all writers instead). RETURNING (PostgreSQL, SQLite
    3.35+) saves the SELECT ... FOR UPDATE the ORM would need first."""
    assert counter in ("last_seq", "last_change")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Room._meta.db_table} SET {counter} = {counter} + 1 WHERE id = %s RETURNING {counter}",  # noqa: S608 — fixed names
            [room_id],
        )
        return cursor.fetchone()[0]


def system_message_create(*, room: Room, content: str) -> Message:
    """A ``system`` line in the room (moderation effects), numbered like any message."""
    with transaction.atomic():
        seq = _advance_room_counter(room.pk, "last_seq")
        message = Message.objects.create(room=room, seq=seq, kind=Message.Kind.SYSTEM, content=content)
        message = selectors.messages_with_relations().get(pk=message.pk)
        broadcast.send_to_room_on_commit(room.pk, protocol.message_payload(message))
    return message


def _record_change(message: Message, **fields) -> Message:
    """Advance the room's change number and apply ``fields``; queues the change frame."""
    change = _advance_room_counter(message.room_id, "last_change")
    Message.objects.filter(pk=message.pk).update(change=change, **fields)
    message = selectors.messages_with_relations().get(pk=message.pk)
    broadcast.send_to_room_on_commit(message.room_id, protocol.message_changed_frame(message, now_ms=now_ms()))
    return message


def message_edit(*, user: User, message_id: int, content: str) -> Message:
    message = selectors.message_for_user(user=user, message_id=message_id)
    if message.author_id != user.pk:
        raise Forbidden("only the author can edit a message")
    if message.is_deleted or message.kind == Message.Kind.SYSTEM:
        raise Invalid("this message cannot be edited")
    content = clean_content(content)
    with transaction.atomic():
        return _record_change(message, content=content, edited_at=timezone.now())


def message_delete(*, user: User, message_id: int) -> Message:
    """Soft delete: the row stays as a tombstone keeping its seq; staff see the text in the admin."""
    if user.is_staff:
        message = selectors.messages_with_relations().filter(pk=message_id).first()
        if message is None:
            raise NotFound("no such message")
    else:
        message = selectors.message_for_user(user=user, message_id=message_id)
    if message.author_id != user.pk and not user.is_staff:
        membership = Membership.objects.filter(room_id=message.room_id, user=user).first()
        if membership is None or not membership.is_moderator:
            raise Forbidden("only the author or a moderator can delete a message")
    if message.is_deleted:
        return message
    with transaction.atomic():
        return _record_change(
            message,
            deleted_content=message.content,
            content="",
            deleted_at=timezone.now(),
            deleted_by=user,
        )


def read_mark(*, user: User, to: str, seq: int) -> int:
    """Move the user's read marker forward (never back); the user's sockets hear of it."""
    access = room_for_target(user=user, to=to)
    seq = min(seq, access.room.last_seq)
    with transaction.atomic():
        moved = Membership.objects.filter(pk=access.membership.pk, read_seq__lt=seq).update(read_seq=seq)
        if moved:
            broadcast.send_to_user_on_commit(
                user.pk, protocol.read_frame(room_slug=access.room.slug, seq=seq, now_ms=now_ms())
            )
    return max(seq, access.membership.read_seq)


# --- Socket tickets --------------------------------------------------------------------------


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def ws_ticket_issue(*, user: User) -> str:
    """A single-use credential for one socket handshake, valid for 60 s. Only its hash is kept."""
    ticket = secrets.token_urlsafe(32)
    WebSocketTicket.objects.filter(expires_at__lt=timezone.now()).delete()
    WebSocketTicket.objects.create(
        key_hash=_ticket_hash(ticket),
        user=user,
        expires_at=timezone.now() + timedelta(seconds=settings.CHAT_WS_TICKET_SECONDS),
    )
    return ticket


def ws_ticket_redeem(*, ticket: str) -> User | None:
    """The ticket's user, once: the update only succeeds for an unused, unexpired ticket. The
    user may have been deactivated since (the socket door refuses them with 4403)."""
    key_hash = _ticket_hash(ticket)
    now = timezone.now()
    used = WebSocketTicket.objects.filter(key_hash=key_hash, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    if not used:
        return None
    return User.objects.filter(ws_tickets__key_hash=key_hash).first()


# --- Members and API tokens (the REST door) -----------------------------------------------------


def member_invite(*, user: User, slug: str, username: str) -> tuple[Membership, bool]:
    """Add ``username`` to a private room (its owners and moderators only): their sockets join
    the room and hear ``room_added`` with reason ``invited``. Naming oneself joins a public room,
    as ``join_room`` does. Returns the membership and whether it is new."""
    if username == user.username:
        already = selectors.room_access(user=user, slug=slug).is_member
        access = room_join(user=user, slug=slug)
        return access.membership, not already
    access = selectors.room_for_member(user=user, slug=slug)
    if not access.can_moderate:
        raise Forbidden("only the room's owner and moderators can add members")
    if access.room.kind != Room.Kind.PRIVATE:
        raise Invalid("members are added to private rooms only; anyone may join a public room")
    target = selectors.user_by_username(username=username)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(room=access.room, user=target)
        if membership.banned:
            raise Forbidden(f"{target.username} is banned from this room")
        if created:
            broadcast.subscribe_user_on_commit(
                user_id=target.pk,
                room_id=access.room.pk,
                room_slug=access.room.slug,
                frame=_room_added(access.room, "invited"),
            )
    return membership, created


def api_token_issue(*, user: User) -> tuple[str, bool]:
    """The user's REST token (one per user), created on first request; and whether it is new."""
    token, created = Token.objects.get_or_create(user=user)
    return token.key, created


def api_token_revoke(*, user: User) -> bool:
    """Delete the user's REST token; requests carrying it are refused from now on."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)
