"""The REST door (PROTOCOL section 8). Each view parses its input with a serializer, calls one
service (writes) or selector (reads and access checks), and shapes the answer. Failures are
``ChatError``s or DRF exceptions, which ``exceptions.api_exception_handler`` turns into the one
error shape."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import metrics, moderation, selectors, services

from . import serializers as s
from .pagination import SeqAnchorPagination
from .throttles import ReadThrottle, WriteThrottle

ROOM_SLUG = OpenApiParameter("slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="the room's slug")
MESSAGE_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the message's id")
USER_DIRECTORY_SIZE = 20
EDIT_BODY = {"type": "object", "required": ["content"], "properties": {"content": {"type": "string"}}}


# What every endpoint shares: its throttles, and 401 (not DRF's 403) when unauthenticated. (A
# comment, not a docstring: the schema would show a docstring as every view's description.)
class ChatApiMixin:
    throttle_classes = [ReadThrottle, WriteThrottle]
    # JSON only, errors included: browsers get the same answers as scripts (the docs are at
    # /api/docs/), and no HTML page of DRF's has to live with the site's CSP.
    renderer_classes = [JSONRenderer]

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # Every refusal, whoever raised it, leaves through exceptions.api_exception_handler in the
        # section 8 shape: counting it here counts each once, by its code.
        response = super().finalize_response(request, response, *args, **kwargs)
        error = response.data.get("error") if isinstance(getattr(response, "data", None), dict) else None
        if response.status_code >= 400 and isinstance(error, dict):
            metrics.refusal(str(error.get("code")))
        return response

    def get_authenticate_header(self, request: Request) -> str | None:
        # DRF asks only the first authenticator (the session, which has no challenge) and then
        # answers 403; any scheme that has one makes "not logged in" a 401, as it should be.
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return header
        return None


class RoomViewSet(ChatApiMixin, viewsets.ViewSet):
    """Rooms. A private room you are not in does not exist for you (404)."""

    lookup_field = "slug"
    lookup_value_regex = r"[-\w]+"

    @extend_schema(responses=s.RoomSerializer(many=True), summary="Rooms you are in, and public rooms to join")
    def list(self, request: Request) -> Response:
        return Response(s.RoomSerializer(selectors.rooms_visible_to(user=request.user), many=True).data)

    @extend_schema(
        request=s.RoomCreateSerializer,
        responses={201: s.RoomSerializer},
        summary="Create a public or private room; you become its owner",
    )
    def create(self, request: Request) -> Response:
        data = self._valid(s.RoomCreateSerializer, request)
        room = services.room_create(user=request.user, **data)
        listing = selectors.room_listing_for_reader(user=request.user, slug=room.slug)
        return Response(s.RoomSerializer(listing).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[ROOM_SLUG], responses=s.RoomSerializer)
    def retrieve(self, request: Request, slug: str) -> Response:
        return Response(s.RoomSerializer(selectors.room_listing_for_reader(user=request.user, slug=slug)).data)

    @extend_schema(
        methods=["GET"], parameters=[ROOM_SLUG], responses=s.MemberSerializer(many=True), summary="A room's members"
    )
    @extend_schema(
        methods=["POST"],
        parameters=[ROOM_SLUG],
        request=s.MemberAddSerializer,
        responses={201: s.MemberSerializer, 200: s.MemberSerializer},
        summary="Add someone to a private room (owners and moderators); 200 if already a member",
    )
    @action(detail=True, methods=["get", "post"])
    def members(self, request: Request, slug: str) -> Response:
        if request.method == "GET":
            return Response(s.MemberSerializer(selectors.room_members(user=request.user, slug=slug), many=True).data)
        data = self._valid(s.MemberAddSerializer, request)
        membership, created = services.member_invite(user=request.user, slug=slug, username=data["username"])
        return Response(
            s.MemberSerializer(membership).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        parameters=[ROOM_SLUG],
        request=s.ReadSerializer,
        responses=s.ReadMarkSerializer,
        summary="Move your read marker forward (never back)",
    )
    @action(detail=True, methods=["post"])
    def read(self, request: Request, slug: str) -> Response:
        data = self._valid(s.ReadSerializer, request)
        seq = services.read_mark(user=request.user, to=slug, seq=data["seq"])
        return Response({"room": slug, "seq": seq})

    @extend_schema(
        parameters=[ROOM_SLUG],
        request=s.ModerationSerializer,
        responses=s.ModerationResultSerializer,
        summary="Moderate the room (owners, moderators, staff): the `moderate` frame's extra as JSON",
    )
    @action(detail=True, methods=["post"])
    def moderation(self, request: Request, slug: str) -> Response:
        data = self._valid(s.ModerationSerializer, request)
        result = moderation.room_moderate(
            actor=request.user,
            slug=slug,
            action=data["action"],
            username=data.get("user"),
            seconds=data.get("seconds"),
            reason=data.get("reason", ""),
            topic=data.get("topic"),
        )
        return Response(moderation.moderated_frame(result)["extra"] | {"room": result.room.slug})

    @staticmethod
    def _valid(serializer_class: type[s.serializers.Serializer], request: Request) -> dict:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class MessageViewSet(ChatApiMixin, viewsets.ViewSet):
    """A room's messages, each exactly as the socket's `message` frame shows it. Members of a room
    see its whole history; anyone may read a public room's."""

    lookup_field = "id"
    # At most 18 digits: every such number fits a bigint, so no lookup can overflow.
    lookup_value_regex = r"\d{1,18}"
    pagination_class = SeqAnchorPagination

    @extend_schema(
        parameters=[ROOM_SLUG, s.HistoryQuerySerializer],
        responses=s.MessageSerializer(many=True),
        summary="A page of history, oldest first",
    )
    def list(self, request: Request, slug: str) -> Response:
        access = selectors.room_for_reader(user=request.user, slug=slug)
        paginator = self.pagination_class()
        page = paginator.paginate_room(room=access.room, request=request)
        return paginator.get_paginated_response(s.MessageSerializer(page, many=True).data)

    @extend_schema(
        parameters=[ROOM_SLUG],
        request=s.MessagePostSerializer,
        responses={
            201: s.MessageSerializer,
            200: OpenApiResponse(s.MessageSerializer, description="a repeated messageId: the first message"),
        },
        summary="Post a message (stored, then broadcast to the room's sockets)",
    )
    def create(self, request: Request, slug: str) -> Response:
        serializer = s.MessagePostSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.message_create(
            user=request.user,
            to=slug,
            content=data["content"],
            client_id=data.get("messageId"),
            reply_to=data.get("replyTo"),
        )
        return Response(
            s.MessageSerializer(result.message).data,
            status=status.HTTP_200_OK if result.repeated else status.HTTP_201_CREATED,
        )

    @extend_schema(
        parameters=[ROOM_SLUG, MESSAGE_ID],
        # A raw schema: from a serializer, a PATCH body would be documented with every field
        # optional, and an edit needs its content.
        request={"application/json": EDIT_BODY},
        responses=s.MessageSerializer,
        summary="Edit your message",
    )
    def partial_update(self, request: Request, slug: str, id: str) -> Response:  # noqa: A002 - DRF's kwarg
        serializer = s.MessageEditSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        selectors.check_message_in_room(slug=slug, message_id=int(id))
        message = services.message_edit(
            user=request.user, message_id=int(id), content=serializer.validated_data["content"]
        )
        return Response(s.MessageSerializer(message).data)

    @extend_schema(
        parameters=[ROOM_SLUG, MESSAGE_ID],
        responses={204: None},
        summary="Delete a message (author, room moderator or staff); it stays as a tombstone",
    )
    def destroy(self, request: Request, slug: str, id: str) -> Response:  # noqa: A002
        selectors.check_message_in_room(slug=slug, message_id=int(id))
        services.message_delete(user=request.user, message_id=int(id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserViewSet(ChatApiMixin, viewsets.ViewSet):
    """The user directory: other active users, by username."""

    @extend_schema(
        parameters=[s.UserQuerySerializer],
        responses=s.UserSerializer(many=True),
        summary=f"Find people to message (at most {USER_DIRECTORY_SIZE})",
    )
    def list(self, request: Request) -> Response:
        query = s.UserQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        users = selectors.user_search(user=request.user, query=query.validated_data["q"], limit=USER_DIRECTORY_SIZE)
        return Response(s.UserSerializer(users, many=True).data)


class SearchPagination(CursorPagination):
    """Newest first; the cursor keeps pages stable while new messages arrive."""

    ordering = "-id"
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100


class SearchView(ChatApiMixin, APIView):
    """Full-text search over the messages of the rooms you are a member of (deleted ones left
    out); PostgreSQL's text search, or a substring match on SQLite."""

    pagination_class = SearchPagination

    @extend_schema(
        parameters=[s.SearchQuerySerializer],
        responses=s.SearchResultSerializer(many=True),
        summary="Search the messages of your rooms, newest first",
    )
    def get(self, request: Request) -> Response:
        query = s.SearchQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = selectors.message_search(
            user=request.user, query=query.validated_data["q"], room_slug=query.validated_data.get("room")
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(found, request, view=self)
        return paginator.get_paginated_response(s.SearchResultSerializer(page, many=True).data)


class WsTicketView(ChatApiMixin, APIView):
    """A ticket for `wss://HOST/ws/chat/?ticket=…`: the socket's login for clients without the
    session cookie."""

    @extend_schema(request=None, responses=s.TicketSerializer, summary="A single-use ticket to open a socket")
    def post(self, request: Request) -> Response:
        return Response({"ticket": services.ws_ticket_issue(user=request.user)})


class TokenView(ChatApiMixin, APIView):
    """Your REST token: create it (logged in, or with username and password) or revoke it."""

    def get_permissions(self) -> list:
        # Creating a token is also how a script without a session logs in.
        return [AllowAny()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(
        request=s.CredentialsSerializer,
        responses={201: s.TokenSerializer, 200: s.TokenSerializer},
        summary="Your token: 201 when created, 200 when you already had one",
    )
    def post(self, request: Request) -> Response:
        user = request.user
        if not user.is_authenticated:
            if not request.data:
                raise NotAuthenticated()
            credentials = s.CredentialsSerializer(data=request.data)
            credentials.is_valid(raise_exception=True)
            # The Django request, not DRF's wrapper: django-axes counts failures on it.
            user = authenticate(request._request, **credentials.validated_data)
            if user is None:
                raise AuthenticationFailed("wrong username or password")
        key, created = services.api_token_issue(user=user)
        return Response({"token": key}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=None, responses={204: None}, summary="Revoke your token")
    def delete(self, request: Request) -> Response:
        services.api_token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReportView(ChatApiMixin, APIView):
    """Report a message of one of your rooms to its moderators. Nothing is broadcast."""

    @extend_schema(
        parameters=[MESSAGE_ID],
        request=s.ReportSerializer,
        responses={201: s.ReportResultSerializer},
        summary="Report a message to the moderators",
    )
    def post(self, request: Request, id: int) -> Response:  # noqa: A002 - the URL's name
        data = RoomViewSet._valid(s.ReportSerializer, request)
        moderation.message_report(user=request.user, message_id=id, reason=data["reason"])
        return Response({"id": id, "reported": True}, status=status.HTTP_201_CREATED)
