"""An upload begun on one server process and finished on another (PROTOCOL section 5.1: "on
any server process"). Two real daphne processes serve the test database; the first is stopped
outright before the second takes over, so nothing of the upload can live in process memory.
Runs on both configurations: the upload's state is the database and the media directory, and
the uploader's own socket is on the second process, so no cross-process channel layer is needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.test import Client

from chat import services, uploads
from chat.models import Upload
from tests.conftest import make_user, session_cookie
from tests.servers import daphne_server

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 * 1024


async def _expect(connection, frame_type: str, timeout: float = 10) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await connection.recv())
            if frame["type"] == "error":
                raise AssertionError(f"server refused: {frame}")
            if frame["type"] == frame_type:
                return frame


@contextlib.asynccontextmanager
async def _socket(address: str, cookie: str):
    async with websockets.connect(
        f"ws://{address}/ws/chat/", additional_headers=[("Origin", f"http://{address}"), ("Cookie", cookie)]
    ) as connection:
        await _expect(connection, "welcome")
        yield connection


def _chunk(upload_id: str, index: int, data: bytes) -> str:
    payload = data[index * CHUNK : (index + 1) * CHUNK]
    return json.dumps(
        {
            "type": "file_chunk",
            "extra": {"uploadId": upload_id, "index": index, "data": base64.b64encode(payload).decode()},
        }
    )


def _download(user, url: str) -> bytes:
    client = Client()
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    response.close()
    return body


async def test_an_upload_started_on_one_process_finishes_on_another(media_root):
    alice = await sync_to_async(make_user)("alice")
    bob = await sync_to_async(make_user)("bob")
    await sync_to_async(services.room_create)(user=alice, slug="lobby", name="Lobby")
    await sync_to_async(services.room_join)(user=bob, slug="lobby")
    cookie = (await sync_to_async(session_cookie)(alice)).decode()
    data = os.urandom(4 * CHUNK + 777)
    start = {
        "type": "file_start",
        "to": "lobby",
        "messageId": "two-processes",
        "extra": {"name": "both.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
    }

    with daphne_server() as first:
        async with _socket(first, cookie) as connection:
            await connection.send(json.dumps(start))
            upload_id = (await _expect(connection, "file_ready"))["extra"]["uploadId"]
            for index in (0, 1):
                await connection.send(_chunk(upload_id, index, data))
                await _expect(connection, "file_progress")
    # The first process is gone now; what it knew is in the database and the media directory.
    upload = await sync_to_async(Upload.objects.get)(pk=upload_id)
    assert (upload.received, upload.next_index) == (2 * CHUNK, 2)
    assert uploads.partial_path(upload_id).read_bytes() == data[: 2 * CHUNK]

    with daphne_server() as second:
        async with _socket(second, cookie) as connection:
            await connection.send(json.dumps({**start, "extra": {**start["extra"], "uploadId": upload_id}}))
            ready = await _expect(connection, "file_ready")
            assert ready["extra"]["uploadId"] == upload_id
            assert (ready["extra"]["received"], ready["extra"]["nextIndex"]) == (2 * CHUNK, 2)
            for index in (2, 3, 4):
                await connection.send(_chunk(upload_id, index, data))
                await _expect(connection, "file_progress")
            await connection.send(json.dumps({"type": "file_end", "extra": {"uploadId": upload_id}}))
            ack = await _expect(connection, "ack")
            assert ack["messageId"] == "two-processes"
            message = await _expect(connection, "message")
    assert message["id"] == ack["id"]
    assert await sync_to_async(_download)(bob, message["extra"]["attachment"]["url"]) == data
    assert not uploads.partial_path(upload_id).exists()
