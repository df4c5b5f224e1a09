"""Where state that every server process must see lives: Redis when ``REDIS_URL`` is set,
this process's memory otherwise (the embedded default serves one process).

Presence and rate limits use it; both clear it between tests through ``reset_for_tests``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis
import redis.asyncio
from django.conf import settings

_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def key_prefix() -> str:
    return settings.CHAT_REDIS_KEY_PREFIX


def uses_redis() -> bool:
    return bool(settings.REDIS_URL)


def sync_client() -> redis.Redis:
    global _sync_client
    with _lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        return _sync_client


def async_client() -> redis.asyncio.Redis:
    """One client per event loop: asyncio connections cannot move between loops."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # As many connections as the channel layer may use: every socket's connect and
        # disconnect touches presence, and they come in bursts.
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, decode_responses=True, max_connections=1000)
        _async_clients[loop] = client
    return client


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
