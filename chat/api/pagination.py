"""History pages anchored on ``seq`` (PROTOCOL section 8).

A seq never changes and is gap-free per room, so a page boundary stays put while others post:
walking back with ``before`` and forward with ``after`` yields every message exactly once. The
pages themselves come from the same selectors as the socket's ``history`` frame.
"""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from chat import selectors
from chat.models import Message, Room

from .serializers import HistoryQuerySerializer


class SeqAnchorPagination(BasePagination):
    """``?before=SEQ | after=SEQ | changed_after=CHANGE & limit=N`` →
    ``{"results": [...oldest first...], "hasMore": bool}``; the newest page by default."""

    def paginate_room(self, *, room: Room, request: Request) -> list[Message]:
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        anchors = query.validated_data
        limit = anchors["limit"]
        if "before" in anchors:
            page, self.has_more = selectors.history_before(room=room, seq=anchors["before"], limit=limit)
        elif "after" in anchors:
            page, self.has_more = selectors.history_after(room=room, seq=anchors["after"], limit=limit)
        elif "changed_after" in anchors:
            page, self.has_more = selectors.changes_after(room=room, change=anchors["changed_after"], limit=limit)
        else:
            page, self.has_more = selectors.history_latest(room=room, limit=limit)
        return page

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Message]:
        # DRF's generic entry point; our "queryset" is the room, which the selectors page.
        return self.paginate_room(room=queryset, request=request)

    def get_paginated_response(self, data: list[dict[str, Any]]) -> Response:
        return Response({"results": data, "hasMore": self.has_more})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results", "hasMore"],
            "properties": {
                "results": schema,
                "hasMore": {
                    "type": "boolean",
                    "description": "with `after`: newer messages remain; otherwise: older ones exist",
                },
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        # The view documents its query with HistoryQuerySerializer, the one that validates it.
        return []
