"""A PostgreSQL outage answers quickly and heals by itself (issue 10, item 5).

A real daphne process serves the test database as a role of this test's own; cutting that role
off (NOLOGIN, then ending its sessions) is an outage for the server and for nobody else: the
PostgreSQL server, this test's own connection and other runs' databases carry on. While the role
is cut off, a REST post must answer a 5xx JSON error within ~3 s (the pool's timeout, 2 s by
default, not 10 s); once it may log in again, posts must succeed without a restart.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests
from django.db import connection

from chat import services
from chat.models import Message
from tests.conftest import make_user
from tests.servers import daphne_server

pytestmark = pytest.mark.django_db(transaction=True)

# The bound on an answer during the outage: the pool's 2 s plus the request's own work.
ANSWER_WITHIN = 3.0
# The pool retries a failed connection with a backoff capped by DATABASE_POOL_RECONNECT_TIMEOUT.
RECOVER_WITHIN = 15.0


@pytest.fixture
def outage_role():
    """A login role with the rights the server needs on the test database, and nothing else."""
    if connection.vendor != "postgresql":
        pytest.skip("a database outage is simulated with a PostgreSQL role (run with DATABASE_URL=postgres://…)")
    # Roles are global to the PostgreSQL server: a name of this run's own.
    role = f"chat_outage_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" LOGIN')
        cursor.execute(f'GRANT CONNECT ON DATABASE "{connection.settings_dict["NAME"]}" TO "{role}"')
        cursor.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        cursor.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        cursor.execute(f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    try:
        yield role
    finally:
        with connection.cursor() as cursor:
            _end_sessions(cursor, role)
            cursor.execute(f'DROP OWNED BY "{role}"')  # its grants on this database
            cursor.execute(f'DROP ROLE "{role}"')


def _end_sessions(cursor, role: str) -> None:
    cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])


def _cut_off(role: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER ROLE "{role}" NOLOGIN')
        _end_sessions(cursor, role)


def _restore(role: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER ROLE "{role}" LOGIN')


def _server_url(role: str) -> str:
    db = connection.settings_dict
    return f"postgres://{role}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _timed_post(session: requests.Session, address: str, n: int) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = session.post(
        f"http://{address}/api/rooms/lobby/messages/", json={"content": f"post {n}", "messageId": f"m-{n}"}, timeout=30
    )
    return response, time.monotonic() - started


def test_posts_fail_fast_during_an_outage_and_succeed_after_it(outage_role):
    alice = make_user("alice")
    services.room_create(user=alice, slug="lobby", name="Lobby")
    key, _ = services.api_token_issue(user=alice)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {key}"

    # The posting limit is not what this test is about: the recovery loop posts often.
    with daphne_server(DATABASE_URL=_server_url(outage_role), CHAT_POST_BURST="1000") as address:
        response, _ = _timed_post(session, address, 0)
        assert response.status_code == 201, response.text

        _cut_off(outage_role)
        try:
            # The first post finds the pool's connections dead, the second an empty pool that
            # cannot reconnect: both must answer within the bound.
            outage = [_timed_post(session, address, n) for n in (1, 2)]
        finally:
            _restore(outage_role)
        restored_at = time.monotonic()
        for response, elapsed in outage:
            print(f"outage answer: {response.status_code} after {elapsed:.2f} s")  # noqa: T201 — the measurement
        for response, elapsed in outage:
            assert response.status_code >= 500, response.text
            assert response.json()["error"]["code"] == "server_error"
            assert elapsed < ANSWER_WITHIN, f"an answer took {elapsed:.2f} s during the outage"

        n = 3
        while True:
            response, _ = _timed_post(session, address, n)
            n += 1
            if response.status_code == 201:
                break
            assert time.monotonic() - restored_at < RECOVER_WITHIN, f"not recovered: {response.text}"
            time.sleep(0.2)
        print(f"recovered {time.monotonic() - restored_at:.2f} s after the role could log in again")  # noqa: T201
        # Once it answers again, it keeps answering: no dead connection is handed out after the first.
        for _ in range(10):
            response, _ = _timed_post(session, address, n)
            n += 1
            assert response.status_code == 201, response.text

    # The refused posts were not stored, and every accepted one was.
    assert not Message.objects.filter(client_id__in=["m-1", "m-2"]).exists()
    assert Message.objects.filter(room__slug="lobby").count() == 12


def test_connections_a_restart_closed_are_not_handed_out(outage_role):
    """Ending the server's sessions (as a PostgreSQL restart or failover does) while they idle
    in its pool fails no request: the pool's check sees the closed socket and reconnects."""
    alice = make_user("alice")
    services.room_create(user=alice, slug="lobby", name="Lobby")
    key, _ = services.api_token_issue(user=alice)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {key}"
    with daphne_server(DATABASE_URL=_server_url(outage_role), CHAT_POST_BURST="1000") as address:
        for n in range(3):
            response, _ = _timed_post(session, address, n)
            assert response.status_code == 201, response.text
        with connection.cursor() as cursor:
            _end_sessions(cursor, outage_role)
        time.sleep(0.2)  # the closed sockets reach the server's pool
        for n in range(3, 8):
            response, elapsed = _timed_post(session, address, n)
            assert response.status_code == 201, response.text
            assert elapsed < ANSWER_WITHIN
