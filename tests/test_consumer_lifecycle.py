"""Sockets across time: sessions ending, presence, resume after a gap, many writers, reconnects."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from chat import services
from chat.models import Membership, Message
from chatsite.asgi import application
from tests.conftest import ORIGIN, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def setup_room(*names, slug="lobby"):
    people = [make_user(name) for name in names]
    services.room_create(user=people[0], slug=slug, name=slug.title())
    for person in people[1:]:
        services.room_join(user=person, slug=slug)
    return people


def logged_in_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def socket_for_client(client: Client):
    from tests.conftest import ChatSocket

    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN, (b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    socket = ChatSocket(communicator)
    await socket.expect("welcome")
    return socket


# --- Sessions ending ------------------------------------------------------------------------


async def test_logout_closes_all_of_the_users_sockets_with_4401():
    (alice,) = await setup_room("alice")
    web = await sync_to_async(logged_in_client)(alice)
    one, two = await socket_for_client(web), await socket_for_client(web)
    response = await sync_to_async(web.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await one.expect_close() == 4401
    assert await two.expect_close() == 4401


async def test_deactivation_closes_sockets_with_4403(connect):
    (alice,) = await setup_room("alice")
    socket = await connect(alice)
    alice.is_active = False
    await sync_to_async(alice.save)()
    assert await socket.expect_close() == 4403


async def test_password_change_closes_sockets_with_4401(connect):
    (alice,) = await setup_room("alice")
    socket = await connect(alice)
    alice.set_password("a-whole-new-secret")
    await sync_to_async(alice.save)()
    assert await socket.expect_close() == 4401


async def test_expired_session_is_noticed_by_the_periodic_recheck():
    (alice,) = await setup_room("alice")
    web = await sync_to_async(logged_in_client)(alice)
    socket = await socket_for_client(web)
    await sync_to_async(Session.objects.update)(expire_date=timezone.now() - timedelta(seconds=1))
    assert await socket.expect_close(timeout=5) == 4401


# --- Presence ---------------------------------------------------------------------------------


async def test_user_list_follows_sockets_across_tabs(connect):
    alice, bob = await setup_room("alice", "bob")
    a = await connect(alice)
    assert [u["username"] for u in (await a.expect("user_list"))["extra"]["users"]] == ["alice"]
    b1 = await connect(bob)
    assert [u["username"] for u in (await a.expect("user_list"))["extra"]["users"]] == ["alice", "bob"]
    b2 = await connect(bob)
    await b1.close()
    assert await a.nothing(0.4)  # bob is still online through his second tab
    await b2.close()
    assert [u["username"] for u in (await a.expect("user_list"))["extra"]["users"]] == ["alice"]


# --- Resume ---------------------------------------------------------------------------------


async def test_resume_with_since_and_changes_since_replays_exactly_what_was_missed(connect):
    alice, bob = await setup_room("alice", "bob")
    for n in range(1, 6):
        await sync_to_async(services.message_create)(user=alice, to="lobby", content=f"m{n}", client_id=f"c{n}")
    b = await connect(bob)
    await b.send({"type": "join_room", "roomId": "lobby"})
    state = await b.expect("room_state")
    seen_seq, seen_change = state["extra"]["lastSeq"], state["extra"]["lastChange"]
    await b.close()
    # While bob is away: two new messages, an edit of an old one, a delete of another.
    ids = await sync_to_async(lambda: dict(Message.objects.values_list("seq", "id")))()
    for n in (6, 7):
        await sync_to_async(services.message_create)(user=alice, to="lobby", content=f"m{n}", client_id=f"c{n}")
    await sync_to_async(services.message_edit)(user=alice, message_id=ids[2], content="m2 edited")
    await sync_to_async(services.message_delete)(user=alice, message_id=ids[3])
    b = await connect(bob)
    await b.send({"type": "join_room", "roomId": "lobby", "since": seen_seq, "changesSince": seen_change})
    history = await b.expect("history")
    assert [m["seq"] for m in history["extra"]["messages"]] == [6, 7]
    assert history["extra"]["hasMore"] is False
    changes = {m["seq"]: m for m in history["extra"]["changes"]}
    assert set(changes) == {2, 3}
    assert changes[2]["content"] == "m2 edited" and changes[2]["extra"]["editedAt"]
    assert changes[3]["content"] == "" and changes[3]["extra"]["deletedAt"]


async def test_replay_is_paged_at_200_and_without_since_gives_latest_50(connect, settings):
    settings.CHAT_POST_BURST = 1000
    alice, bob = await setup_room("alice", "bob")

    @sync_to_async
    def fill():
        for n in range(1, 251):
            services.message_create(user=alice, to="lobby", content=f"m{n}")

    await fill()
    b = await connect(bob)
    await b.send({"type": "join_room", "roomId": "lobby", "since": 10})
    page = await b.expect("history")
    assert [m["seq"] for m in page["extra"]["messages"]] == list(range(11, 211))
    assert page["extra"]["hasMore"] is True
    await b.send({"type": "join_room", "roomId": "lobby"})
    latest = await b.expect("history")
    assert [m["seq"] for m in latest["extra"]["messages"]] == list(range(201, 251))
    assert latest["extra"]["hasMore"] is True


# --- Many writers ----------------------------------------------------------------------------


async def test_three_clients_ten_messages_each_end_with_seqs_1_to_30_everywhere(connect):
    people = await setup_room("ann", "ben", "cat")
    sockets = [await connect(person) for person in people]
    for socket in sockets:
        await socket.drain()

    async def post(index, socket):
        for n in range(10):
            await socket.send(
                {"type": "message", "to": "lobby", "content": f"{index}-{n}", "messageId": f"{index}-{n}"}
            )

    await asyncio.gather(*(post(i, s) for i, s in enumerate(sockets)))
    for socket in sockets:
        seqs = []
        while len(seqs) < 30:
            frame = await socket.receive(timeout=10)
            if frame["type"] == "message":
                seqs.append(frame["seq"])
        assert sorted(seqs) == list(range(1, 31))
        assert len(set(seqs)) == 30
        assert await socket.nothing(0.3) or all(f["type"] != "message" for f in await socket.drain())
    stored = await sync_to_async(lambda: list(Message.objects.order_by("seq").values_list("seq", flat=True)))()
    assert stored == list(range(1, 31))


# --- A client that behaves like the guide's ChatClient --------------------------------------


class GuideLikeClient:
    """What the guide's ChatClient does: sends `connect` on open, queues while down and flushes
    the queue on reconnect, and never re-joins with `since` nor tracks acks."""

    def __init__(self, user):
        self.user = user
        self.queue: list[str] = []
        self.socket = None
        self.messages: list[dict] = []

    async def open(self):
        from tests.conftest import open_socket

        self.socket = await open_socket(self.user, welcome=False)
        await self.socket.send({"type": "connect", "userId": self.user.username, "timestamp": 0})
        while self.queue:
            await self.socket.send(self.queue.pop(0))

    async def drop(self):
        await self.socket.close()
        self.socket = None

    async def send_message(self, content, to, message_id):
        frame = json.dumps(
            {
                "type": "message",
                "from": self.user.username,
                "to": to,
                "content": content,
                "timestamp": 0,
                "messageId": message_id,
            }
        )
        if self.socket is None:
            self.queue.append(frame)
        else:
            await self.socket.send(frame)

    async def collect(self, quiet=0.4):
        for frame in await self.socket.drain(quiet):
            if frame["type"] == "message":
                self.messages.append(frame)


async def test_guide_client_loses_nothing_and_duplicates_nothing_across_a_drop(connect):
    alice, bob = await setup_room("alice", "bob")
    watcher = await connect(bob)
    client = GuideLikeClient(alice)
    await client.open()
    await client.send_message("before", "lobby", "msg_1_a")
    await client.collect()
    # The guide re-sends its queue on reconnect; a frame sent just before the drop and queued
    # again (no ack tracking) must not produce a second copy.
    await client.send_message("in flight", "lobby", "msg_2_b")
    await client.drop()
    client.queue.append(json.dumps({"type": "message", "to": "lobby", "content": "in flight", "messageId": "msg_2_b"}))
    await client.send_message("while down", "lobby", "msg_3_c")
    await client.open()
    await client.collect()
    seen_by_watcher = [f for f in await watcher.drain(0.4) if f["type"] == "message"]
    assert [m["content"] for m in seen_by_watcher] == ["before", "in flight", "while down"]
    assert [m["seq"] for m in seen_by_watcher] == [1, 2, 3]
    stored = await sync_to_async(lambda: list(Message.objects.values_list("content", flat=True)))()
    assert sorted(stored) == sorted(["before", "in flight", "while down"])
    # Rooms keep flowing after the reconnect without a re-join.
    assert "while down" in [m["content"] for m in client.messages]
    assert await sync_to_async(Membership.objects.filter(user=alice).count)() == 1


async def test_new_direct_room_and_invites_send_user_list_from_any_door(connect):
    alice, bob = await setup_room("alice", "bob")
    carol = await sync_to_async(make_user)("carol")
    await sync_to_async(services.room_create)(user=alice, slug="hideout", name="Hideout", kind="private")
    a, c = await connect(alice), await connect(carol)
    for socket in (a, c):
        await socket.drain()
    await sync_to_async(services.direct_room_open)(user=alice, username="carol")
    users = (await c.expect("user_list"))["extra"]["users"]
    assert [u["username"] for u in users] == ["alice", "carol"]
    await sync_to_async(services.member_invite)(user=alice, slug="hideout", username="carol")
    assert (await c.expect("room_added", room="hideout"))["extra"]["reason"] == "invited"
    listed = await a.expect("user_list", room="hideout")
    assert [u["username"] for u in listed["extra"]["users"]] == ["alice", "carol"]


@pytest.mark.skipif(
    not settings.REDIS_URL, reason="the Redis channel layer's blocking receive (the PostgreSQL + Redis pass)"
)
async def test_an_idle_socket_outlives_the_layers_blocking_receive(connect):
    # channels_redis blocks 5 s per receive; the Redis client must wait longer than that.
    (alice,) = await setup_room("alice")
    socket = await connect(alice)
    await socket.drain()
    await asyncio.sleep(7)
    await socket.send({"type": "ping"})
    assert (await socket.expect("pong", timeout=5))["type"] == "pong"
