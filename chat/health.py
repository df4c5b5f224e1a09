"""The operators' door: ``/healthz`` (the process answers), ``/readyz`` (it can serve: the
database and Redis answer) and ``/metrics`` (Prometheus, for staff or a bearer token).

The probes touch neither the session nor the user, so a load balancer's request costs no
database query and sets no cookie; they are outside the REST API and its throttles. Each
dependency check opens a connection of its own with a short timeout
(``CHAT_READY_TIMEOUT_SECONDS``) instead of borrowing a pooled one: a probe must answer within
its own deadline, and an exhausted pool is not an outage.
"""

from __future__ import annotations

import hmac
import logging

import redis
from django.conf import settings
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import metrics, shared_state

logger = logging.getLogger(__name__)


def database_reachable(alias: str = "default") -> bool:
    """``SELECT 1`` over a new connection with the configured settings, never the pool's."""
    connection = connections[alias]
    settings_dict = {**connection.settings_dict, "OPTIONS": dict(connection.settings_dict.get("OPTIONS", {}))}
    options = settings_dict["OPTIONS"]
    options.pop("pool", None)
    timeout = settings.CHAT_READY_TIMEOUT_SECONDS
    if connection.vendor == "postgresql":
        # libpq's own limit, in whole seconds (it treats less than 2 as 2).
        options["connect_timeout"] = max(2, round(timeout))
    elif connection.vendor == "sqlite":
        options["timeout"] = timeout
    probe = type(connection)(settings_dict, alias=f"{alias}-readyz")
    try:
        with probe.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as error:  # whatever fails, the answer is "not ready"
        _note_down("database", error)
        return False
    finally:
        probe.close()


def redis_reachable() -> bool | None:
    """PING over a new connection; None when this deploy uses no Redis (``REDIS_URL`` unset)."""
    if not shared_state.uses_redis():
        return None
    timeout = settings.CHAT_READY_TIMEOUT_SECONDS
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError as error:
        _note_down("redis", error)
        return False
    finally:
        client.close()


def readiness() -> dict[str, str]:
    """Each dependency's state: ``ok``, ``down`` or ``unused``."""
    checks = {"database": database_reachable(), "redis": redis_reachable()}
    for name, up in checks.items():
        if up and _down.pop(name, None):
            logger.warning("readyz: %s is reachable again", name)
    return {name: "unused" if up is None else "ok" if up else "down" for name, up in checks.items()}


# What the last probe found down, so that the log says when a dependency goes and comes back
# rather than once per probe.
_down: dict[str, bool] = {}


def _note_down(name: str, error: BaseException) -> None:
    if not _down.get(name):
        _down[name] = True
        logger.warning("readyz: %s is unreachable (%s: %s)", name, type(error).__name__, error)


@require_safe
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    checks = readiness()
    down = [name for name, state in checks.items() if state == "down"]
    if down:
        return JsonResponse({"status": "unavailable", "down": down, "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


def may_read_metrics(request: HttpRequest) -> bool:
    """Staff (by their session), or whoever brings ``Authorization: Bearer <CHAT_METRICS_TOKEN>``."""
    token = settings.CHAT_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer":
        return hmac.compare_digest(given.strip().encode(), token.encode())
    return bool(request.user.is_active and request.user.is_staff)


@require_safe
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not may_read_metrics(request):
        # As if there were nothing here: no hint to a stranger that the path exists.
        raise Http404()
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
