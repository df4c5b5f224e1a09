"""DRF throttles of the REST API. Reads and other writes have separate budgets, so that paging
back through history is never refused because of posting; posting a message itself is limited
by the token bucket it shares with the socket (inside ``services.message_create``).

The counts live in the Django cache (Redis when ``REDIS_URL`` is set). When it cannot be
reached the throttles let requests through (logged): a read budget is a guard against abuse,
not a reason to answer 500 to everyone during an outage, and posting keeps its own limit."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

from chat import shared_state

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _MethodThrottle(UserRateThrottle):
    """Counts per user (per address when anonymous), for one kind of method only."""

    reads: bool

    def get_rate(self) -> str | None:
        # Looked up on every request rather than once at import (DRF's default), so that the
        # settings in force (a test's override, the benchmark's) decide.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        if (request.method in SAFE_METHODS) != self.reads:
            return True
        try:
            return super().allow_request(request, view)
        except shared_state.UNREACHABLE as error:
            shared_state.warn_unreachable("throttles", error, instead="REST requests are not throttled")
            return True


class ReadThrottle(_MethodThrottle):
    scope = "api_read"
    reads = True


class WriteThrottle(_MethodThrottle):
    scope = "api_write"
    reads = False
