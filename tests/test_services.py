"""The service layer and the data model: numbering, idempotency, after-commit broadcasts."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import IntegrityError, connection, transaction

from chat import broadcast, services
from chat.exceptions import Forbidden, Invalid, NotFound, RateLimited
from chat.models import Membership, Message, Room
from tests.conftest import make_user


@pytest.fixture
def lobby(db):
    owner = make_user("owner")
    return services.room_create(user=owner, slug="lobby", name="Lobby")


async def pending(channel: str) -> list[dict]:
    """Every event waiting on ``channel`` (a short wait for each). The receive is never
    cancelled: the pub/sub layer takes a cancelled receive for a consumer that left, and forgets
    its channel."""
    layer = get_channel_layer()
    received = []
    receiving = _receivers.get(channel)
    while True:
        if receiving is None:
            receiving = asyncio.ensure_future(layer.receive(channel))
        done, _ = await asyncio.wait({receiving}, timeout=0.3)
        if not done:
            _receivers[channel] = receiving
            return received
        received.append(receiving.result())
        receiving = None
        _receivers.pop(channel, None)


_receivers: dict[str, asyncio.Future] = {}


def test_room_slug_and_kind_are_validated(lobby):
    with pytest.raises(Invalid):
        services.room_create(user=lobby.created_by, slug="Not A Slug!", name="x")
    with pytest.raises(Invalid):
        services.room_create(user=lobby.created_by, slug="lobby", name="again")
    with pytest.raises(Invalid):
        services.room_create(user=lobby.created_by, slug="x", name="x", kind="direct")
    assert Membership.objects.get(room=lobby, user=lobby.created_by).role == "owner"


def test_seq_unique_per_room_and_client_id_unique_per_author(lobby):
    Message.objects.create(room=lobby, seq=1, content="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(room=lobby, seq=1, content="b")
    Message.objects.create(room=lobby, seq=2, author=lobby.created_by, client_id="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(room=lobby, seq=3, author=lobby.created_by, client_id="x")


def test_history_page_query_uses_the_room_seq_index(lobby):
    sql = str(Message.objects.filter(room=lobby, seq__lt=50).order_by("-seq")[:50].query)
    with connection.cursor() as cursor:
        prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
        cursor.execute(prefix + sql.replace(f"= {lobby.pk}", "= %s").replace("< 50", "< %s"), [lobby.pk, 50])
        plan = " ".join(str(row) for row in cursor.fetchall())
    # SQLite: "SEARCH ... USING INDEX"; PostgreSQL: "Index Scan" (never a full scan).
    assert "USING INDEX" in plan or "Index Scan" in plan or "Index Only Scan" in plan, plan


def test_message_create_numbers_stores_and_is_idempotent(lobby):
    alice = make_user("alice")
    services.room_join(user=alice, slug="lobby")
    first = services.message_create(user=alice, to="lobby", content="  hello  ", client_id="m1")
    again = services.message_create(user=alice, to="lobby", content="different", client_id="m1")
    second = services.message_create(user=alice, to="lobby", content="two")
    assert not first.repeated and again.repeated
    assert again.message.pk == first.message.pk and again.message.content == "hello"
    assert [first.message.seq, second.message.seq] == [1, 2]
    lobby.refresh_from_db()
    assert lobby.last_seq == 2
    assert Membership.objects.get(room=lobby, user=alice).read_seq == 2


def test_posting_rules(lobby):
    alice, stranger = make_user("alice"), make_user("stranger")
    services.room_join(user=alice, slug="lobby")
    with pytest.raises(Forbidden):
        services.message_create(user=stranger, to="lobby", content="hi")
    with pytest.raises(NotFound):
        services.message_create(user=alice, to="nowhere", content="hi")
    with pytest.raises(Invalid):
        services.message_create(user=alice, to="lobby", content="")
    Room.objects.filter(pk=lobby.pk).update(locked=True)
    with pytest.raises(Forbidden):
        services.message_create(user=alice, to="lobby", content="locked out")
    assert services.message_create(user=lobby.created_by, to="lobby", content="owner may").message.seq == 1


def test_rate_limit_bucket_of_ten(lobby, settings):
    settings.CHAT_POST_REFILL_PER_SECOND = 0.1  # no refill to speak of, however slow the machine
    alice = make_user("alice")
    services.room_join(user=alice, slug="lobby")
    for n in range(10):
        services.message_create(user=alice, to="lobby", content=f"m{n}", client_id=f"c{n}")
    # a repeat does not count
    assert services.message_create(user=alice, to="lobby", content="m0", client_id="c0").repeated
    with pytest.raises(RateLimited) as refused:
        services.message_create(user=alice, to="lobby", content="eleventh", client_id="c10")
    assert 0 < refused.value.retry_after_ms <= 10_000


@pytest.mark.django_db(transaction=True)
async def test_nothing_is_broadcast_for_a_rolled_back_write():
    owner = await sync_to_async(make_user)("owner")
    room = await sync_to_async(services.room_create)(user=owner, slug="lobby", name="Lobby")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(broadcast.room_group(room.pk), channel)

    @sync_to_async
    def post_then_roll_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            services.message_create(user=owner, to="lobby", content="never", client_id="gone")
            raise RuntimeError("roll back")

    await post_then_roll_back()
    assert await pending(channel) == []
    assert not await sync_to_async(Message.objects.exists)()
    await sync_to_async(services.message_create)(user=owner, to="lobby", content="kept", client_id="kept")
    [event] = await pending(channel)
    assert '"content":"kept"' in event["text"]


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_posters_get_seqs_1_to_20(settings):
    owner = make_user("owner")
    services.room_create(user=owner, slug="lobby", name="Lobby")
    posters = [make_user(f"poster{n}") for n in range(20)]
    for poster in posters:
        services.room_join(user=poster, slug="lobby")
    barrier = threading.Barrier(20)
    errors = []

    def post(poster):
        try:
            barrier.wait()
            services.message_create(user=poster, to="lobby", content=f"from {poster.username}", client_id="same-id")
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(poster,)) for poster in posters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(Message.objects.values_list("seq", flat=True)) == list(range(1, 21))
    assert Room.objects.get(slug="lobby").last_seq == 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_client_id_store_one_message():
    owner = make_user("owner")
    services.room_create(user=owner, slug="lobby", name="Lobby")
    barrier = threading.Barrier(5)
    results = []

    def post():
        try:
            barrier.wait()
            results.append(services.message_create(user=owner, to="lobby", content="once", client_id="race"))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Message.objects.count() == 1
    assert len({r.message.pk for r in results}) == 1 and sum(not r.repeated for r in results) == 1


def test_direct_room_is_one_per_pair(db):
    alice, bob = make_user("alice"), make_user("bob")
    first = services.direct_room_open(user=alice, username="bob")
    second = services.direct_room_open(user=bob, username="alice")
    assert first.pk == second.pk and first.kind == "direct"
    assert set(first.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}
    with pytest.raises(Invalid):
        services.direct_room_open(user=alice, username="alice")
    with pytest.raises(NotFound):
        services.direct_room_open(user=alice, username="ghost")


def test_leave_ends_membership_and_private_rooms_vanish(db):
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(user=alice, slug="secret", name="Secret", kind="private")
    with pytest.raises(NotFound):
        services.room_join(user=bob, slug="secret")
    services.room_leave(user=alice, slug="secret")
    with pytest.raises(NotFound):
        services.message_create(user=alice, to="secret", content="gone")


def test_edit_delete_advance_the_change_number(lobby):
    owner = lobby.created_by
    message = services.message_create(user=owner, to="lobby", content="one").message
    edited = services.message_edit(user=owner, message_id=message.pk, content="uno")
    deleted = services.message_delete(user=owner, message_id=message.pk)
    lobby.refresh_from_db()
    assert (edited.change, deleted.change, lobby.last_change) == (1, 2, 2)
    assert deleted.content == "" and deleted.deleted_content == "uno" and deleted.seq == 1
    with pytest.raises(Invalid):
        services.message_edit(user=owner, message_id=message.pk, content="back from the dead")
