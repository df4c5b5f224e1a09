"""Faults: a lost database or channel layer closes with 4503 (reconnect and resume); a bug
answers the frame with server_error and keeps the socket, or closes a socket being set up 4500."""

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from chat import posting, selectors, services
from tests.conftest import make_user, open_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def test_database_lost_during_setup_closes_4503(monkeypatch):
    alice = await sync_to_async(make_user)("alice")

    def unreachable(**kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(selectors, "user_memberships", unreachable)
    socket = await open_socket(alice, welcome=False)
    assert await socket.expect_close() == 4503


async def test_unexpected_failure_during_setup_closes_4500(monkeypatch):
    alice = await sync_to_async(make_user)("alice")

    def broken(**kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(selectors, "user_memberships", broken)
    socket = await open_socket(alice, welcome=False)
    assert await socket.expect_close() == 4500


async def test_a_bug_in_one_frame_answers_server_error_and_keeps_the_socket(connect, monkeypatch):
    alice = await sync_to_async(make_user)("alice")
    await sync_to_async(services.room_create)(user=alice, slug="lobby", name="Lobby")
    socket = await connect(alice)

    def broken(**kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(services, "read_mark", broken)
    await socket.send({"type": "read", "to": "lobby", "extra": {"seq": 1}})
    error = await socket.expect("error")
    assert error["extra"]["code"] == "server_error" and error["extra"]["requestType"] == "read"
    await socket.send({"type": "ping"})
    await socket.expect("pong")


async def test_database_lost_mid_session_closes_4503(connect, monkeypatch):
    alice = await sync_to_async(make_user)("alice")
    await sync_to_async(services.room_create)(user=alice, slug="lobby", name="Lobby")
    socket = await connect(alice)

    def unreachable(posts):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(posting, "store_posts", unreachable)
    await socket.send({"type": "message", "to": "lobby", "content": "hi", "messageId": "m1"})
    assert await socket.expect_close() == 4503
