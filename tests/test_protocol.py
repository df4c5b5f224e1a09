"""chat.protocol on its own: no database, no sockets."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from chat import protocol
from chat.protocol import FrameError

USER = {"username": "alice", "user_id": 7}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
frame_types = st.sampled_from(sorted(protocol.CLIENT_TYPES) + ["websocket.disconnect", "chat.frame", ""])
known_keys = st.sampled_from(
    ["type", "to", "roomId", "content", "messageId", "from", "userId", "extra", "since", "changesSince"]
)
frames = st.dictionaries(known_keys | st.text(max_size=8), json_values, max_size=8).flatmap(
    lambda frame: st.builds(lambda t: {**frame, "type": t}, frame_types | json_values)
)


@settings(max_examples=200, deadline=None)
@given(frames)
def test_any_json_object_parses_or_fails_cleanly(frame):
    try:
        request = protocol.parse(json.dumps(frame), **USER)
    except FrameError as error:
        assert error.code in {"bad_json", "unknown_type", "invalid", "identity_mismatch"}
        built = protocol.error_frame(error.code, error.message, error.context, now_ms=0)
        json.dumps(built)  # always encodable
    else:
        assert request.context.request_type == frame["type"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_never_raises_anything_but_frame_error(text):
    try:
        protocol.parse(text, **USER)
    except FrameError as error:
        assert error.code in {"bad_json", "unknown_type", "invalid", "identity_mismatch"}


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_never_raises_anything_but_frame_error(value):
    try:
        protocol.parse(json.dumps(value), **USER)
    except FrameError:
        pass


def parse(frame):
    return protocol.parse(json.dumps(frame), **USER)


def refusal(frame) -> str:
    try:
        parse(frame)
    except FrameError as error:
        return error.code
    raise AssertionError("accepted")


def test_layer_and_handler_names_are_unknown_types():
    for name in ("websocket.disconnect", "websocket.receive", "chat.message", "chat.frame", "chat_close", "receive"):
        assert refusal({"type": name}) == "unknown_type"


def test_identity_may_be_absent_null_or_the_user():
    for value in (None, "alice", "7", 7):
        assert parse({"type": "ping", "from": value, "userId": value})
    for value in ("bob", 8, "8", True, 7.0, ["alice"]):
        assert refusal({"type": "ping", "from": value}) == "identity_mismatch"


def test_message_frame_parses_to_typed_values():
    request = parse({"type": "message", "to": " lobby ", "content": "hi", "messageId": "m1", "extra": {"replyTo": 3}})
    assert request == protocol.SendMessage(request.context, to="lobby", content="hi", message_id="m1", reply_to=3)
    assert request.context.room == " lobby " and request.context.message_id == "m1"


def test_file_chunk_data_is_base64():
    chunk = parse({"type": "file_chunk", "extra": {"uploadId": "u", "index": 0, "data": "aGk="}})
    assert chunk.data == b"hi"
    assert refusal({"type": "file_chunk", "extra": {"uploadId": "u", "index": 0, "data": "@@"}}) == "invalid"


def test_error_frame_echoes_ids_and_room_but_not_at_usernames():
    ctx = protocol.RequestContext("message", "m1", 5, "u1", "lobby")
    frame = protocol.error_frame("invalid", "bad", ctx, now_ms=1)
    assert frame == {
        "type": "error",
        "content": "bad",
        "timestamp": 1,
        "messageId": "m1",
        "room": "lobby",
        "extra": {"code": "invalid", "requestType": "message", "id": 5, "uploadId": "u1"},
    }
    direct = protocol.error_frame("invalid", "bad", protocol.RequestContext("message", room="@bob"), now_ms=1)
    assert "room" not in direct


def test_non_finite_numbers_are_bad_json():
    assert refusal('{"type": "ping", "x": NaN}') == "bad_json"
