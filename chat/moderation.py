"""Moderation rules: the `moderate` and `report` frames, the REST moderation endpoints and the
admin all come here (PROTOCOL sections 3 and 4). Same pattern as ``services``: check, write in a
short transaction, broadcast after commit, log every act in ``ModerationLog``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import User

from . import broadcast, protocol, selectors, services
from .clock import now_ms
from .exceptions import Forbidden, Invalid, NotFound
from .models import Membership, Message, ModerationLog, Room

DEFAULT_MUTE_SECONDS = 10 * 60
MAX_TOPIC = 500


@dataclass(frozen=True)
class ModerationResult:
    room: Room
    action: str
    target: User | None
    until: object = None


def _actor_access(*, actor: User, slug: str) -> selectors.RoomAccess:
    """The room, if ``actor`` may moderate it: its owner or a moderator, or staff."""
    if actor.is_staff:
        # Staff moderate every room, private ones they are not in included.
        room = Room.objects.filter(slug=slug, archived=False).first()
        if room is None:
            raise NotFound("no such room")
        return selectors.RoomAccess(room, Membership.objects.filter(room=room, user=actor).first())
    access = selectors.room_access(user=actor, slug=slug)
    if access.can_moderate:
        return access
    raise Forbidden("only the room's owners and moderators can do that")


def _target_membership(
    *, access: selectors.RoomAccess, actor: User, username: str | None
) -> tuple[User, Membership | None]:
    if not username:
        raise Invalid("'extra.user' must name the user")
    target = User.objects.filter(username=username.lstrip("@")).first()
    if target is None:
        raise NotFound("no such user")
    if target.pk == actor.pk:
        raise Invalid("you cannot moderate yourself")
    membership = Membership.objects.filter(room=access.room, user=target).first()
    outranks = target.is_staff or (membership is not None and membership.role == Membership.Role.OWNER)
    if outranks and not actor.is_staff:
        raise Forbidden("owners and staff cannot be moderated by a moderator")
    return target, membership


def _log(
    *,
    actor: User,
    action: str,
    room: Room,
    target: User | None = None,
    reason: str = "",
    message: Message | None = None,
) -> None:
    ModerationLog.objects.create(
        actor=actor, action=action, room=room, target_user=target, target_message=message, reason=reason[:500]
    )


def moderated_frame(result: ModerationResult) -> dict:
    """The answer to a moderation act (the actor's, and for mute/unmute the target's too)."""
    return protocol.moderated_frame(
        room_slug=result.room.slug,
        action=result.action,
        username=result.target.username if result.target else None,
        until=result.until,
        now_ms=now_ms(),
    )


def _tell_target(*, room: Room, action: str, target: User, until: object) -> None:
    frame = moderated_frame(ModerationResult(room, action, target, until))
    broadcast.send_to_user_on_commit(target.pk, frame)


def _removed_frame(room: Room, reason: str) -> dict:
    return protocol.room_membership_frame("room_removed", room_slug=room.slug, reason=reason, now_ms=now_ms())


def room_moderate(
    *,
    actor: User,
    slug: str,
    action: str,
    username: str | None = None,
    seconds: int | None = None,
    reason: str = "",
    topic: str | None = None,
) -> ModerationResult:
    """Carry out one moderation action; see PROTOCOL section 4 for what each one sends."""
    access = _actor_access(actor=actor, slug=slug)
    room = access.room
    if action in ("mute", "unmute", "kick", "ban", "unban"):
        target, membership = _target_membership(access=access, actor=actor, username=username)
        return _act_on_member(
            actor=actor, room=room, action=action, target=target, membership=membership, seconds=seconds, reason=reason
        )
    return _act_on_room(actor=actor, room=room, action=action, seconds=seconds, reason=reason, topic=topic)


def _act_on_member(
    *,
    actor: User,
    room: Room,
    action: str,
    target: User,
    membership: Membership | None,
    seconds: int | None,
    reason: str,
) -> ModerationResult:
    name = target.display_name or target.username
    with transaction.atomic():
        if action == "mute":
            if membership is None or membership.banned:
                raise NotFound("that user is not in this room")
            until = timezone.now() + timedelta(seconds=seconds or DEFAULT_MUTE_SECONDS)
            Membership.objects.filter(pk=membership.pk).update(muted_until=until)
            _log(actor=actor, action=action, room=room, target=target, reason=reason)
            _tell_target(room=room, action=action, target=target, until=until)
            return ModerationResult(room, action, target, until)
        if action == "unmute":
            if membership is None:
                raise NotFound("that user is not in this room")
            Membership.objects.filter(pk=membership.pk).update(muted_until=None)
            _log(actor=actor, action=action, room=room, target=target, reason=reason)
            _tell_target(room=room, action=action, target=target, until=None)
            return ModerationResult(room, action, target)
        if action == "unban":
            if membership is None or not membership.banned:
                raise Invalid("that user is not banned here")
            membership.delete()
            _log(actor=actor, action=action, room=room, target=target, reason=reason)
            return ModerationResult(room, action, target)
        # kick and ban end the membership: the target's sockets leave the room.
        was_member = membership is not None and not membership.banned
        if action == "kick":
            if not was_member:
                raise NotFound("that user is not in this room")
            membership.delete()
            text = f"{name} was removed from the room"
        else:
            Membership.objects.update_or_create(
                room=room,
                user=target,
                defaults={"banned": True, "ban_reason": reason[:500], "banned_at": timezone.now(), "role": "member"},
            )
            text = f"{name} was banned from the room"
        _log(actor=actor, action=action, room=room, target=target, reason=reason)
        if was_member:
            broadcast.unsubscribe_user_on_commit(
                user_id=target.pk,
                room_id=room.pk,
                room_slug=room.slug,
                frame=_removed_frame(room, "kicked" if action == "kick" else "banned"),
            )
        services.system_message_create(room=room, content=f"{text}: {reason}" if reason else text)
    return ModerationResult(room, action, target)


def _act_on_room(
    *, actor: User, room: Room, action: str, seconds: int | None, reason: str, topic: str | None
) -> ModerationResult:
    actor_name = actor.display_name or actor.username
    if action == "lock":
        changes, text = {"locked": True}, f"{actor_name} locked the room"
    elif action == "unlock":
        changes, text = {"locked": False}, f"{actor_name} unlocked the room"
    elif action == "slow_mode":
        if seconds is None or seconds > 24 * 3600:
            raise Invalid("'extra.seconds' must be 0 (off) up to 86400")
        changes = {"slow_mode_seconds": seconds}
        text = f"{actor_name} set slow mode to {seconds} s" if seconds else f"{actor_name} turned slow mode off"
    elif action == "topic":
        if topic is None or len(topic) > MAX_TOPIC:
            raise Invalid(f"'extra.topic' must be text of at most {MAX_TOPIC} characters")
        changes, text = {"topic": topic.strip()}, f"{actor_name} changed the topic to: {topic.strip()}"
    else:
        raise Invalid("unknown moderation action")
    with transaction.atomic():
        Room.objects.filter(pk=room.pk).update(**changes)
        room.refresh_from_db()
        _log(actor=actor, action=action, room=room, reason=reason or text)
        broadcast.send_to_room_on_commit(room.pk, protocol.room_updated_frame(room, now_ms=now_ms()))
        services.system_message_create(room=room, content=text)
    return ModerationResult(room, action, None)


def message_report(*, user: User, message_id: int, reason: str) -> ModerationLog:
    """Put a message in the moderators' queue (the admin's moderation log). Nothing is broadcast."""
    message = selectors.message_for_user(user=user, message_id=message_id)
    return ModerationLog.objects.create(
        actor=user,
        action="report",
        room=message.room,
        target_user=message.author,
        target_message=message,
        reason=(reason or "")[:500],
    )
