"""Fuzzing the socket's door (issue 10, item 1): any frame at all gets one clean answer.

Two levels. ``protocol.parse`` under hypothesis, over every frame type with any JSON value in
any field: it returns a typed request whose fields are fit to use, or raises ``FrameError``,
and the error frame built from it always encodes as UTF-8. Then a few hundred random frames
through the real consumer on one socket: every frame is answered exactly as the protocol says
(one answer, or none where the protocol sends none), the socket is never closed, and nothing is
logged as an error.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import logging
import os
import random
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from chat import protocol, services
from chat.protocol import FrameError
from tests.conftest import ConnectionClosed, make_user

USERNAME, USER_ID = "alice", 7
HEX = "ab" * 32

# The fields each client frame type reads (PROTOCOL section 3): top level, then ``extra``.
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "connect": ((), ()),
    "ping": ((), ()),
    "join_room": (("roomId", "since", "changesSince"), ()),
    "leave_room": (("roomId",), ()),
    "message": (("to", "content", "messageId"), ("replyTo",)),
    "typing": (("to",), ("state",)),
    "read": (("to",), ("seq",)),
    "edit": (("content",), ("id",)),
    "delete": ((), ("id",)),
    "moderate": (("to",), ("action", "user", "seconds", "reason", "topic")),
    "report": ((), ("id", "reason")),
    "file_start": (("to", "messageId"), ("name", "size", "mime", "sha256", "uploadId")),
    "file_chunk": ((), ("uploadId", "index", "data")),
    "file_end": ((), ("uploadId",)),
}
EVERY_TOP = tuple(sorted({k for top, _ in FIELDS.values() for k in top} | {"from", "userId", "timestamp"}))
EVERY_EXTRA = tuple(sorted({k for _, extra in FIELDS.values() for k in extra} | {"emoji", "on"}))
REFUSAL_CODES = {"bad_json", "unknown_type", "invalid", "identity_mismatch"}

NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "\udc00\ud800", "lobby\x00", "@bob\ud800", "x" * 65]
NASTY_NUMBERS = [0, 1, -1, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**9, 10**9 + 1, 10**12, 10**30]
PLAUSIBLE = [
    "lobby", "@bob", "@alice", "alice", "7", 7, "start", "stop", "hi", "m1", "YQ==", HEX,
    "0f8c2a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f", *sorted(protocol.MODERATION_ACTIONS),
]  # fmt: skip

# Text as json.loads can hand it over: any code point, lone surrogates and NUL included.
any_text = st.text(st.characters() | st.characters(categories=["Cs"]) | st.just("\x00"), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(NASTY_NUMBERS)
    | st.floats()
    | any_text
    | st.sampled_from(NASTY_TEXT)
    | st.sampled_from(PLAUSIBLE)
)
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(any_text, kids, max_size=3), max_leaves=8
)


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    frame_type = draw(st.sampled_from(sorted(FIELDS)) | st.sampled_from(["chat.frame", "nonsense"]) | json_values)
    top, extra_keys = FIELDS.get(frame_type, (EVERY_TOP, EVERY_EXTRA)) if isinstance(frame_type, str) else ((), ())
    keys = st.sampled_from(top + ("from", "userId")) if top else st.sampled_from(EVERY_TOP)
    frame = draw(st.dictionaries(keys | any_text, json_values, max_size=6))
    frame["type"] = frame_type
    extra = draw(st.dictionaries(st.sampled_from(extra_keys or EVERY_EXTRA) | any_text, json_values, max_size=6))
    frame["extra"] = draw(st.just(extra) | json_values)
    if draw(st.booleans()):
        del frame["extra"]
    return frame


def _wire(frame: dict[str, Any], form: str) -> str | bytes:
    if form == "raw":
        # Surrogates as characters, not escapes: what a caller other than the transport might pass.
        return json.dumps(frame, ensure_ascii=False, allow_nan=True)
    text = json.dumps(frame, allow_nan=True)
    return text.encode() if form == "bytes" else text


def _assert_fit(request: protocol.Request) -> None:
    """A parsed request holds only values a service may use as they are."""
    for item in dataclasses.fields(request):
        value = getattr(request, item.name)
        if isinstance(value, str):
            assert protocol.unfit_text(value) is None, (item.name, value)
        elif isinstance(value, int):
            assert not isinstance(value, bool) and 0 <= value <= protocol.MAX_INT, (item.name, value)
    if isinstance(request, protocol.Typing):
        assert request.state in protocol.TYPING_STATES
    if isinstance(request, protocol.Moderate):
        assert request.action in protocol.MODERATION_ACTIONS
        assert request.seconds is None or request.seconds <= protocol.MAX_MODERATION_SECONDS


def _assert_error_encodes(code: str, message: str, context: protocol.RequestContext, frame: Any) -> None:
    text = protocol.encode(protocol.error_frame(code, message, context, now_ms=0))
    text.encode("utf-8")  # what the transport does with it
    sent = json.loads(text)
    if not isinstance(frame, dict) or code == "bad_json":
        return
    # What the error echoes comes back exactly as the client sent it.
    if isinstance(frame.get("type"), str):
        assert sent["extra"]["requestType"] == frame["type"]
    if isinstance(frame.get("messageId"), str):
        assert sent["messageId"] == frame["messageId"]


@fuzz_settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames(), form=st.sampled_from(["text", "bytes", "raw"]))
def test_parse_returns_a_fit_request_or_a_frame_error_that_encodes(frame, form):
    try:
        request = protocol.parse(_wire(frame, form), username=USERNAME, user_id=USER_ID)
    except FrameError as error:
        assert error.code in REFUSAL_CODES
        assert error.message.isascii() or protocol.unfit_text(error.message) is None
        _assert_error_encodes(error.code, error.message, error.context, frame)
        return
    assert request.context.request_type == frame["type"]
    _assert_fit(request)
    # A rule may still refuse it later, echoing the same context.
    _assert_error_encodes("not_found", "no such room", request.context, frame)


@fuzz_settings(max_examples=500, deadline=None)
@given(text=st.text(st.characters() | st.characters(categories=["Cs"]), max_size=60) | st.binary(max_size=60))
def test_parse_of_any_text_at_all_raises_only_frame_errors(text):
    try:
        protocol.parse(text, username=USERNAME, user_id=USER_ID)
    except FrameError as error:
        assert error.code in REFUSAL_CODES
        _assert_error_encodes(error.code, error.message, error.context, None)


@fuzz_settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=80) | st.builds(lambda n, rest: bytes([1, n]) + rest, st.integers(0, 255), st.binary()))
def test_binary_chunk_parse_raises_only_frame_errors(data):
    try:
        request = protocol.parse_binary_chunk(data)
    except FrameError as error:
        assert error.code == "invalid"
        _assert_error_encodes(error.code, error.message, error.context, None)
    else:
        assert 0 <= request.index < 2**32 and request.upload_id.isascii()


# --- Through the real consumer -----------------------------------------------------------------

FRAMES_PER_RUN = 500
# Frames the handler itself sends in answer, before it turns to the next frame; broadcasts
# (the message echo, user_list, room_removed …) may come at any time and answer nothing.
ANSWERS = {"error", "welcome", "room_state", "file_ready", "file_progress", "moderated", "reported", "ack", "pong"}
# Request types whose success the protocol answers on the socket itself; the others (typing,
# read, edit, delete, leave_room) answer only with an error, or with broadcasts.
ANSWERED = (
    protocol.Connect,
    protocol.Ping,
    protocol.JoinRoom,
    protocol.SendMessage,
    protocol.Moderate,
    protocol.Report,
    protocol.FileStart,
    protocol.FileChunk,
    protocol.FileEnd,
)
NASTY = [
    None, True, False, 1.5, "", " ", "\x00", "a\x00", "\ud800", "lobby\ud800", "x\udfff", "x" * 65, "y" * 3000,
    {}, {"a": {"b": [1]}}, [], [1, "2", None], [[[]]], "@bob", "@alice", "@nobody", "lobby", "nowhere",
    "stop", "mute", "topic", *NASTY_NUMBERS,
]  # fmt: skip


class Storm:
    """Random frames near the valid ones: a valid frame of a random type, then a few fields
    replaced by hostile values (often none, so that valid frames reach the services too)."""

    def __init__(self, rng: random.Random, *, user_id: int, message_ids: list[int]) -> None:
        self.rng = rng
        self.user_id = user_id
        self.message_ids = message_ids
        self.upload_ids: list[str] = []
        self.count = 0

    def _valid(self, frame_type: str) -> dict[str, Any]:
        self.count += 1
        rng, n = self.rng, self.count
        message = rng.choice(self.message_ids)
        upload = rng.choice(self.upload_ids) if self.upload_ids and rng.random() < 0.8 else str(uuid.uuid4())
        return {
            "connect": {"userId": self.user_id},
            "ping": {},
            "join_room": {"roomId": rng.choice(["lobby", "side"]), "since": rng.randrange(3)},
            "leave_room": {"roomId": "side"},
            "message": {"to": rng.choice(["lobby", "@bob"]), "content": f"storm {n}", "messageId": f"s{n}"},
            "typing": {"to": "lobby", "extra": {"state": rng.choice(["start", "stop"])}},
            "read": {"to": "lobby", "extra": {"seq": rng.randrange(5)}},
            "edit": {"extra": {"id": message}, "content": f"edited {n}"},
            "delete": {"extra": {"id": message}},
            "moderate": {
                "to": "lobby",
                "extra": {
                    "action": rng.choice(sorted(protocol.MODERATION_ACTIONS)),
                    "user": "bob",
                    "seconds": rng.randrange(5),
                    "reason": "storm",
                    "topic": f"topic {n}",
                },
            },
            "report": {"extra": {"id": message, "reason": "storm"}},
            "file_start": {
                "to": "lobby",
                "messageId": f"f{n}",
                "extra": {"name": "a.txt", "size": 3, "mime": "text/plain"},
            },
            "file_chunk": {"extra": {"uploadId": upload, "index": 0, "data": base64.b64encode(b"abc").decode()}},
            "file_end": {"extra": {"uploadId": upload}},
        }[frame_type] | {"type": frame_type}

    def _mutate(self, frame: dict[str, Any]) -> None:
        rng = self.rng
        top, extra_keys = FIELDS[frame["type"]]
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            value, roll = rng.choice(NASTY), rng.random()
            if roll < 0.05:
                frame["extra"] = value  # not even an object
            elif roll < 0.1:
                frame["type"] = value
            elif roll < 0.15:
                frame[rng.choice(["from", "userId"])] = value
            elif extra_keys and roll < 0.6:
                if not isinstance(frame.get("extra"), dict):
                    frame["extra"] = {}
                frame["extra"][rng.choice(extra_keys)] = value
            else:
                frame[rng.choice(top + ("messageId", "to"))] = value

    def next(self) -> tuple[str | None, bytes | None]:
        """One frame, as text or (now and then) as a binary chunk."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            return rng.choice(["{", "[]", "null", "1", '"x"', '{"type":', '{"type":"ping","x":NaN}', "{}"]), None
        if roll < 0.08:
            upload = (rng.choice(self.upload_ids) if self.upload_ids else str(uuid.uuid4())).encode()
            good = protocol.binary_chunk_header(upload.decode(), rng.randrange(2)) + b"abc"
            return None, rng.choice([good, rng.randbytes(rng.randrange(1, 12)), bytes([1, 200]) + upload])
        frame = self._valid(rng.choice(sorted(FIELDS)))
        self._mutate(frame)
        return json.dumps(frame), None


def _expected(text: str | None, data: bytes | None, user_id: int) -> tuple[str | None, protocol.Request | None]:
    """What the parser makes of a frame: the refusal code, or the request."""
    try:
        if text is None:
            return None, protocol.parse_binary_chunk(data or b"")
        return None, protocol.parse(text, username=USERNAME, user_id=user_id)
    except FrameError as error:
        return error.code, None


@sync_to_async
def _setting_up():
    alice, bob = make_user(USERNAME), make_user("bob")
    for slug in ("lobby", "side"):
        services.room_create(user=alice, slug=slug, name=slug.title(), kind="public")
        services.room_join(user=bob, slug=slug)
    message_ids = [
        services.message_create(user=who, to="lobby", content=f"seed {n}", client_id=f"seed{n}").message.pk
        for n, who in enumerate((alice, alice, bob))
    ]
    return alice, message_ids


async def _answers_to(socket, storm: Storm, expected_pongs: int) -> list[dict]:
    """The answers the socket sends until the marker's pong, every frame valid UTF-8."""
    answers, pongs = [], 0
    while pongs < expected_pongs:
        output = await socket.communicator.receive_output(10)
        if output["type"] == "websocket.close":
            raise ConnectionClosed(output.get("code"))
        output["text"].encode("utf-8")
        frame = json.loads(output["text"])
        if frame["type"] == "file_ready":
            storm.upload_ids.append(frame["extra"]["uploadId"])
        pongs += frame["type"] == "pong"
        if frame["type"] in ANSWERS:
            answers.append(frame)
    return answers[:-1]  # the last is the marker's pong


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
async def test_a_storm_of_random_frames_gets_one_answer_each_and_no_traceback(connect, settings, caplog):
    # Every refused frame counts towards the flooding close (4429): not what this test is about.
    settings.CHAT_FLOOD_REFUSALS = 10**6
    caplog.set_level(logging.ERROR)
    seed = int(os.environ.get("CHAT_FUZZ_SEED", "20241010"))
    alice, message_ids = await _setting_up()
    socket = await connect(alice)
    storm = Storm(random.Random(seed), user_id=alice.pk, message_ids=message_ids)
    seen: collections.Counter[str] = collections.Counter()
    for number in range(FRAMES_PER_RUN):
        text, data = storm.next()
        code, request = _expected(text, data, alice.pk)
        where = f"seed {seed}, frame {number}: {text if text is not None else data!r}"
        if text is None:
            await socket.communicator.send_to(bytes_data=data)
        else:
            await socket.communicator.send_to(text_data=text)
        await socket.send({"type": "ping"})
        try:
            answers = await _answers_to(socket, storm, 2 if isinstance(request, protocol.Ping) else 1)
        except ConnectionClosed as closed:
            raise AssertionError(f"socket closed with {closed.code} after {where}") from None
        except UnicodeEncodeError as exc:
            raise AssertionError(f"an answer the transport cannot send ({exc}) after {where}") from None
        except TimeoutError:
            raise AssertionError(f"no answer after {where}") from None
        seen.update(a["type"] for a in answers)
        codes = [a["extra"]["code"] for a in answers if a["type"] == "error"]
        assert "server_error" not in codes, where
        if code is not None:
            assert codes == [code] and len(answers) == 1, (where, answers)
        elif isinstance(request, ANSWERED):
            assert len(answers) == 1, (where, answers)
        else:
            assert len(answers) == len(codes) <= 1, (where, answers)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(("chat", "asyncio"))]
    assert not errors, [r.getMessage() for r in errors]
    # The storm reached the services, not only the parser.
    assert {"ack", "room_state", "moderated", "reported", "file_ready", "file_progress"} <= set(seen), seen
    await socket.close()
