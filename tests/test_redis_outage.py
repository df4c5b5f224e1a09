"""REST through a Redis outage (issue 10, items 2 and 3), against a Redis server of the test's own
on a free port, so that it can be stopped and started again: history and posting keep answering
while it is down (throttles fail open, posting's limit falls back to this process's memory, each
logged once), and after it comes back every pooled connection from before is retried once,
transparently. Runs on both configurations: the tests point ``REDIS_URL`` and the cache at their
own server (the channel layer stays as configured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
import requests
from asgiref.sync import sync_to_async

from chat import ratelimit, services, shared_state
from chat.models import Message
from tests.conftest import make_user
from tests.servers import daphne_server, free_port
from tests.test_api_support import room, session_client

HISTORY = "/api/rooms/lobby/messages/"


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``, with nothing on disk; stop and start at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def on_own_redis(own_redis, settings) -> RedisServer:
    """Rate limits, presence and the REST throttles' cache on ``own_redis``."""
    settings.REDIS_URL = own_redis.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": own_redis.url,
            "KEY_PREFIX": "cache",
            "OPTIONS": {"pool_class": "chat.shared_state.RetryingConnectionPool"},
        }
    }
    return own_redis


def unreachable_warnings(caplog, use: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "chat.shared_state" and f"unreachable for {use}" in r.getMessage()]


def post(client, text: str):
    return client.post(HISTORY, {"content": text}, format="json")


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def lobby(alice):
    return room(alice, "lobby")


def test_rest_answers_while_redis_is_down_and_uses_it_again_once_back(on_own_redis, alice, lobby, caplog, settings):
    caplog.set_level(logging.WARNING)
    settings.CHAT_POST_BURST = 3
    client = session_client(alice)
    assert client.get(HISTORY).status_code == 200
    assert post(client, "before").status_code == 201
    assert on_own_redis.client().keys(f"{settings.CHAT_REDIS_KEY_PREFIX}bucket:*"), "the bucket lives in Redis"

    on_own_redis.stop()
    for _ in range(3):
        assert client.get(HISTORY).status_code == 200
    assert post(client, "during 1").status_code == 201
    assert post(client, "during 2").status_code == 201
    # The fallback still limits: a fresh bucket of 3 in this process's memory, 2 taken.
    assert post(client, "during 3").status_code == 201
    refused = post(client, "during 4")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert len(unreachable_warnings(caplog, "throttles")) == 1, "one warning, not one per request"
    assert len(unreachable_warnings(caplog, "rate_limits")) == 1

    ratelimit.reset_memory()
    on_own_redis.start()
    caplog.clear()
    history = client.get(HISTORY)
    assert history.status_code == 200
    assert [m["content"] for m in history.json()["results"]] == ["before", "during 1", "during 2", "during 3"]
    assert post(client, "after").status_code == 201
    assert not unreachable_warnings(caplog, ""), "Redis is back: no fallback, no error"
    # A restarted Redis is empty: these keys were written by the calls just made.
    assert on_own_redis.client().keys(f"{settings.CHAT_REDIS_KEY_PREFIX}bucket:*")
    assert on_own_redis.client().keys("cache:*throttle*")


def test_pooled_connections_from_before_a_restart_are_retried_transparently(on_own_redis, alice, lobby, caplog):
    caplog.set_level(logging.WARNING)
    client = session_client(alice)
    assert client.get(HISTORY).status_code == 200
    assert post(client, "before").status_code == 201

    on_own_redis.stop()
    on_own_redis.start()

    # The rate limits' client and the cache's pool go on as if nothing had happened.
    assert client.get(HISTORY).status_code == 200
    assert post(client, "after").status_code == 201
    assert not unreachable_warnings(caplog, "")


async def test_async_pooled_connections_from_before_a_restart_are_retried(on_own_redis, caplog):
    caplog.set_level(logging.WARNING)
    plain = redis.asyncio.Redis.from_url(on_own_redis.url)
    ours = shared_state.async_client()
    # Twenty connections in each pool, as a burst of handshakes leaves them.
    await asyncio.gather(*(client.ping() for client in (plain, ours) for _ in range(20)))

    await sync_to_async(on_own_redis.stop)()
    await sync_to_async(on_own_redis.start)()

    # What the issue saw (presence after a restart): without a retry policy, each stale
    # connection fails once.
    failed = await asyncio.gather(*(plain.ping() for _ in range(20)), return_exceptions=True)
    assert any(isinstance(result, redis.ConnectionError) for result in failed)
    await plain.aclose()
    # Ours retry each once, on a fresh connection.
    assert await asyncio.gather(*(ours.ping() for _ in range(20))) == [True] * 20
    assert await ratelimit.claim_interval_async("typing:1", 30)
    assert not await ratelimit.claim_interval_async("typing:1", 30)
    assert not unreachable_warnings(caplog, "")

    await sync_to_async(on_own_redis.stop)()
    # Down: this process's memory decides, and says so once.
    assert await ratelimit.claim_interval_async("typing:2", 30)
    assert not await ratelimit.claim_interval_async("typing:2", 30)
    assert await sync_to_async(ratelimit.claim_interval)("slow:1", 30) == 0
    assert await sync_to_async(ratelimit.claim_interval)("slow:1", 30) > 0
    assert len(unreachable_warnings(caplog, "rate_limits")) == 1


def test_a_redis_that_is_down_fails_fast(settings):
    """One retry and no backoff: the fallback answers at once, not after redis-py's default of
    ten retries with backoff."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    started = time.monotonic()
    assert ratelimit.take_token("user:1", capacity=2, refill_per_second=1) == 0
    assert asyncio.run(ratelimit.claim_interval_async("typing:1", 5))
    assert time.monotonic() - started < 1


class TestBoundedMemory:
    """The in-memory limits (the embedded default, and the fallback) do not grow without bound."""

    @pytest.fixture(autouse=True)
    def in_memory(self, settings):
        settings.REDIS_URL = ""

    def test_capped_at_max_entries(self, monkeypatch):
        monkeypatch.setattr(ratelimit, "MAX_MEMORY_ENTRIES", 100)
        for n in range(1000):
            ratelimit.take_token(f"user:{n}", capacity=5, refill_per_second=0.001)
            ratelimit.claim_interval(f"typing:{n}", 60)
        assert ratelimit.memory_entries() <= 100

    def test_the_most_recently_used_survive_the_cap(self, monkeypatch):
        monkeypatch.setattr(ratelimit, "MAX_MEMORY_ENTRIES", 100)
        for _ in range(5):
            ratelimit.take_token("busy", capacity=5, refill_per_second=0.001)
        for n in range(200):
            if n % 50 == 0:
                # Refused (the bucket is empty), which still counts as a use.
                assert ratelimit.take_token("busy", capacity=5, refill_per_second=0.001) > 0
            ratelimit.take_token(f"user:{n}", capacity=5, refill_per_second=0.001)
        assert ratelimit.take_token("busy", capacity=5, refill_per_second=0.001) > 0, "still empty, not forgotten"

    def test_entries_that_hold_nothing_back_are_swept(self, monkeypatch):
        monkeypatch.setattr(ratelimit, "SWEEP_EVERY_SECONDS", 0.0)
        for n in range(50):
            ratelimit.take_token(f"user:{n}", capacity=1, refill_per_second=100)  # full again in 10 ms
            ratelimit.claim_interval(f"typing:{n}", 0.01)
        time.sleep(0.05)
        ratelimit.claim_interval("typing:new", 60)
        assert ratelimit.memory_entries() == 1


class RestClient:
    """Alice's token over HTTP to a real server."""

    def __init__(self, address: str, key: str) -> None:
        self.base = f"http://{address}"
        self.headers = {"Authorization": f"Token {key}"}

    def history(self) -> int:
        return requests.get(f"{self.base}{HISTORY}", headers=self.headers, timeout=10).status_code

    def post(self, text: str) -> int:
        response = requests.post(f"{self.base}{HISTORY}", json={"content": text}, headers=self.headers, timeout=10)
        return response.status_code

    def ready(self) -> int:
        return requests.get(f"{self.base}/readyz", timeout=10).status_code


@pytest.fixture
def server_on_own_redis(own_redis, transactional_db) -> Iterator[RestClient]:
    """A daphne process whose channel layer, presence and rate limits are all on ``own_redis``."""
    alice = make_user("alice")
    room(alice, "lobby")
    key, _ = services.api_token_issue(user=alice)
    with daphne_server(REDIS_URL=own_redis.url) as address:
        yield RestClient(address, key)


def test_a_daphne_process_serves_rest_through_a_redis_outage(server_on_own_redis, own_redis):
    """The issue's case, over TCP: history answered 500 while Redis was down."""
    rest = server_on_own_redis
    assert (rest.history(), rest.post("before"), rest.ready()) == (200, 201, 200)
    own_redis.stop()
    assert (rest.history(), rest.ready()) == (200, 503)
    own_redis.start()
    # Every pool of the process holds connections from before the restart.
    assert (rest.history(), rest.post("after"), rest.post("again"), rest.ready()) == (200, 201, 201, 200)
    stored = Message.objects.filter(room__slug="lobby").order_by("seq").values_list("content", flat=True)
    assert list(stored) == ["before", "after", "again"]


def test_posting_answers_201_during_a_redis_outage_in_a_process_without_sockets(server_on_own_redis, own_redis):
    rest = server_on_own_redis
    assert rest.post("before") == 201
    own_redis.stop()
    assert rest.post("during") == 201
