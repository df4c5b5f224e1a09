"""The batched write path (chat/posting.py, chat/post_queue.py) keeps every guarantee of
PROTOCOL.md section 7: gap-free seqs, one copy per messageId, each post checked in the
transaction that stores it, and a batch stored whole or not at all."""

import asyncio
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection
from django.utils import timezone

from chat import moderation, post_queue, posting, ratelimit, services, shared_state
from chat.exceptions import Forbidden, Invalid, NotFound, RateLimited
from chat.models import Membership, Message, Room
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _room_with(count: int, slug: str = "lobby"):
    owner = make_user()
    services.room_create(user=owner, slug=slug, name=slug)
    users = [make_user() for _ in range(count)]
    for user in users:
        services.room_join(user=user, slug=slug)
    return owner, users


def _seqs(slug: str = "lobby") -> list[int]:
    return list(Message.objects.filter(room__slug=slug).order_by("seq").values_list("seq", flat=True))


def test_twenty_threads_posting_into_one_room_get_seqs_one_to_n_each_stored_once():
    _, users = _room_with(20)
    errors: list[BaseException] = []

    def post_five(user):
        try:
            for n in range(5):
                services.message_create(user=user, to="lobby", content=f"{user.username} {n}", client_id=f"c{n}")
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post_five, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _seqs() == list(range(1, 101))
    assert Room.objects.get(slug="lobby").last_seq == 100
    assert Message.objects.filter(room__slug="lobby").values("author", "client_id").distinct().count() == 100


def test_a_batch_numbers_each_room_gap_free_and_in_order():
    _, users = _room_with(3, "one")
    services.room_create(user=users[0], slug="two", name="two")
    services.room_join(user=users[1], slug="two")
    posts = [
        posting.Post(users[0], "one", "a", "p1"),
        posting.Post(users[1], "two", "b", "p2"),
        posting.Post(users[2], "one", "c", "p3"),
        posting.Post(users[0], "two", "d", "p4"),
    ]
    outcomes = posting.store_posts(posts)
    assert [(o.message.room.slug, o.message.seq) for o in outcomes] == [("one", 1), ("two", 1), ("one", 2), ("two", 2)]
    assert all(not o.repeated for o in outcomes)
    assert Membership.objects.get(user=users[0], room__slug="two").read_seq == 2


def test_a_messageid_repeated_inside_one_batch_is_stored_once_and_both_get_the_first():
    _, (alice,) = _room_with(1)
    first, second = posting.store_posts(
        [posting.Post(alice, "lobby", "hello", "same"), posting.Post(alice, "lobby", "hello again", "same")]
    )
    assert not first.repeated and second.repeated
    assert second.message.pk == first.message.pk and second.message.content == "hello"
    assert _seqs() == [1]


def test_a_messageid_repeated_in_a_later_batch_gets_the_first_and_costs_no_token(settings):
    settings.CHAT_POST_BURST = 1
    settings.CHAT_POST_REFILL_PER_SECOND = 0.001
    _, (alice,) = _room_with(1)
    (first,) = posting.store_posts([posting.Post(alice, "lobby", "hello", "m1")])
    repeat, fresh = posting.store_posts(
        [posting.Post(alice, "lobby", "hello", "m1"), posting.Post(alice, "lobby", "more", "m2")]
    )
    assert repeat.repeated and repeat.message.pk == first.message.pk
    # The bucket of one was spent on the first post; the repeat took nothing, the new post is refused.
    assert isinstance(fresh, RateLimited)
    assert _seqs() == [1]


def test_one_refused_post_in_a_batch_is_refused_alone():
    owner, (alice, bob) = _room_with(2)
    services.room_create(user=owner, slug="secret", name="secret", kind=Room.Kind.PRIVATE)
    outcomes = posting.store_posts(
        [
            posting.Post(alice, "lobby", "one", "a1"),
            posting.Post(bob, "secret", "not a member", "b1"),
            posting.Post(bob, "lobby", "   ", "b2"),
            posting.Post(bob, "lobby", "two", "b3", reply_to=999_999),
            posting.Post(bob, "lobby", "three", "b4"),
        ]
    )
    assert outcomes[0].message.seq == 1
    assert isinstance(outcomes[1], NotFound)
    assert isinstance(outcomes[2], Invalid)
    assert isinstance(outcomes[3], Invalid)
    assert outcomes[4].message.seq == 2
    assert _seqs() == [1, 2]


def test_a_mute_or_ban_committed_while_posts_wait_refuses_the_posts_behind_it():
    owner, (alice, bob) = _room_with(2)
    moderation.room_moderate(actor=owner, slug="lobby", action="mute", username=alice.username, seconds=60)
    moderation.room_moderate(actor=owner, slug="lobby", action="ban", username=bob.username)
    muted, banned, allowed = posting.store_posts(
        [
            posting.Post(alice, "lobby", "while muted", "a1"),
            posting.Post(bob, "lobby", "while banned", "b1"),
            posting.Post(owner, "lobby", "the owner still may", "o1"),
        ]
    )
    assert isinstance(muted, Forbidden) and muted.retry_after_ms > 0
    assert isinstance(banned, Forbidden)
    assert allowed.message.content == "the owner still may"


def test_a_lock_committed_while_a_batch_waits_for_the_room_refuses_its_members(settings):
    """The batch locks the room row before it checks: a lock that commits first is seen."""
    owner, (alice,) = _room_with(1)
    locked = threading.Event()
    release = threading.Event()

    def lock_room_slowly():
        from django.db import transaction

        try:
            with transaction.atomic():
                Room.objects.select_for_update().filter(slug="lobby").update(locked=True)
                locked.set()
                release.wait(5)
        finally:
            connection.close()

    locker = threading.Thread(target=lock_room_slowly)
    locker.start()
    assert locked.wait(5)
    outcome: list = []

    def post():
        outcome.extend(posting.store_posts([posting.Post(alice, "lobby", "hi", "a1")]))
        connection.close()

    poster = threading.Thread(target=post)
    poster.start()
    release.set()
    locker.join()
    poster.join()
    assert isinstance(outcome[0], Forbidden)
    assert _seqs() == []


def test_a_database_failure_mid_batch_stores_none_of_it(monkeypatch):
    _, (alice, bob) = _room_with(2)
    real_send = posting.broadcast.send_to_room_on_commit
    calls = []

    def connection_lost_at_the_second(*args, **kwargs):
        # Inside the transaction, after the INSERT and the counter updates.
        calls.append(args)
        if len(calls) == 2:
            raise OperationalError("connection lost")
        real_send(*args, **kwargs)

    monkeypatch.setattr(posting.broadcast, "send_to_room_on_commit", connection_lost_at_the_second)
    with pytest.raises(OperationalError):
        posting.store_posts([posting.Post(alice, "lobby", "one", "a1"), posting.Post(bob, "lobby", "two", "b1")])
    monkeypatch.undo()
    assert _seqs() == []
    assert Room.objects.get(slug="lobby").last_seq == 0
    # Nothing half-way: the same posts go through afterwards, numbered from 1.
    outcomes = posting.store_posts([posting.Post(alice, "lobby", "one", "a1"), posting.Post(bob, "lobby", "two", "b1")])
    assert [o.message.seq for o in outcomes] == [1, 2]


async def test_twenty_sockets_posting_at_once_get_seqs_one_to_n_and_every_socket_sees_all(connect):
    _, users = await sync_to_async(_room_with)(20)
    sockets = [await connect(user) for user in users]
    for socket in sockets:
        await socket.send({"type": "join_room", "roomId": "lobby"})
        await socket.expect("history")
    for round_ in range(3):
        await asyncio.gather(
            *(
                s.send({"type": "message", "to": "lobby", "content": f"r{round_}", "messageId": f"r{round_}"})
                for s in sockets
            )
        )
    ack_seqs = []
    for socket in sockets:
        acks, seen = 0, set()
        while acks < 3 or len(seen) < 60:
            frame = await socket.receive(timeout=5)
            if frame["type"] == "ack":
                acks += 1
                ack_seqs.append(frame["seq"])
            elif frame["type"] == "message":
                seen.add(frame["seq"])
        assert seen == set(range(1, 61))
    assert sorted(ack_seqs) == list(range(1, 61))
    assert await sync_to_async(_seqs)() == list(range(1, 61))


async def test_a_socket_resending_its_messageid_in_the_same_moment_gets_one_copy(connect):
    _, (alice,) = await sync_to_async(_room_with)(1)
    socket = await connect(alice)
    frame = {"type": "message", "to": "lobby", "content": "once", "messageId": "dup"}
    await socket.send(frame)
    await socket.send(frame)
    frames: list[dict] = []
    while sum(f["type"] in ("ack", "message") for f in frames) < 3:
        frame = await socket.receive()
        if frame["type"] in ("ack", "message"):
            frames.append(frame)
    first, second = (f for f in frames if f["type"] == "ack")
    assert first["id"] == second["id"] and first["seq"] == second["seq"] == 1
    assert [f["seq"] for f in frames if f["type"] == "message"] == [1]
    assert frames[0]["type"] == "ack"  # the ack before the sender's copy
    assert await socket.nothing(0.3)
    assert await sync_to_async(_seqs)() == [1]


async def test_posts_beyond_the_queue_limit_are_refused_with_rate_limited(settings):
    settings.CHAT_POST_QUEUE_MAX = 0
    alice = await sync_to_async(make_user)()
    with pytest.raises(RateLimited):
        await post_queue.submit(posting.Post(alice, "lobby", "hi", "x"))


def test_a_mute_for_a_past_time_does_not_refuse(settings):
    _, (alice,) = _room_with(1)
    Membership.objects.filter(user=alice).update(muted_until=timezone.now() - timedelta(seconds=1))
    (outcome,) = posting.store_posts([posting.Post(alice, "lobby", "free again", "a1")])
    assert outcome.message.seq == 1


@pytest.mark.skipif(not shared_state.uses_redis(), reason="the bucket script lives in Redis (REDIS_URL)")
def test_tokens_are_still_counted_after_redis_forgets_the_bucket_script(settings):
    settings.CHAT_POST_BURST = 2
    settings.CHAT_POST_REFILL_PER_SECOND = 0.001
    limits = {"capacity": settings.CHAT_POST_BURST, "refill_per_second": settings.CHAT_POST_REFILL_PER_SECOND}
    assert ratelimit.take_tokens(["post:x"], **limits) == [0.0]
    shared_state.sync_client().script_flush()  # as a restart does
    first, second = ratelimit.take_tokens(["post:x", "post:x"], **limits)
    assert first == 0.0 and second > 0  # the burst of two: one left, then none


def test_a_messageid_stored_meanwhile_by_another_writer_retries_the_batch_without_a_gap(monkeypatch):
    """The pre-read misses a repeat that another process stores before our INSERT: the unique
    constraint fails the INSERT, the batch runs again, and the repeat gets the stored message."""
    _, (alice, bob) = _room_with(2)
    (original,) = posting.store_posts([posting.Post(alice, "lobby", "first", "m1")])
    real_find = posting._find_repeats
    calls = []

    def misses_it_the_first_time(posts, outcomes):
        calls.append(1)
        return {} if len(calls) == 1 else real_find(posts, outcomes)

    monkeypatch.setattr(posting, "_find_repeats", misses_it_the_first_time)
    repeat, fresh = posting.store_posts(
        [posting.Post(alice, "lobby", "first again", "m1"), posting.Post(bob, "lobby", "second", "b1")]
    )
    assert len(calls) == 2
    assert repeat.repeated and repeat.message.pk == original.message.pk
    assert fresh.message.seq == 2
    assert _seqs() == [1, 2]
