"""A room's messages over REST: paging by seq anchors, posting (idempotent, rate-limited),
editing, deleting, read markers, and the error shape."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from chat import services
from chat.models import Room
from tests.conftest import make_user
from tests.test_api_support import clear_throttles, error_code, fill, room, session_client, token_client  # noqa: F401

pytestmark = pytest.mark.django_db

HISTORY = "/api/rooms/lobby/messages/"


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def lobby(alice):
    return room(alice, "lobby")


def walk_back(client, *, limit: int, between=None) -> list[int]:
    """Every seq from the newest page back to the first, page by page."""
    seqs: list[int] = []
    page = client.get(HISTORY, {"limit": limit}).json()
    while True:
        page_seqs = [m["seq"] for m in page["results"]]
        assert page_seqs == sorted(page_seqs), "a page is oldest first"
        seqs = page_seqs + seqs
        if not page["hasMore"]:
            return seqs
        if between:
            between()
        page = client.get(HISTORY, {"limit": limit, "before": page_seqs[0]}).json()


def walk_forward(client, *, limit: int, between=None) -> list[int]:
    seqs: list[int] = []
    anchor = 0
    while True:
        if between:
            between()
        page = client.get(HISTORY, {"limit": limit, "after": anchor}).json()
        page_seqs = [m["seq"] for m in page["results"]]
        assert page_seqs == sorted(page_seqs)
        seqs += page_seqs
        if not page["hasMore"]:
            return seqs
        anchor = page_seqs[-1]


def test_walking_1000_messages_back_and_forth_gives_each_exactly_once(alice, lobby):
    fill(lobby, alice, 1000)
    client = session_client(alice)
    assert walk_back(client, limit=37) == list(range(1, 1001))
    assert walk_forward(client, limit=37) == list(range(1, 1001))
    # The largest page, and the default one.
    assert walk_back(client, limit=200) == list(range(1, 1001))
    default = client.get(HISTORY).json()
    assert [m["seq"] for m in default["results"]] == list(range(951, 1001)) and default["hasMore"] is True


def test_paging_is_stable_while_others_post(alice, lobby, settings):
    settings.CHAT_POST_BURST = 10_000  # the posters below are not what this test is about
    fill(lobby, alice, 1000)
    posters = [make_user(f"poster{i}") for i in range(3)]
    for poster in posters:
        services.room_join(user=poster, slug="lobby")

    def others_post():
        for poster in posters:
            services.message_create(user=poster, to="lobby", content=f"meanwhile from {poster.username}")

    client = session_client(alice)
    # Walking back from the newest page never sees what arrived after it, nor repeats anything.
    assert walk_back(client, limit=50, between=others_post) == list(range(1, 1001))
    # Walking forward picks up every new message exactly once, up to the very last.
    seqs = walk_forward(client, limit=50, between=others_post)
    assert seqs == list(range(1, Room.objects.get(pk=lobby.pk).last_seq + 1))
    assert len(seqs) > 1000 + 3 * 20


@pytest.mark.django_db(transaction=True)
def test_paging_is_stable_under_truly_concurrent_posting(settings):
    settings.CHAT_POST_BURST = 10_000
    alice = make_user("alice")
    lobby = room(alice, "lobby")
    fill(lobby, alice, 1000)
    poster = make_user("poster")
    services.room_join(user=poster, slug="lobby")
    stop = threading.Event()
    posted: list[int] = []

    def post_until_stopped():
        try:
            while not stop.is_set():
                posted.append(services.message_create(user=poster, to="lobby", content="concurrent").message.seq)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=post_until_stopped)
    thread.start()
    try:
        client = session_client(alice)
        back = walk_back(client, limit=25)
        forward = walk_forward(client, limit=25)
    finally:
        stop.set()
        thread.join()
    assert posted, "the poster ran alongside the walks"
    newest_at_start = back[-1]
    assert back == list(range(1, newest_at_start + 1))
    assert forward == list(range(1, forward[-1] + 1)) and forward[-1] >= newest_at_start


def test_limit_is_capped_and_anchors_are_checked(alice, lobby):
    fill(lobby, alice, 300)
    client = session_client(alice)
    capped = client.get(HISTORY, {"limit": 1000}).json()
    assert len(capped["results"]) == 200 and capped["hasMore"] is True
    after = client.get(HISTORY, {"after": 290, "limit": 5}).json()
    assert [m["seq"] for m in after["results"]] == [291, 292, 293, 294, 295] and after["hasMore"] is True
    end = client.get(HISTORY, {"after": 295}).json()
    assert [m["seq"] for m in end["results"]] == [296, 297, 298, 299, 300] and end["hasMore"] is False
    first = client.get(HISTORY, {"before": 3}).json()
    assert [m["seq"] for m in first["results"]] == [1, 2] and first["hasMore"] is False
    for bad in ({"limit": 0}, {"before": "x"}, {"before": -1}, {"before": 5, "after": 1}):
        response = client.get(HISTORY, bad)
        assert response.status_code == 400 and error_code(response) == "invalid", bad


def test_changed_after_returns_edits_and_tombstones_in_change_order(alice, lobby):
    client = session_client(alice)
    ids = [
        client.post(HISTORY, {"content": f"m{i}"}, format="json").json()["id"]
        for i in range(4)  # within the posting burst
    ]
    client.patch(f"{HISTORY}{ids[2]}/", {"content": "m2 fixed"}, format="json")
    client.delete(f"{HISTORY}{ids[0]}/")
    changes = client.get(HISTORY, {"changed_after": 0}).json()
    assert [(m["id"], m["content"]) for m in changes["results"]] == [(ids[2], "m2 fixed"), (ids[0], "")]
    assert changes["results"][0]["extra"]["editedAt"] is not None
    assert changes["results"][1]["extra"]["deletedAt"] is not None and changes["hasMore"] is False
    assert client.get(HISTORY, {"changed_after": 2}).json() == {"results": [], "hasMore": False}
    # The tombstone keeps its place in the history.
    assert [m["content"] for m in client.get(HISTORY).json()["results"]] == ["", "m1", "m2 fixed", "m3"]


def test_post_returns_the_message_and_a_repeat_returns_the_original(alice, lobby):
    client = token_client(alice)
    body = {"content": "  hello  ", "messageId": "msg_1_abc"}
    first = client.post(HISTORY, body, format="json")
    again = client.post(HISTORY, {**body, "content": "something else"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    message = first.json()
    assert message["content"] == "hello" and message["messageId"] == "msg_1_abc"
    assert message["type"] == "message" and message["room"] == "lobby" and message["from"] == "alice"
    assert message["seq"] == 1 and Room.objects.get(pk=lobby.pk).last_seq == 1
    assert client.get(HISTORY).json()["results"] == [message]


def test_post_checks_like_the_socket(alice, lobby):
    client = session_client(alice)
    cases = [
        ({"content": "   "}, "invalid"),
        ({"content": "x" * 4001}, "invalid"),
        ({"content": "ok", "messageId": ""}, "invalid"),
        ({"content": "ok", "messageId": "x" * 65}, "invalid"),
        ({"content": "ok", "replyTo": 999999}, "invalid"),
        ({}, "invalid"),
    ]
    for body, code in cases:
        response = client.post(HISTORY, body, format="json")
        assert response.status_code == 400 and error_code(response) == code, body
    first = client.post(HISTORY, {"content": "question"}, format="json").json()
    reply = client.post(HISTORY, {"content": "answer", "replyTo": first["id"]}, format="json")
    assert reply.status_code == 201 and reply.json()["extra"]["replyTo"] == first["id"]


def test_malformed_json_is_bad_json(alice, lobby):
    response = session_client(alice).post(HISTORY, "{not json", content_type="application/json")
    assert response.status_code == 400 and error_code(response) == "bad_json"


@pytest.fixture
def slow_refill(settings):
    """A refill too slow to matter, so that a busy machine cannot refill the bucket mid-test."""
    settings.CHAT_POST_REFILL_PER_SECOND = 0.01


def test_eleventh_quick_post_is_rate_limited_with_retry_after(alice, lobby, slow_refill):
    client = session_client(alice)
    for i in range(10):
        assert client.post(HISTORY, {"content": f"m{i}"}, format="json").status_code == 201
    refused = client.post(HISTORY, {"content": "one too many", "messageId": "late"}, format="json")
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    retry_ms = refused.json()["error"]["retryAfterMs"]
    assert 0 < retry_ms <= 100_000
    assert int(refused["Retry-After"]) == -(-retry_ms // 1000)  # whole seconds, rounded up
    # Nothing was stored, and reading history is not limited by the posting budget.
    assert Room.objects.get(pk=lobby.pk).last_seq == 10
    for _ in range(30):
        assert client.get(HISTORY, {"before": 5}).status_code == 200


def test_repeat_is_answered_even_when_the_budget_is_spent(alice, lobby, slow_refill):
    client = session_client(alice)
    first = client.post(HISTORY, {"content": "m", "messageId": "dup"}, format="json").json()
    for i in range(9):
        client.post(HISTORY, {"content": f"m{i}"}, format="json")
    assert client.post(HISTORY, {"content": "new"}, format="json").status_code == 429
    again = client.post(HISTORY, {"content": "m", "messageId": "dup"}, format="json")
    assert again.status_code == 200 and again.json() == first


def test_edit_is_for_the_author_delete_also_for_moderators(alice, lobby):
    bob = make_user("bob")
    services.room_join(user=bob, slug="lobby")
    bobs = session_client(bob).post(HISTORY, {"content": "bob was here"}, format="json").json()
    alice_client = session_client(alice)
    refused = alice_client.patch(f"{HISTORY}{bobs['id']}/", {"content": "alice was here"}, format="json")
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    edited = session_client(bob).patch(f"{HISTORY}{bobs['id']}/", {"content": " bob, edited "}, format="json")
    assert edited.status_code == 200
    assert edited.json()["content"] == "bob, edited" and edited.json()["extra"]["editedAt"] is not None
    empty = session_client(bob).patch(f"{HISTORY}{bobs['id']}/", {"content": ""}, format="json")
    assert empty.status_code == 400 and error_code(empty) == "invalid"
    # Alice owns the room, so she may delete Bob's message.
    assert alice_client.delete(f"{HISTORY}{bobs['id']}/").status_code == 204
    tombstone = alice_client.get(HISTORY).json()["results"][0]
    assert tombstone["id"] == bobs["id"] and tombstone["content"] == "" and tombstone["extra"]["deletedAt"]
    missing = alice_client.delete(f"{HISTORY}12345/")
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_read_marker_moves_forward_only(alice, lobby):
    fill(lobby, alice, 10)
    client = session_client(alice)
    assert client.post("/api/rooms/lobby/read/", {"seq": 7}, format="json").json() == {"room": "lobby", "seq": 7}
    assert client.post("/api/rooms/lobby/read/", {"seq": 3}, format="json").json()["seq"] == 7
    assert client.post("/api/rooms/lobby/read/", {"seq": 99}, format="json").json()["seq"] == 10
    lobby_listing = client.get("/api/rooms/lobby/").json()
    assert lobby_listing["readSeq"] == 10 and lobby_listing["unread"] == 0
    bad = client.post("/api/rooms/lobby/read/", {"seq": "soon"}, format="json")
    assert bad.status_code == 400 and error_code(bad) == "invalid"


def test_unknown_paths_and_methods_answer_in_the_error_shape(alice, lobby):
    client = session_client(alice)
    unknown = client.get("/api/no-such-thing/")
    assert unknown.status_code == 404 and error_code(unknown) == "not_found"
    put = client.put(f"{HISTORY}1/", {"content": "x"}, format="json")
    assert put.status_code == 405 and error_code(put) == "invalid"
    missing_room = client.get("/api/rooms/nowhere/messages/")
    assert missing_room.status_code == 404 and error_code(missing_room) == "not_found"
