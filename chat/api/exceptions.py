"""Every API error in the one shape of PROTOCOL section 8: ``{"error": {"code", "message"}}``,
with the section 4 codes where they apply, whether a chat rule or DRF itself refused."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from chat.exceptions import ChatError, RateLimited
from chat.protocol import replace_surrogates

logger = logging.getLogger(__name__)

# DRF's own refusals, by the section 4 code they mean to a client.
_DRF_CODES: list[tuple[type[Exception], str]] = [
    (drf.ValidationError, "invalid"),
    (drf.ParseError, "bad_json"),
    (drf.NotAuthenticated, "forbidden"),
    (drf.AuthenticationFailed, "forbidden"),
    (drf.PermissionDenied, "forbidden"),
    (drf.NotFound, "not_found"),
    (drf.Throttled, "rate_limited"),
    (drf.MethodNotAllowed, "invalid"),
    (drf.NotAcceptable, "invalid"),
    (drf.UnsupportedMediaType, "invalid"),
]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """DRF's nested validation detail as readable lines: ``content: This field is required.``"""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            lines += _flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name)
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def _sendable(detail: Any) -> Any:
    """DRF's validation detail with every text made encodable: a message such as '"…" is not a
    valid choice.' quotes the input, and a lone surrogate in it would fail the UTF-8 rendering."""
    if isinstance(detail, dict):
        return {_sendable(key): _sendable(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_sendable(item) for item in detail]
    if isinstance(detail, drf.ErrorDetail):
        return drf.ErrorDetail(replace_surrogates(detail), code=detail.code)
    return replace_surrogates(detail) if isinstance(detail, str) else detail


def _retry_response(body: dict[str, Any], status_code: int, retry_after_ms: int | None) -> Response:
    response = Response(body, status=status_code)
    if retry_after_ms is not None:
        # HTTP wants whole seconds; the body keeps the socket's exact milliseconds.
        response["Retry-After"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    return response


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: translate any failure into the section 8 error shape."""
    set_rollback()
    if isinstance(exc, ChatError):
        extra = {"retryAfterMs": exc.retry_after_ms} if exc.retry_after_ms is not None else {}
        body = error_body(exc.code, exc.message, **extra)
        retry = exc.retry_after_ms if isinstance(exc, RateLimited) else None
        return _retry_response(body, exc.http_status, retry)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        # Raised by django-axes when an account is locked out, among others.
        return Response(error_body("forbidden", str(exc) or "forbidden"), status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("too_large", "the request body is too large"), status=413)
    if isinstance(exc, drf.APIException):
        code = next((code for kind, code in _DRF_CODES if isinstance(exc, kind)), "invalid")
        if isinstance(exc, drf.ValidationError):
            detail = _sendable(exc.detail)
            body = error_body(code, "; ".join(_flatten(detail)) or "invalid input", fields=detail)
        else:
            body = error_body(code, str(exc.detail))
        retry = None
        if isinstance(exc, drf.Throttled) and exc.wait is not None:
            retry = max(1, math.ceil(exc.wait * 1000))
            body["error"]["retryAfterMs"] = retry
        response = _retry_response(body, exc.status_code, retry)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            response["WWW-Authenticate"] = auth_header
        return response
    # A bug: log it with its traceback, answer in the same shape rather than an HTML page.
    logger.exception("API request failed", exc_info=exc)
    return Response(error_body("server_error", "server error"), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
