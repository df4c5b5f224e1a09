"""Input parsing and output shapes of the REST API.

A message has one shape, ``protocol.message_payload``, the socket's ``message`` frame:
``MessageSerializer`` only declares its fields for the OpenAPI schema and hands every message to
that function. Input serializers check types and sizes; the rules (trimming, length, who may do
what) stay in the services. Every ``CharField`` refuses NUL and lone surrogates by itself (DRF's
own validators), as the socket's parser does; ``tests/test_hostile_input.py`` holds it to that.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from chat import protocol
from chat.models import Message, Room
from chat.selectors import RoomListing

# The largest whole number accepted anywhere: the socket's parser's bound, so that both doors
# keep every id and seq inside a database bigint.
MAX_INT = protocol.MAX_INT


# --- Output ------------------------------------------------------------------------------------


class AttachmentSerializer(serializers.Serializer):
    url = serializers.CharField()
    name = serializers.CharField()
    size = serializers.IntegerField()
    mime = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    thumbnailUrl = serializers.CharField(allow_null=True)  # noqa: N815 - the wire's name


class MessageExtraSerializer(serializers.Serializer):
    displayName = serializers.CharField(allow_null=True)  # noqa: N815
    kind = serializers.ChoiceField(choices=Message.Kind.choices)
    replyTo = serializers.IntegerField(allow_null=True)  # noqa: N815
    mentions = serializers.ListField(child=serializers.CharField())
    attachment = AttachmentSerializer(allow_null=True)
    editedAt = serializers.IntegerField(allow_null=True, help_text="ms since epoch")  # noqa: N815
    deletedAt = serializers.IntegerField(allow_null=True, help_text="ms since epoch")  # noqa: N815


class MessageSerializer(serializers.Serializer):
    """A chat message: exactly the socket's ``message`` frame (PROTOCOL section 4)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # Declared here rather than as attributes because the wire names ``from``, a keyword.
        return {
            "type": serializers.ChoiceField(choices=["message"]),
            "id": serializers.IntegerField(),
            "seq": serializers.IntegerField(help_text="per room, gap-free"),
            "room": serializers.CharField(help_text="the room's slug"),
            "from": serializers.CharField(allow_null=True, help_text="the author's username; null for system"),
            "content": serializers.CharField(allow_blank=True),
            "timestamp": serializers.IntegerField(help_text="server clock, ms since epoch"),
            "messageId": serializers.CharField(allow_null=True, help_text="the client's id of the message"),
            "extra": MessageExtraSerializer(),
        }

    def to_representation(self, instance: Message) -> dict[str, Any]:
        return protocol.message_payload(instance)


class SearchResultSerializer(MessageSerializer):
    """A message found by search: the same shape, a schema component of its own (so that its
    paged list is not confused with the history page)."""


class RoomSerializer(serializers.Serializer):
    """A room with the user's place in it. ``room`` and ``slug`` are the same value: ``room`` is
    the name the socket's frames use, ``slug`` the one ``POST /api/rooms/`` takes."""

    room = serializers.CharField()
    slug = serializers.CharField()
    name = serializers.CharField()
    topic = serializers.CharField(allow_blank=True)
    kind = serializers.ChoiceField(choices=Room.Kind.choices)
    members = serializers.IntegerField(help_text="member count")
    lastSeq = serializers.IntegerField()  # noqa: N815
    lastChange = serializers.IntegerField()  # noqa: N815
    locked = serializers.BooleanField()
    slowMode = serializers.IntegerField(help_text="seconds; 0 is off")  # noqa: N815
    isMember = serializers.BooleanField()  # noqa: N815
    role = serializers.CharField(allow_null=True, help_text="owner, moderator or member; null if not a member")
    readSeq = serializers.IntegerField(allow_null=True)  # noqa: N815
    unread = serializers.IntegerField(allow_null=True)

    def to_representation(self, instance: RoomListing) -> dict[str, Any]:
        room, membership = instance.room, instance.membership
        member = membership is not None and not membership.banned
        # The socket's room summary supplies the fields the two doors share.
        summary = protocol.room_summary(room, membership) if member else {}
        return {
            "room": room.slug,
            "slug": room.slug,
            "name": room.name,
            "topic": room.topic,
            "kind": room.kind,
            "members": instance.members,
            "lastSeq": room.last_seq,
            "lastChange": room.last_change,
            "locked": room.locked,
            "slowMode": room.slow_mode_seconds,
            "isMember": member,
            "role": membership.role if member else None,
            "readSeq": summary.get("readSeq"),
            "unread": summary.get("unread"),
        }


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    displayName = serializers.CharField(source="user.shown_name")  # noqa: N815
    role = serializers.ChoiceField(choices=["owner", "moderator", "member"])


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    displayName = serializers.CharField(source="shown_name")  # noqa: N815


class TicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="single use; expires after 60 s; open /ws/chat/?ticket=…")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="send as 'Authorization: Token <token>'")


class ReadMarkSerializer(serializers.Serializer):
    room = serializers.CharField()
    seq = serializers.IntegerField(min_value=0, max_value=MAX_INT)


# --- Input -------------------------------------------------------------------------------------


class RoomCreateSerializer(serializers.Serializer):
    # Lengths and characters of a slug are the service's rule (room_create); only types here.
    slug = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=["public", "private"], default="public")
    topic = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class MessagePostSerializer(serializers.Serializer):
    # Not trimmed here: the service trims and checks the length (one rule for both doors).
    content = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=64 * 1024)
    messageId = serializers.CharField(  # noqa: N815
        min_length=1,
        max_length=protocol.MAX_CLIENT_ID,
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="client-generated; a repeat returns the first message (200) instead of a new one (201)",
    )
    replyTo = serializers.IntegerField(min_value=1, max_value=MAX_INT, required=False, allow_null=True)  # noqa: N815


class MessageEditSerializer(serializers.Serializer):
    content = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=64 * 1024)


class ReadSerializer(serializers.Serializer):
    seq = serializers.IntegerField(min_value=0, max_value=MAX_INT)


class MemberAddSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="the user to add; your own name joins a public room")


class CredentialsSerializer(serializers.Serializer):
    """Optional on ``POST /api/token/``: a script without a session logs in with these."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class HistoryQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(
        min_value=0, max_value=MAX_INT, required=False, help_text="the newest page of messages with seq < before"
    )
    after = serializers.IntegerField(
        min_value=0, max_value=MAX_INT, required=False, help_text="the oldest page of messages with seq > after"
    )
    changed_after = serializers.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        help_text="messages edited or deleted after this change number, in change order",
    )
    limit = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text=f"page size; default {settings.CHAT_HISTORY_PAGE}, at most {settings.CHAT_REPLAY_MAX}",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        anchors = [name for name in ("before", "after", "changed_after") if name in attrs]
        if len(anchors) > 1:
            raise serializers.ValidationError("give at most one of 'before', 'after' and 'changed_after'")
        # Over the maximum is served the maximum, as DRF's own paginators do.
        attrs["limit"] = min(attrs.get("limit", settings.CHAT_HISTORY_PAGE), settings.CHAT_REPLAY_MAX)
        return attrs


class UserQuerySerializer(serializers.Serializer):
    q = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(max_length=500, help_text="words to find")
    room = serializers.CharField(max_length=200, required=False, help_text="a room's slug, to search only there")


class ModerationSerializer(serializers.Serializer):
    """The ``moderate`` frame's ``extra``, as a JSON body."""

    action = serializers.ChoiceField(choices=sorted(protocol.MODERATION_ACTIONS))
    user = serializers.CharField(required=False, allow_null=True, max_length=150)
    seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=protocol.MAX_MODERATION_SECONDS
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    topic = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=500, trim_whitespace=False
    )


class ModerationResultSerializer(serializers.Serializer):
    room = serializers.CharField()
    action = serializers.CharField()
    user = serializers.CharField(allow_null=True)
    until = serializers.IntegerField(allow_null=True, help_text="ms since epoch; mute only")


class ReportSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class ReportResultSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="the reported message")
    reported = serializers.BooleanField()
