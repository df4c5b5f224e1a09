"""Chunked, resumable uploads (PROTOCOL section 5), and how stored files are served.

The rules are sync service functions, called from the socket consumer off the event loop. An
upload's state is an ``Upload`` row and its partial bytes a file under the media root, never
process memory or the channel layer: a client that reconnects to another server process
resumes where it stood. Each chunk is one short transaction that locks the row, so two sockets
racing on one upload cannot both write the same offset.

Failures raise the exceptions of ``chat.exceptions``; those about a known upload carry
``room`` (its slug), so the ``error`` frame can name the room even for a ``file_chunk``.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import time
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import puremagic
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone
from PIL import ExifTags, Image, ImageOps

from accounts.models import User

from . import selectors, services
from .exceptions import ChatError, Invalid, NotFound, TooLarge, UploadFailed
from .models import Attachment, Message, Upload

PARTIAL_DIR = "uploads-partial"
MAX_NAME_CHARS = 200
# The raster formats Pillow may open, by detected type. Nothing else is ever decoded: every
# other format Pillow knows (and its parsers' bugs) stays out of reach of uploaded bytes.
PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
# Stored names carry an extension only for these, so that no web server in front of the media
# directory could ever guess an executable type (HTML, SVG) from a name.
STORED_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}
SERVING_CSP = "sandbox"
_HASH_BLOCK = 1024 * 1024
_PURGE_INTERVAL_SECONDS = 60.0
_last_purge = 0.0


@dataclass(frozen=True)
class UploadStatus:
    """Where an upload stands: the fields of ``file_ready`` and ``file_progress``."""

    upload_id: str
    client_id: str | None
    room_slug: str
    chunk_size: int
    received: int
    next_index: int
    size: int


def _status(upload: Upload) -> UploadStatus:
    return UploadStatus(
        upload_id=str(upload.pk),
        client_id=upload.client_id,
        room_slug=upload.room.slug,
        chunk_size=settings.CHAT_UPLOAD_CHUNK_BYTES,
        received=upload.received,
        next_index=upload.next_index,
        size=upload.size,
    )


def _fail(exc_class: type[ChatError], message: str, upload: Upload | None = None) -> ChatError:
    exc = exc_class(message)
    exc.room = upload.room.slug if upload is not None else None
    return exc


# --- Names, types, images ------------------------------------------------------------------


_SEPARATORS = re.compile(r"[/\\]")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})


def safe_name(name: str) -> str:
    """The name shown and offered for download: a basename without control or format
    characters, at most ``MAX_NAME_CHARS`` long (the extension kept). Never a storage path."""
    name = unicodedata.normalize("NFC", name or "")
    # Whatever the client's system: only the last path part counts.
    name = _SEPARATORS.split(name)[-1]
    # Control, format (bidi overrides that disguise extensions), private-use, unassigned and
    # line/paragraph separators go.
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    # Leading dots would hide the file on a user's disk, and "." or ".." name no file at all.
    name = name.strip().strip(".").strip()
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            name = f"{stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip()}.{ext}"
        else:
            name = name[:MAX_NAME_CHARS].rstrip()
    if not name:
        raise Invalid("the file needs a name")
    return name


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as fh:
        sample = fh.read(8192)
    if b"\x00" in sample:
        return False
    try:
        # Not final: the sample may end inside a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def detect_type(path: Path) -> str:
    """The MIME type of the file's bytes (magic numbers via puremagic). The client's ``mime``
    and the name's extension are never consulted."""
    try:
        with open(path, "rb") as fh:
            matches = puremagic.magic_stream(fh)
    except (puremagic.PureError, ValueError):
        matches = []
    for match in matches:
        if match.mime_type:
            return match.mime_type
    # Plain text has no magic number.
    return "text/plain" if _looks_like_text(path) else "application/octet-stream"


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    thumbnail: bytes
    thumbnail_ext: str


_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})


def inspect_image(path: Path, mime: str) -> ImageInfo | None:
    """Dimensions and a thumbnail of a PNG, JPEG, GIF or WebP file; ``None`` if Pillow cannot
    read it (it is then kept as a plain file, never shown inline). Raises ``UploadFailed`` for
    an image with more pixels than allowed, before its pixels are decoded."""
    pillow_format = PILLOW_FORMATS.get(mime)
    if pillow_format is None:
        return None
    limit = settings.CHAT_UPLOAD_MAX_IMAGE_PIXELS
    box = settings.CHAT_UPLOAD_THUMBNAIL_PX
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice that; a warning is a refusal here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=[pillow_format]) as image:
                width, height = image.size
                if width * height > limit:
                    raise _fail(UploadFailed, f"the image has more than {limit} pixels")
                if image.getexif().get(ExifTags.Base.Orientation) in _ROTATED_ORIENTATIONS:
                    width, height = height, width
                # JPEG can decode at a reduced scale directly, which is much cheaper.
                image.draft("RGB", (box, box))
                image.thumbnail((box, box))
                thumb = ImageOps.exif_transpose(image)
                transparent = thumb.mode in ("RGBA", "LA", "P", "PA") or "transparency" in thumb.info
                out = io.BytesIO()
                if transparent:
                    thumb.convert("RGBA").save(out, format="PNG", optimize=True)
                    ext = ".png"
                else:
                    thumb.convert("RGB").save(out, format="JPEG", quality=85)
                    ext = ".jpg"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _fail(UploadFailed, f"the image has more than {limit} pixels") from None
        except (OSError, ValueError, SyntaxError, EOFError):
            # Not decodable after all (truncated, corrupt): a plain file, never inline.
            return None
    return ImageInfo(width=width, height=height, thumbnail=out.getvalue(), thumbnail_ext=ext)


# --- Partial bytes ---------------------------------------------------------------------------


def _partial_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / PARTIAL_DIR


def partial_path(upload_id: uuid.UUID | str) -> Path:
    """The temporary file of an unfinished upload (named by the server, never by the client)."""
    return _partial_dir() / f"{uuid.UUID(str(upload_id)).hex}.part"


def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` and cut anything after it: a chunk that was written before
    a crash but never committed is simply overwritten by its retry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
        os.ftruncate(fd, offset + len(data))
    finally:
        os.close(fd)


def _remove_partial(upload_id: uuid.UUID | str) -> None:
    try:
        partial_path(upload_id).unlink()
    except FileNotFoundError:
        pass


def _sha256_of(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        remaining = size
        while remaining:
            block = fh.read(min(_HASH_BLOCK, remaining))
            if not block:
                raise _fail(UploadFailed, "the upload's bytes were lost; start again")
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def _discard(upload: Upload) -> None:
    Upload.objects.filter(pk=upload.pk, message__isnull=True).delete()
    _remove_partial(upload.pk)


# --- Start, chunk, end -----------------------------------------------------------------------


def _upload_uuid(upload_id: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(upload_id) if upload_id else None
    except ValueError:
        return None


def _live(upload: Upload | None) -> Upload | None:
    """The upload, unless it expired unfinished (then it is removed here and now)."""
    if upload is not None and not upload.finished and upload.expires_at <= timezone.now():
        _discard(upload)
        return None
    return upload


def _resumable(*, user: User, upload_id: str | None, client_id: str | None) -> Upload | None:
    """The user's upload named by ``uploadId``, or else by the ``file_start``'s ``messageId``
    (a client re-sending its queue after a reconnect repeats the same ``file_start``)."""
    uploads = Upload.objects.select_related("room").filter(user=user)
    pk = _upload_uuid(upload_id)
    upload = _live(uploads.filter(pk=pk).first()) if pk is not None else None
    if upload is None and client_id:
        upload = _live(uploads.filter(client_id=client_id).first())
    return upload


def _check_same_file(upload: Upload, *, room_id: int, size: int, sha256: str | None) -> None:
    if upload.room_id != room_id or upload.size != size or (sha256 and upload.sha256 and sha256 != upload.sha256):
        raise _fail(Invalid, "this upload was started for another file or room", upload)


def _check_quota(*, user: User, size: int) -> None:
    now = timezone.now()
    unfinished = Upload.objects.filter(user=user, message__isnull=True, expires_at__gt=now)
    if unfinished.count() >= settings.CHAT_UPLOAD_MAX_UNFINISHED:
        raise UploadFailed(
            f"at most {settings.CHAT_UPLOAD_MAX_UNFINISHED} unfinished uploads at once: finish or wait for one"
        )
    stored = Attachment.objects.filter(message__author=user, message__deleted_at__isnull=True).aggregate(
        total=Sum("size")
    )["total"]
    pending = unfinished.aggregate(total=Sum("size"))["total"]
    if (stored or 0) + (pending or 0) + size > settings.CHAT_UPLOAD_QUOTA_BYTES:
        raise TooLarge("this file would exceed your storage quota")


def upload_start(
    *,
    user: User,
    to: str,
    client_id: str | None,
    name: str,
    size: int,
    mime: str = "",
    sha256: str | None = None,
    upload_id: str | None = None,
) -> UploadStatus:
    """``file_start``: resume the user's upload named by ``upload_id`` (or by ``client_id``),
    or open a new one after the membership, size, name and quota checks."""
    purge_expired_now_and_then()
    access = services.open_room_for_target(user=user, to=to)
    if size > settings.CHAT_MAX_UPLOAD_BYTES:
        raise TooLarge(f"a file is at most {settings.CHAT_MAX_UPLOAD_BYTES} bytes")
    name = safe_name(name)
    existing = _resumable(user=user, upload_id=upload_id, client_id=client_id)
    if existing is not None:
        _check_same_file(existing, room_id=access.room.pk, size=size, sha256=sha256)
        return _status(existing)
    try:
        with transaction.atomic():
            # Lock the user's row so that two starts at once (two sockets, two processes)
            # cannot both pass the count of unfinished uploads.
            list(User.objects.select_for_update().filter(pk=user.pk).values_list("pk"))
            _check_quota(user=user, size=size)
            upload = Upload.objects.create(
                user=user,
                room=access.room,
                client_id=client_id,
                name=name,
                size=size,
                declared_mime=(mime or "")[:100],
                sha256=sha256 or "",
                expires_at=timezone.now() + timedelta(seconds=settings.CHAT_UPLOAD_EXPIRY_SECONDS),
            )
    except IntegrityError:
        # The same messageId was started at the same moment elsewhere: that upload is this one.
        existing = _resumable(user=user, upload_id=None, client_id=client_id)
        if existing is None:
            raise
        _check_same_file(existing, room_id=access.room.pk, size=size, sha256=sha256)
        return _status(existing)
    return _status(upload)


def _owned(*, user: User, upload_id: str, lock: bool = False) -> Upload:
    pk = _upload_uuid(upload_id)
    uploads = Upload.objects.select_related("room").filter(user=user)
    if lock:
        uploads = uploads.select_for_update(of=("self",))
    upload = uploads.filter(pk=pk).first() if pk is not None else None
    if upload is None or (not upload.finished and upload.expires_at <= timezone.now()):
        raise UploadFailed("no such upload (unfinished uploads expire): start again")
    return upload


def upload_chunk(*, user: User, upload_id: str, index: int, data: bytes) -> UploadStatus:
    """``file_chunk``: append the chunk at ``nextIndex``. A refused chunk writes nothing and
    leaves the upload where it stood."""
    chunk_size = settings.CHAT_UPLOAD_CHUNK_BYTES
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Progress need not wait for the WAL flush: if a crash loses the last commits,
            # ``received`` is simply a few chunks behind the file and the client re-sends them
            # (they are written at ``received`` again). Saves a disk flush per chunk.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        upload = _owned(user=user, upload_id=upload_id, lock=True)
        if upload.finished:
            raise _fail(UploadFailed, "this upload is finished", upload)
        if index != upload.next_index:
            raise _fail(UploadFailed, f"expected chunk {upload.next_index}, got {index}", upload)
        if not data:
            raise _fail(UploadFailed, "a chunk needs bytes", upload)
        if len(data) > chunk_size:
            raise _fail(UploadFailed, f"a chunk is at most {chunk_size} bytes", upload)
        end = upload.received + len(data)
        if end > upload.size:
            raise _fail(UploadFailed, f"the chunk goes past the declared size of {upload.size} bytes", upload)
        if len(data) < chunk_size and end != upload.size:
            # Otherwise a chunk's offset would no longer be index x chunkSize.
            raise _fail(UploadFailed, f"every chunk but the last is exactly {chunk_size} bytes", upload)
        _write_at(partial_path(upload.pk), upload.received, data)
        upload.received = end
        upload.next_index += 1
        upload.expires_at = timezone.now() + timedelta(seconds=settings.CHAT_UPLOAD_EXPIRY_SECONDS)
        Upload.objects.filter(pk=upload.pk).update(
            received=upload.received, next_index=upload.next_index, expires_at=upload.expires_at
        )
    return _status(upload)


class _AlreadyFinished(Exception):
    """Another ``file_end`` of the same upload committed first; rolls this one back."""


@dataclass(frozen=True)
class _Stored:
    file_name: str
    thumbnail_name: str


def _store(path: Path, *, mime: str, image: ImageInfo | None) -> _Stored:
    """Copy the bytes into storage under a name the server picks (Django's storage API, so a
    deployment may swap the backend)."""
    folder = timezone.now().strftime("%Y/%m")
    token = uuid.uuid4().hex
    with open(path, "rb") as fh:
        file_name = default_storage.save(f"attachments/{folder}/{token}{STORED_EXTENSIONS.get(mime, '.bin')}", File(fh))
    thumbnail_name = ""
    if image is not None:
        thumbnail_name = default_storage.save(
            f"thumbnails/{folder}/{token}{image.thumbnail_ext}", ContentFile(image.thumbnail)
        )
    return _Stored(file_name, thumbnail_name)


def _unstore(stored: _Stored) -> None:
    for name in (stored.file_name, stored.thumbnail_name):
        if name:
            default_storage.delete(name)


def upload_finish(*, user: User, upload_id: str) -> services.PostResult:
    """``file_end``: check the bytes, detect the type, store the file and post the ``file``
    message. A finished upload answers with its first message (``repeated``)."""
    upload = _owned(user=user, upload_id=upload_id)
    if upload.finished:
        return services.PostResult(_file_message(upload.message_id), repeated=True)
    if upload.received != upload.size:
        raise _fail(UploadFailed, f"received {upload.received} of {upload.size} bytes", upload)
    path = partial_path(upload.pk)
    try:
        digest = _sha256_of(path, upload.size)
    except (FileNotFoundError, UploadFailed):
        _discard(upload)
        raise _fail(UploadFailed, "the upload's bytes were lost; start again", upload) from None
    if upload.sha256 and digest != upload.sha256:
        _discard(upload)
        raise _fail(UploadFailed, "the bytes do not match sha256; the upload was discarded", upload)
    mime = detect_type(path)
    try:
        image = inspect_image(path, mime)
    except UploadFailed as exc:
        _discard(upload)
        exc.room = upload.room.slug
        raise
    stored = _store(path, mime=mime, image=image)

    def attach(message: Message) -> None:
        # Inside message_create's transaction: the broadcast frame already carries the file.
        locked = Upload.objects.select_for_update().filter(pk=upload.pk).values_list("message_id", flat=True).first()
        if locked is not None:
            raise _AlreadyFinished
        Attachment.objects.create(
            message=message,
            file=stored.file_name,
            thumbnail=stored.thumbnail_name,
            name=upload.name,
            size=upload.size,
            mime=mime,
            sha256=digest,
            width=image.width if image else None,
            height=image.height if image else None,
        )
        Upload.objects.filter(pk=upload.pk).update(
            message=message,
            expires_at=timezone.now() + timedelta(seconds=settings.CHAT_UPLOAD_FINISHED_KEEP_SECONDS),
        )

    try:
        result = services.message_create(
            user=user,
            to=upload.room.slug,
            content=upload.name,
            client_id=upload.client_id,
            kind=Message.Kind.FILE,
            before_commit=attach,
        )
    except _AlreadyFinished:
        _unstore(stored)
        finished = Upload.objects.get(pk=upload.pk)
        return services.PostResult(_file_message(finished.message_id), repeated=True)
    except ChatError as exc:
        # Not allowed to post now (rate limit, mute, left the room): the upload stays complete
        # and a later file_end may try again.
        _unstore(stored)
        exc.room = upload.room.slug
        raise
    except BaseException:
        _unstore(stored)
        raise
    if result.repeated:
        # The messageId already named a stored message (a concurrent file_end won): keep that.
        _unstore(stored)
        Upload.objects.filter(pk=upload.pk, message__isnull=True).update(message=result.message)
    _remove_partial(upload.pk)
    return result


def _file_message(message_id: int) -> Message:
    return selectors.messages_with_relations().get(pk=message_id)


# --- Expiry ------------------------------------------------------------------------------


def uploads_purge(*, now: datetime | None = None) -> int:
    """Remove unfinished uploads past ``expires_at`` with their bytes, finished ones past
    their keeping time, and partial files that lost their row. Returns how many unfinished
    uploads went."""
    now = now or timezone.now()
    removed = 0
    for pk in list(Upload.objects.filter(message__isnull=True, expires_at__lte=now).values_list("pk", flat=True)):
        # Re-checked in the delete itself: a chunk may have just moved expires_at forward.
        deleted, _ = Upload.objects.filter(pk=pk, message__isnull=True, expires_at__lte=now).delete()
        if deleted:
            _remove_partial(pk)
            removed += 1
    Upload.objects.filter(message__isnull=False, expires_at__lte=now).delete()
    _sweep_orphans(now=now)
    return removed


def _sweep_orphans(*, now: datetime) -> None:
    folder = _partial_dir()
    if not folder.is_dir():
        return
    cutoff = now.timestamp() - settings.CHAT_UPLOAD_EXPIRY_SECONDS
    for entry in os.scandir(folder):
        if not entry.name.endswith(".part") or entry.stat().st_mtime > cutoff:
            continue
        pk = _upload_uuid(entry.name.removesuffix(".part"))
        if pk is None or not Upload.objects.filter(pk=pk).exists():
            Path(entry.path).unlink(missing_ok=True)


def purge_expired_now_and_then() -> None:
    """Run the purge from ``file_start`` at most once a minute per process, so that a
    deployment without the cron job still drops stale bytes."""
    global _last_purge
    now = time.monotonic()
    if now - _last_purge < _PURGE_INTERVAL_SECONDS:
        return
    _last_purge = now
    uploads_purge()


# --- Serving ---------------------------------------------------------------------------------


def attachment_for_member(*, user: User, attachment_id: int) -> Attachment:
    """An attachment of a message in a room the user is a member of; anything else (anonymous,
    non-member, banned, deleted message) does not exist for them."""
    if not user.is_authenticated:
        raise NotFound("no such file")
    attachment = Attachment.objects.select_related("message").filter(pk=attachment_id).first()
    if attachment is None or attachment.message.deleted_at is not None:
        raise NotFound("no such file")
    try:
        selectors.message_for_user(user=user, message_id=attachment.message_id)  # the membership check
    except NotFound:
        raise NotFound("no such file") from None
    return attachment


@dataclass(frozen=True)
class Serving:
    """How a stored file goes out: its type, and inline or as an attachment."""

    storage_name: str
    content_type: str
    inline: bool
    filename: str


def serving_for(attachment: Attachment, *, thumbnail: bool = False) -> Serving:
    """Inline only for raster images that Pillow has read (width known); everything else,
    HTML, SVG, XML, scripts and whatever could not be identified, is a download, sent as
    ``application/octet-stream`` so no browser renders it."""
    if thumbnail:
        ext = ".png" if attachment.thumbnail.name.endswith(".png") else ".jpg"
        content_type = "image/png" if ext == ".png" else "image/jpeg"
        return Serving(attachment.thumbnail.name, content_type, True, f"thumbnail{ext}")
    is_image = attachment.mime in PILLOW_FORMATS and attachment.width is not None
    content_type = attachment.mime if is_image else "application/octet-stream"
    return Serving(attachment.file.name, content_type, is_image, attachment.name)
