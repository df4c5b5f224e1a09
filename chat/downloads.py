"""The download door: ``/files/…`` (PROTOCOL section 5.4; docs/uploads.md).

Every request checks membership of the file's room (404 for anyone else, anonymous users
included). Then the file goes out one of three ways, by ``CHAT_FILES_SERVE``: streamed by Django
(``FileResponse``), or handed to the web server in front (``X-Accel-Redirect`` for nginx,
``X-Sendfile`` for Apache or lighttpd), which reads the file itself. With ``CHAT_FILES_ORIGIN``
set, the checked URL redirects instead to a signed, short-lived URL on that separate origin,
where no session cookie goes and a file that escaped its headers could reach nothing.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from accounts.models import User

from . import uploads
from .exceptions import NotFound
from .models import Attachment

SIGNING_SALT = "chat.files"


def _member_attachment(request: HttpRequest, attachment_id: int) -> Attachment:
    try:
        return uploads.attachment_for_member(user=request.user, attachment_id=attachment_id)
    except NotFound:
        raise Http404("no such file") from None


def _serve(attachment: Attachment, *, thumbnail: bool) -> HttpResponseBase:
    field = attachment.thumbnail if thumbnail else attachment.file
    if not field:
        raise Http404("no such file")
    serving = uploads.serving_for(attachment, thumbnail=thumbnail)
    mode = settings.CHAT_FILES_SERVE
    if mode == "django":
        # Streamed in blocks from storage: the file is never read into memory whole.
        response: HttpResponseBase = FileResponse(
            field.open("rb"),
            as_attachment=not serving.inline,
            filename=serving.filename,
            content_type=serving.content_type,
        )
    else:
        response = HttpResponse(content_type=serving.content_type)
        response["Content-Disposition"] = content_disposition_header(not serving.inline, serving.filename)
        if mode == "x-accel-redirect":
            response["X-Accel-Redirect"] = quote(settings.CHAT_FILES_ACCEL_PREFIX + serving.storage_name)
        else:
            response["X-Sendfile"] = field.path
    response["X-Content-Type-Options"] = "nosniff"
    # Even a file opened directly runs with no origin, no scripts, no forms.
    response["Content-Security-Policy"] = uploads.SERVING_CSP
    # Membership can end at any time: caches must ask again.
    response["Cache-Control"] = "private, no-cache"
    return response


def _signed_redirect(request: HttpRequest, attachment: Attachment, *, thumbnail: bool) -> HttpResponseRedirect:
    token = signing.dumps({"a": attachment.pk, "t": int(thumbnail), "u": request.user.pk}, salt=SIGNING_SALT)
    name = "thumbnail" if thumbnail else attachment.name
    path = reverse("chat-file-signed", args=[token, name])
    return HttpResponseRedirect(settings.CHAT_FILES_ORIGIN.rstrip("/") + path)


@require_safe
def file_download(request: HttpRequest, attachment_id: int, name: str) -> HttpResponseBase:
    """``/files/<id>/<name>``: the file, to members of its room. ``name`` only makes the URL
    readable and is not consulted."""
    attachment = _member_attachment(request, attachment_id)
    if settings.CHAT_FILES_ORIGIN:
        return _signed_redirect(request, attachment, thumbnail=False)
    return _serve(attachment, thumbnail=False)


@require_safe
def file_thumbnail(request: HttpRequest, attachment_id: int) -> HttpResponseBase:
    attachment = _member_attachment(request, attachment_id)
    if settings.CHAT_FILES_ORIGIN:
        return _signed_redirect(request, attachment, thumbnail=True)
    return _serve(attachment, thumbnail=True)


@require_safe
def file_signed(request: HttpRequest, token: str, name: str) -> HttpResponseBase:
    """``/files/s/<token>/<name>`` on the files origin: the signature is the credential there
    (no cookie travels); it expires after ``CHAT_FILES_SIGNED_SECONDS``, and membership is
    checked again so that leaving a room ends access at once."""
    if not settings.CHAT_FILES_ORIGIN:
        raise Http404("no such file")
    try:
        claim = signing.loads(token, salt=SIGNING_SALT, max_age=settings.CHAT_FILES_SIGNED_SECONDS)
        user = User.objects.get(pk=claim["u"], is_active=True)
        attachment = uploads.attachment_for_member(user=user, attachment_id=int(claim["a"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError, User.DoesNotExist, NotFound):
        raise Http404("no such file") from None
    return _serve(attachment, thumbnail=bool(claim.get("t")))
