"""The chat's data: rooms, who is in them, and the gap-free, per-room numbered messages."""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class Room(models.Model):
    class Kind(models.TextChoices):
        PUBLIC = "public", _("public")
        PRIVATE = "private", _("private")
        DIRECT = "direct", _("direct")

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    topic = models.CharField(max_length=500, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PUBLIC)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    archived = models.BooleanField(default=False)
    locked = models.BooleanField(default=False)
    slow_mode_seconds = models.PositiveIntegerField(default=0)
    # Counters advanced under the room's row lock: the seq of the newest message, and the change
    # number of the newest edit or delete (clients resume from both).
    last_seq = models.PositiveBigIntegerField(default=0)
    last_change = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", _("owner")
        MODERATOR = "moderator", _("moderator")
        MEMBER = "member", _("member")

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)
    read_seq = models.PositiveBigIntegerField(default=0)
    muted_until = models.DateTimeField(null=True, blank=True)
    # A ban keeps the row (so that the user cannot simply join again); leaving deletes it.
    banned = models.BooleanField(default=False)
    ban_reason = models.CharField(max_length=500, blank=True)
    banned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="membership_room_user_unique")]
        indexes = [models.Index(fields=["user", "banned"], name="membership_user_banned")]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} ({self.role})"

    @property
    def is_moderator(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MODERATOR)


class Message(models.Model):
    class Kind(models.TextChoices):
        TEXT = "text", _("text")
        FILE = "file", _("file")
        SYSTEM = "system", _("system")

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    seq = models.PositiveBigIntegerField()
    # The room's change number of this message's latest edit or delete; 0 if never changed.
    change = models.PositiveBigIntegerField(default=0)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TEXT)
    content = models.TextField(blank=True)
    # NULL, not "", when absent: the unique (author, client_id) constraint ignores NULLs.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    reply_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    mentions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The text as it was before a delete, for staff in the admin (the wire shows a tombstone).
    deleted_content = models.TextField(blank=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            # Also the index behind every history page: (room, seq) ranges are index scans.
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_unique"),
            models.UniqueConstraint(fields=["author", "client_id"], name="message_author_client_id_unique"),
        ]
        indexes = [models.Index(fields=["room", "change"], name="message_room_change")]

    def __str__(self) -> str:
        return f"{self.room}#{self.seq}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def attachment_payload(self) -> dict | None:
        """The wire's ``extra.attachment``; load ``attachment`` with select_related first."""
        try:
            attachment = self.attachment
        except Attachment.DoesNotExist:
            return None
        # Paths on this site: the download view checks membership on every request (and, when
        # a separate files domain is configured, redirects to a short-lived signed URL there).
        return {
            "url": reverse("chat-file", args=[attachment.pk, attachment.name]),
            "name": attachment.name,
            "size": attachment.size,
            "mime": attachment.mime,
            "width": attachment.width,
            "height": attachment.height,
            "thumbnailUrl": reverse("chat-file-thumbnail", args=[attachment.pk]) if attachment.thumbnail else None,
        }


class Attachment(models.Model):
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="attachment")
    file = models.FileField(upload_to="attachments/%Y/%m/")
    thumbnail = models.FileField(upload_to="thumbnails/%Y/%m/", blank=True)
    name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    mime = models.CharField(max_length=100)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class ModerationLog(models.Model):
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=20)
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL)
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor} at {self.at:%Y-%m-%d %H:%M}"


class WebSocketTicket(models.Model):
    """A single-use, short-lived credential for opening a socket without a session cookie."""

    key_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ws_tickets")
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"ticket for {self.user_id} until {self.expires_at:%H:%M:%S}"


class Upload(models.Model):
    """A chunked upload in progress (or finished: ``message`` set), PROTOCOL section 5.

    The state lives here and the partial bytes in a file under the media root, never in a
    process, so a client may resume on any server process after a reconnect."""

    # The wire's ``uploadId``: random, so that one user cannot guess another's (ownership is
    # checked anyway).
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    # The ``messageId`` of the ``file_start``: it becomes the file message's client id.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    # What the client declared; informational only, the stored type is detected from the bytes.
    declared_mime = models.CharField(max_length=100, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    received = models.PositiveBigIntegerField(default=0)
    next_index = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # Pushed forward by every accepted chunk: an upload expires after a while without progress.
    expires_at = models.DateTimeField()
    message = models.OneToOneField(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            # A re-sent ``file_start`` (same messageId) finds the upload instead of starting another.
            models.UniqueConstraint(fields=["user", "client_id"], name="upload_user_client_id_unique"),
        ]
        indexes = [
            models.Index(fields=["user", "message"], name="upload_user_message"),
            models.Index(fields=["expires_at"], name="upload_expires_at"),
        ]

    def __str__(self) -> str:
        return f"upload {self.pk} of {self.name} ({self.received}/{self.size})"

    @property
    def finished(self) -> bool:
        return self.message_id is not None
