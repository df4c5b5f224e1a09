"""Shared fixtures: users, logged-in socket clients, and a clean slate between tests.

The suite runs as it is on the embedded default and on PostgreSQL + Redis (``DATABASE_URL`` and
``REDIS_URL`` set): nothing here mocks either.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
from typing import Any, ClassVar

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from accounts.models import User
from chat import shared_state

ORIGIN = (b"origin", b"http://localhost:8000")
_usernames = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def close_database_pools(django_db_setup, django_db_blocker):
    """PostgreSQL will not drop the test database while any connection to it is open: close the
    pool, then end whatever session is left (a worker thread's connection never handed back)."""
    yield
    with django_db_blocker.unblock():
        connection = connections["default"]
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()
        connection.close_pool()


@pytest.fixture(autouse=True)
def clean_shared_state():
    shared_state.reset_for_tests()
    channel_layers.backends.clear()
    yield
    shared_state.reset_for_tests()
    channel_layers.backends.clear()
    # Async tests touch the database from asgiref's shared worker thread; close its connection
    # so that PostgreSQL lets the test database be dropped at the end.
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(autouse=True)
def media_root(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def make_user(username: str | None = None, **fields: Any) -> User:
    username = username or f"user{next(_usernames)}"
    return User.objects.create_user(username=username, password="pw-" + username, **fields)


@pytest.fixture
def user_factory(db):
    return make_user


def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


class ChatSocket:
    """A WebsocketCommunicator speaking JSON frames, with helpers to wait for a given type."""

    open_sockets: ClassVar[list[ChatSocket]] = []

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.received: list[dict] = []
        ChatSocket.open_sockets.append(self)

    async def send(self, frame: dict | str) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 3) -> dict:
        output = await self.communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            raise ConnectionClosed(output.get("code"))
        frame = json.loads(output["text"])
        self.received.append(frame)
        return frame

    async def expect(self, frame_type: str, timeout: float = 3, **match: Any) -> dict:
        """The next frame of ``frame_type`` (matching ``match`` on top-level fields); frames of
        other types on the way are kept in ``received``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {frame_type} {match or ''} within {timeout}s; got {self.received[-5:]}")
            frame = await self.receive(remaining)
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def expect_close(self, timeout: float = 3) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.receive(max(0.01, deadline - loop.time()))
            except ConnectionClosed as closed:
                return closed.code
            if loop.time() > deadline:
                raise AssertionError("socket was not closed")

    async def drain(self, quiet: float = 0.2) -> list[dict]:
        """Read until the socket has been quiet for ``quiet`` seconds; returns what came."""
        frames = []
        while not await self.communicator.receive_nothing(quiet):
            frames.append(await self.receive())
        return frames

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout)

    async def close(self) -> None:
        await self.communicator.disconnect()
        if self in ChatSocket.open_sockets:
            ChatSocket.open_sockets.remove(self)


class ConnectionClosed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


def _application():
    from chatsite.asgi import application

    return application


async def open_socket(
    user: User | None = None, *, headers: list | None = None, path: str = "/ws/chat/", welcome: bool = True
) -> ChatSocket:
    if headers is None:
        headers = [ORIGIN]
        if user is not None:
            headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(_application(), path, headers=headers)
    socket = ChatSocket(communicator)
    connected, _ = await communicator.connect()
    assert connected
    if welcome and user is not None:
        await socket.expect("welcome")
    return socket


@pytest.fixture
def connect():
    """``await connect(user)``: a socket logged in as ``user``, past its ``welcome``."""

    async def _connect(user: User | None = None, **kwargs: Any) -> ChatSocket:
        return await open_socket(user, **kwargs)

    return _connect


@pytest.fixture
async def close_sockets_left_open():
    """Close, as a browser would, every socket an async test left open, so that each consumer
    leaves its groups and presence through its own disconnect path. Left open, they would all be
    cancelled at once with the test's event loop, and a channels_redis ``receive`` cancelled in
    the middle of another consumer's read can then wait forever."""
    yield
    while ChatSocket.open_sockets:
        await ChatSocket.open_sockets.pop().close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.fixturenames.append("close_sockets_left_open")
