"""A socket keeps receiving while one of its own frames waits for the database, and what that
frame causes still comes after its answer (PROTOCOL section 3, "Order")."""

import time

import pytest
from asgiref.sync import sync_to_async

from chat import posting, selectors, services
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def two_rooms():
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(user=alice, slug="lobby", name="Lobby")
    services.room_join(user=bob, slug="lobby")
    services.room_create(user=bob, slug="quiet", name="Quiet")
    return alice, bob


async def test_other_peoples_messages_arrive_while_a_join_is_slow(connect, monkeypatch):
    alice, bob = await two_rooms()
    a, b = await connect(alice), await connect(bob)
    real_history = selectors.history_latest

    def slow_history(**kwargs):
        time.sleep(1.5)
        return real_history(**kwargs)

    monkeypatch.setattr(selectors, "history_latest", slow_history)
    await a.send({"type": "join_room", "roomId": "quiet"})
    await b.send({"type": "message", "to": "lobby", "content": "meanwhile", "messageId": "m1"})
    await b.expect("ack")
    live = await a.expect("message", timeout=1)
    assert live["content"] == "meanwhile"
    await a.expect("history", timeout=3)
    await a.expect("room_added")
    order = [f["type"] for f in a.received if f["type"] in ("message", "room_state", "history", "room_added")]
    assert order == ["message", "room_state", "history", "room_added"]


async def test_the_ack_still_comes_before_the_senders_copy_when_the_echo_is_early(connect, monkeypatch):
    alice, bob = await two_rooms()
    a, b = await connect(alice), await connect(bob)
    real_store = posting.store_posts

    def slow_after_commit(posts):
        outcomes = real_store(posts)
        time.sleep(0.5)  # committed and broadcast: the echo reaches the socket before the ack is sent
        return outcomes

    monkeypatch.setattr(posting, "store_posts", slow_after_commit)
    await a.send({"type": "message", "to": "lobby", "content": "first", "messageId": "e1"})
    assert (await b.expect("message", timeout=2))["content"] == "first"
    await a.expect("message")
    assert [f["type"] for f in a.received if f["type"] in ("ack", "message")] == ["ack", "message"]
