"""Chunked uploads over the socket (PROTOCOL section 5) and the /files/ door, end to end."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import zlib
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.utils import timezone
from PIL import Image

from chat import protocol, services, uploads
from chat.models import Attachment, Message, Room, Upload
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 * 1024
# Generous: the machine running the suite may be busy (2 cores, other test runs).
WAIT = 10


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """The test client keeps its database connection open (it disconnects Django's cleanup
    while a request runs): close the sync thread's connection so the test database can go."""
    yield
    await sync_to_async(connections.close_all)()


# --- Helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def lobby():
    """alice (owner) and bob (member) in the public room "lobby"; carol in no room."""
    alice = await sync_to_async(make_user)("alice")
    bob = await sync_to_async(make_user)("bob")
    carol = await sync_to_async(make_user)("carol")
    await sync_to_async(services.room_create)(user=alice, slug="lobby", name="Lobby")
    await sync_to_async(services.room_join)(user=bob, slug="lobby")
    return alice, bob, carol


def start_frame(data: bytes, *, name: str = "data.bin", to: str = "lobby", message_id: str | None = "up-1", **extra):
    frame = {
        "type": "file_start",
        "to": to,
        "extra": {"name": name, "size": len(data), "mime": "application/octet-stream", **extra},
    }
    if message_id is not None:
        frame["messageId"] = message_id
    return frame


def chunk_frame(upload_id: str, index: int, data: bytes) -> dict:
    return {
        "type": "file_chunk",
        "extra": {"uploadId": upload_id, "index": index, "data": base64.b64encode(data).decode()},
    }


def chunks_of(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def send_chunks(socket, upload_id: str, data: bytes, *, first: int = 0) -> dict:
    progress = None
    for index, chunk in enumerate(chunks_of(data)):
        if index < first:
            continue
        await socket.send(chunk_frame(upload_id, index, chunk))
        progress = await socket.expect("file_progress", WAIT)
    return progress


async def upload_file(socket, data: bytes, **start) -> tuple[dict, dict]:
    """A whole upload with sha256; returns (ack, the uploader's copy of the message)."""
    await socket.send(start_frame(data, sha256=hashlib.sha256(data).hexdigest(), **start))
    ready = await socket.expect("file_ready", WAIT)
    await send_chunks(socket, ready["extra"]["uploadId"], data)
    await socket.send({"type": "file_end", "extra": {"uploadId": ready["extra"]["uploadId"]}})
    ack = await socket.expect("ack", WAIT)
    message = await socket.expect("message", WAIT)
    return ack, message


def _db(fn):
    return sync_to_async(fn)()


def _file_messages() -> int:
    return Message.objects.filter(kind=Message.Kind.FILE).count()


def _stored_files(media_root) -> list[str]:
    found = []
    for folder in ("attachments", "thumbnails"):
        for root, _, files in os.walk(media_root / folder):
            found.extend(os.path.join(root, f) for f in files)
    return found


def _partial_size(upload_id: str) -> int | None:
    path = uploads.partial_path(upload_id)
    return path.stat().st_size if path.exists() else None


def download(user, url: str, **headers):
    client = Client()
    if user is not None:
        client.force_login(user)
    response = client.get(url, **headers)
    body = b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content
    response.close()
    return response, body


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` 1-bit pixels whose image data is cut short: a
    few dozen bytes that announce a huge picture (what a decompression bomb looks like to a
    reader of its header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png_bytes(width: int, height: int, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


# --- The round trip ------------------------------------------------------------------------


async def test_multi_chunk_round_trip_downloaded_by_another_member(connect, lobby):
    alice, bob, carol = lobby
    data = os.urandom(2 * CHUNK + 12345)
    a = await connect(alice)
    b = await connect(bob)
    digest = hashlib.sha256(data).hexdigest()
    await a.send(start_frame(data, name="report.bin", sha256=digest))
    ready = await a.expect("file_ready", WAIT)
    assert ready["messageId"] == "up-1" and ready["room"] == "lobby"
    upload_id = ready["extra"]["uploadId"]
    assert ready["extra"] == {
        "uploadId": upload_id,
        "chunkSize": CHUNK,
        "received": 0,
        "nextIndex": 0,
        "size": len(data),
    }

    for index, chunk in enumerate(chunks_of(data)):
        await a.send(chunk_frame(upload_id, index, chunk))
        progress = await a.expect("file_progress", WAIT)
        assert progress["extra"]["nextIndex"] == index + 1
        assert progress["extra"]["received"] == min(len(data), (index + 1) * CHUNK)
        assert progress["messageId"] == "up-1"
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    ack = await a.expect("ack", WAIT)
    assert ack["messageId"] == "up-1" and ack["room"] == "lobby" and ack["seq"] == 1
    mine = await a.expect("message", WAIT)
    assert mine["id"] == ack["id"]

    seen = await b.expect("message", WAIT)
    assert seen["extra"]["kind"] == "file" and seen["from"] == "alice"
    attachment = seen["extra"]["attachment"]
    assert attachment["name"] == "report.bin" and attachment["size"] == len(data)
    assert attachment["mime"] == "application/octet-stream"
    assert attachment["width"] is None and attachment["height"] is None and attachment["thumbnailUrl"] is None
    assert attachment["url"].startswith("/files/")

    response, body = await sync_to_async(download)(bob, attachment["url"])
    assert response.status_code == 200
    assert body == data
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox"
    stored = await _db(lambda: Attachment.objects.get())
    assert stored.sha256 == digest
    # The bytes left the temporary area for storage.
    assert _partial_size(upload_id) is None

    # Strangers and anonymous users: the file does not exist.
    assert (await sync_to_async(download)(carol, attachment["url"]))[0].status_code == 404
    assert (await sync_to_async(download)(None, attachment["url"]))[0].status_code == 404

    # A repeated file_end answers with the first ack and stores nothing more.
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    again = await a.expect("ack", WAIT)
    assert (again["id"], again["seq"], again["messageId"]) == (ack["id"], ack["seq"], "up-1")
    assert await b.nothing()
    assert await _db(_file_messages) == 1
    await a.close()
    await b.close()


async def test_binary_frames_carry_chunks(connect, lobby):
    alice, bob, _ = lobby
    data = os.urandom(CHUNK + 100)
    a = await connect(alice)
    await a.send(start_frame(data, sha256=hashlib.sha256(data).hexdigest()))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    for index, chunk in enumerate(chunks_of(data)):
        await a.communicator.send_to(bytes_data=protocol.binary_chunk_header(upload_id, index) + chunk)
        progress = await a.expect("file_progress", WAIT)
    assert progress["extra"]["received"] == len(data)
    # A wrong index in a binary frame is refused like any chunk, naming the upload and its room.
    await a.communicator.send_to(bytes_data=protocol.binary_chunk_header(upload_id, 7) + b"x")
    error = await a.expect("error", WAIT)
    assert error["extra"]["code"] == "upload_failed" and error["extra"]["requestType"] == "file_chunk"
    assert error["extra"]["uploadId"] == upload_id and error["room"] == "lobby"
    await a.communicator.send_to(bytes_data=b"\x09garbage")
    assert (await a.expect("error", WAIT))["extra"]["code"] == "invalid"
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    await a.expect("ack", WAIT)
    url = (await a.expect("message", WAIT))["extra"]["attachment"]["url"]
    assert (await sync_to_async(download)(bob, url))[1] == data
    await a.close()


async def test_resume_after_a_dropped_socket(connect, lobby):
    alice, bob, _ = lobby
    data = os.urandom(3 * CHUNK)
    a = await connect(alice)
    await a.send(start_frame(data, sha256=hashlib.sha256(data).hexdigest()))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    await a.send(chunk_frame(upload_id, 0, data[:CHUNK]))
    await a.expect("file_progress", WAIT)
    await a.close()

    a2 = await connect(alice)
    await a2.send(start_frame(data, sha256=hashlib.sha256(data).hexdigest(), uploadId=upload_id))
    ready = await a2.expect("file_ready", WAIT)
    assert ready["extra"]["uploadId"] == upload_id
    assert (ready["extra"]["received"], ready["extra"]["nextIndex"]) == (CHUNK, 1)
    await send_chunks(a2, upload_id, data, first=1)
    await a2.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    await a2.expect("ack", WAIT)
    url = (await a2.expect("message", WAIT))["extra"]["attachment"]["url"]
    assert (await sync_to_async(download)(bob, url))[1] == data
    await a2.close()


async def test_a_resent_file_start_finds_its_upload_by_message_id(connect, lobby):
    """The guide's client re-sends its queue after a reconnect: the same file_start again."""
    alice, _, _ = lobby
    data = os.urandom(CHUNK + 1)
    a = await connect(alice)
    await a.send(start_frame(data, message_id="same"))
    first = await a.expect("file_ready", WAIT)
    await a.send(chunk_frame(first["extra"]["uploadId"], 0, data[:CHUNK]))
    await a.expect("file_progress", WAIT)
    await a.send(start_frame(data, message_id="same"))
    second = await a.expect("file_ready", WAIT)
    assert second["extra"]["uploadId"] == first["extra"]["uploadId"]
    assert second["extra"]["nextIndex"] == 1
    assert await _db(lambda: Upload.objects.count()) == 1
    # The same messageId for another file is a mistake, not a resume.
    await a.send(start_frame(data + b"more", message_id="same"))
    assert (await a.expect("error", WAIT))["extra"]["code"] == "invalid"
    await a.close()


async def test_direct_upload_by_username(connect, lobby):
    alice, bob, _ = lobby
    a = await connect(alice)
    b = await connect(bob)
    ack, message = await upload_file(a, b"hello bob\n", name="note.txt", to="@bob", message_id="dm-file")
    assert message["room"].startswith("dm-") and ack["room"] == message["room"]
    assert message["extra"]["attachment"]["mime"] == "text/plain"
    seen = await b.expect("message", WAIT)
    assert seen["id"] == ack["id"]
    await a.close()
    await b.close()


# --- Refusals: each leaves no message and no bytes beyond those accepted ---------------------


async def test_oversize_is_too_large(connect, lobby, settings):
    alice, _, _ = lobby
    settings.CHAT_MAX_UPLOAD_BYTES = 1000
    a = await connect(alice)
    await a.send(start_frame(b"x" * 1001, message_id="big"))
    error = await a.expect("error", WAIT)
    assert error["extra"]["code"] == "too_large" and error["extra"]["requestType"] == "file_start"
    assert error["messageId"] == "big" and error["room"] == "lobby"
    assert await _db(lambda: Upload.objects.count()) == 0
    await a.close()


async def test_storage_quota_is_too_large(connect, lobby, settings):
    alice, _, _ = lobby
    settings.CHAT_UPLOAD_QUOTA_BYTES = 3000
    a = await connect(alice)
    await upload_file(a, os.urandom(2000), message_id="first")
    await a.send(start_frame(os.urandom(1500), message_id="second"))
    assert (await a.expect("error", WAIT))["extra"]["code"] == "too_large"
    await a.close()


async def test_chunks_out_of_order_oversized_or_past_the_size_are_refused_and_resumable(connect, lobby, media_root):
    alice, bob, _ = lobby
    data = os.urandom(CHUNK + 500)
    a = await connect(alice)
    await a.send(start_frame(data, sha256=hashlib.sha256(data).hexdigest()))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]

    async def refused(frame, *, received):
        await a.send(frame)
        error = await a.expect("error", WAIT)
        assert error["extra"]["code"] == "upload_failed"
        assert error["extra"]["requestType"] == "file_chunk" and error["extra"]["uploadId"] == upload_id
        assert error["room"] == "lobby"
        upload = await _db(lambda: Upload.objects.get(pk=upload_id))
        assert upload.received == received
        assert (_partial_size(upload_id) or 0) == received

    await refused(chunk_frame(upload_id, 1, data[:CHUNK]), received=0)  # not nextIndex
    await refused(chunk_frame(upload_id, 0, os.urandom(CHUNK + 1)), received=0)  # over chunkSize
    await refused(chunk_frame(upload_id, 0, data[:100]), received=0)  # short, but not the last
    await a.send(chunk_frame(upload_id, 0, data[:CHUNK]))
    await a.expect("file_progress", WAIT)
    await refused(chunk_frame(upload_id, 1, os.urandom(501)), received=CHUNK)  # past the declared size
    await refused(chunk_frame(upload_id, 0, data[:CHUNK]), received=CHUNK)  # a repeat
    # file_end before every byte arrived: refused, and still resumable.
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    assert (await a.expect("error", WAIT))["extra"]["code"] == "upload_failed"
    assert await _db(_file_messages) == 0 and _stored_files(media_root) == []

    await a.send(chunk_frame(upload_id, 1, data[CHUNK:]))
    await a.expect("file_progress", WAIT)
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    await a.expect("ack", WAIT)
    url = (await a.expect("message", WAIT))["extra"]["attachment"]["url"]
    assert (await sync_to_async(download)(bob, url))[1] == data
    await a.close()


async def test_sha256_mismatch_discards_the_upload(connect, lobby, media_root):
    alice, _, _ = lobby
    data = os.urandom(1000)
    a = await connect(alice)
    await a.send(start_frame(data, sha256="0" * 64))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    await a.send(chunk_frame(upload_id, 0, data))
    await a.expect("file_progress", WAIT)
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    error = await a.expect("error", WAIT)
    assert error["extra"]["code"] == "upload_failed" and error["extra"]["uploadId"] == upload_id
    assert error["extra"]["requestType"] == "file_end" and error["room"] == "lobby"
    assert await _db(lambda: Upload.objects.filter(pk=upload_id).exists()) is False
    assert _partial_size(upload_id) is None
    assert await _db(_file_messages) == 0 and _stored_files(media_root) == []
    # Gone for good: another chunk is refused too.
    await a.send(chunk_frame(upload_id, 1, b"x"))
    assert (await a.expect("error", WAIT))["extra"]["code"] == "upload_failed"
    await a.close()


async def test_non_members_cannot_upload(connect, lobby):
    alice, _, carol = lobby
    await sync_to_async(services.room_create)(user=alice, slug="secret", name="Secret", kind=Room.Kind.PRIVATE)
    c = await connect(carol)
    await c.send(start_frame(b"hi", to="secret", message_id="c1"))
    error = await c.expect("error", WAIT)
    assert error["extra"]["code"] == "not_found" and error["messageId"] == "c1" and error["room"] == "secret"
    await c.send(start_frame(b"hi", to="lobby", message_id="c2"))
    assert (await c.expect("error", WAIT))["extra"]["code"] == "forbidden"
    assert await _db(lambda: Upload.objects.count()) == 0
    await c.close()


async def test_a_fourth_unfinished_upload_is_refused(connect, lobby):
    alice, _, _ = lobby
    a = await connect(alice)
    for n in range(3):
        await a.send(start_frame(b"abc", message_id=f"u{n}"))
        await a.expect("file_ready", WAIT)
    await a.send(start_frame(b"abc", message_id="u3"))
    error = await a.expect("error", WAIT)
    assert error["extra"]["code"] == "upload_failed" and error["messageId"] == "u3"
    assert await _db(lambda: Upload.objects.count()) == 3
    # Resuming one of the three is not a fourth.
    await a.send(start_frame(b"abc", message_id="u1"))
    await a.expect("file_ready", WAIT)
    await a.close()


async def test_another_users_upload_id_is_not_theirs(connect, lobby):
    alice, bob, _ = lobby
    a = await connect(alice)
    b = await connect(bob)
    await a.send(start_frame(b"secret bytes"))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    await b.send(chunk_frame(upload_id, 0, b"secret bytes"))
    assert (await b.expect("error", WAIT))["extra"]["code"] == "upload_failed"
    # Naming it in file_start starts bob's own upload instead.
    await b.send(start_frame(b"secret bytes", message_id="b1", uploadId=upload_id))
    assert (await b.expect("file_ready", WAIT))["extra"]["uploadId"] != upload_id
    await a.close()
    await b.close()


# --- What is stored and how it is served -----------------------------------------------------


async def test_html_under_a_path_name_is_stored_safely_and_downloaded_as_attachment(connect, lobby, media_root):
    alice, bob, _ = lobby
    html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
    a = await connect(alice)
    # The client claims an image: the bytes decide.
    await a.send(start_frame(html, name="../../x.html", mime="image/png"))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    await a.send(chunk_frame(upload_id, 0, html))
    await a.expect("file_progress", WAIT)
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    await a.expect("ack", WAIT)
    attachment = (await a.expect("message", WAIT))["extra"]["attachment"]
    assert attachment["name"] == "x.html" and attachment["mime"] == "text/html"
    stored = await _db(lambda: Attachment.objects.get())
    assert ".." not in stored.file.name and "x.html" not in stored.file.name
    assert not stored.file.name.endswith((".html", ".htm"))
    assert stored.file.name.startswith("attachments/")
    real = os.path.realpath  # noqa: ASYNC240 (a test's own tmp directory)
    assert [real(p) for p in _stored_files(media_root)] == [real(stored.file.path)]
    assert real(stored.file.path).startswith(real(media_root))

    response, body = await sync_to_async(download)(bob, attachment["url"])
    assert response.status_code == 200 and body == html
    assert response["Content-Disposition"].startswith("attachment")
    assert 'filename="x.html"' in response["Content-Disposition"]
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox"
    await a.close()


async def test_an_image_gets_dimensions_and_a_thumbnail(connect, lobby):
    alice, bob, carol = lobby
    data = png_bytes(800, 600)
    a = await connect(alice)
    _, message = await upload_file(a, data, name="photo.png")
    attachment = message["extra"]["attachment"]
    assert (attachment["mime"], attachment["width"], attachment["height"]) == ("image/png", 800, 600)
    assert attachment["thumbnailUrl"]

    response, body = await sync_to_async(download)(bob, attachment["thumbnailUrl"])
    assert response.status_code == 200 and response["Content-Type"] in ("image/jpeg", "image/png")
    assert response["X-Content-Type-Options"] == "nosniff"
    thumb = Image.open(io.BytesIO(body))
    assert max(thumb.size) <= 320 and thumb.size[0] > thumb.size[1]

    response, body = await sync_to_async(download)(bob, attachment["url"])
    assert body == data and response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline")
    assert (await sync_to_async(download)(carol, attachment["thumbnailUrl"]))[0].status_code == 404
    await a.close()


async def test_an_image_bomb_is_refused(connect, lobby, media_root):
    alice, _, _ = lobby
    bomb = png_header_only(20_000, 20_000)
    assert len(bomb) < 200
    a = await connect(alice)
    await a.send(start_frame(bomb, name="bomb.png"))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    await a.send(chunk_frame(upload_id, 0, bomb))
    await a.expect("file_progress", WAIT)
    await a.send({"type": "file_end", "extra": {"uploadId": upload_id}})
    error = await a.expect("error", WAIT)
    assert error["extra"]["code"] == "upload_failed" and error["extra"]["uploadId"] == upload_id
    assert await _db(_file_messages) == 0 and _stored_files(media_root) == []
    assert await _db(lambda: Upload.objects.filter(pk=upload_id).exists()) is False
    assert _partial_size(upload_id) is None
    await a.close()


async def test_deleted_file_messages_are_no_longer_served(connect, lobby):
    alice, bob, _ = lobby
    a = await connect(alice)
    ack, message = await upload_file(a, b"to be deleted\n", name="x.txt")
    url = message["extra"]["attachment"]["url"]
    await sync_to_async(services.message_delete)(user=alice, message_id=ack["id"])
    assert (await sync_to_async(download)(bob, url))[0].status_code == 404
    await a.close()


async def test_signed_urls_on_a_separate_files_origin(connect, lobby, settings):
    alice, bob, carol = lobby
    a = await connect(alice)
    _, message = await upload_file(a, b"%PDF-1.7\n", name="doc.pdf")
    url = message["extra"]["attachment"]["url"]
    settings.CHAT_FILES_ORIGIN = "http://files.testserver"
    settings.ALLOWED_HOSTS = ["testserver", "files.testserver"]

    response, _ = await sync_to_async(download)(bob, url)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("http://files.testserver/files/s/")
    path = location.removeprefix("http://files.testserver")
    # No session on the files origin: the signature is the credential.
    response, body = await sync_to_async(download)(None, path, HTTP_HOST="files.testserver")
    assert response.status_code == 200 and body == b"%PDF-1.7\n"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert (await sync_to_async(download)(carol, url))[0].status_code == 404

    token = path.split("/")[3]
    tampered = path.replace(token, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert (await sync_to_async(download)(None, tampered, HTTP_HOST="files.testserver"))[0].status_code == 404
    settings.CHAT_FILES_SIGNED_SECONDS = -1  # every signature has expired
    assert (await sync_to_async(download)(None, path, HTTP_HOST="files.testserver"))[0].status_code == 404
    await a.close()


@pytest.mark.parametrize("mode", ["x-accel-redirect", "x-sendfile"])
async def test_the_web_server_can_send_the_file(connect, lobby, settings, mode):
    alice, bob, _ = lobby
    a = await connect(alice)
    _, message = await upload_file(a, b"plain words\n", name="a.txt")
    settings.CHAT_FILES_SERVE = mode
    response, body = await sync_to_async(download)(bob, message["extra"]["attachment"]["url"])
    stored = await _db(lambda: Attachment.objects.get())
    assert response.status_code == 200 and body == b""
    if mode == "x-accel-redirect":
        assert response["X-Accel-Redirect"] == "/protected-files/" + stored.file.name
    else:
        assert response["X-Sendfile"] == stored.file.path
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox"
    await a.close()


# --- Expiry --------------------------------------------------------------------------------


def _partial_upload(user, room, *, expires_in: timedelta, data: bytes = b"partial") -> Upload:
    upload = Upload.objects.create(
        user=user,
        room=room,
        name="p.bin",
        size=1000,
        received=len(data),
        next_index=1,
        expires_at=timezone.now() + expires_in,
    )
    path = uploads.partial_path(upload.pk)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return upload


def test_purge_uploads_removes_only_expired_ones(db):
    alice = make_user("alice")
    room = services.room_create(user=alice, slug="lobby", name="Lobby")
    expired = _partial_upload(alice, room, expires_in=timedelta(seconds=-1))
    fresh = _partial_upload(alice, room, expires_in=timedelta(minutes=30))
    message = services.message_create(user=alice, to="lobby", content="f", kind=Message.Kind.FILE).message
    finished = Upload.objects.create(
        user=alice, room=room, name="d.bin", size=1, received=1, next_index=1, message=message,
        expires_at=timezone.now() + timedelta(hours=1),
    )  # fmt: skip
    orphan = uploads.partial_path("0" * 32)
    orphan.write_bytes(b"lost")
    os.utime(orphan, (0, 0))

    call_command("purge_uploads", verbosity=0)

    assert not Upload.objects.filter(pk=expired.pk).exists()
    assert not uploads.partial_path(expired.pk).exists()
    assert Upload.objects.filter(pk=fresh.pk).exists()
    assert uploads.partial_path(fresh.pk).read_bytes() == b"partial"
    assert Upload.objects.filter(pk=finished.pk).exists()
    assert not orphan.exists()


async def test_an_expired_upload_cannot_be_resumed(connect, lobby, settings):
    alice, _, _ = lobby
    a = await connect(alice)
    data = os.urandom(CHUNK + 1)
    await a.send(start_frame(data))
    upload_id = (await a.expect("file_ready", WAIT))["extra"]["uploadId"]
    await _db(lambda: Upload.objects.filter(pk=upload_id).update(expires_at=timezone.now() - timedelta(seconds=1)))
    await a.send(chunk_frame(upload_id, 0, data[:CHUNK]))
    assert (await a.expect("error", WAIT))["extra"]["code"] == "upload_failed"
    await a.send(start_frame(data, uploadId=upload_id))
    ready = await a.expect("file_ready", WAIT)
    assert ready["extra"]["uploadId"] != upload_id and ready["extra"]["received"] == 0
    await a.close()
