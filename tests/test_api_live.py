"""The REST door and the socket are one chat: a REST post reaches open sockets as the very same
message object, an invitation reaches the invited user's sockets, a ticket opens a socket, and
both doors draw on one posting budget."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import selectors
from tests.conftest import make_user
from tests.test_api_support import clear_throttles, error_code, room, session_client, token_client  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def _setup_lobby():
    alice, bob = make_user("alice"), make_user("bob")
    room(alice, "lobby", members=(bob,))
    return alice, bob


async def test_rest_post_reaches_sockets_as_the_same_message_object(connect):
    alice, bob = await sync_to_async(_setup_lobby)()
    bob_socket = await connect(bob)
    alice_socket = await connect(alice)
    client = await sync_to_async(token_client)(alice)

    posted = await sync_to_async(client.post)(
        "/api/rooms/lobby/messages/", {"content": "hi @bob", "messageId": "rest-1"}, format="json"
    )
    assert posted.status_code == 201
    frame = await bob_socket.expect("message")
    assert frame == posted.json()
    assert frame["extra"]["mentions"] == ["bob"]
    assert await alice_socket.expect("message") == frame  # the author's other sockets too

    # The history page holds the identical object.
    page = await sync_to_async(client.get)("/api/rooms/lobby/messages/")
    assert page.json()["results"] == [frame]

    # A repeated messageId stores and broadcasts nothing.
    again = await sync_to_async(client.post)(
        "/api/rooms/lobby/messages/", {"content": "hi @bob", "messageId": "rest-1"}, format="json"
    )
    assert again.status_code == 200 and again.json() == frame
    assert await bob_socket.nothing(0.3)


async def test_socket_message_frame_equals_rest_item(connect):
    alice, bob = await sync_to_async(_setup_lobby)()
    alice_socket = await connect(alice)
    await alice_socket.send({"type": "message", "to": "lobby", "content": "from the socket", "messageId": "s-1"})
    await alice_socket.expect("ack")
    frame = await alice_socket.expect("message")
    client = await sync_to_async(session_client)(bob)
    page = await sync_to_async(client.get)("/api/rooms/lobby/messages/")
    assert page.json()["results"] == [frame]


async def test_rest_edit_and_delete_reach_sockets(connect):
    alice, bob = await sync_to_async(_setup_lobby)()
    bob_socket = await connect(bob)
    client = await sync_to_async(session_client)(alice)
    posted = (await sync_to_async(client.post)("/api/rooms/lobby/messages/", {"content": "v1"}, format="json")).json()
    await bob_socket.expect("message")
    url = f"/api/rooms/lobby/messages/{posted['id']}/"
    await sync_to_async(client.patch)(url, {"content": "v2"}, format="json")
    updated = await bob_socket.expect("message_updated")
    assert updated["extra"]["id"] == posted["id"] and updated["extra"]["content"] == "v2"
    await sync_to_async(client.delete)(url)
    deleted = await bob_socket.expect("message_deleted")
    assert deleted["extra"]["change"] == updated["extra"]["change"] + 1


async def test_invited_user_hears_room_added_and_then_the_rooms_messages(connect):
    def setup():
        alice, carol = make_user("alice"), make_user("carol")
        room(alice, "secret", kind="private")
        return alice, carol

    alice, carol = await sync_to_async(setup)()
    carol_socket = await connect(carol)
    client = await sync_to_async(session_client)(alice)
    added = await sync_to_async(client.post)("/api/rooms/secret/members/", {"username": "carol"}, format="json")
    assert added.status_code == 201
    frame = await carol_socket.expect("room_added")
    assert frame["room"] == "secret" and frame["extra"]["reason"] == "invited"
    # Her socket now receives the room without joining it.
    await sync_to_async(client.post)("/api/rooms/secret/messages/", {"content": "welcome carol"}, format="json")
    assert (await carol_socket.expect("message"))["content"] == "welcome carol"


async def test_ticket_from_rest_opens_a_socket_once(connect):
    alice, _ = await sync_to_async(_setup_lobby)()
    client = await sync_to_async(token_client)(alice)
    response = await sync_to_async(client.post)("/api/ws-ticket/")
    ticket = response.json()["ticket"]
    socket = await connect(None, headers=[], path=f"/ws/chat/?ticket={ticket}")
    welcome = await socket.expect("welcome")
    assert welcome["extra"]["user"]["username"] == "alice"
    reused = await connect(None, headers=[], path=f"/ws/chat/?ticket={ticket}")
    assert await reused.expect_close() == 4401


async def test_socket_and_rest_share_one_posting_budget(connect, settings):
    settings.CHAT_POST_REFILL_PER_SECOND = 0.1  # no refill to speak of, however slow the machine
    alice, _ = await sync_to_async(_setup_lobby)()
    alice_socket = await connect(alice)
    for i in range(10):
        await alice_socket.send({"type": "message", "to": "lobby", "content": f"s{i}", "messageId": f"s{i}"})
        await alice_socket.expect("ack")
    client = await sync_to_async(session_client)(alice)
    refused = await sync_to_async(client.post)("/api/rooms/lobby/messages/", {"content": "rest"}, format="json")
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    # ...and a socket post that repeats an id is still answered with its first ack.
    await alice_socket.send({"type": "message", "to": "lobby", "content": "s0", "messageId": "s0"})
    ack = await alice_socket.expect("ack")
    assert ack["seq"] == 1
    assert await sync_to_async(lambda: selectors.room_access(user=alice, slug="lobby").room.last_seq)() == 10
