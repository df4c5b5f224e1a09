"""Storing posts: every new text or file message, whichever door it came in by, goes through
``store_posts``, alone (REST, uploads) or with the other posts waiting at that moment (the
socket door's group commit, ``chat.post_queue``).

A batch is one transaction whose cost grows far slower than its size: one read of the repeated
``messageId``s, one ``SELECT ... FOR UPDATE`` of the rooms (which serialises writers of a room,
so seqs are gap-free in commit order), one read of the memberships, one INSERT of every accepted
message, one UPDATE of the rooms' ``last_seq`` and one of the read markers. Each post is checked
inside that transaction, after the room lock, so a mute, ban or lock committed before the batch
refuses the posts behind it; a refused post is refused alone. The broadcasts leave after commit,
in seq order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User

from . import broadcast, direct, metrics, protocol, ratelimit, selectors
from .exceptions import ChatError, Forbidden, Invalid, RateLimited
from .models import Membership, Message, Room

MENTION_RE = re.compile(r"(?<![\w@])@([\w.@+-]+)")
# A concurrent writer (another process) storing the same messageId makes the INSERT fail; the
# batch is then read again, and finds that message. More than this many in a row is a bug.
_ATTEMPTS = 3


@dataclass(frozen=True)
class PostResult:
    message: Message
    repeated: bool


@dataclass(frozen=True)
class Post:
    """One post to store. ``before_commit(message)`` runs inside the transaction (an upload
    attaches its file there), so the broadcast already carries everything."""

    user: User
    to: str
    content: str
    client_id: str | None = None
    reply_to: int | None = None
    kind: str = Message.Kind.TEXT
    before_commit: Callable[[Message], None] | None = field(default=None, compare=False)


Outcome = PostResult | ChatError


class _ConcurrentRepeat(Exception):
    """The INSERT met a messageId stored meanwhile by another transaction."""


def clean_content(content: str) -> str:
    content = (content or "").strip()
    if not content:
        raise Invalid("a message needs text")
    if "\x00" in content:
        raise Invalid("a message cannot contain NUL characters")
    if len(content) > settings.CHAT_MAX_CONTENT:
        raise Invalid(f"a message is at most {settings.CHAT_MAX_CONTENT} characters")
    return content


def message_create(
    *,
    user: User,
    to: str,
    content: str,
    client_id: str | None = None,
    reply_to: int | None = None,
    kind: str = Message.Kind.TEXT,
    before_commit: Callable[[Message], None] | None = None,
) -> PostResult:
    """Store one message (a batch of one) and broadcast it after commit; raises its refusal. A
    repeated ``client_id`` of the same author returns the stored message (``repeated``) before
    any limit is consulted."""
    post = Post(user, to, content, client_id, reply_to, kind, before_commit)
    (outcome,) = store_posts([post])
    if isinstance(outcome, ChatError):
        raise outcome
    return outcome


def store_posts(posts: list[Post]) -> list[Outcome]:
    """Store a batch of posts; one outcome per post, in order: its ``PostResult`` or the
    ``ChatError`` refusing it. Anything else (the database is gone) fails the whole batch, and
    then nothing of it is stored."""
    tokens_taken: set[int] = set()
    started = time.monotonic()
    for _ in range(_ATTEMPTS):
        try:
            outcomes = _store_once(posts, tokens_taken)
        except _ConcurrentRepeat:
            continue
        metrics.observe_write_latency(time.monotonic() - started)
        metrics.posts_stored(sum(1 for o in outcomes if isinstance(o, PostResult) and not o.repeated))
        return outcomes
    raise RuntimeError("a batch of posts kept meeting concurrent repeats")


def _store_once(posts: list[Post], tokens_taken: set[int]) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(posts)
    repeats_of = _find_repeats(posts, outcomes)
    slugs = _target_slugs(posts, outcomes, tokens_taken)
    with transaction.atomic():
        accepted = _check_posts(posts, outcomes, slugs)
        accepted = _take_tokens(posts, outcomes, accepted, tokens_taken)
        stored = _insert(posts, accepted)
        for index, message in stored.items():
            outcomes[index] = PostResult(message, repeated=False)
    for index, first in repeats_of.items():
        # The same messageId twice in one batch: the second is answered like any repeat.
        earlier = outcomes[first]
        outcomes[index] = PostResult(earlier.message, repeated=True) if isinstance(earlier, PostResult) else earlier
    return outcomes  # type: ignore[return-value]


def _find_repeats(posts: list[Post], outcomes: list[Outcome | None]) -> dict[int, int]:
    """Answer the posts whose (author, messageId) is stored already; returns, for a messageId
    that occurs twice in the batch, the index of each later one and the first one's."""
    keyed = {(p.user.pk, p.client_id) for p in posts if p.client_id}
    stored: dict[tuple[int, str], Message] = {}
    if keyed:
        # Almost always none: ask for ids with a plain index lookup, load messages only for hits.
        pairs = ", ".join(["(%s, %s)"] * len(keyed))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Message._meta.db_table} WHERE (author_id, client_id) IN ({pairs})",  # noqa: S608
                [item for pair in keyed for item in pair],
            )
            ids = [row[0] for row in cursor.fetchall()]
        if ids:
            stored = {(m.author_id, m.client_id): m for m in selectors.messages_with_relations().filter(pk__in=ids)}
    first_index: dict[tuple[int, str], int] = {}
    repeats_of: dict[int, int] = {}
    for index, post in enumerate(posts):
        if not post.client_id:
            continue
        key = (post.user.pk, post.client_id)
        if key in stored:
            outcomes[index] = PostResult(stored[key], repeated=True)
        elif key in first_index:
            repeats_of[index] = first_index[key]
        else:
            first_index[key] = index
    for index in repeats_of:
        outcomes[index] = _PLACEHOLDER
    return repeats_of


# Marks a post answered later in ``_store_once`` (a repeat within the batch).
_PLACEHOLDER = Invalid("answered with the first post of its messageId")


def _target_slugs(posts: list[Post], outcomes: list[Outcome | None], tokens_taken: set[int]) -> dict[int, str]:
    """Each open post's room slug. A post to ``@username`` opens (or reuses) the direct room of
    the pair, once its posting token is taken (PROTOCOL.md section 2): a refused post opens
    nothing."""
    slugs: dict[int, str] = {}
    for index, post in enumerate(posts):
        if outcomes[index] is not None:
            continue
        if not post.to.startswith("@"):
            slugs[index] = post.to
            continue
        if index not in tokens_taken:
            (wait,) = ratelimit.take_tokens(
                [f"post:{post.user.pk}"],
                capacity=settings.CHAT_POST_BURST,
                refill_per_second=settings.CHAT_POST_REFILL_PER_SECOND,
            )
            if wait:
                outcomes[index] = _too_fast(wait)
                continue
            tokens_taken.add(index)
        try:
            slugs[index] = direct.direct_room_open(user=post.user, username=post.to[1:]).slug
        except ChatError as exc:
            outcomes[index] = exc
    return slugs


def _too_fast(wait: float) -> RateLimited:
    return RateLimited("you are sending too fast", retry_after_ms=protocol.retry_after_ms(wait))


@dataclass
class _Accepted:
    index: int
    room: Room
    membership: Membership
    content: str


def _check_posts(posts: list[Post], outcomes: list[Outcome | None], slugs: dict[int, str]) -> list[_Accepted]:
    """Lock the batch's rooms, then apply every rule of posting to each open post."""
    rooms = {
        room.slug: room
        for room in Room.objects.select_for_update().filter(slug__in=set(slugs.values()), archived=False).order_by("pk")
    }
    memberships = {
        (m.user_id, m.room_id): m
        for m in Membership.objects.filter(
            room_id__in=[room.pk for room in rooms.values()], user_id__in={posts[i].user.pk for i in slugs}
        )
    }
    replies = {posts[i].reply_to for i in slugs if posts[i].reply_to is not None}
    reply_rooms = dict(Message.objects.filter(pk__in=replies).values_list("pk", "room_id")) if replies else {}
    accepted: list[_Accepted] = []
    for index, slug in slugs.items():
        post = posts[index]
        room = rooms.get(slug)
        membership = memberships.get((post.user.pk, room.pk)) if room is not None else None
        try:
            selectors.check_member(room, membership)
            content = clean_content(post.content) if post.kind == Message.Kind.TEXT else post.content
            if post.reply_to is not None and reply_rooms.get(post.reply_to) != room.pk:
                raise Invalid("the message replied to is not in this room")
            _check_may_post(user=post.user, room=room, membership=membership)
        except ChatError as exc:
            outcomes[index] = exc
            continue
        accepted.append(_Accepted(index, room, membership, content))
    return accepted


def _check_may_post(*, user: User, room: Room, membership: Membership) -> None:
    moderator = membership.is_moderator or user.is_staff
    now = timezone.now()
    if membership.muted_until and membership.muted_until > now:
        remaining = (membership.muted_until - now).total_seconds()
        raise Forbidden("you are muted in this room", retry_after_ms=protocol.retry_after_ms(remaining))
    if room.locked and not moderator:
        raise Forbidden("the room is locked")
    if room.slow_mode_seconds and not moderator:
        wait = ratelimit.claim_interval(f"slow:{room.pk}:{user.pk}", room.slow_mode_seconds)
        if wait:
            raise RateLimited("slow mode is on", retry_after_ms=protocol.retry_after_ms(wait))


def _take_tokens(
    posts: list[Post], outcomes: list[Outcome | None], accepted: list[_Accepted], tokens_taken: set[int]
) -> list[_Accepted]:
    """The posting budget, last of the rules, so that a refused post costs no token. A batch
    retried after a concurrent repeat does not pay twice."""
    owing = [item for item in accepted if item.index not in tokens_taken]
    waits = ratelimit.take_tokens(
        [f"post:{posts[item.index].user.pk}" for item in owing],
        capacity=settings.CHAT_POST_BURST,
        refill_per_second=settings.CHAT_POST_REFILL_PER_SECOND,
    )
    for item, wait in zip(owing, waits, strict=True):
        if wait:
            outcomes[item.index] = _too_fast(wait)
        else:
            tokens_taken.add(item.index)
    return [item for item in accepted if item.index in tokens_taken]


def _mentions(*, room: Room, content: str) -> list[str]:
    names = {match.rstrip(".") for match in MENTION_RE.findall(content)}
    if not names:
        return []
    return sorted(
        Membership.objects.filter(room=room, banned=False, user__username__in=names).values_list(
            "user__username", flat=True
        )
    )


def _set_from_values(table: str, column: str, values: dict[int, int], *, keep_greater: bool) -> None:
    """Set ``column`` of each row (by id) to its value, in one statement. Written in SQL because
    the ORM's ``Case(When(...))`` for a batch cost more CPU to build than the database took to
    run it (profiled under load), and this runs on the one thread every write waits for."""
    rows = ", ".join(["(%s, %s)"] * len(values))
    new = "v.value"
    if keep_greater:
        # GREATEST on PostgreSQL; SQLite's two-argument MAX() is the same thing.
        greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
        new = f"{greatest}({table}.{column}, v.value)"
    sql = (
        f"WITH v(id, value) AS (VALUES {rows}) "  # noqa: S608 — table and column are ours, values bound
        f"UPDATE {table} SET {column} = {new} FROM v WHERE {table}.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [item for pair in values.items() for item in pair])


def _insert(posts: list[Post], accepted: list[_Accepted]) -> dict[int, Message]:
    """Number, insert and broadcast (after commit) the accepted posts; by batch index."""
    if not accepted:
        return {}
    last_seq = {item.room.pk: item.room.last_seq for item in accepted}
    read_up_to: dict[int, int] = {}
    messages = []
    for item in accepted:
        post = posts[item.index]
        last_seq[item.room.pk] += 1
        read_up_to[item.membership.pk] = last_seq[item.room.pk]
        messages.append(
            Message(
                room=item.room,
                author=post.user,
                seq=last_seq[item.room.pk],
                kind=post.kind,
                content=item.content,
                client_id=post.client_id,
                reply_to_id=post.reply_to,
                mentions=_mentions(room=item.room, content=item.content),
            )
        )
    try:
        # A savepoint: a failed INSERT must leave the transaction usable for the rollback.
        with transaction.atomic():
            Message.objects.bulk_create(messages)
    except IntegrityError:
        if any(post.client_id for post in posts):
            raise _ConcurrentRepeat from None
        raise
    _set_from_values(Room._meta.db_table, "last_seq", last_seq, keep_greater=False)
    # The author has read what they wrote: the marker moves forward, never back.
    _set_from_values(Membership._meta.db_table, "read_seq", read_up_to, keep_greater=True)
    stored: dict[int, Message] = {}
    for item, message in zip(accepted, messages, strict=True):
        post = posts[item.index]
        if post.before_commit is not None:
            post.before_commit(message)
            message = selectors.messages_with_relations().get(pk=message.pk)
        else:
            # Everything the payload reads is at hand: the room, the author, and no file.
            Message.attachment.related.set_cached_value(message, None)
        broadcast.send_to_room_on_commit(item.room.pk, protocol.message_payload(message), author_id=post.user.pk)
        stored[item.index] = message
    return stored
