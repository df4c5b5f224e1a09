"""Rate limits shared by every door and every process (PROTOCOL section 6).

Posting uses a token bucket (a burst of ``CHAT_POST_BURST``, refilled at
``CHAT_POST_REFILL_PER_SECOND``): the protocol names that shape exactly, and the ``limits``
package offers only window strategies, so the bucket is a few lines here. Slow mode and typing
use a plain "one per interval" claim. Redis (one atomic script) when ``REDIS_URL`` is set,
memory otherwise.

When Redis is unreachable the limits fall back to this process's memory (logged) rather than
refuse every post: each process then limits on its own, so a user spread over several processes
may briefly get their burst once per process. That is the price of posting through an outage.
The memory maps are bounded: entries that no longer hold anything back are swept out, and past
``MAX_MEMORY_ENTRIES`` the least recently used go first.
"""

from __future__ import annotations

import itertools
import threading
import time

import redis
import redis.exceptions

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

MAX_MEMORY_ENTRIES = 100_000
SWEEP_EVERY_SECONDS = 60.0
_FALLBACK = "rate limits are counted in this process's memory until it is back"

_memory_lock = threading.Lock()
# Both keep their keys in least-recently-used order (each update moves its key to the end).
# bucket key -> (tokens, at, seconds until the bucket is full again from ``at``)
_memory_buckets: dict[str, tuple[float, float, float]] = {}
# interval key -> until
_memory_intervals: dict[str, float] = {}
_last_sweep = time.monotonic()


def reset_memory() -> None:
    with _memory_lock:
        _memory_buckets.clear()
        _memory_intervals.clear()


def memory_entries() -> int:
    """How many keys the in-memory limits hold (tests check that it stays bounded)."""
    with _memory_lock:
        return len(_memory_buckets) + len(_memory_intervals)


def take_token(key: str, *, capacity: int, refill_per_second: float) -> float:
    """Take one token from the bucket ``key``. Returns 0 when taken, else the seconds to wait
    (nothing is taken then, so a refused attempt costs nothing)."""
    (wait,) = take_tokens([key], capacity=capacity, refill_per_second=refill_per_second)
    return wait


def take_tokens(keys: list[str], *, capacity: int, refill_per_second: float) -> list[float]:
    """``take_token`` for several buckets at once (a batch of posts), in one round trip to
    Redis: one result per key, in order. A key named twice takes two tokens."""
    if not keys:
        return []
    full_keys = [f"{shared_state.key_prefix()}bucket:{key}" for key in keys]
    if shared_state.uses_redis():
        try:
            return _take_tokens_redis(shared_state.sync_client(), full_keys, capacity, refill_per_second)
        except shared_state.UNREACHABLE as error:
            shared_state.warn_unreachable("rate_limits", error, instead=_FALLBACK)
    return [_take_token_memory(full_key, capacity, refill_per_second) for full_key in full_keys]


_bucket_sha: str | None = None


def _take_tokens_redis(client: redis.Redis, full_keys: list[str], capacity: int, rate: float) -> list[float]:
    """EVALSHA of the bucket script for each key, pipelined. redis-py's Script objects would ask
    Redis whether the script is loaded before every pipeline, a second round trip per batch on
    the database thread; the script is loaded once instead, and again after Redis forgot it."""
    global _bucket_sha
    for attempt in range(2):
        if _bucket_sha is None or attempt:
            _bucket_sha = client.script_load(_BUCKET_SCRIPT)
        try:
            with client.pipeline(transaction=False) as pipe:
                for full_key in full_keys:
                    pipe.evalsha(_bucket_sha, 1, full_key, capacity, rate)
                return [float(wait) for wait in pipe.execute()]
        except redis.exceptions.NoScriptError:
            continue  # Redis restarted or its scripts were flushed
    raise RuntimeError("the bucket script could not be loaded")


def claim_interval(key: str, seconds: float) -> float:
    """Claim ``key`` for ``seconds``. Returns 0 when claimed, else the seconds it stays taken."""
    full_key = f"{shared_state.key_prefix()}interval:{key}"
    if shared_state.uses_redis():
        try:
            client = shared_state.sync_client()
            if client.set(full_key, "1", px=max(1, int(seconds * 1000)), nx=True):
                return 0.0
            return max(client.pttl(full_key), 1) / 1000
        except shared_state.UNREACHABLE as error:
            shared_state.warn_unreachable("rate_limits", error, instead=_FALLBACK)
    return _claim_interval_memory(full_key, seconds)


async def claim_interval_async(key: str, seconds: float) -> bool:
    """The event-loop twin of ``claim_interval`` for the hot path (typing); True when claimed."""
    full_key = f"{shared_state.key_prefix()}interval:{key}"
    if shared_state.uses_redis():
        try:
            client = shared_state.async_client()
            return bool(await client.set(full_key, "1", px=max(1, int(seconds * 1000)), nx=True))
        except shared_state.UNREACHABLE as error:
            shared_state.warn_unreachable("rate_limits", error, instead=_FALLBACK)
    return _claim_interval_memory(full_key, seconds) == 0.0


def _take_token_memory(full_key: str, capacity: int, refill_per_second: float) -> float:
    now = time.monotonic()
    with _memory_lock:
        _sweep(now)
        tokens, at, _ = _memory_buckets.pop(full_key, (float(capacity), now, 0.0))
        tokens = min(capacity, tokens + (now - at) * refill_per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / refill_per_second
        _memory_buckets[full_key] = (tokens, now, (capacity - tokens) / refill_per_second)
        return wait


def _claim_interval_memory(full_key: str, seconds: float) -> float:
    now = time.monotonic()
    with _memory_lock:
        _sweep(now)
        until = _memory_intervals.get(full_key, 0.0)
        if until > now:
            return until - now
        _memory_intervals.pop(full_key, None)
        _memory_intervals[full_key] = now + seconds
        return 0.0


def _sweep(now: float) -> None:
    """Drop what no longer limits anyone (a full bucket is the same as none, a past interval
    the same as none): once a minute, or at once when the maps are over their cap. Still over
    after that, the least recently used go. Called with ``_memory_lock`` held."""
    global _last_sweep
    over = len(_memory_buckets) + len(_memory_intervals) > MAX_MEMORY_ENTRIES
    if not over and now - _last_sweep < SWEEP_EVERY_SECONDS:
        return
    _last_sweep = now
    for key in [k for k, (_, at, refill) in _memory_buckets.items() if at + refill <= now]:
        del _memory_buckets[key]
    for key in [k for k, until in _memory_intervals.items() if until <= now]:
        del _memory_intervals[key]
    if len(_memory_buckets) + len(_memory_intervals) <= MAX_MEMORY_ENTRIES:
        return
    # Down to nine tenths of the cap, so that full maps do not sweep on every call.
    keep = MAX_MEMORY_ENTRIES * 9 // 10
    for entries in (_memory_intervals, _memory_buckets):
        excess = len(_memory_buckets) + len(_memory_intervals) - keep
        for key in list(itertools.islice(entries, max(0, excess))):
            del entries[key]
