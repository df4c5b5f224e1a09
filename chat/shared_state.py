"""Where state that every server process must see lives: Redis when ``REDIS_URL`` is set,
this process's memory otherwise (the embedded default serves one process).

Presence and rate limits use it; both clear it between tests through ``reset_for_tests``.

Every Redis client of ours (the two below and the Django cache's pool) retries a command once
on a connection error: after a Redis restart each pooled connection is dead but does not know it
yet, and its first command fails. redis-py builds pools without any retry unless asked (a pool
made by ``from_url`` ignores the client's default ``Retry``), so we ask. One retry, no backoff:
a stale connection succeeds on its fresh reconnect at once, and a Redis that is really down
fails fast, so that the callers' fallbacks answer quickly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)

# What "Redis is unreachable" raises, from either client (BusyLoadingError, Redis reading its
# data back after a restart, is a ConnectionError).
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# A dead connection is noticed by a PING before the next command once it has idled this long,
# rather than by the command itself.
HEALTH_CHECK_INTERVAL_SECONDS = 10
# How long connecting may take: a Redis host that drops packets must not hold a request for
# redis-py's default 5 s on every attempt.
CONNECT_TIMEOUT_SECONDS = 2
# An outage would otherwise log one warning per request.
WARNING_INTERVAL_SECONDS = 60.0

_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_last_warning: dict[str, float] = {}


def key_prefix() -> str:
    return settings.CHAT_REDIS_KEY_PREFIX


# Enough for the bursts that matter (every presence call is one short pipeline); waiting longer
# than this for one means Redis itself is stuck.
ASYNC_POOL_CONNECTIONS = 100
ASYNC_POOL_WAIT_SECONDS = 5.0


def uses_redis() -> bool:
    return bool(settings.REDIS_URL)


def connection_options(*, asyncio_client: bool = False) -> dict[str, Any]:
    """The retry policy of every Redis connection of ours (see the module's docstring)."""
    retry_class = redis.asyncio.retry.Retry if asyncio_client else redis.retry.Retry
    return {
        "retry": retry_class(NoBackoff(), 1),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }


class RetryingConnectionPool(redis.ConnectionPool):
    """The Django cache's pool (``CACHES["default"]["OPTIONS"]["pool_class"]``), with our policy."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RetryingConnectionPool:
        return super().from_url(url, **(connection_options() | kwargs))


def sync_client() -> redis.Redis:
    global _sync_client
    with _lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True, **connection_options())
        return _sync_client


def async_client() -> redis.asyncio.Redis:
    """One client per event loop: asyncio connections cannot move between loops."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # Every socket's connect and disconnect touches presence, and they come in bursts (2,000
        # sockets of a restarted process leaving at once): a bounded pool that makes the burst
        # wait its turn for a connection, where a plain pool raised "Too many connections".
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            max_connections=ASYNC_POOL_CONNECTIONS,
            timeout=ASYNC_POOL_WAIT_SECONDS,
            **connection_options(asyncio_client=True),
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def warn_unreachable(use: str, error: BaseException, *, instead: str) -> None:
    """Count and log that Redis could not serve ``use`` and what was done ``instead``; the log
    gets at most one such warning per ``WARNING_INTERVAL_SECONDS`` for each ``use``."""
    from . import metrics

    metrics.redis_unreachable(use)
    now = time.monotonic()
    with _lock:
        if now - _last_warning.get(use, -WARNING_INTERVAL_SECONDS) < WARNING_INTERVAL_SECONDS:
            return
        _last_warning[use] = now
    logger.warning(
        "Redis unreachable for %s (%s: %s): %s. At most one such warning per %.0f s.",
        use,
        type(error).__name__,
        error,
        instead,
        WARNING_INTERVAL_SECONDS,
    )


def reset_clients() -> None:
    """Forget the clients, so that the next call connects to the ``REDIS_URL`` now in force."""
    global _sync_client
    with _lock:
        if _sync_client is not None:
            _sync_client.close()
        _sync_client = None
        _last_warning.clear()
    # Asyncio clients belong to their loops (closing one needs its loop): just drop them.
    _async_clients.clear()


@receiver(setting_changed)
def _redis_url_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "REDIS_URL":
        reset_clients()


def reset_for_tests() -> None:
    """Forget every key of ours (Redis) or all in-memory state."""
    from . import presence, ratelimit

    if uses_redis():
        client = sync_client()
        keys = list(client.scan_iter(match=f"{key_prefix()}*", count=1000))
        if keys:
            client.delete(*keys)
    presence.reset_memory()
    ratelimit.reset_memory()
