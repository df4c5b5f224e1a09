"""docs/asyncapi.yaml against the code that speaks the protocol.

The document must list exactly the frames the code handles and sends: the client types are
``protocol.CLIENT_TYPES`` and the keys of ``ChatConsumer._handlers``; the server types are those
that the frame builders of ``chat.protocol`` produce. Every frame the builders produce, and every
example in the document, must validate against the document's schema for its type. A handler,
builder, error code or close code added without documenting it fails here.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

import chat
from chat import exceptions, protocol
from chat.consumers import ChatConsumer

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
DOC = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
# The document is registered under a URI of its own, so that its "#/..." references resolve
# inside it without any retrieval.
DOC_URI = "https://chat.invalid/docs/asyncapi.yaml"
REGISTRY = Registry().with_resource(DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT7))
CHAT_DIR = Path(chat.__file__).resolve().parent
USER = {"username": "alice", "user_id": 1}


# --- Reading the document ------------------------------------------------------------------------


def deref(node: Any, pointer: str = "#") -> tuple[Any, str]:
    """Follow local ``$ref``s; returns the node and its JSON pointer in the document."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), f"only local references are expected, got {pointer}"
        assert pointer not in seen, f"reference loop at {pointer}"
        seen.add(pointer)
        node = DOC
        for part in pointer[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, pointer


def the_channel() -> tuple[str, dict]:
    channels = DOC.get("channels") or {}
    assert len(channels) == 1, "the socket protocol has one channel"
    ((key, channel),) = channels.items()
    return key, channel


def operation_messages(action: str) -> dict[str, tuple[dict, str]]:
    """The messages of the one operation with ``action``: channel message key -> (message, pointer)."""
    channel_key, _ = the_channel()
    operations = [op for op in DOC["operations"].values() if op["action"] == action]
    assert len(operations) == 1, f"exactly one '{action}' operation"
    (operation,) = operations
    assert operation["channel"] == {"$ref": f"#/channels/{channel_key}"}
    found = {}
    prefix = f"#/channels/{channel_key}/messages/"
    for ref in operation["messages"]:
        assert ref["$ref"].startswith(prefix), f"{ref} is not a message of the channel"
        key = ref["$ref"][len(prefix) :]
        assert key not in found, f"{key} listed twice"
        found[key] = deref(ref)
    return found


def payload_type(message: dict) -> str:
    payload, _ = deref(message["payload"])
    assert payload.get("type") == "object", f"{message.get('name')}: the payload is an object"
    assert "type" in payload.get("required", []), f"{message.get('name')}: 'type' must be required"
    type_schema, _ = deref(payload["properties"]["type"])
    if "const" in type_schema:
        value = type_schema["const"]
    else:
        assert len(type_schema.get("enum", [])) == 1, f"{message.get('name')}: 'type' needs a const or one enum"
        value = type_schema["enum"][0]
    assert isinstance(value, str) and value
    return value


def types_of(action: str) -> dict[str, tuple[dict, str]]:
    """Frame type -> (message, pointer) for one direction; each type appears once."""
    by_type: dict[str, tuple[dict, str]] = {}
    for key, (message, pointer) in operation_messages(action).items():
        frame_type = payload_type(message)
        assert frame_type not in by_type, f"type '{frame_type}' is documented twice for '{action}' ({key})"
        by_type[frame_type] = (message, pointer)
    return by_type


def validator(message_pointer: str) -> Draft7Validator:
    return Draft7Validator({"$ref": f"{DOC_URI}{message_pointer}/payload"}, registry=REGISTRY)


def assert_valid(frame: dict, message_pointer: str) -> None:
    errors = sorted(validator(message_pointer).iter_errors(frame), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors) + f"\nframe: {frame}"


def examples() -> list[tuple[str, str, dict]]:
    """(action, example id, payload) for every example of every message."""
    found = []
    for action in ("send", "receive"):
        for key, (message, _) in operation_messages(action).items():
            for index, example in enumerate(message.get("examples", [])):
                found.append((action, f"{key}[{example.get('name', index)}]", example["payload"]))
    return found


# --- Reading the code ------------------------------------------------------------------------------


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _string_args_of_calls(function_name: str, paths: list[Path]) -> set[str]:
    """The string literals passed first to calls of ``function_name`` (plain or attribute)."""
    values = set()
    for path in paths:
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name == function_name and isinstance(first, ast.Constant) and isinstance(first.value, str):
                values.add(first.value)
    return values


def _type_literals(path: Path) -> set[str]:
    """String values of ``"type"`` keys in dict literals, and of assignments to ``frame_type``."""
    values = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant):
                    values.add(value.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id == "frame_type" for t in node.targets):
                values.add(node.value.value)
    return values


def chat_sources() -> list[Path]:
    return sorted(p for p in CHAT_DIR.rglob("*.py") if "migrations" not in p.parts)


def public_builders() -> set[str]:
    """Every function of ``chat.protocol`` that shapes a server frame."""
    return {
        name
        for name, function in inspect.getmembers(protocol, inspect.isfunction)
        if function.__module__ == protocol.__name__
        and not name.startswith("_")
        and (name.endswith("_frame") or name in {"message_payload", "error_from_exception"})
    }


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NOW_MS = protocol.to_ms(NOW)


def _fake_message(**changes: Any) -> SimpleNamespace:
    room = SimpleNamespace(slug="lobby")
    fields = {
        "id": 7,
        "seq": 3,
        "room": room,
        "author": SimpleNamespace(id=1, username="alice", display_name="Alice"),
        "content": "Hello @bob",
        "created_at": NOW,
        "client_id": "msg_1_a",
        "kind": "text",
        "reply_to_id": None,
        "mentions": ["bob"],
        "edited_at": None,
        "deleted_at": None,
        "change": 0,
        "attachment_payload": None,
    }
    fields.update(changes)
    return SimpleNamespace(**fields)


def _messages() -> list[SimpleNamespace]:
    attachment = {
        "url": "/files/1/cat.png",
        "name": "cat.png",
        "size": 2048,
        "mime": "image/png",
        "width": 64,
        "height": 48,
        "thumbnailUrl": "/files/1/thumbnail/",
    }
    return [
        _fake_message(),
        _fake_message(reply_to_id=5, client_id=None, mentions=[]),
        _fake_message(author=None, kind="system", client_id=None, content="Admin locked the room", mentions=[]),
        _fake_message(kind="file", content="cat.png", attachment_payload=attachment, mentions=[]),
        _fake_message(edited_at=NOW, change=4),
        _fake_message(deleted_at=NOW, change=5, attachment_payload=attachment),
    ]


def _room() -> SimpleNamespace:
    return SimpleNamespace(
        slug="lobby",
        name="Lobby",
        kind="public",
        topic="Say hello",
        last_seq=3,
        last_change=5,
        locked=False,
        slow_mode_seconds=0,
    )


def _upload_status() -> SimpleNamespace:
    return SimpleNamespace(
        upload_id="0b9d2c1e-0000-4000-8000-000000000001",
        client_id="msg_2_a",
        room_slug="lobby",
        chunk_size=65536,
        received=65536,
        next_index=1,
        size=70000,
    )


def builder_frames() -> dict[str, list[dict]]:
    """Builder name -> the frames it makes from representative arguments."""
    room, membership = _room(), SimpleNamespace(read_seq=2, role="owner")
    user = SimpleNamespace(id=1, username="alice", display_name="")
    limits = {"maxContent": 4000, "maxFrameBytes": 262144, "maxUpload": 26214400, "chunkSize": 65536}
    payloads = [protocol.message_payload(m) for m in _messages()]
    full_context = protocol.RequestContext("file_end", "msg_3_a", 9, "up-1", "lobby")
    membership_types = _string_args_of_calls("room_membership_frame", chat_sources())
    assert membership_types, "no call of room_membership_frame found in chat/"
    return {
        "message_payload": payloads,
        "ack_frame": [protocol.ack_frame(m, now_ms=NOW_MS) for m in _messages()],
        "welcome_frame": [
            protocol.welcome_frame(
                user=user, rooms=[protocol.room_summary(room, membership)], limits=limits, now_ms=NOW_MS
            ),
            protocol.welcome_frame(user=user, rooms=[], limits=limits, now_ms=NOW_MS),
        ],
        "room_state_frame": [protocol.room_state_frame(room=room, membership=membership, members=3, now_ms=NOW_MS)],
        "history_frame": [
            protocol.history_frame(
                room_slug="lobby", messages=payloads[:4], has_more=True, changes=payloads[4:], now_ms=NOW_MS
            ),
            protocol.history_frame(room_slug="lobby", messages=[], has_more=False, changes=[], now_ms=NOW_MS),
        ],
        "user_list_frame": [
            protocol.user_list_frame(
                room_slug="lobby", users=[{"username": "alice", "displayName": "Alice"}], now_ms=NOW_MS
            )
        ],
        "typing_frame": [
            protocol.typing_frame(username="alice", room_slug="lobby", state=state, now_ms=NOW_MS)
            for state in sorted(protocol.TYPING_STATES)
        ],
        "read_frame": [protocol.read_frame(room_slug="lobby", seq=3, now_ms=NOW_MS)],
        "message_changed_frame": [protocol.message_changed_frame(m, now_ms=NOW_MS) for m in _messages() if m.change],
        "room_updated_frame": [protocol.room_updated_frame(room, now_ms=NOW_MS)],
        "room_membership_frame": [
            protocol.room_membership_frame(frame_type, room_slug="lobby", reason=reason, now_ms=NOW_MS)
            for frame_type, reason in ((t, "joined" if t == "room_added" else "left") for t in sorted(membership_types))
        ],
        "moderated_frame": [
            protocol.moderated_frame(room_slug="lobby", action="mute", username="bob", until=NOW, now_ms=NOW_MS),
            protocol.moderated_frame(room_slug="lobby", action="lock", username=None, until=None, now_ms=NOW_MS),
        ],
        "reported_frame": [protocol.reported_frame(message_id=7, now_ms=NOW_MS)],
        "pong_frame": [protocol.pong_frame(now_ms=NOW_MS)],
        "error_frame": [
            protocol.error_frame("bad_json", "not JSON", protocol.RequestContext(), now_ms=NOW_MS),
            protocol.error_frame("upload_failed", "no", full_context, now_ms=NOW_MS),
            protocol.error_frame(
                "invalid", "no", protocol.RequestContext("edit", extra_id="7", room="@bob"), now_ms=NOW_MS
            ),
        ],
        "error_from_exception": [
            protocol.error_from_exception(exceptions.RateLimited("slow", retry_after_ms=250), full_context, now_ms=1),
            protocol.error_from_exception(exceptions.NotFound(), protocol.RequestContext("read"), now_ms=1),
        ],
        "file_ready_frame": [protocol.file_ready_frame(_upload_status(), now_ms=NOW_MS)],
        "file_progress_frame": [protocol.file_progress_frame(_upload_status(), now_ms=NOW_MS)],
    }


def server_types_from_code() -> set[str]:
    return {frame["type"] for frames in builder_frames().values() for frame in frames}


def error_codes_from_code() -> set[str]:
    codes = {exceptions.ChatError.code}
    pending = [exceptions.ChatError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            codes.add(subclass.code)
            pending.append(subclass)
    codes |= _string_args_of_calls("FrameError", [CHAT_DIR / "protocol.py"])
    codes |= _string_args_of_calls("_refuse", [CHAT_DIR / "consumers.py"])
    return codes


# --- The document's own shape ----------------------------------------------------------------------


def test_document_is_asyncapi_3_with_one_socket_channel():
    assert str(DOC["asyncapi"]).startswith("3.0")
    _, channel = the_channel()
    assert channel["address"] == "/ws/chat/"
    assert {op["action"] for op in DOC["operations"].values()} == {"send", "receive"}
    sent, received = operation_messages("send"), operation_messages("receive")
    assert not set(sent) & set(received), "a channel message is either sent or received"
    assert set(sent) | set(received) == set(channel["messages"]), "every channel message belongs to an operation"
    schemes = {deref(ref)[0]["in"] for server in DOC["servers"].values() for ref in server["security"]}
    assert schemes == {"cookie", "query"}, "session cookie and ticket query parameter"


def test_every_payload_requires_its_type():
    for action in ("send", "receive"):
        assert types_of(action)


# --- Client -> server ------------------------------------------------------------------------------


def test_client_types_are_the_parsers_types():
    assert set(types_of("send")) == set(protocol.CLIENT_TYPES)


def test_client_types_are_the_consumers_handlers():
    """Each documented client type parses (from its examples) to a request that has a real handler,
    and every handler's request type is documented."""
    documented = types_of("send")
    request_classes = {}
    for frame_type, (message, _) in documented.items():
        assert message.get("examples"), f"client type '{frame_type}' needs at least one example"
        for example in message["examples"]:
            request = protocol.parse(json.dumps(example["payload"]), **USER)
            assert request.context.request_type == frame_type
            request_classes.setdefault(type(request), frame_type)
    handlers = ChatConsumer._handlers
    undocumented = {cls.__name__ for cls in handlers} - {cls.__name__ for cls in request_classes}
    assert not undocumented, f"handlers without a documented client type: {undocumented}"
    assert set(request_classes) == set(handlers)
    placeholder = getattr(ChatConsumer, "on_not_yet", None)
    not_yet = sorted(t for cls, t in request_classes.items() if handlers[cls] is placeholder)
    assert not not_yet, f"documented but not handled yet: {not_yet}"


# --- Server -> client ------------------------------------------------------------------------------


def test_every_builder_is_exercised_here():
    """A new frame builder must be added to ``builder_frames`` (and its type documented)."""
    assert public_builders() <= set(builder_frames()), public_builders() - set(builder_frames())


def test_server_types_are_what_the_code_sends():
    assert set(types_of("receive")) == server_types_from_code()


def test_frame_type_literals_in_protocol_all_come_from_builders():
    literals = _type_literals(CHAT_DIR / "protocol.py") | _string_args_of_calls(
        "_upload_frame", [CHAT_DIR / "protocol.py"]
    )
    assert literals <= server_types_from_code(), literals - server_types_from_code()


def test_no_frame_is_shaped_outside_protocol():
    """Only ``chat.protocol`` builds frames; elsewhere a ``"type"`` is a channel-layer event
    (``chat.*``), and each such event has a handler on the consumer."""
    for name in ("consumers.py", "broadcast.py", "services.py", "moderation.py", "uploads.py", "presence.py"):
        path = CHAT_DIR / name
        if not path.exists():
            continue
        for value in _type_literals(path):
            assert isinstance(value, str) and value.startswith("chat."), f"{name} shapes a '{value}' frame"
            assert callable(getattr(ChatConsumer, value.replace(".", "_"), None)), f"no handler for {value}"


@pytest.mark.parametrize("builder", sorted(builder_frames()))
def test_built_frames_validate_against_the_document(builder):
    documented = types_of("receive")
    for frame in builder_frames()[builder]:
        assert frame["type"] in documented, f"'{frame['type']}' is not documented"
        assert_valid(frame, documented[frame["type"]][1])


def test_error_codes_are_the_codes_the_code_raises():
    documented = types_of("receive")["error"][1]
    payload, _ = deref({"$ref": f"{documented}/payload"})
    code_schema = payload["properties"]["extra"]["properties"]["code"]
    assert set(code_schema["enum"]) == error_codes_from_code()


def test_close_codes_are_described():
    sent_or_not = {value for name, value in vars(protocol).items() if name.startswith("CLOSE_")}
    _, channel = the_channel()
    described = {int(code) for code in re.findall(r"\b4\d{3}\b", channel["description"])}
    assert sent_or_not <= described, sent_or_not - described
    assert described <= sent_or_not, described - sent_or_not


def test_moderation_actions_and_typing_states_match():
    payload, _ = deref(types_of("send")["moderate"][0]["payload"])
    assert set(payload["properties"]["extra"]["properties"]["action"]["enum"]) == protocol.MODERATION_ACTIONS
    payload, _ = deref(types_of("send")["typing"][0]["payload"])
    assert set(payload["properties"]["extra"]["properties"]["state"]["enum"]) == protocol.TYPING_STATES


# --- Examples --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "example_id", "payload"), examples(), ids=[e[1] for e in examples()])
def test_examples_validate(action, example_id, payload):
    by_key = operation_messages(action)
    key = example_id.split("[", 1)[0]
    assert_valid(payload, by_key[key][1])
    assert payload["type"] == payload_type(by_key[key][0])
