"""``/healthz`` and ``/readyz`` (issue 10, item 7): no session, no login, no throttle, no HTTPS
redirect; ``/readyz`` names what is down. Redis is the test's own server (or a closed port), so
this runs the same on both configurations."""

from __future__ import annotations

import socket

import pytest
from django.db import connection

from chat import health
from tests.conftest import make_user
from tests.test_redis_outage import on_own_redis, own_redis  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_probe_log(monkeypatch):
    """Each test starts with nothing known to be down (the log says when that changes)."""
    monkeypatch.setattr(health, "_down", {})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def redis_down(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"


@pytest.fixture
def database_down(monkeypatch, tmp_path):
    """The settings /readyz connects with now point at a database that is not there (the test's
    own connection, already open, is left alone)."""
    if connection.vendor == "postgresql":
        monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(connection.settings_dict, "PORT", str(closed_port()))
    else:
        monkeypatch.setitem(connection.settings_dict, "NAME", str(tmp_path / "no-such-dir" / "db.sqlite3"))


def test_healthz_answers_without_session_or_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert not response.cookies, "no session, no CSRF cookie"
    assert "no-cache" in response["Cache-Control"]


def test_healthz_is_get_and_head_only(client):
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_readyz_ok_with_database_and_redis_up(client, on_own_redis):  # noqa: F811
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    assert not response.cookies


def test_readyz_without_redis_configured_checks_the_database_only(client, settings):
    settings.REDIS_URL = ""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "unused"}


def test_readyz_503_names_redis_when_it_is_down(client, redis_down, caplog):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["down"] == ["redis"]
    assert body["checks"] == {"database": "ok", "redis": "down"}
    client.get("/readyz")
    assert len([r for r in caplog.records if "redis is unreachable" in r.getMessage()]) == 1, "logged once per outage"


def test_readyz_503_names_the_database_when_it_is_down(client, database_down, on_own_redis):  # noqa: F811
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["database"]
    assert response.json()["checks"]["redis"] == "ok"


def test_readyz_503_names_both(client, database_down, redis_down):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["database", "redis"]


def test_probes_are_not_throttled(client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_read": "1/minute"}}
    user = make_user()
    client.force_login(user)
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)


def test_probes_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/api/rooms/").status_code == 301, "everything else still is"
