"""Direct rooms: the one room of a pair of users, opened on first use (PROTOCOL.md section 2).

Its own module because two writers need it: room joins (``services``) and posts to
``@username`` (``posting``), which must not import each other.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from accounts.models import User

from . import broadcast, protocol, selectors
from .clock import now_ms
from .exceptions import Invalid
from .models import Membership, Room


def room_added_frame(room: Room, reason: str) -> dict:
    return protocol.room_membership_frame("room_added", room_slug=room.slug, reason=reason, now_ms=now_ms())


def direct_slug(*, user: User, username: str) -> str:
    """The slug of the pair's direct room, whether or not it exists yet."""
    other = selectors.user_by_username(username=username)
    if other.pk == user.pk:
        raise Invalid("a direct message to yourself is not possible")
    low, high = sorted((user.pk, other.pk))
    return f"dm-{low}-{high}"


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
                        user_id=member.pk,
                        room_id=room.pk,
                        room_slug=slug,
                        frame=room_added_frame(room, "direct"),
                        after_seq=room.last_seq,
                    )
    except IntegrityError:
        # Both opened it at once: the other transaction's room is the one.
        room = Room.objects.get(slug=slug)
    return room


def direct_partner(*, user: User, slug: str) -> User | None:
    """The other user of direct room ``slug`` if ``user`` is one of its pair, else None."""
    parts = slug.split("-")
    if len(parts) != 3 or parts[0] != "dm" or not all(p.isdigit() for p in parts[1:]):
        return None
    ids = {int(parts[1]), int(parts[2])}
    if user.pk not in ids or len(ids) != 2:
        return None
    return User.objects.filter(pk=(ids - {user.pk}).pop(), is_active=True).first()
