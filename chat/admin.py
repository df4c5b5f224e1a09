"""The moderators' door. Deleting a message goes through the service layer, so it becomes a
tombstone and vanishes from open browsers at once, like a delete from the chat itself."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import services
from .models import Attachment, Membership, Message, ModerationLog, Room


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "read_seq", "muted_until", "banned", "ban_reason")


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "kind", "locked", "archived", "last_seq", "created_at")
    list_filter = ("kind", "locked", "archived")
    search_fields = ("slug", "name", "topic")
    readonly_fields = ("last_seq", "last_change", "created_at")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("room", "user", "role", "banned", "read_seq", "joined_at")
    list_filter = ("role", "banned", "room")
    search_fields = ("room__slug", "user__username")
    raw_id_fields = ("user", "room")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("room", "seq", "author", "kind", "short_content", "created_at", "deleted_at")
    list_filter = ("room", "kind", ("deleted_at", admin.EmptyFieldListFilter))
    search_fields = ("content", "deleted_content", "author__username")
    list_select_related = ("room", "author")
    readonly_fields = (
        "room",
        "author",
        "seq",
        "change",
        "kind",
        "client_id",
        "reply_to",
        "mentions",
        "created_at",
        "edited_at",
        "deleted_at",
        "deleted_by",
        "deleted_content",
    )
    fields = ("content", *readonly_fields)
    actions = ["delete_as_moderator"]

    @admin.display(description="content")
    def short_content(self, message: Message) -> str:
        text = message.deleted_content if message.is_deleted else message.content
        return text[:80]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a hard delete would leave a gap in seq
        return actions

    def save_model(self, request: HttpRequest, obj: Message, form, change: bool) -> None:
        if change and "content" in form.changed_data:
            services.message_edit(user=obj.author, message_id=obj.pk, content=obj.content)

    def delete_model(self, request: HttpRequest, obj: Message) -> None:
        services.message_delete(user=request.user, message_id=obj.pk)

    @admin.action(description="Delete selected messages (leave tombstones, live)")
    def delete_as_moderator(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        for message in queryset:
            services.message_delete(user=request.user, message_id=message.pk)
        self.message_user(request, f"Deleted {queryset.count()} message(s).", messages.SUCCESS)


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ("name", "mime", "size", "width", "height", "message")
    search_fields = ("name", "sha256")
    raw_id_fields = ("message",)


@admin.register(ModerationLog)
class ModerationLogAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "room", "target_user", "reason")
    list_filter = ("action",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
