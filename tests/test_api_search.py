"""Search over the messages a user can see, and the user directory. Runs on both databases:
PostgreSQL's full-text search and SQLite's substring fallback must agree on these cases."""

from __future__ import annotations

import pytest
from django.db import connection

from chat import services
from tests.conftest import make_user
from tests.test_api_support import clear_throttles, error_code, fill, room, session_client  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    alice, bob = make_user("alice"), make_user("bob")
    room(alice, "lobby", members=(bob,))
    room(bob, "bobs-den", kind="private")
    room(bob, "plaza")  # public, but alice never joined it
    services.message_create(user=bob, to="lobby", content="The quick brown fox jumps")
    services.message_create(user=bob, to="lobby", content="nothing to see here")
    services.message_create(user=bob, to="bobs-den", content="a secret fox den")
    services.message_create(user=bob, to="plaza", content="a public fox too")
    return alice, bob


def found(client, **params) -> list[str]:
    response = client.get("/api/search/", params)
    assert response.status_code == 200, response.content
    return [m["content"] for m in response.json()["results"]]


def test_search_finds_words_only_in_the_users_rooms(people):
    alice, bob = people
    assert found(session_client(alice), q="fox") == ["The quick brown fox jumps"]
    assert found(session_client(bob), q="fox") == ["a public fox too", "a secret fox den", "The quick brown fox jumps"]
    assert found(session_client(alice), q="elephant") == []


def test_search_within_one_room(people):
    alice, bob = people
    assert found(session_client(bob), q="fox", room="bobs-den") == ["a secret fox den"]
    hidden = session_client(alice).get("/api/search/", {"q": "fox", "room": "bobs-den"})
    assert hidden.status_code == 404 and error_code(hidden) == "not_found"
    assert b"secret" not in hidden.content
    # A public room she is not in: nothing, since she has not joined it.
    assert found(session_client(alice), q="fox", room="plaza") == []


def test_search_results_are_message_objects_and_skip_deleted_ones(people):
    alice, bob = people
    client = session_client(bob)
    fox = client.get("/api/search/", {"q": "quick"}).json()["results"][0]
    assert fox == session_client(bob).get("/api/rooms/lobby/messages/").json()["results"][0]
    services.message_delete(user=bob, message_id=fox["id"])
    assert found(client, q="quick") == []


def test_search_pages_cover_every_match_once(people):
    alice, _ = people
    lobby = alice.memberships.get(room__slug="lobby").room
    fill(lobby, alice, 45, text="needle")
    client = session_client(alice)
    seen: list[int] = []
    page = client.get("/api/search/", {"q": "needle", "limit": 20}).json()
    while True:
        seen += [m["seq"] for m in page["results"]]
        if not page["next"]:
            break
        page = client.get(page["next"]).json()
    assert sorted(seen) == [seq for seq in range(3, 48)] and len(seen) == len(set(seen)) == 45
    assert seen == sorted(seen, reverse=True), "newest first"


def test_search_needs_words(people):
    alice, _ = people
    response = session_client(alice).get("/api/search/")
    assert response.status_code == 400 and error_code(response) == "invalid"


def test_full_text_search_on_postgresql_matches_words_not_substrings(people):
    alice, _ = people
    # On PostgreSQL "fo" is not a word of any message; SQLite's fallback matches the substring.
    expected = [] if connection.vendor == "postgresql" else ["The quick brown fox jumps"]
    assert found(session_client(alice), q="fo") == expected


def test_user_directory(people):
    alice, _ = people
    make_user("bobby", display_name="Robert")
    gone = make_user("boris")
    gone.is_active = False
    gone.save()
    client = session_client(alice)
    assert [u["username"] for u in client.get("/api/users/", {"q": "bo"}).json()] == ["bob", "bobby"]
    assert client.get("/api/users/", {"q": "rober"}).json() == [
        {"id": client.get("/api/users/", {"q": "bobby"}).json()[0]["id"], "username": "bobby", "displayName": "Robert"}
    ]
    everyone = [u["username"] for u in client.get("/api/users/").json()]
    assert "alice" not in everyone and "boris" not in everyone and "bob" in everyone
