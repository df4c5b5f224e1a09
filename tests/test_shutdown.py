"""Graceful shutdown (chat/shutdown.py), over real TCP against a real daphne process: on SIGTERM
every socket is closed with 4503 (PROTOCOL.md §4, server going away), nothing acknowledged is
lost, and the process exits within ``CHAT_SHUTDOWN_GRACE_SECONDS`` even when a client never
answers the close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Message
from tests.conftest import make_user, session_cookie
from tests.servers import ROOT, free_port, server_env, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)

GOING_AWAY = 4503


class Server:
    def __init__(self, process: subprocess.Popen, address: str, log_path: str) -> None:
        self.process = process
        self.address = address
        self.log_path = log_path

    def log(self) -> str:
        return Path(self.log_path).read_text()[-4000:]

    async def terminate_and_time(self, timeout: float) -> float:
        """SIGTERM, as a deploy sends it; returns the seconds until the process was gone."""
        signalled = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.process.wait, timeout)
        return time.monotonic() - signalled


@contextlib.contextmanager
def daphne_process(application: str = "chatsite.asgi:application", **env_overrides: str) -> Iterator[Server]:
    """Like ``tests.servers.daphne_server``, but the test holds the process, to signal it."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="daphne-shutdown-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(  # noqa: S603 — our own interpreter and module
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
        cwd=ROOT,
        env=server_env(LOG_LEVEL="INFO", **env_overrides),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, log.name)
        yield Server(process, f"127.0.0.1:{port}", log.name)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


async def open_client(address: str, user) -> websockets.ClientConnection:
    cookie = (await sync_to_async(session_cookie)(user)).decode()
    client = await websockets.connect(
        f"ws://{address}/ws/chat/", additional_headers=[("Origin", f"http://{address}"), ("Cookie", cookie)]
    )
    assert json.loads(await client.recv())["type"] == "welcome"
    return client


async def frames_until_closed(client: websockets.ClientConnection) -> tuple[list[dict], int | None]:
    """Every frame the client reads until the server closes; and the close code it received
    (None: the connection was cut without a close frame, which the client reports as 1006)."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await client.recv()))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd is not None else None


def lobby_with(*names: str) -> list:
    users = [make_user(name) for name in names]
    services.room_create(user=users[0], slug="lobby", name="Lobby")
    for user in users[1:]:
        services.room_join(user=user, slug="lobby")
    return users


def stored(client_id: str) -> bool:
    return Message.objects.filter(client_id=client_id).exists()


async def test_sigterm_closes_every_socket_with_4503_and_keeps_what_was_acknowledged():
    alice, bob, carol = await sync_to_async(lobby_with)("alice", "bob", "carol")
    grace = 10.0
    with daphne_process(CHAT_SHUTDOWN_GRACE_SECONDS=str(grace)) as server:
        clients = [await open_client(server.address, user) for user in (alice, bob, carol, alice)]
        await clients[0].send(json.dumps({"type": "message", "to": "lobby", "content": "before", "messageId": "m1"}))
        while (frame := json.loads(await clients[0].recv()))["type"] != "ack":
            pass
        assert frame["messageId"] == "m1"
        # A post still on its way when the signal comes: if its ack goes out, it was stored.
        await clients[1].send(json.dumps({"type": "message", "to": "lobby", "content": "late", "messageId": "m2"}))
        readers = [asyncio.ensure_future(frames_until_closed(client)) for client in clients]
        took = await server.terminate_and_time(timeout=grace + 5)
        results = await asyncio.wait_for(asyncio.gather(*readers), 5)

        log = server.log()
        assert [code for _, code in results] == [GOING_AWAY] * len(clients), log
        assert took < grace, log
        assert server.process.returncode == 0, log
        assert await sync_to_async(stored)("m1")
        late_acked = any(f["type"] == "ack" and f.get("messageId") == "m2" for f in results[1][0])
        assert not late_acked or await sync_to_async(stored)("m2")
        print(f"SIGTERM to exit: {took:.2f} s; close codes {[code for _, code in results]}; m2 acked: {late_acked}")


def raw_handshake(address: str, cookie: str) -> socket.socket:
    """A WebSocket client reduced to its handshake: from then on it reads nothing and answers
    nothing, not even the close (a frozen tab, a vanished phone behind a NAT)."""
    host, port = address.split(":")
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.sendall(
        (
            f"GET /ws/chat/ HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{address}\r\nCookie: {cookie}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return raw


def close_code_in(data: bytes) -> int | None:
    """The code of the first close frame in what a server sent (its frames are never masked)."""
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, offset)
            offset += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, offset)
            offset += 8
        if opcode == 0x8 and length >= 2:
            return struct.unpack_from("!H", data, offset)[0]
        offset += length
    return None


def read_to_end(raw: socket.socket) -> bytes:
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    return data


async def test_the_server_exits_within_the_grace_period_when_a_client_never_answers_the_close():
    alice, bob = await sync_to_async(lobby_with)("alice", "bob")
    grace = 3.0
    # autobahn's own close-handshake timeout is far longer: only the grace period can end it.
    with daphne_process(CHAT_SHUTDOWN_GRACE_SECONDS=str(grace), CHAT_CLOSE_HANDSHAKE_SECONDS="60") as server:
        cookie = (await sync_to_async(session_cookie)(alice)).decode()
        silent = await asyncio.to_thread(raw_handshake, server.address, cookie)
        polite = await open_client(server.address, bob)
        reader = asyncio.ensure_future(frames_until_closed(polite))
        waiting = asyncio.ensure_future(server.terminate_and_time(timeout=grace + 10))
        # New connections are refused at once, while the process still waits for the silent one.
        await asyncio.sleep(0.5)
        assert server.process.poll() is None
        host, port = server.address.split(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=2):
            pass
        took = await waiting
        _, polite_code = await asyncio.wait_for(reader, 5)

        log = server.log()
        assert polite_code == GOING_AWAY, log
        assert took < grace, log
        # The silent client was sent its 4503 too; it just never read it.
        with silent:
            assert close_code_in(await asyncio.to_thread(read_to_end, silent)) == GOING_AWAY
        print(f"SIGTERM to exit with a silent client: {took:.2f} s (grace {grace} s)")


async def test_the_process_exits_at_the_grace_period_even_with_a_thread_that_never_returns():
    (alice,) = await sync_to_async(lobby_with)("alice")
    grace = 3.0
    with daphne_process("tests.stuck_asgi:application", CHAT_SHUTDOWN_GRACE_SECONDS=str(grace)) as server:
        client = await open_client(server.address, alice)
        reader = asyncio.ensure_future(frames_until_closed(client))
        host, port = server.address.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as stuck:
            stuck.sendall(f"GET /stuck/ HTTP/1.1\r\nHost: {server.address}\r\n\r\n".encode())
            await asyncio.sleep(0.3)
            took = await server.terminate_and_time(timeout=grace + 10)
        _, code = await asyncio.wait_for(reader, 5)

        log = server.log()
        # The sockets were still closed properly; the watchdog ended what could not end.
        assert code == GOING_AWAY, log
        assert took < grace, log
        assert server.process.returncode == 1, log
        assert "exiting now" in log, log
        print(f"SIGTERM to exit with a stuck thread: {took:.2f} s (grace {grace} s)")
