"""Every endpoint for each kind of caller: a member (session), a stranger (session), an anonymous
caller, and a member using a token. A private room's strangers learn nothing, not even that it
exists; anonymous callers get 401."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from chat import services
from chat.models import Message
from tests.conftest import make_user
from tests.test_api_support import clear_throttles, error_code, room, session_client, token_client  # noqa: F401

pytestmark = pytest.mark.django_db

SECRET_TEXT = "hello secret world"


@pytest.fixture
def world():
    alice = make_user("alice")  # owner of the private room
    carol = make_user("carol")  # a plain member, calling with a token
    bob = make_user("bob")  # not a member
    make_user("dave")  # someone to add
    secret = room(alice, "secret", kind="private", members=(carol,))
    room(alice, "lobby")
    message = services.message_create(user=alice, to="secret", content=SECRET_TEXT, client_id="m1").message
    return {
        "member": session_client(alice),
        "stranger": session_client(bob),
        "anonymous": APIClient(),
        "token": token_client(carol),
        "room": secret,
        "message": message,
    }


# (method, path, body, {caller: expected status})
ENDPOINTS = [
    ("get", "/api/rooms/", None, {"member": 200, "stranger": 200, "token": 200}),
    ("post", "/api/rooms/", {"slug": "fresh", "kind": "private"}, {"member": 201, "stranger": 201, "token": 201}),
    ("get", "/api/rooms/secret/", None, {"member": 200, "stranger": 404, "token": 200}),
    ("get", "/api/rooms/secret/members/", None, {"member": 200, "stranger": 404, "token": 200}),
    ("post", "/api/rooms/secret/members/", {"username": "dave"}, {"member": 201, "stranger": 404, "token": 403}),
    ("get", "/api/rooms/secret/messages/", None, {"member": 200, "stranger": 404, "token": 200}),
    ("post", "/api/rooms/secret/messages/", {"content": "hi"}, {"member": 201, "stranger": 404, "token": 201}),
    (
        "patch",
        "/api/rooms/secret/messages/{id}/",
        {"content": "edited"},
        {"member": 200, "stranger": 404, "token": 403},
    ),
    ("delete", "/api/rooms/secret/messages/{id}/", None, {"member": 204, "stranger": 404, "token": 403}),
    ("post", "/api/rooms/secret/read/", {"seq": 1}, {"member": 200, "stranger": 404, "token": 200}),
    ("get", "/api/users/?q=a", None, {"member": 200, "stranger": 200, "token": 200}),
    ("get", "/api/search/?q=secret", None, {"member": 200, "stranger": 200, "token": 200}),
    ("post", "/api/ws-ticket/", None, {"member": 200, "stranger": 200, "token": 200}),
    # The token caller already has a token: 200 with it rather than 201.
    ("post", "/api/token/", None, {"member": 201, "stranger": 201, "token": 200}),
    ("delete", "/api/token/", None, {"member": 204, "stranger": 204, "token": 204}),
]


@pytest.mark.parametrize("caller", ["member", "stranger", "anonymous", "token"])
@pytest.mark.parametrize(("method", "path", "body", "expected"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
def test_endpoint_answers_each_kind_of_caller(world, caller, method, path, body, expected):
    client = world[caller]
    response = getattr(client, method)(path.format(id=world["message"].pk), body, format="json")
    assert response.status_code == expected.get(caller, 401), response.content
    if caller == "anonymous":
        assert error_code(response) == "forbidden"
        assert response["WWW-Authenticate"] == "Token"
    if response.status_code >= 400:
        code = error_code(response)
        assert code == {401: "forbidden", 403: "forbidden", 404: "not_found"}[response.status_code]
    if caller in ("stranger", "anonymous"):
        # Nothing of the private room reaches a stranger, whatever the endpoint.
        assert SECRET_TEXT.encode() not in response.content
        assert b"Secret" not in response.content


def test_room_list_shows_own_rooms_and_public_ones_only(world):
    member_rooms = {r["slug"]: r for r in world["member"].get("/api/rooms/").json()}
    stranger_rooms = {r["slug"]: r for r in world["stranger"].get("/api/rooms/").json()}
    assert set(member_rooms) == {"lobby", "secret"}
    assert set(stranger_rooms) == {"lobby"}
    assert member_rooms["secret"]["role"] == "owner" and member_rooms["secret"]["isMember"] is True
    assert member_rooms["secret"]["members"] == 2 and member_rooms["secret"]["lastSeq"] == 1
    assert stranger_rooms["lobby"]["isMember"] is False and stranger_rooms["lobby"]["role"] is None


def test_member_and_token_user_see_the_whole_history(world):
    for caller in ("member", "token"):
        page = world[caller].get("/api/rooms/secret/messages/").json()
        assert [m["content"] for m in page["results"]] == [SECRET_TEXT]


def test_former_member_sees_no_history(world):
    carol = world["room"].memberships.get(user__username="carol").user
    services.room_leave(user=carol, slug="secret")
    response = world["token"].get("/api/rooms/secret/messages/")
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert SECRET_TEXT.encode() not in response.content


def test_stranger_may_read_a_public_room_but_must_join_to_post(world):
    services.message_create(user=world["room"].created_by, to="lobby", content="welcome all")
    stranger = world["stranger"]
    assert [m["content"] for m in stranger.get("/api/rooms/lobby/messages/").json()["results"]] == ["welcome all"]
    refused = stranger.post("/api/rooms/lobby/messages/", {"content": "hi"}, format="json")
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    # Naming oneself joins a public room; then posting works.
    joined = stranger.post("/api/rooms/lobby/members/", {"username": "bob"}, format="json")
    assert joined.status_code == 201 and joined.json()["role"] == "member"
    assert stranger.post("/api/rooms/lobby/messages/", {"content": "hi"}, format="json").status_code == 201


def test_invite_adds_to_private_room_and_is_idempotent(world):
    member = world["member"]
    first = member.post("/api/rooms/secret/members/", {"username": "dave"}, format="json")
    again = member.post("/api/rooms/secret/members/", {"username": "dave"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json() == {"username": "dave", "displayName": "dave", "role": "member"}
    names = [m["username"] for m in member.get("/api/rooms/secret/members/").json()]
    assert names == ["alice", "carol", "dave"]
    unknown = member.post("/api/rooms/secret/members/", {"username": "nobody"}, format="json")
    assert unknown.status_code == 404 and error_code(unknown) == "not_found"
    public = member.post("/api/rooms/lobby/members/", {"username": "dave"}, format="json")
    assert public.status_code == 400 and error_code(public) == "invalid"


def test_message_urls_must_name_the_messages_room(world):
    services.room_join(user=world["room"].created_by, slug="lobby")
    wrong_room = world["member"].patch(
        f"/api/rooms/lobby/messages/{world['message'].pk}/", {"content": "x"}, format="json"
    )
    assert wrong_room.status_code == 404 and error_code(wrong_room) == "not_found"
    assert Message.objects.get(pk=world["message"].pk).content == SECRET_TEXT


def test_banned_member_is_refused_like_a_stranger(world):
    world["room"].memberships.filter(user__username="carol").update(banned=True)
    response = world["token"].get("/api/rooms/secret/messages/")
    assert response.status_code == 404 and SECRET_TEXT.encode() not in response.content
    assert "secret" not in [r["slug"] for r in world["token"].get("/api/rooms/").json()]
