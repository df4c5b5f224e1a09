"""Hostile input, one suspicious frame or body at a time (issue 10, item 4): each is refused at
the door with ``invalid`` naming the field, its error always encodes as UTF-8, and none reaches
the database (where PostgreSQL's DataError would read as an outage and close the socket 4503).

Frames are sent as a client's JSON.stringify would send them: a lone surrogate travels as a
``\\ud800`` escape (UTF-8 itself cannot carry one), which json.loads turns back into the
character.
"""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Membership, Message, ModerationLog, Room, Upload
from tests.conftest import ConnectionClosed, make_user
from tests.test_api_support import clear_throttles, session_client  # noqa: F401

NUL = "\x00"
SURROGATE = "\ud800"
HEX = "0" * 64


@pytest.fixture
def quiet_chat_logs(caplog):
    """The server logs no traceback for any of this input: it is the client's fault, not ours."""
    caplog.set_level(logging.ERROR)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(("chat", "asyncio"))]
    assert not errors, [r.getMessage() for r in errors]


async def answer(socket) -> tuple[dict, str]:
    """The next frame and its raw text, which must be sendable: valid UTF-8."""
    output = await socket.communicator.receive_output(3)
    if output["type"] == "websocket.close":
        raise ConnectionClosed(output.get("code"))
    text = output["text"]
    text.encode("utf-8")  # what the transport does: raises on a lone surrogate
    return json.loads(text), text


async def refusal(socket, frame: dict) -> dict:
    """Send ``frame``, then a ping; exactly one error must come before the pong."""
    await socket.send(frame)
    await socket.send({"type": "ping"})
    errors = []
    while True:
        got, _ = await answer(socket)
        if got["type"] == "pong":
            break
        if got["type"] == "error":
            errors.append(got)
    assert len(errors) == 1, errors
    return errors[0]


@sync_to_async
def setting_up():
    """alice owns ``lobby``, where bob is a member; both have a direct room's worth of history."""
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(user=alice, slug="lobby", name="Lobby", kind="public")
    services.room_join(user=bob, slug="lobby")
    message = services.message_create(user=alice, to="lobby", content="first", client_id="m0").message
    return alice, bob, message.pk


@sync_to_async
def nothing_written(message_pk: int) -> bool:
    room = Room.objects.get(slug="lobby")
    return (
        Message.objects.count() == 1
        and Message.objects.get(pk=message_pk).content == "first"
        and not Upload.objects.exists()
        and not ModerationLog.objects.exists()
        and room.topic == ""
        and Membership.objects.filter(room=room, muted_until__isnull=False).count() == 0
    )


def _frames_with(bad: str) -> list[tuple[str, dict]]:
    """One frame per text field that reaches a rule, with ``bad`` in that field."""
    upload = "0f8c2a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f"
    return [
        ("to", {"type": "message", "to": f"lobby{bad}", "content": "hi", "messageId": "h1"}),
        ("to", {"type": "message", "to": f"@bob{bad}", "content": "hi", "messageId": "h2"}),
        ("to", {"type": "typing", "to": f"lobby{bad}"}),
        ("to", {"type": "read", "to": f"lobby{bad}", "extra": {"seq": 1}}),
        ("roomId", {"type": "join_room", "roomId": f"lobby{bad}"}),
        ("roomId", {"type": "leave_room", "roomId": f"lobby{bad}"}),
        ("messageId", {"type": "message", "to": "lobby", "content": "hi", "messageId": f"h3{bad}"}),
        ("messageId", {"type": "file_start", "to": "lobby", "messageId": f"f{bad}", "extra": {"name": "a", "size": 3}}),
        ("content", {"type": "message", "to": "lobby", "content": f"hi{bad}", "messageId": "h4"}),
        ("content", {"type": "edit", "extra": {"id": "MESSAGE"}, "content": f"new{bad}"}),
        ("extra.user", {"type": "moderate", "to": "lobby", "extra": {"action": "mute", "user": f"bob{bad}"}}),
        ("extra.topic", {"type": "moderate", "to": "lobby", "extra": {"action": "topic", "topic": f"t{bad}"}}),
        (
            "extra.reason",
            {"type": "moderate", "to": "lobby", "extra": {"action": "mute", "user": "bob", "reason": f"r{bad}"}},
        ),
        ("extra.reason", {"type": "report", "extra": {"id": "MESSAGE", "reason": f"spam{bad}"}}),
        ("extra.name", {"type": "file_start", "to": "lobby", "extra": {"name": f"a{bad}.txt", "size": 3}}),
        (
            "extra.mime",
            {"type": "file_start", "to": "lobby", "extra": {"name": "a.txt", "size": 3, "mime": f"text/plain{bad}"}},
        ),
        (
            "extra.uploadId",
            {"type": "file_start", "to": "lobby", "extra": {"name": "a.txt", "size": 3, "uploadId": f"{upload}{bad}"}},
        ),
        ("extra.sha256", {"type": "file_start", "to": "lobby", "extra": {"name": "a", "size": 3, "sha256": HEX + bad}}),
        ("extra.uploadId", {"type": "file_chunk", "extra": {"uploadId": f"{upload}{bad}", "index": 0, "data": "YQ=="}}),
        ("extra.uploadId", {"type": "file_end", "extra": {"uploadId": f"{upload}{bad}"}}),
    ]


def _cases() -> list:
    cases = []
    for label, bad in (("nul", NUL), ("surrogate", SURROGATE)):
        for field, frame in _frames_with(bad):
            cases.append(pytest.param(field, frame, id=f"{label}-{frame['type']}-{field}"))
    return cases


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("field, frame", _cases())
async def test_nul_or_lone_surrogate_in_a_text_field_is_invalid_by_name(connect, quiet_chat_logs, field, frame):
    alice, _bob, message_pk = await setting_up()
    socket = await connect(alice)
    frame = json.loads(json.dumps(frame).replace('"MESSAGE"', str(message_pk)))
    error = await refusal(socket, frame)
    assert error["extra"]["code"] == "invalid", error
    assert f"'{field}'" in error["content"]
    assert error["extra"]["requestType"] == frame["type"]
    # What the error echoes comes back as the client sent it (a surrogate as its escape).
    if "messageId" in frame:
        assert error["messageId"] == frame["messageId"]
    if "uploadId" in frame.get("extra", {}):
        assert error["extra"]["uploadId"] == frame["extra"]["uploadId"]
    if frame.get("to", "").startswith("lobby") or frame.get("roomId"):
        assert error["room"] == frame.get("to", frame.get("roomId"))
    assert await nothing_written(message_pk)
    # The socket is still open and usable.
    await socket.send({"type": "message", "to": "lobby", "content": "still here", "messageId": "ok"})
    assert (await socket.expect("ack"))["messageId"] == "ok"
    await socket.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"type": "\ud800"}, id="type"),
        pytest.param({"type": "nonsense", "messageId": "\udfff", "to": "\ud800x"}, id="unknown-type-echoes"),
        pytest.param({"type": "ping", "from": "alice\ud800"}, id="from"),
        pytest.param({"type": "edit", "extra": {"id": "\ud800"}, "content": "x"}, id="extra-id"),
        pytest.param({"type": "message", "to": "lobby", "content": 1, "messageId": "x" * 65 + "\ud800"}, id="long-id"),
    ],
)
async def test_an_error_that_echoes_a_lone_surrogate_still_reaches_the_client(connect, quiet_chat_logs, frame):
    alice, _bob, _ = await setting_up()
    socket = await connect(alice)
    error = await refusal(socket, frame)
    assert error["extra"]["code"] in {"invalid", "unknown_type", "identity_mismatch"}
    if isinstance(frame["type"], str):
        assert error["extra"]["requestType"] == frame["type"]
    if isinstance(frame.get("extra", {}).get("id"), str):
        assert error["extra"]["id"] == frame["extra"]["id"]
    await socket.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seconds", [2**62, 10**12, 2**63, 10**9 + 1, -1, 1.5, "60", True])
async def test_mute_seconds_out_of_range_is_invalid(connect, quiet_chat_logs, seconds):
    alice, _bob, message_pk = await setting_up()
    socket = await connect(alice)
    frame = {"type": "moderate", "to": "lobby", "extra": {"action": "mute", "user": "bob", "seconds": seconds}}
    error = await refusal(socket, frame)
    assert error["extra"]["code"] == "invalid" and "'extra.seconds'" in error["content"]
    assert await nothing_written(message_pk)
    # The bound itself is a mute of about 31 years, and works.
    frame["extra"]["seconds"] = 10**9
    await socket.send(frame)
    assert (await socket.expect("moderated"))["extra"]["action"] == "mute"
    await socket.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", [{}, {"a": 1}, [], ["start"], 1, True, 1.5])
@pytest.mark.parametrize("frame_type, field", [("typing", "state"), ("moderate", "action")])
async def test_an_enum_of_the_wrong_type_is_invalid(connect, quiet_chat_logs, frame_type, field, value):
    alice, _bob, _ = await setting_up()
    socket = await connect(alice)
    frame = {"type": frame_type, "to": "lobby", "extra": {field: value, "user": "bob"}}
    error = await refusal(socket, frame)
    assert error["extra"]["code"] == "invalid" and f"'extra.{field}'" in error["content"]
    await socket.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "frame",
    [
        {"type": "join_room", "roomId": "lobby", "since": 2**63},
        {"type": "join_room", "roomId": "lobby", "changesSince": 2**64},
        {"type": "read", "to": "lobby", "extra": {"seq": 2**63}},
        {"type": "edit", "extra": {"id": 2**63}, "content": "x"},
        {"type": "delete", "extra": {"id": -(2**63)}},
        {"type": "report", "extra": {"id": 10**30}},
        {"type": "message", "to": "lobby", "content": "x", "messageId": "big", "extra": {"replyTo": 2**70}},
        {"type": "file_start", "to": "lobby", "extra": {"name": "a", "size": 2**63}},
        {"type": "file_chunk", "extra": {"uploadId": "u", "index": 2**63, "data": ""}},
    ],
)
async def test_numbers_past_a_bigint_are_invalid(connect, quiet_chat_logs, frame):
    alice, _bob, _ = await setting_up()
    socket = await connect(alice)
    error = await refusal(socket, frame)
    assert error["extra"]["code"] == "invalid", error
    await socket.close()


# --- REST: the same checks on every text field of a body (PROTOCOL section 8) -----------------


def _post_raw(client, url: str, body: str):
    # Raw JSON: the test client's own encoder could not send a lone surrogate as UTF-8 either.
    return client.post(url, data=body.encode("ascii"), content_type="application/json")


def _rest_cases() -> list:
    cases = []
    for label, bad in (("nul", NUL), ("surrogate", SURROGATE)):
        for url, body in [
            ("/api/rooms/", {"slug": f"new{bad}", "name": "New"}),
            ("/api/rooms/", {"slug": "new", "name": f"New{bad}"}),
            ("/api/rooms/", {"slug": "new", "topic": f"t{bad}"}),
            ("/api/rooms/", {"slug": "new", "kind": f"public{bad}"}),
            ("/api/rooms/lobby/messages/", {"content": f"hi{bad}", "messageId": "r1"}),
            ("/api/rooms/lobby/messages/", {"content": "hi", "messageId": f"r2{bad}"}),
            ("/api/rooms/lobby/members/", {"username": f"bob{bad}"}),
            ("/api/rooms/lobby/moderation/", {"action": "mute", "user": f"bob{bad}"}),
            ("/api/rooms/lobby/moderation/", {"action": "topic", "topic": f"t{bad}"}),
            ("/api/rooms/lobby/moderation/", {"action": "mute", "user": "bob", "reason": f"r{bad}"}),
            ("/api/rooms/lobby/moderation/", {"action": f"mute{bad}", "user": "bob"}),
            ("/api/rooms/lobby/read/", {"seq": f"1{bad}"}),
            ("/api/messages/MESSAGE/report/", {"reason": f"spam{bad}"}),
        ]:
            cases.append(pytest.param(url, body, id=f"{label}-{url}-{'-'.join(body)}"))
    return cases


@pytest.mark.django_db
@pytest.mark.parametrize("url, body", _rest_cases())
def test_rest_bodies_refuse_nul_and_lone_surrogates(url, body, caplog):
    alice = make_user("alice")
    services.room_create(user=alice, slug="lobby", name="Lobby", kind="public")
    services.room_join(user=make_user("bob"), slug="lobby")
    message = services.message_create(user=alice, to="lobby", content="first", client_id="m0").message
    client = session_client(alice)
    response = _post_raw(client, url.replace("MESSAGE", str(message.pk)), json.dumps(body))
    assert response.status_code == 400, response.content
    response.content.decode("utf-8")
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert any(name in error["message"] for name in body), error
    assert Message.objects.count() == 1 and Room.objects.count() == 1
    assert not ModerationLog.objects.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.django_db
@pytest.mark.parametrize("seconds", [2**62, 10**12, 10**9 + 1])
def test_rest_mute_seconds_share_the_sockets_bound(seconds):
    alice = make_user("alice")
    services.room_create(user=alice, slug="lobby", name="Lobby", kind="public")
    services.room_join(user=make_user("bob"), slug="lobby")
    client = session_client(alice)
    body = {"action": "mute", "user": "bob", "seconds": seconds}
    response = client.post("/api/rooms/lobby/moderation/", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    body["seconds"] = 10**9
    assert client.post("/api/rooms/lobby/moderation/", body, format="json").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/api/search/?q=a%00b",
        "/api/users/?q=a%00b",
        "/api/search/?q=hi&room=lo%00bby",
        "/api/rooms/lobby/messages/?after=%00",
    ],
)
def test_rest_query_parameters_refuse_nul(url):
    alice = make_user("alice")
    services.room_create(user=alice, slug="lobby", name="Lobby", kind="public")
    response = session_client(alice).get(url)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
