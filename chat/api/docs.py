"""The browsable API docs, and the JSON 404 of unknown ``/api/`` paths."""

from __future__ import annotations

from typing import Any

from csp.decorators import csp_update
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response

from .exceptions import error_body


# The split view serves its start-up script as a file of its own (``?script=``), so the page
# needs no inline script and keeps the site's ``script-src 'self'``. Swagger UI itself only
# needs inline styles (its template's <style> block and the style attributes it renders), so
# this one view relaxes style-src alone.
@method_decorator(csp_update({"style-src": ["'unsafe-inline'"]}), name="dispatch")
class SwaggerDocsView(SpectacularSwaggerSplitView):
    pass


class SchemaView(SpectacularAPIView):
    """The OpenAPI document, which leaves itself out of the endpoints it lists."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse(error_body("not_found", "no such API endpoint"), status=404)
