import pytest
from asgiref.sync import sync_to_async

from chat import services
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


async def test_two_members_see_each_others_messages(connect):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    await sync_to_async(services.room_create)(user=alice, slug="lobby", name="Lobby")
    a = await connect(alice)
    b = await connect(bob)
    await b.send({"type": "join_room", "roomId": "lobby"})
    state = await b.expect("room_state")
    assert state["room"] == "lobby"
    await b.expect("history")
    await a.send({"type": "message", "to": "lobby", "content": " hi bob ", "messageId": "m1"})
    ack = await a.expect("ack")
    assert ack["seq"] == 1 and ack["messageId"] == "m1"
    message = await b.expect("message")
    assert message["content"] == "hi bob" and message["from"] == "alice"
    mine = await a.expect("message")
    assert mine["id"] == ack["id"]
    await a.close()
    await b.close()
