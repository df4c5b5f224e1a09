"""``/metrics`` (issue 10, item 7): Prometheus text for staff or the configured bearer token, a
404 for anyone else; the record functions others call, and the refusals the REST door counts."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from chat import metrics
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"  # noqa: S105 - a test value


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(make_user(is_staff=True))
    return client


def test_staff_read_the_metrics(staff_client):
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    for name in (
        "chat_open_sockets",
        "chat_frames_in_total",
        "chat_frames_out_total",
        "chat_posts_stored_total",
        "chat_broadcast_lag_seconds_bucket",
        "chat_layer_errors_total",
        "chat_refusals_total",
        "chat_write_latency_seconds_bucket",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text, name


@pytest.mark.parametrize(
    "kind", ["anonymous", "member", "staff-but-inactive", "wrong-token", "token-when-none-is-set", "other-scheme"]
)
def test_others_get_404(kind, settings):
    settings.CHAT_METRICS_TOKEN = "" if kind == "token-when-none-is-set" else TOKEN
    client = Client()
    headers = {}
    if kind == "member":
        client.force_login(make_user())
    elif kind == "staff-but-inactive":
        client.force_login(make_user(is_staff=True, is_active=False))
    elif kind in ("wrong-token", "token-when-none-is-set"):
        headers["Authorization"] = "Bearer not-the-token"
    elif kind == "other-scheme":
        headers["Authorization"] = f"Token {TOKEN}"
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 404
    assert b"chat_" not in response.content


def test_the_token_opens_them_without_a_session(settings):
    settings.CHAT_METRICS_TOKEN = TOKEN
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert b"chat_open_sockets" in response.content
    assert not response.cookies


def test_record_functions_move_their_metrics(staff_client):
    before = {
        "open": sample("chat_open_sockets"),
        "in": sample("chat_frames_in_total", type="message"),
        "unknown": sample("chat_frames_in_total", type="unknown"),
        "out": sample("chat_frames_out_total", type="message"),
        "posts": sample("chat_posts_stored_total"),
        "refused": sample("chat_refusals_total", code="rate_limited"),
        "layer": sample("chat_layer_errors_total"),
        "write": sample("chat_write_latency_seconds_count"),
        "lag": sample("chat_broadcast_lag_seconds_count"),
    }
    metrics.socket_opened()
    metrics.socket_opened()
    metrics.socket_closed()
    metrics.frame_in("message")
    metrics.frame_in("x" * 500)  # a client's made-up type: pooled, never a label of its own
    metrics.frame_out("message")
    metrics.posts_stored(3)
    metrics.refusal("rate_limited")
    metrics.layer_error()
    metrics.observe_write_latency(0.004)
    metrics.observe_broadcast_lag(0.02)

    assert sample("chat_open_sockets") == before["open"] + 1
    assert sample("chat_frames_in_total", type="message") == before["in"] + 1
    assert sample("chat_frames_in_total", type="unknown") == before["unknown"] + 1
    assert sample("chat_frames_out_total", type="message") == before["out"] + 1
    assert sample("chat_posts_stored_total") == before["posts"] + 3
    assert sample("chat_refusals_total", code="rate_limited") == before["refused"] + 1
    assert sample("chat_layer_errors_total") == before["layer"] + 1
    assert sample("chat_write_latency_seconds_count") == before["write"] + 1
    assert sample("chat_broadcast_lag_seconds_count") == before["lag"] + 1
    metrics.socket_closed()
    assert 'chat_frames_in_total{type="message"}' in staff_client.get("/metrics").content.decode()


def test_rest_refusals_are_counted_by_code():
    client = Client()
    client.force_login(make_user())
    not_found = sample("chat_refusals_total", code="not_found")
    invalid = sample("chat_refusals_total", code="invalid")
    assert client.get("/api/rooms/no-such-room/").status_code == 404
    assert client.post("/api/rooms/", {}, content_type="application/json").status_code == 400
    assert sample("chat_refusals_total", code="not_found") == not_found + 1
    assert sample("chat_refusals_total", code="invalid") == invalid + 1
