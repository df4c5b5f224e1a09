"""Parts of a socket that must not die silently (issue 10, "the defects listed above"): the
session re-check, the frame loop after a held event fails, and a room's presence announcements
after a waiting one was cancelled."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.db import OperationalError

from chat import broadcast, consumers, selectors, services
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def lobby_with(*names):
    users = [make_user(name) for name in names]
    services.room_create(user=users[0], slug="lobby", name="Lobby")
    for user in users[1:]:
        services.room_join(user=user, slug="lobby")
    return users


async def test_the_session_recheck_survives_a_failing_round_and_still_closes_a_logged_out_socket(
    connect, monkeypatch
):
    (alice,) = await lobby_with("alice")
    real_verdicts = selectors.socket_auth_verdicts
    failures = []

    def first_round_fails(**kwargs):
        if not failures:
            failures.append(1)
            raise OperationalError("the database went away for a moment")
        return real_verdicts(**kwargs)

    monkeypatch.setattr(selectors, "socket_auth_verdicts", first_round_fails)
    socket = await connect(alice)
    # The test settings re-check every 0.5 s (on average): wait for the failing round.
    for _ in range(50):
        if failures:
            break
        await asyncio.sleep(0.1)
    assert failures
    await sync_to_async(Session.objects.all().delete)()  # logged out everywhere
    assert await socket.expect_close(timeout=5) == 4401


async def test_a_held_event_that_fails_does_not_stop_the_sockets_frames(connect, monkeypatch):
    alice, bob = await lobby_with("alice", "bob")
    real_subscribed = consumers.ChatConsumer._subscribed

    async def fails_once(self, event):
        monkeypatch.setattr(consumers.ChatConsumer, "_subscribed", real_subscribed)
        raise RuntimeError("a broken event")

    monkeypatch.setattr(consumers.ChatConsumer, "_subscribed", fails_once)
    socket = await connect(alice)
    # A first message to @bob opens the direct room: its room_added to alice is held until the
    # ack is out, and then fails.
    await socket.send({"type": "message", "to": f"@{bob.username}", "content": "hi", "messageId": "d1"})
    await socket.expect("ack")
    await socket.send({"type": "ping"})
    await socket.expect("pong", timeout=3)


async def test_presence_announcements_go_on_after_a_waiting_one_is_cancelled(connect, monkeypatch):
    alice, bob = await lobby_with("alice", "bob")
    room_id = await sync_to_async(lambda: services.selectors.room_access(user=alice, slug="lobby").room.pk)()
    socket = await connect(alice)
    await socket.send({"type": "join_room", "roomId": "lobby"})
    await socket.expect("user_list")
    await socket.drain()

    release = threading.Event()
    real_profiles = selectors.member_profiles

    def slow_profiles(**kwargs):
        release.wait(5)
        return real_profiles(**kwargs)

    monkeypatch.setattr(selectors, "member_profiles", slow_profiles)
    first = asyncio.ensure_future(broadcast.announce_presence(room_id=room_id, room_slug="lobby"))
    await asyncio.sleep(0.1)  # the first holds the room's turn, reading
    waiting = asyncio.ensure_future(broadcast.announce_presence(room_id=room_id, room_slug="lobby"))
    await asyncio.sleep(0.1)
    waiting.cancel()  # as a socket that goes away mid-join does
    release.set()
    await first
    await socket.expect("user_list")
    monkeypatch.setattr(selectors, "member_profiles", real_profiles)
    await broadcast.announce_presence(room_id=room_id, room_slug="lobby")
    await socket.expect("user_list", timeout=3)


async def test_one_round_of_rechecks_closes_only_the_sockets_whose_session_ended(connect):
    alice, bob = await lobby_with("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    # alice's session is deleted without a signal (as clearsessions or the admin do)
    sessions = await sync_to_async(lambda: list(Session.objects.all()))()
    bob_key = next(s.session_key for s in sessions if s.get_decoded().get("_auth_user_id") == str(bob.pk))
    await sync_to_async(Session.objects.exclude(session_key=bob_key).delete)()
    assert await a.expect_close(timeout=5) == 4401
    await asyncio.sleep(1.5)  # three more rounds of re-checks at the test settings' 0.5 s
    await b.send({"type": "ping"})
    await b.expect("pong")
