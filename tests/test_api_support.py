"""Helpers for the REST API tests (no tests here): clients for each kind of caller, rooms filled
with history, and a clean throttle cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import User
from chat import services
from chat.models import Message, Room


@pytest.fixture(autouse=True)
def clear_throttles():
    """DRF keeps throttle history in the cache, which outlives a test's database rollback."""
    cache.clear()
    yield
    cache.clear()


def session_client(user: User, *, enforce_csrf: bool = False) -> APIClient:
    """A browser-like caller: a real session cookie (so CSRF applies when enforced)."""
    client = APIClient(enforce_csrf_checks=enforce_csrf)
    client.force_login(user)
    return client


def token_client(user: User) -> APIClient:
    """A script-like caller: ``Authorization: Token …``, no cookie."""
    key, _ = services.api_token_issue(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def room(owner: User, slug: str, *, kind: str = "public", members: tuple[User, ...] = ()) -> Room:
    created = services.room_create(user=owner, slug=slug, name=slug.title(), kind=kind)
    for member in members:
        if kind == "public":
            services.room_join(user=member, slug=slug)
        else:
            services.member_invite(user=owner, slug=slug, username=member.username)
    return created


def fill(target: Room, author: User, count: int, *, text: str = "message") -> None:
    """``count`` messages at once, numbered on from the room's last seq (test data only: the
    real path is services.message_create, which the rate limit would slow to 1 per second)."""
    target.refresh_from_db()
    start = target.last_seq
    Message.objects.bulk_create(
        Message(room=target, author=author, seq=seq, content=f"{text} {seq}")
        for seq in range(start + 1, start + count + 1)
    )
    Room.objects.filter(pk=target.pk).update(last_seq=start + count)
    target.refresh_from_db()


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["code"]
