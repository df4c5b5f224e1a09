"""The socket contract, frame by frame (PROTOCOL sections 1-4, 6, 7), with real clients."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Membership, Message, Room
from tests.conftest import ORIGIN, make_user, open_socket, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def users(*names):
    return [make_user(name) for name in names]


@sync_to_async
def room(owner, slug="lobby", kind="public", members=()):
    created = services.room_create(user=owner, slug=slug, name=slug.title(), kind=kind)
    for member in members:
        Membership.objects.get_or_create(room=created, user=member)
    return created


async def joined(socket, slug="lobby", **fields):
    await socket.send({"type": "join_room", "roomId": slug, **fields})
    state = await socket.expect("room_state")
    history = await socket.expect("history")
    return state, history


# --- Connection and authentication ----------------------------------------------------------


async def test_welcome_is_first_frame_and_lists_rooms_with_counters(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    await sync_to_async(services.message_create)(user=alice, to="lobby", content="one", client_id="c1")
    socket = await open_socket(bob, welcome=False)
    welcome = await socket.receive()
    assert welcome["type"] == "welcome"
    assert welcome["extra"]["protocol"] == 1
    assert welcome["extra"]["user"] == {"id": bob.pk, "username": "bob", "displayName": "bob"}
    assert welcome["extra"]["rooms"] == [
        {"room": "lobby", "name": "Lobby", "kind": "public", "lastSeq": 1, "lastChange": 0, "readSeq": 0, "unread": 1}
    ]
    assert welcome["extra"]["limits"] == {
        "maxContent": 4000,
        "maxFrameBytes": 262144,
        "maxUpload": 26214400,
        "chunkSize": 65536,
    }
    await socket.send({"type": "connect", "userId": bob.pk})
    again = await socket.expect("welcome")
    assert again["extra"]["rooms"][0]["room"] == "lobby"
    await socket.close()


async def test_anonymous_socket_is_accepted_then_closed_4401(connect):
    socket = await open_socket(None, welcome=False)
    assert await socket.expect_close() == 4401


async def test_foreign_origin_is_refused_at_handshake():
    (alice,) = await users("alice")
    from channels.testing import WebsocketCommunicator

    from chatsite.asgi import application
    from tests.conftest import session_cookie

    cookie = await sync_to_async(session_cookie)(alice)
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)]
    )
    # A close before accept: daphne answers the handshake with HTTP 403.
    connected, _ = await communicator.connect()
    assert not connected
    missing = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"cookie", cookie)])
    connected, _ = await missing.connect()
    assert not connected
    await communicator.disconnect()
    await missing.disconnect()


async def test_ticket_opens_one_socket_without_origin_and_only_once():
    (alice,) = await users("alice")
    ticket = await sync_to_async(services.ws_ticket_issue)(user=alice)
    first = await open_socket(None, headers=[], path=f"/ws/chat/?ticket={ticket}", welcome=False)
    welcome = await first.receive()
    assert welcome["type"] == "welcome" and welcome["extra"]["user"]["username"] == "alice"
    again = await open_socket(None, headers=[], path=f"/ws/chat/?ticket={ticket}", welcome=False)
    assert await again.expect_close() == 4401
    await first.close()


async def test_expired_ticket_is_refused_with_4401():
    (alice,) = await users("alice")
    ticket = await sync_to_async(services.ws_ticket_issue)(user=alice)
    from django.utils import timezone

    from chat.models import WebSocketTicket

    await sync_to_async(WebSocketTicket.objects.update)(expires_at=timezone.now())
    socket = await open_socket(None, headers=[ORIGIN], path=f"/ws/chat/?ticket={ticket}", welcome=False)
    assert await socket.expect_close() == 4401


async def test_ping_gets_pong(connect):
    (alice,) = await users("alice")
    socket = await connect(alice)
    await socket.send({"type": "ping"})
    pong = await socket.expect("pong")
    assert isinstance(pong["timestamp"], int)


# --- Rooms ---------------------------------------------------------------------------------


async def test_join_sends_room_state_then_history_then_user_list(connect):
    alice, bob = await users("alice", "bob")
    await room(alice)
    for n in range(3):
        await sync_to_async(services.message_create)(user=alice, to="lobby", content=f"m{n}")
    socket = await connect(bob)
    await socket.send({"type": "join_room", "roomId": "lobby", "userId": "bob"})
    state = await socket.receive()
    assert state["type"] == "room_state" and state["room"] == "lobby"
    assert state["extra"] == {
        "name": "Lobby",
        "topic": "",
        "kind": "public",
        "members": 2,
        "lastSeq": 3,
        "lastChange": 0,
        "readSeq": 0,
        "role": "member",
        "locked": False,
        "slowMode": 0,
    }
    history = await socket.receive()
    assert history["type"] == "history"
    assert [m["content"] for m in history["extra"]["messages"]] == ["m0", "m1", "m2"]
    assert history["extra"]["hasMore"] is False
    user_list = await socket.expect("user_list")
    assert user_list["extra"]["users"] == [{"username": "bob", "displayName": "bob"}]
    assert await sync_to_async(Membership.objects.filter(room__slug="lobby", user=bob).exists)()


async def test_private_room_is_not_found_for_strangers_and_banned_are_forbidden(connect):
    alice, bob, carol = await users("alice", "bob", "carol")
    await room(alice, slug="secret", kind="private")
    await room(alice, slug="lobby")
    await sync_to_async(Membership.objects.create)(
        room=await sync_to_async(Room.objects.get)(slug="lobby"), user=carol, banned=True
    )
    bob_socket = await connect(bob)
    await bob_socket.send({"type": "join_room", "roomId": "secret"})
    error = await bob_socket.expect("error")
    assert error["extra"]["code"] == "not_found" and error["extra"]["requestType"] == "join_room"
    assert error["room"] == "secret"
    carol_socket = await connect(carol)
    await carol_socket.send({"type": "join_room", "roomId": "lobby"})
    assert (await carol_socket.expect("error"))["extra"]["code"] == "forbidden"


async def test_leave_reaches_every_socket_of_the_user_and_the_room(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    alice_socket = await connect(alice)
    bob_one = await connect(bob)
    bob_two = await connect(bob)
    await bob_one.send({"type": "leave_room", "roomId": "lobby"})
    for socket in (bob_one, bob_two):
        removed = await socket.expect("room_removed")
        assert removed["room"] == "lobby" and removed["extra"]["reason"] == "left"
    user_list = await alice_socket.expect("user_list")
    assert [u["username"] for u in user_list["extra"]["users"]] == ["alice"]
    # bob no longer receives the room
    await alice_socket.send({"type": "message", "to": "lobby", "content": "after", "messageId": "x"})
    await alice_socket.expect("message")
    assert await bob_two.nothing()


async def test_join_subscribes_the_users_other_sockets(connect):
    alice, bob = await users("alice", "bob")
    await room(alice)
    bob_one, bob_two = await connect(bob), await connect(bob)
    await joined(bob_one)
    added = await bob_two.expect("room_added")
    assert added["room"] == "lobby" and added["extra"]["reason"] == "joined"
    alice_socket = await connect(alice)
    await alice_socket.send({"type": "message", "to": "lobby", "content": "to both tabs", "messageId": "a1"})
    assert (await bob_two.expect("message"))["content"] == "to both tabs"
    assert (await bob_one.expect("message"))["content"] == "to both tabs"


# --- Messages ------------------------------------------------------------------------------


async def test_message_is_acked_then_broadcast_to_all_including_sender(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    a, b = await connect(alice), await connect(bob)
    await a.send(
        {"type": "message", "from": "alice", "to": "lobby", "content": "hello", "messageId": "msg_1_x", "timestamp": 1}
    )
    ack = await a.expect("ack")
    assert set(ack) >= {"messageId", "id", "seq", "room", "timestamp"}
    assert (ack["messageId"], ack["seq"], ack["room"]) == ("msg_1_x", 1, "lobby")
    own = await a.expect("message")
    other = await b.expect("message")
    assert own == other
    assert other["id"] == ack["id"] and other["seq"] == 1 and other["from"] == "alice"
    assert other["messageId"] == "msg_1_x"
    assert other["extra"] == {
        "displayName": "alice",
        "kind": "text",
        "replyTo": None,
        "mentions": [],
        "attachment": None,
        "editedAt": None,
        "deletedAt": None,
    }
    # the ack came before the sender's copy of the message
    kinds = [f["type"] for f in a.received if f["type"] in ("ack", "message")]
    assert kinds == ["ack", "message"]


async def test_repeated_message_id_is_acked_again_but_stored_and_sent_once(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    a, b = await connect(alice), await connect(bob)
    frame = {"type": "message", "to": "lobby", "content": "once", "messageId": "dup-1"}
    await a.send(frame)
    first = await a.expect("ack")
    await b.expect("message")
    await a.send(frame)
    second = await a.expect("ack")
    assert (first["id"], first["seq"]) == (second["id"], second["seq"])
    assert await b.nothing()
    assert await sync_to_async(Message.objects.count)() == 1


async def test_posting_requires_membership(connect):
    alice, bob = await users("alice", "bob")
    await room(alice)
    await room(alice, slug="secret", kind="private")
    b = await connect(bob)
    await b.send({"type": "message", "to": "lobby", "content": "hi", "messageId": "p1"})
    error = await b.expect("error")
    assert error["extra"]["code"] == "forbidden" and error["messageId"] == "p1" and error["room"] == "lobby"
    await b.send({"type": "message", "to": "secret", "content": "hi", "messageId": "p2"})
    assert (await b.expect("error"))["extra"]["code"] == "not_found"
    assert await sync_to_async(Message.objects.count)() == 0


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"type": "message", "content": "no target", "messageId": "v1"}, "invalid"),
        ({"type": "message", "to": None, "content": "null target", "messageId": "v2"}, "invalid"),
        ({"type": "message", "to": "lobby", "content": "   ", "messageId": "v3"}, "invalid"),
        ({"type": "message", "to": "lobby", "content": "x" * 4001, "messageId": "v4"}, "invalid"),
        ({"type": "message", "to": "lobby", "content": "nul \u0000 byte", "messageId": "v4b"}, "invalid"),
        ({"type": "message", "to": "lobby", "content": "hi", "messageId": "x" * 65}, "invalid"),
        ({"type": "message", "to": "lobby", "content": 5, "messageId": "v6"}, "invalid"),
        (
            {"type": "message", "to": "lobby", "content": "hi", "messageId": "v7", "from": "mallory"},
            "identity_mismatch",
        ),
        ({"type": "join_room", "roomId": "lobby", "userId": 999999}, "identity_mismatch"),
        ({"type": "message", "to": "@me-myself", "content": "hi", "messageId": "v9"}, "not_found"),
        ({"type": "nonsense"}, "unknown_type"),
        ({"type": "websocket.disconnect"}, "unknown_type"),
        ({"type": "chat.message", "text": "{}"}, "unknown_type"),
        ({"type": "chat.frame", "text": '{"type":"message"}'}, "unknown_type"),
        ({"content": "no type"}, "unknown_type"),
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ({"type": "edit", "extra": {"id": "seven"}, "content": "x"}, "invalid"),
        ({"type": "read", "to": "lobby", "extra": {"seq": -1}}, "invalid"),
        ({"type": "typing", "to": "lobby", "extra": {"state": "dancing"}}, "invalid"),
    ],
)
async def test_bad_frames_get_a_clean_error_and_the_socket_stays_usable(connect, frame, code):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    a, b = await connect(alice), await connect(bob)
    await b.drain()
    await a.send(frame)
    error = await a.expect("error")
    assert error["extra"]["code"] == code
    assert "requestType" in error["extra"] and error["content"]
    if isinstance(frame, dict):
        assert error["extra"]["requestType"] == (frame.get("type") if isinstance(frame.get("type"), str) else None)
        if "messageId" in frame and len(frame["messageId"]) <= 64:
            assert error["messageId"] == frame["messageId"]
    assert await b.nothing()
    await a.send({"type": "message", "to": "lobby", "content": "still works", "messageId": "ok"})
    assert (await a.expect("ack"))["messageId"] == "ok"
    assert await sync_to_async(Message.objects.count)() == 1


async def test_error_echoes_the_refused_frames_extra_id(connect):
    (alice,) = await users("alice")
    await room(alice)
    a = await connect(alice)
    await a.send({"type": "delete", "extra": {"id": 424242}})
    error = await a.expect("error")
    assert error["extra"] == {**error["extra"], "code": "not_found", "requestType": "delete", "id": 424242}


async def test_direct_message_opens_room_and_reaches_both_before_first_message(connect):
    alice, bob = await users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await a.send({"type": "message", "to": "@bob", "content": "psst", "messageId": "d1"})
    ack = await a.expect("ack")
    frames = []
    while True:
        frame = await b.receive()
        frames.append(frame)
        if frame["type"] == "message":
            break
    types = [f["type"] for f in frames]
    assert types.index("room_added") < types.index("message")
    assert frames[types.index("room_added")]["extra"]["reason"] == "direct"
    assert frame["room"] == ack["room"] and frame["content"] == "psst"
    # replies may use the slug, and the same pair reuses the room
    await b.send({"type": "message", "to": "@alice", "content": "hey", "messageId": "d2"})
    assert (await b.expect("ack"))["room"] == ack["room"]
    await a.send({"type": "message", "to": "@alice", "content": "me", "messageId": "d3"})
    assert (await a.expect("error"))["extra"]["code"] == "invalid"


async def test_reply_and_mentions(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    a = await connect(alice)
    await a.send({"type": "message", "to": "lobby", "content": "first", "messageId": "r1"})
    first = await a.expect("ack")
    await a.send(
        {
            "type": "message",
            "to": "lobby",
            "content": "hi @bob and @nobody",
            "messageId": "r2",
            "extra": {"replyTo": first["id"]},
        }
    )
    reply = await a.expect("message", messageId="r2")
    assert reply["extra"]["replyTo"] == first["id"]
    assert reply["extra"]["mentions"] == ["bob"]
    await a.send({"type": "message", "to": "lobby", "content": "x", "messageId": "r3", "extra": {"replyTo": 99999}})
    assert (await a.expect("error"))["extra"]["code"] == "invalid"


async def test_edit_and_delete_with_change_numbers_and_tombstones(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    a, b = await connect(alice), await connect(bob)
    await a.send({"type": "message", "to": "lobby", "content": "typo", "messageId": "e1"})
    ack = await a.expect("ack")
    await b.send({"type": "edit", "extra": {"id": ack["id"]}, "content": "hijack"})
    assert (await b.expect("error"))["extra"]["code"] == "forbidden"
    await a.send({"type": "edit", "extra": {"id": ack["id"]}, "content": "fixed"})
    updated = await b.expect("message_updated")
    assert updated["room"] == "lobby"
    assert updated["extra"]["id"] == ack["id"] and updated["extra"]["seq"] == 1
    assert updated["extra"]["change"] == 1 and updated["extra"]["content"] == "fixed"
    assert isinstance(updated["extra"]["editedAt"], int)
    await b.send({"type": "delete", "extra": {"id": ack["id"]}})
    assert (await b.expect("error"))["extra"]["code"] == "forbidden"
    await a.send({"type": "delete", "extra": {"id": ack["id"]}})
    deleted = await b.expect("message_deleted")
    assert deleted["extra"] == {"id": ack["id"], "seq": 1, "change": 2}
    stored = await sync_to_async(Message.objects.get)(pk=ack["id"])
    assert stored.content == "" and stored.deleted_content == "fixed" and stored.seq == 1


async def test_room_moderator_and_staff_may_delete_others_messages(connect):
    alice, bob, staff = await users("alice", "bob", "staff")
    staff.is_staff = True
    await sync_to_async(staff.save)()
    await room(alice, members=[bob])  # alice owns the room
    b, a = await connect(bob), await connect(alice)
    for n in (1, 2):
        await b.send({"type": "message", "to": "lobby", "content": f"spam {n}", "messageId": f"s{n}"})
        await b.expect("ack")
    ids = await sync_to_async(lambda: list(Message.objects.order_by("seq").values_list("id", flat=True)))()
    await a.send({"type": "delete", "extra": {"id": ids[0]}})
    assert (await b.expect("message_deleted"))["extra"]["id"] == ids[0]
    s = await connect(staff)
    await s.send({"type": "delete", "extra": {"id": ids[1]}})
    assert (await b.expect("message_deleted"))["extra"]["id"] == ids[1]


async def test_read_marker_moves_forward_only_and_reaches_other_sockets(connect):
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    for n in range(5):
        await sync_to_async(services.message_create)(user=alice, to="lobby", content=f"m{n}")
    one, two = await connect(bob), await connect(bob)
    await one.send({"type": "read", "to": "lobby", "extra": {"seq": 4}})
    read = await two.expect("read")
    assert read["room"] == "lobby" and read["extra"]["seq"] == 4
    await one.send({"type": "read", "to": "lobby", "extra": {"seq": 2}})
    await one.send({"type": "ping"})
    await one.expect("pong")
    membership = await sync_to_async(Membership.objects.get)(room__slug="lobby", user=bob)
    assert membership.read_seq == 4
    assert await two.nothing()


async def test_typing_goes_to_others_only_and_is_throttled_silently(connect, settings):
    settings.CHAT_TYPING_INTERVAL_SECONDS = 1.0
    alice, bob = await users("alice", "bob")
    await room(alice, members=[bob])
    a, a2, b = await connect(alice), await connect(alice), await connect(bob)
    for socket in (a, a2, b):
        await socket.drain()
    for _ in range(5):
        await a.send({"type": "typing", "from": "alice", "to": "lobby"})
    await a.send({"type": "typing", "to": "lobby", "extra": {"state": "stop"}})
    typing = await b.expect("typing")
    assert typing == {**typing, "from": "alice", "room": "lobby", "extra": {"state": "start"}}
    assert await b.nothing(0.5)  # the other four starts and the stop: one per user and room per interval
    assert await a.nothing(0.1) and await a2.nothing(0.1)  # not echoed to the typist's sockets
    await asyncio.sleep(0.6)
    await a.send({"type": "typing", "to": "lobby", "extra": {"state": "stop"}})
    assert (await b.expect("typing"))["extra"]["state"] == "stop"
    # dropped typing frames never count as flooding
    for _ in range(30):
        await a.send({"type": "typing", "to": "lobby"})
    await a.send({"type": "ping"})
    await a.expect("pong")


# --- Limits and close codes ----------------------------------------------------------------


async def test_rate_limit_refuses_with_retry_after_and_duplicates_are_free(connect, settings):
    # A slow refill, so that a loaded machine taking seconds over the burst changes nothing.
    settings.CHAT_POST_REFILL_PER_SECOND = 0.1
    (alice,) = await users("alice")
    await room(alice)
    a = await connect(alice)
    for n in range(10):
        await a.send({"type": "message", "to": "lobby", "content": f"m{n}", "messageId": f"b{n}"})
        await a.expect("ack")
    await a.send({"type": "message", "to": "lobby", "content": "m0", "messageId": "b0"})  # a re-send
    assert (await a.expect("ack"))["messageId"] == "b0"
    await a.send({"type": "message", "to": "lobby", "content": "one too many", "messageId": "b10"})
    error = await a.expect("error")
    assert error["extra"]["code"] == "rate_limited" and error["messageId"] == "b10"
    assert 0 < error["extra"]["retryAfterMs"] <= 10_000


async def test_more_than_twenty_refusals_in_ten_seconds_closes_4429(connect):
    (alice,) = await users("alice")
    a = await connect(alice)
    for _ in range(21):
        await a.send("not json")
    assert await a.expect_close(timeout=5) == 4429


async def test_frame_over_the_limit_closes_4413(connect):
    (alice,) = await users("alice")
    a = await connect(alice)
    await a.send(json.dumps({"type": "message", "to": "lobby", "content": "é" * (140 * 1024)}))
    assert await a.expect_close() == 4413


async def test_content_at_the_limit_in_code_points_is_accepted(connect):
    (alice,) = await users("alice")
    await room(alice)
    a = await connect(alice)
    await a.send({"type": "message", "to": "lobby", "content": "😀" * 4000, "messageId": "big"})
    assert (await a.expect("ack"))["seq"] == 1


async def test_deactivated_account_opening_a_socket_is_closed_4403():
    (alice,) = await users("alice")
    cookie = await sync_to_async(session_cookie)(alice)
    ticket = await sync_to_async(services.ws_ticket_issue)(user=alice)
    alice.is_active = False
    await sync_to_async(alice.save)()
    by_session = await open_socket(None, headers=[ORIGIN, (b"cookie", cookie)], welcome=False)
    assert await by_session.expect_close() == 4403
    by_ticket = await open_socket(None, headers=[], path=f"/ws/chat/?ticket={ticket}", welcome=False)
    assert await by_ticket.expect_close() == 4403


async def test_a_left_direct_room_comes_back_when_either_side_writes(connect):
    alice, bob = await users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await a.send({"type": "message", "to": "@bob", "content": "one", "messageId": "d1"})
    slug = (await a.expect("ack"))["room"]
    await b.expect("message")
    await a.send({"type": "leave_room", "roomId": slug})
    await a.expect("room_removed")
    await b.send({"type": "message", "to": "@alice", "content": "still there?", "messageId": "d2"})
    await b.expect("ack")
    assert (await a.expect("room_added"))["extra"]["reason"] == "direct"
    assert (await a.expect("message"))["content"] == "still there?"
    await a.send({"type": "leave_room", "roomId": slug})
    await a.expect("room_removed")
    await a.send({"type": "join_room", "roomId": slug})
    history = await a.expect("history")
    assert [m["content"] for m in history["extra"]["messages"]] == ["one", "still there?"]


async def test_changes_since_pages_at_200_with_changes_has_more(connect, settings):
    settings.CHAT_POST_BURST = 1000
    (alice,) = await users("alice")
    await room(alice)

    @sync_to_async
    def fill_and_edit():
        for n in range(205):
            message = services.message_create(user=alice, to="lobby", content=f"m{n}").message
            services.message_edit(user=alice, message_id=message.pk, content=f"m{n} edited")

    await fill_and_edit()
    a = await connect(alice)
    await a.send({"type": "join_room", "roomId": "lobby", "since": 205, "changesSince": 0})
    history = await a.expect("history")
    assert [m["seq"] for m in history["extra"]["changes"]] == list(range(1, 201))
    assert history["extra"]["changesHasMore"] is True
    await a.send({"type": "join_room", "roomId": "lobby", "since": 205, "changesSince": 200})
    rest = await a.expect("history")
    assert [m["seq"] for m in rest["extra"]["changes"]] == [201, 202, 203, 204, 205]
    assert rest["extra"]["changesHasMore"] is False
