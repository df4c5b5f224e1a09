"""Every write of the chat, whatever door it comes in by (socket, REST, admin).

Each function checks its rules, writes in one short transaction, and queues its broadcast with
``transaction.on_commit``: a rolled-back write never reaches anyone. Failures raise the
exceptions of ``chat.exceptions``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import User

from . import broadcast, protocol, selectors
from .clock import now_ms
from .direct import direct_partner, direct_room_open, direct_slug, room_added_frame
from .exceptions import Forbidden, Invalid, NotFound
from .models import Membership, Message, Room, WebSocketTicket

# Posting lives in ``chat.posting`` (the batched write path); its entry points are part of the
# services every door calls.
from .posting import PostResult, clean_content, message_create  # noqa: F401 — re-exported
from .selectors import RoomAccess

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


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
        user_id=user.pk, room_id=room.pk, room_slug=room.slug, frame=room_added_frame(room, "joined"), after_seq=0
    )
    return room


def room_join(*, user: User, slug: str) -> RoomAccess:
    """Join a public room (members of private and direct rooms "join" to re-subscribe; one of a
    direct room's pair who left it may come back)."""
    partner = direct_partner(user=user, slug=slug)
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
                frame=room_added_frame(access.room, "joined"),
                after_seq=access.room.last_seq,
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


def room_for_target(*, user: User, to: str) -> RoomAccess:
    """Resolve a frame's ``to``: a room slug, or ``@username`` for a direct room that exists
    already. ``typing`` and ``read`` only reuse one (PROTOCOL.md section 2): to a pair with no
    direct room yet they are ``not_found``, and nothing is created."""
    if to.startswith("@"):
        to = direct_slug(user=user, username=to[1:])
    return selectors.room_for_member(user=user, slug=to)


def open_room_for_target(*, user: User, to: str) -> RoomAccess:
    """As ``room_for_target``, but ``@username`` opens (or reuses) the direct room of the pair:
    for the frames that start a conversation (``file_start``; posts open it in ``posting``)."""
    if to.startswith("@"):
        to = direct_room_open(user=user, username=to[1:]).slug
    return selectors.room_for_member(user=user, slug=to)


# --- Messages ------------------------------------------------------------------------------


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
    """Advance the room's change number and apply ``fields``; queues the change frame.

    Call inside the transaction that locked the message's row (``_lock_message``), after checking
    the locked row: the checks and the write must see the same version of it."""
    change = _advance_room_counter(message.room_id, "last_change")
    Message.objects.filter(pk=message.pk).update(change=change, **fields)
    message = selectors.messages_with_relations().get(pk=message.pk)
    broadcast.send_to_room_on_commit(message.room_id, protocol.message_changed_frame(message, now_ms=now_ms()))
    return message


def _lock_message(message_id: int) -> None:
    """Lock the message's row until commit, so that what the caller reads next is the version it
    writes over: an edit and a delete of one message take turns, and the second one sees the
    first one's result (a tombstone, an edit) instead of the row as it was before both.

    NO KEY UPDATE, not UPDATE: a reply being posted takes KEY SHARE on the message it refers to
    (the foreign key check) while holding its room's row, which we take next; UPDATE would
    conflict with that share lock and the two could deadlock. On SQLite this is a no-op: the
    IMMEDIATE transaction already holds the database's one write lock."""
    list(Message.objects.select_for_update(no_key=True).filter(pk=message_id).values_list("pk"))


def message_edit(*, user: User, message_id: int, content: str) -> Message:
    content = clean_content(content)
    with transaction.atomic():
        _lock_message(message_id)
        message = selectors.message_for_user(user=user, message_id=message_id)
        if message.author_id != user.pk:
            raise Forbidden("only the author can edit a message")
        if message.is_deleted or message.kind == Message.Kind.SYSTEM:
            raise Invalid("this message cannot be edited")
        return _record_change(message, content=content, edited_at=timezone.now())


def message_delete(*, user: User, message_id: int) -> Message:
    """Soft delete: the row stays as a tombstone keeping its seq; staff see the text in the admin."""
    with transaction.atomic():
        _lock_message(message_id)
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
            # A second delete (or one racing the first) changes nothing and records no change.
            return message
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
                frame=room_added_frame(access.room, "invited"),
                after_seq=access.room.last_seq,
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
