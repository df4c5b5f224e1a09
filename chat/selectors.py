"""Reads and access checks. Each ``*_for_*`` function fetches what a user may see or raises.

A private or direct room that the user is not in does not exist for them (``NotFound``), so no
answer ever tells a stranger that it is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import User

from .exceptions import Forbidden, NotFound
from .models import Membership, Message, Room
from .protocol import CLOSE_AUTH_REQUIRED, CLOSE_FORBIDDEN


@dataclass(frozen=True)
class RoomAccess:
    room: Room
    membership: Membership | None

    @property
    def is_member(self) -> bool:
        return self.membership is not None and not self.membership.banned

    @property
    def can_moderate(self) -> bool:
        return self.is_member and self.membership.is_moderator


def messages_with_relations() -> QuerySet[Message]:
    """Messages with everything ``protocol.message_payload`` reads, in one query."""
    return Message.objects.select_related("room", "author", "attachment")


def room_access(*, user: User, slug: str) -> RoomAccess:
    """The room and the user's membership, if the user may know the room exists."""
    # One query for the usual case, a member (every post and read marker comes through here).
    membership = (
        Membership.objects.select_related("room").filter(room__slug=slug, room__archived=False, user=user).first()
    )
    room = membership.room if membership is not None else Room.objects.filter(slug=slug, archived=False).first()
    check_visible(room, membership)
    return RoomAccess(room, membership)


def check_visible(room: Room | None, membership: Membership | None) -> None:
    """The room exists for the user: any public room, or one they are an unbanned member of."""
    if room is None or (room.kind != Room.Kind.PUBLIC and (membership is None or membership.banned)):
        raise NotFound("no such room")


def check_member(room: Room | None, membership: Membership | None) -> None:
    """The user is a member of the room, as posting, read markers and leaving require (PROTOCOL.md
    section 3): a private room otherwise does not exist for them, a public one says join first."""
    check_visible(room, membership)
    if membership is not None and membership.banned:
        raise Forbidden("you are banned from this room")
    if membership is None:
        raise Forbidden("join the room first")


def room_for_member(*, user: User, slug: str) -> RoomAccess:
    """A room the user is a member of: posting, reading markers, leaving."""
    access = room_access(user=user, slug=slug)
    check_member(access.room, access.membership)
    return access


def room_for_reader(*, user: User, slug: str) -> RoomAccess:
    """A room whose history the user may read: any public room, or one they are a member of."""
    access = room_access(user=user, slug=slug)
    if access.membership is not None and access.membership.banned:
        raise Forbidden("you are banned from this room")
    return access


def user_memberships(*, user: User) -> list[Membership]:
    """The user's rooms (membership with its room loaded), banned ones left out."""
    return list(
        Membership.objects.filter(user=user, banned=False, room__archived=False)
        .select_related("room")
        .order_by("room__slug")
    )


def message_for_user(*, user: User, message_id: int) -> Message:
    """A message in a room the user is a member of."""
    message = messages_with_relations().filter(pk=message_id).first()
    if message is None or not Membership.objects.filter(room_id=message.room_id, user=user, banned=False).exists():
        raise NotFound("no such message")
    return message


def member_count(*, room: Room) -> int:
    return Membership.objects.filter(room=room, banned=False).count()


def member_profiles(*, room_id: int) -> list[dict]:
    """Id, username and display name of every member, for presence lists."""
    return list(
        Membership.objects.filter(room_id=room_id, banned=False)
        .order_by("user__username")
        .values("user_id", "user__username", "user__display_name")
    )


def history_latest(*, room: Room, limit: int) -> tuple[list[Message], bool]:
    """The newest ``limit`` messages, oldest first, and whether older ones exist."""
    newest = list(messages_with_relations().filter(room=room).order_by("-seq")[: limit + 1])
    has_more = len(newest) > limit
    return list(reversed(newest[:limit])), has_more


def history_after(*, room: Room, seq: int, limit: int) -> tuple[list[Message], bool]:
    """The oldest ``limit`` messages after ``seq``, and whether newer ones remain."""
    page = list(messages_with_relations().filter(room=room, seq__gt=seq).order_by("seq")[: limit + 1])
    return page[:limit], len(page) > limit


def messages_after(*, room_id: int, seq: int) -> list[Message]:
    """The room's messages after ``seq``, oldest first, at most a replay's worth."""
    return list(
        messages_with_relations().filter(room_id=room_id, seq__gt=seq).order_by("seq")[: settings.CHAT_REPLAY_MAX]
    )


def history_before(*, room: Room, seq: int, limit: int) -> tuple[list[Message], bool]:
    """The newest ``limit`` messages before ``seq``, oldest first, and whether older ones exist."""
    page = list(messages_with_relations().filter(room=room, seq__lt=seq).order_by("-seq")[: limit + 1])
    return list(reversed(page[:limit])), len(page) > limit


def changes_after(*, room: Room, change: int, limit: int) -> tuple[list[Message], bool]:
    """Messages edited or deleted after the room's change number ``change``, in change order."""
    page = list(messages_with_relations().filter(room=room, change__gt=change).order_by("change")[: limit + 1])
    return page[:limit], len(page) > limit


def user_by_username(*, username: str) -> User:
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise NotFound("no such user")
    return user


def unauthenticated_close_code(*, scope: dict) -> int:
    """How to close a socket that did not authenticate: 4403 when its session or ticket names a
    deactivated account, 4401 otherwise."""
    if scope.get("inactive_user"):
        return CLOSE_FORBIDDEN
    session = scope.get("session")
    user_id = session.get(SESSION_KEY) if session is not None else None
    if user_id and User.objects.filter(pk=user_id, is_active=False).exists():
        return CLOSE_FORBIDDEN
    return CLOSE_AUTH_REQUIRED


def socket_auth_verdicts(*, scopes: list[dict]) -> list[int | None]:
    """For each open socket (its scope), None while its user may stay connected, else the close
    code to use; in a few queries for all of them.

    Session sockets follow their session: logged out, expired, or authenticated with an old
    password hash is 4401. Any socket of a deactivated user is 4403."""
    users = {user.pk: user for user in User.objects.filter(pk__in={scope["user"].pk for scope in scopes})}
    keys = {
        key
        for scope in scopes
        if scope.get("auth_via") != "ticket" and (key := getattr(scope.get("session"), "session_key", None))
    }
    session_data = _sessions_data(keys)
    verdicts: list[int | None] = []
    for scope in scopes:
        user = users.get(scope["user"].pk)
        if user is None:
            verdicts.append(CLOSE_AUTH_REQUIRED)
        elif not user.is_active:
            verdicts.append(CLOSE_FORBIDDEN)
        elif scope.get("auth_via") == "ticket":
            verdicts.append(None)
        else:
            key = getattr(scope.get("session"), "session_key", None)
            verdicts.append(_session_verdict(session_data.get(key, {}) if key else {}, user))
    return verdicts


def _sessions_data(keys: set[str]) -> dict[str, dict]:
    """The data of each live session among ``keys`` (missing: logged out or expired)."""
    if settings.SESSION_ENGINE == "django.contrib.sessions.backends.db":
        from django.contrib.sessions.models import Session

        live = Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
        return {session.session_key: session.get_decoded() for session in live}
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return {key: store(session_key=key).load() for key in keys}


def _session_verdict(data: dict, user: User) -> int | None:
    if data.get(SESSION_KEY) != str(user.pk):
        return CLOSE_AUTH_REQUIRED
    if not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return CLOSE_AUTH_REQUIRED
    return None


# --- REST API reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomListing:
    """A room as the REST API lists it: with its member count and the user's own membership."""

    room: Room
    membership: Membership | None
    members: int


def _room_listings(*, user: User, rooms: QuerySet[Room]) -> list[RoomListing]:
    rooms = rooms.annotate(member_total=Count("memberships", filter=Q(memberships__banned=False))).prefetch_related(
        Prefetch("memberships", queryset=Membership.objects.filter(user=user), to_attr="own_membership")
    )
    return [
        RoomListing(room, room.own_membership[0] if room.own_membership else None, room.member_total) for room in rooms
    ]


def rooms_visible_to(*, user: User) -> list[RoomListing]:
    """The rooms the user is in, and the public rooms they may join (not those banned from)."""
    own = Membership.objects.filter(room=OuterRef("pk"), user=user)
    rooms = (
        Room.objects.filter(archived=False)
        .filter(Q(kind=Room.Kind.PUBLIC) | Exists(own.filter(banned=False)))
        .exclude(Exists(own.filter(banned=True)))
        .order_by("slug")
    )
    return _room_listings(user=user, rooms=rooms)


def room_listing_for_reader(*, user: User, slug: str) -> RoomListing:
    """One room as ``rooms_visible_to`` shows it, if the user may read it (else raises)."""
    access = room_for_reader(user=user, slug=slug)
    return _room_listings(user=user, rooms=Room.objects.filter(pk=access.room.pk))[0]


def room_members(*, user: User, slug: str) -> list[Membership]:
    """The members of a room the user may read, with their users, by username."""
    access = room_for_reader(user=user, slug=slug)
    return list(
        Membership.objects.filter(room=access.room, banned=False).select_related("user").order_by("user__username")
    )


def check_message_in_room(*, slug: str, message_id: int) -> None:
    """REST URLs name a message and its room: they must agree. Says no more than "not found",
    whether the message is elsewhere or nowhere, so nothing leaks about other rooms."""
    if not Message.objects.filter(pk=message_id, room__slug=slug).exists():
        raise NotFound("no such message")


def user_search(*, user: User, query: str, limit: int) -> list[User]:
    """Active users other than ``user`` whose username or display name contains ``query``."""
    users = User.objects.filter(is_active=True).exclude(pk=user.pk)
    query = query.strip()
    if query:
        users = users.filter(Q(username__icontains=query) | Q(display_name__icontains=query))
    return list(users.order_by("username")[:limit])


def message_search(*, user: User, query: str, room_slug: str | None = None) -> QuerySet[Message]:
    """Messages matching ``query`` in the rooms the user is a member of (optionally one of them),
    tombstones left out. PostgreSQL full-text search ('simple' configuration: no stemming, so it
    treats every language alike); a substring match on other databases. Unordered: the caller
    pages it."""
    rooms = Membership.objects.filter(user=user, banned=False).values("room_id")
    messages = messages_with_relations().filter(room_id__in=rooms, room__archived=False, deleted_at__isnull=True)
    if room_slug is not None:
        messages = messages.filter(room=room_access(user=user, slug=room_slug).room)
    if connection.vendor == "postgresql":
        # Imported here: the module needs psycopg, which the embedded configuration does not use.
        from django.contrib.postgres.search import SearchQuery, SearchVector

        return messages.annotate(search=SearchVector("content", config="simple")).filter(
            search=SearchQuery(query, config="simple", search_type="websearch")
        )
    return messages.filter(content__icontains=query)
