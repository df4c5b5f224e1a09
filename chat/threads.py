"""Where the socket side's database work runs.

``database_sync_to_async`` runs every call of the process on one shared thread, one call after
the other. That is what writes need (a socket's frames are handled in order, and the broadcasts
of one room leave in commit order), but reads need no such order, and on that one thread they
queue behind every post of every socket: the session re-check of each socket, the member list
of each presence change, the history of each join. Reads go to a few threads of their own, and
uploads (hashing and storing large files) to others, so that neither holds up the chat.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings


@functools.cache
def _executor(name: str, workers: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


def on_read_threads(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``function``, which only reads, run on the read threads (``CHAT_READ_THREADS``)."""
    executor = _executor("read", settings.CHAT_READ_THREADS)
    return database_sync_to_async(function, thread_sensitive=False, executor=executor)


def on_upload_threads(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``function`` run on the upload threads (``CHAT_UPLOAD_THREADS``): few, so that many
    uploads at once cannot crowd out chat traffic (CPU, GIL, database connections)."""
    executor = _executor("upload", settings.CHAT_UPLOAD_THREADS)
    return database_sync_to_async(function, thread_sensitive=False, executor=executor)
