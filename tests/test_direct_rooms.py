"""Direct rooms open only by a post or a file_start to ``@username``, after the posting limit
(PROTOCOL.md section 2): ``typing`` and ``read`` to a pair with no direct room are not_found and
create nothing."""

import pytest
from asgiref.sync import sync_to_async

from chat.models import Room
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def direct_rooms() -> int:
    return Room.objects.filter(kind=Room.Kind.DIRECT).count()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "typing", "extra": {"state": "start"}},
        {"type": "read", "extra": {"seq": 1}},
    ],
)
async def test_typing_and_read_to_a_pair_without_a_direct_room_are_not_found_and_open_nothing(connect, frame):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    a, b = await connect(alice), await connect(bob)
    await a.send({**frame, "to": "@bob"})
    error = await a.expect("error")
    assert error["extra"]["code"] == "not_found" and error["extra"]["requestType"] == frame["type"]
    assert await direct_rooms() == 0
    assert await b.nothing()  # no room_added


async def test_typing_reaches_the_other_side_once_the_direct_room_exists(connect):
    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    a, b = await connect(alice), await connect(bob)
    await a.send({"type": "message", "to": "@bob", "content": "hi", "messageId": "d1"})
    await a.expect("ack")
    await b.expect("room_added")
    await b.expect("message")
    await a.send({"type": "typing", "to": "@bob", "extra": {"state": "start"}})
    typing = await b.expect("typing")
    assert typing["from"] == "alice"


async def test_a_post_to_a_user_refused_by_the_posting_limit_opens_no_room(connect, settings):
    settings.CHAT_POST_BURST = 1
    settings.CHAT_POST_REFILL_PER_SECOND = 0.001
    alice = await sync_to_async(make_user)("alice")
    await sync_to_async(make_user)("bob")
    await sync_to_async(make_user)("carol")
    a = await connect(alice)
    await a.send({"type": "message", "to": "@bob", "content": "hi", "messageId": "d1"})
    await a.expect("ack")
    await a.send({"type": "message", "to": "@carol", "content": "hi", "messageId": "d2"})
    refused = await a.expect("error")
    assert refused["extra"]["code"] == "rate_limited"
    assert await direct_rooms() == 1
