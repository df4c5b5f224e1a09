"""Re-checking the sessions of this process's open sockets, all at once.

Channels authenticates a socket only at its handshake. Logout, a password change and a
deactivation close the user's sockets at once (``accounts/signals.py``); what no signal tells
(a session that expired, or was deleted by ``clearsessions`` or the admin) is found here: every
``CHAT_AUTH_RECHECK_SECONDS`` one task per process reads the sessions and users of all its
sockets in a few queries, closes those whose verdict says so, and refreshes the presence entries
of the rest in one Redis round trip. One task per socket did that socket by socket: 2,000 open
sockets made 130 session reads a second, the largest cost of a connect storm (py-spy).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from django.conf import settings

from . import presence, selectors
from .threads import on_read_threads
from .watched_sockets import Watch, WatchedSockets

logger = logging.getLogger(__name__)


class Watched(Protocol):
    scope: dict[str, Any]
    user: Any
    channel_name: str

    async def close(self, code: int | None = None) -> None: ...


def watch(socket: Watched) -> None:
    _sockets.add(socket)


def unwatch(socket: Watched) -> None:
    _sockets.discard(socket)


async def _run(state: Watch) -> None:
    while state.sockets:
        await asyncio.sleep(settings.CHAT_AUTH_RECHECK_SECONDS)
        try:
            await _recheck(list(state.sockets))
        except Exception:
            # A database or Redis hiccup must not end the re-checks for good: the next round
            # tries again (a lost channel layer is chat.layer_watch's).
            logger.warning("the session re-check failed; retrying next round", exc_info=True)


_sockets = WatchedSockets(Watch, _run)


async def _recheck(sockets: list[Watched]) -> None:
    if not sockets:
        return
    verdicts = await on_read_threads(selectors.socket_auth_verdicts)(scopes=[s.scope for s in sockets])
    staying = []
    for socket, verdict in zip(sockets, verdicts, strict=True):
        if verdict is None:
            staying.append(socket)
        else:
            await socket.close(code=verdict)
    await presence.sockets_refreshed([(s.user.pk, s.channel_name) for s in staying])
