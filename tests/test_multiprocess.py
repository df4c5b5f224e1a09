"""Two daphne processes sharing one chat through PostgreSQL and Redis (PROTOCOL section 1:
presence and delivery across processes). Needs ``REDIS_URL``: with the in-memory layer each
process is its own island by design, so this module runs in the PostgreSQL + Redis pass."""

import asyncio
import contextlib
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from chat import services
from tests.conftest import make_user, session_cookie
from tests.servers import daphne_server

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="several processes need REDIS_URL (the PostgreSQL + Redis pass)"),
]


class Peer:
    def __init__(self, connection):
        self.connection = connection

    async def send(self, frame):
        await self.connection.send(json.dumps(frame))

    async def expect(self, frame_type, timeout=5, **match):
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.connection.recv())
                if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                    return frame


async def open_peer(stack, address, user):
    cookie = (await sync_to_async(session_cookie)(user)).decode()
    connection = await stack.enter_async_context(
        websockets.connect(
            f"ws://{address}/ws/chat/",
            additional_headers=[("Origin", f"http://{address}"), ("Cookie", cookie)],
        )
    )
    peer = Peer(connection)
    await peer.expect("welcome")
    return peer


@pytest.fixture
def two_servers():
    with daphne_server() as first, daphne_server() as second:
        yield first, second


async def test_messages_presence_and_direct_rooms_cross_processes(two_servers):
    first, second = two_servers
    alice, bob, carol = [await sync_to_async(make_user)(name) for name in ("alice", "bob", "carol")]
    await sync_to_async(services.room_create)(user=alice, slug="lobby", name="Lobby")
    await sync_to_async(services.room_join)(user=bob, slug="lobby")
    async with contextlib.AsyncExitStack() as stack:
        a = await open_peer(stack, first, alice)
        b = await open_peer(stack, second, bob)
        c = await open_peer(stack, first, carol)
        # presence: alice, on the other process, sees bob come online
        while True:
            users = (await a.expect("user_list", room="lobby"))["extra"]["users"]
            if [u["username"] for u in users] == ["alice", "bob"]:
                break
        await a.send({"type": "message", "to": "lobby", "content": "across", "messageId": "x1"})
        ack = await a.expect("ack")
        received = await b.expect("message")
        assert (received["id"], received["seq"], received["content"]) == (ack["id"], 1, "across")
        # a new direct room opened on process two reaches carol on process one before its message
        await b.send({"type": "message", "to": "@carol", "content": "hi carol", "messageId": "d1"})
        added = await c.expect("room_added")
        message = await c.expect("message")
        assert added["room"] == message["room"] and message["content"] == "hi carol"
        # typing crosses too, and a leave on one process reaches the user's socket on the other
        await b.send({"type": "typing", "to": "lobby"})
        assert (await a.expect("typing"))["from"] == "bob"
        second_bob = await open_peer(stack, first, bob)
        await b.send({"type": "leave_room", "roomId": "lobby"})
        assert (await second_bob.expect("room_removed"))["room"] == "lobby"
