"""Rate limits shared by every door and every process (PROTOCOL section 6).

Posting uses a token bucket (a burst of ``CHAT_POST_BURST``, refilled at
``CHAT_POST_REFILL_PER_SECOND``): the protocol names that shape exactly, and the ``limits``
package offers only window strategies, so the bucket is a few lines here. Slow mode and typing
use a plain "one per interval" claim. Redis (one atomic script) when ``REDIS_URL`` is set,
memory otherwise.
"""

from __future__ import annotations

import threading
import time

from . import shared_state

_BUCKET_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""

_memory_lock = threading.Lock()
_memory_buckets: dict[str, tuple[float, float]] = {}
_memory_intervals: dict[str, float] = {}


def reset_memory() -> None:
    with _memory_lock:
        _memory_buckets.clear()
        _memory_intervals.clear()


def take_token(key: str, *, capacity: int, refill_per_second: float) -> float:
    """Take one token from the bucket ``key``. Returns 0 when taken, else the seconds to wait
    (nothing is taken then, so a refused attempt costs nothing)."""
    full_key = f"{shared_state.key_prefix()}bucket:{key}"
    if shared_state.uses_redis():
        client = shared_state.sync_client()
        return float(client.eval(_BUCKET_SCRIPT, 1, full_key, capacity, refill_per_second))
    now = time.monotonic()
    with _memory_lock:
        tokens, at = _memory_buckets.get(full_key, (float(capacity), now))
        tokens = min(capacity, tokens + (now - at) * refill_per_second)
        if tokens >= 1:
            _memory_buckets[full_key] = (tokens - 1, now)
            return 0.0
        _memory_buckets[full_key] = (tokens, now)
        return (1 - tokens) / refill_per_second


def claim_interval(key: str, seconds: float) -> float:
    """Claim ``key`` for ``seconds``. Returns 0 when claimed, else the seconds it stays taken."""
    full_key = f"{shared_state.key_prefix()}interval:{key}"
    if shared_state.uses_redis():
        client = shared_state.sync_client()
        if client.set(full_key, "1", px=max(1, int(seconds * 1000)), nx=True):
            return 0.0
        return max(client.pttl(full_key), 1) / 1000
    return _claim_interval_memory(full_key, seconds)


async def claim_interval_async(key: str, seconds: float) -> bool:
    """The event-loop twin of ``claim_interval`` for the hot path (typing); True when claimed."""
    full_key = f"{shared_state.key_prefix()}interval:{key}"
    if shared_state.uses_redis():
        client = shared_state.async_client()
        return bool(await client.set(full_key, "1", px=max(1, int(seconds * 1000)), nx=True))
    return _claim_interval_memory(full_key, seconds) == 0.0


def _claim_interval_memory(full_key: str, seconds: float) -> float:
    now = time.monotonic()
    with _memory_lock:
        until = _memory_intervals.get(full_key, 0.0)
        if until > now:
            return until - now
        _memory_intervals[full_key] = now + seconds
        return 0.0
