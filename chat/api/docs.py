"""The browsable API docs, and the JSON 404 of unknown ``/api/`` paths."""

from __future__ import annotations

from typing import Any

from csp.decorators import csp_update
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response

from .exceptions import error_body

# The split view serves its start-up script as a file of its own (``?script=``), so the page
# needs no inline script and keeps the site's ``script-src 'self'``. What remains inline is the
# template's small <style> block, allowed by its hash alone (a test recomputes it from the page,
# so an upgrade of drf-spectacular that changes the block is noticed).
SWAGGER_STYLE_HASH = "'sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0='"


@method_decorator(csp_update({"style-src": [SWAGGER_STYLE_HASH]}), name="dispatch")
class SwaggerDocsView(SpectacularSwaggerSplitView):
    pass


class SchemaView(SpectacularAPIView):
    """The OpenAPI document, which leaves itself out of the endpoints it lists."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# Exempt from CSRF: it changes nothing, and a POST to a mistyped path should hear "not found"
# in the API's shape rather than the CSRF failure page.
@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse(error_body("not_found", "no such API endpoint"), status=404)
