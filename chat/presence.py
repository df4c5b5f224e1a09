"""Who is online, across every server process.

Each open socket is an entry (its channel name, with an expiry time) in its user's set; a user is
online in a room while they are a member and any of their sockets is live anywhere. Sockets
refresh their entries periodically, so the sockets of a crashed process age out on their own.
Redis sorted sets when ``REDIS_URL`` is set, memory otherwise.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from . import shared_state

_memory_lock = threading.Lock()
_memory: dict[int, dict[str, float]] = {}


def reset_memory() -> None:
    with _memory_lock:
        _memory.clear()


def _key(user_id: int) -> str:
    return f"{shared_state.key_prefix()}presence:{user_id}"


def _now() -> float:
    return time.time()


async def socket_connected(*, user_id: int, channel_name: str) -> bool:
    """Record (or refresh) a live socket. Returns True when the user had no other live socket."""
    now = _now()
    expires = now + settings.CHAT_PRESENCE_TTL_SECONDS
    if shared_state.uses_redis():
        client = shared_state.async_client()
        async with client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(_key(user_id), "-inf", now)
            pipe.zcard(_key(user_id))
            pipe.zadd(_key(user_id), {channel_name: expires})
            pipe.expire(_key(user_id), int(settings.CHAT_PRESENCE_TTL_SECONDS) * 2)
            _, before, _, _ = await pipe.execute()
        return before == 0
    with _memory_lock:
        sockets = {c: t for c, t in _memory.get(user_id, {}).items() if t > now}
        was_offline = not sockets
        sockets[channel_name] = expires
        _memory[user_id] = sockets
        return was_offline


async def sockets_refreshed(sockets: list[tuple[int, str]]) -> None:
    """Push back the expiry of many live sockets (user id, channel name) at once."""
    if not sockets:
        return
    expires = _now() + settings.CHAT_PRESENCE_TTL_SECONDS
    if shared_state.uses_redis():
        async with shared_state.async_client().pipeline(transaction=False) as pipe:
            for user_id, channel_name in sockets:
                pipe.zadd(_key(user_id), {channel_name: expires})
                pipe.expire(_key(user_id), int(settings.CHAT_PRESENCE_TTL_SECONDS) * 2)
            await pipe.execute()
        return
    with _memory_lock:
        for user_id, channel_name in sockets:
            _memory.setdefault(user_id, {})[channel_name] = expires


async def socket_disconnected(*, user_id: int, channel_name: str) -> bool:
    """Forget a socket. Returns True when it was the user's last live socket."""
    now = _now()
    if shared_state.uses_redis():
        client = shared_state.async_client()
        async with client.pipeline(transaction=True) as pipe:
            pipe.zrem(_key(user_id), channel_name)
            pipe.zcount(_key(user_id), now, "+inf")
            _, remaining = await pipe.execute()
        return remaining == 0
    with _memory_lock:
        sockets = _memory.get(user_id, {})
        sockets.pop(channel_name, None)
        return not any(t > now for t in sockets.values())


async def online_user_ids(user_ids: list[int]) -> set[int]:
    """Which of ``user_ids`` have at least one live socket."""
    if not user_ids:
        return set()
    now = _now()
    if shared_state.uses_redis():
        async with shared_state.async_client().pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zcount(_key(user_id), now, "+inf")
            counts = await pipe.execute()
        return {user_id for user_id, count in zip(user_ids, counts, strict=True) if count}
    with _memory_lock:
        return {u for u in user_ids if any(t > now for t in _memory.get(u, {}).values())}
