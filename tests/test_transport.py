"""Transport rules daphne applies for us (chat/transport.py), over real TCP: a client that
stopped reading is closed with 4408, an oversized frame is answered with 1009."""

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Message, Room
from tests.conftest import make_user, session_cookie
from tests.servers import daphne_server

pytestmark = pytest.mark.django_db(transaction=True)


async def open_client(address: str, user, **options) -> websockets.ClientConnection:
    cookie = (await sync_to_async(session_cookie)(user)).decode()
    return await websockets.connect(
        f"ws://{address}/ws/chat/",
        additional_headers=[("Origin", f"http://{address}"), ("Cookie", cookie)],
        max_size=None,
        **options,
    )


def long_history(user, messages: int = 50) -> None:
    room = services.room_create(user=user, slug="lobby", name="Lobby")
    for seq in range(1, messages + 1):
        Message.objects.create(room=room, author=user, seq=seq, content=f"{seq} " + "x" * 3990)
    Room.objects.filter(pk=room.pk).update(last_seq=messages)


async def test_a_client_that_stops_reading_is_closed_4408_and_can_reconnect():
    alice = await sync_to_async(make_user)("alice")
    await sync_to_async(long_history)(alice)
    with daphne_server(CHAT_SLOW_READER_BYTES=str(256 * 1024), CHAT_CLOSE_HANDSHAKE_SECONDS="20") as address:
        # A client that stops reading from its socket as soon as two frames wait unread (and
        # sends no keep-alive pings of its own): what a frozen tab or a suspended phone does.
        slow = await open_client(address, alice, max_queue=2, ping_interval=None)
        # Each join is answered with 50 messages of 4 kB; the client reads none of them.
        for _ in range(200):
            await slow.send(json.dumps({"type": "join_room", "roomId": "lobby"}))
        await asyncio.sleep(5)
        # Coming back: everything queued before the close arrives, then the close itself.
        received = 0
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 30)
                received += 1
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
        assert 0 < received < 200 * 3  # far fewer than the 600 frames asked for
        # The client reconnects and carries on.
        again = await open_client(address, alice)
        assert json.loads(await again.recv())["type"] == "welcome"
        await again.close()


async def test_a_frame_over_the_transport_limit_is_answered_1009():
    alice = await sync_to_async(make_user)("alice")
    with daphne_server() as address:
        client = await open_client(address, alice)
        assert json.loads(await client.recv())["type"] == "welcome"
        await client.send(json.dumps({"type": "message", "to": "lobby", "content": "x" * (2 * 1024 * 1024)}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(client.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
