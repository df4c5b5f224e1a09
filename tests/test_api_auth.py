"""How callers authenticate: the session (with CSRF on unsafe methods) or a token they create and
revoke; and the throttles DRF applies on top."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings as django_settings
from django.middleware.csrf import get_token
from django.test import RequestFactory
from rest_framework.test import APIClient

from tests.conftest import make_user
from tests.test_api_support import clear_throttles, error_code, room, session_client  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    user = make_user("alice")
    room(user, "lobby")
    return user


def test_token_lifecycle(alice):
    session = session_client(alice)
    created = session.post("/api/token/")
    again = session.post("/api/token/")
    assert (created.status_code, again.status_code) == (201, 200)
    token = created.json()["token"]
    assert again.json() == {"token": token}

    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert [r["slug"] for r in script.get("/api/rooms/").json()] == ["lobby"]
    assert script.post("/api/rooms/lobby/messages/", {"content": "from a script"}, format="json").status_code == 201

    assert script.delete("/api/token/").status_code == 204
    refused = script.get("/api/rooms/")
    assert refused.status_code == 401 and error_code(refused) == "forbidden"
    # A new token is a different one.
    assert session.post("/api/token/").json()["token"] != token


def test_token_with_username_and_password(alice):
    anonymous = APIClient()
    created = anonymous.post("/api/token/", {"username": "alice", "password": "pw-alice"}, format="json")
    assert created.status_code == 201
    wrong = anonymous.post("/api/token/", {"username": "alice", "password": "nope"}, format="json")
    assert wrong.status_code == 401 and error_code(wrong) == "forbidden"
    assert "token" not in wrong.json()
    nothing = anonymous.post("/api/token/")
    assert nothing.status_code == 401 and error_code(nothing) == "forbidden"
    partial = anonymous.post("/api/token/", {"username": "alice"}, format="json")
    assert partial.status_code == 400 and error_code(partial) == "invalid"


def test_inactive_user_gets_no_token_and_loses_access(alice):
    anonymous = APIClient()
    token = anonymous.post("/api/token/", {"username": "alice", "password": "pw-alice"}, format="json").json()["token"]
    alice.is_active = False
    alice.save()
    assert (
        anonymous.post("/api/token/", {"username": "alice", "password": "pw-alice"}, format="json").status_code == 401
    )
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert script.get("/api/rooms/").status_code == 401


def test_session_needs_csrf_for_unsafe_methods(alice):
    browser = session_client(alice, enforce_csrf=True)
    # Reads need no token.
    assert browser.get("/api/rooms/lobby/messages/").status_code == 200
    refused = browser.post("/api/rooms/lobby/messages/", {"content": "forged"}, format="json")
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert "CSRF" in refused.json()["error"]["message"]
    assert browser.get("/api/rooms/lobby/messages/").json()["results"] == []
    # With the CSRF cookie echoed in the header (what the page's script does), the post passes.
    csrf = get_token(RequestFactory().get("/"))
    browser.cookies[django_settings.CSRF_COOKIE_NAME] = csrf
    accepted = browser.post("/api/rooms/lobby/messages/", {"content": "genuine"}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert accepted.status_code == 201


def test_token_callers_need_no_csrf(alice):
    session = session_client(alice)
    token = session.post("/api/token/").json()["token"]
    script = APIClient(enforce_csrf_checks=True)
    script.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert script.post("/api/rooms/lobby/messages/", {"content": "no csrf"}, format="json").status_code == 201


def _rates(settings, **rates):
    framework = copy.deepcopy(django_settings.REST_FRAMEWORK)
    framework["DEFAULT_THROTTLE_RATES"].update(rates)
    settings.REST_FRAMEWORK = framework


def test_reads_have_their_own_throttle(alice, settings):
    _rates(settings, api_read="3/minute")
    client = session_client(alice)
    for _ in range(3):
        assert client.get("/api/rooms/lobby/messages/").status_code == 200
    refused = client.get("/api/rooms/")
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert int(refused["Retry-After"]) >= 1 and refused.json()["error"]["retryAfterMs"] >= 1000
    # Writes are counted apart: posting still works.
    assert client.post("/api/rooms/lobby/messages/", {"content": "still here"}, format="json").status_code == 201
    # Another user has a budget of their own.
    assert session_client(make_user("bob")).get("/api/rooms/").status_code == 200


def test_default_read_budget_allows_a_long_scroll(alice):
    client = session_client(alice)
    for _ in range(300):
        assert client.get("/api/rooms/lobby/messages/", {"before": 1}).status_code == 200


def test_other_writes_are_throttled_apart_from_reads(alice, settings):
    _rates(settings, api_write="2/minute")
    client = session_client(alice)
    assert client.post("/api/ws-ticket/").status_code == 200
    assert client.post("/api/ws-ticket/").status_code == 200
    refused = client.post("/api/ws-ticket/")
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert client.get("/api/rooms/").status_code == 200
