"""Prometheus metrics of this server process, and the functions that record them.

Doors and services call the small functions below (``metrics.frame_in("message")``); only this
module knows the metrics' names and labels. Each server process counts for itself and serves
its own counts at ``/metrics`` (prometheus_client's default registry): scrape every process
(each daphne behind its own port), and sum across them in the queries. prometheus_client's
multiprocess mode would merge them through files on a shared directory, which a deploy of
independent daphne processes does not need.

Labels stay few whatever a client sends: a frame type the protocol does not know is counted as
``unknown``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from . import protocol

# Seconds, from a millisecond to ten: writes and broadcasts are expected to take a few ms, and
# an outage shows up in the top buckets.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MAX_LABEL = 40

OPEN_SOCKETS = Gauge("chat_open_sockets", "WebSockets open on this process")
FRAMES_IN = Counter("chat_frames_in", "Frames received from clients, by type", ["type"])
FRAMES_OUT = Counter("chat_frames_out", "Frames sent to clients, by type", ["type"])
POSTS_STORED = Counter("chat_posts_stored", "Messages stored (socket and REST)")
BROADCAST_LAG = Histogram(
    "chat_broadcast_lag_seconds", "From a message's commit to its frame leaving for a socket", buckets=_LATENCY_BUCKETS
)
LAYER_ERRORS = Counter("chat_layer_errors", "Channel layer operations that failed")
REFUSALS = Counter("chat_refusals", "Requests and frames refused, by error code", ["code"])
WRITE_LATENCY = Histogram(
    "chat_write_latency_seconds", "Time of a write (its service call, transaction included)", buckets=_LATENCY_BUCKETS
)
REDIS_UNREACHABLE = Counter(
    "chat_redis_unreachable", "Redis calls that failed and were served by a fallback, by use", ["use"]
)


def _label(value: str) -> str:
    return str(value)[:_MAX_LABEL]


def socket_opened() -> None:
    OPEN_SOCKETS.inc()


def socket_closed() -> None:
    OPEN_SOCKETS.dec()


def frame_in(frame_type: str) -> None:
    """A frame from a client; ``frame_type`` as the client sent it (unknown ones are pooled)."""
    FRAMES_IN.labels(type=frame_type if frame_type in protocol.CLIENT_TYPES else "unknown").inc()


def frame_out(frame_type: str) -> None:
    FRAMES_OUT.labels(type=_label(frame_type)).inc()


def posts_stored(n: int = 1) -> None:
    POSTS_STORED.inc(n)


def refusal(code: str) -> None:
    """A refusal with one of PROTOCOL section 4's error codes (``rate_limited``, ``forbidden``…)."""
    REFUSALS.labels(code=_label(code)).inc()


def layer_error() -> None:
    LAYER_ERRORS.inc()


def observe_write_latency(seconds: float) -> None:
    WRITE_LATENCY.observe(seconds)


def observe_broadcast_lag(seconds: float) -> None:
    BROADCAST_LAG.observe(seconds)


def redis_unreachable(use: str) -> None:
    REDIS_UNREACHABLE.labels(use=_label(use)).inc()


def exposition() -> tuple[bytes, str]:
    """This process's metrics in the text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
