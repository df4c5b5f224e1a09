"""Graceful shutdown under daphne: to its clients, a deploy looks like a deploy, not a crash.

Left to itself, daphne answers SIGTERM (or SIGINT) by cancelling every application instance at
once, and Twisted then cuts every connection: each client sees 1006, as after a crash, and an
answer on its way out is lost. Twisted runs the "before shutdown" triggers and waits for the
Deferreds they return before it stops the reactor; daphne's ``kill_all_applications`` is one.
``install()`` puts this in its place, all within ``CHAT_SHUTDOWN_GRACE_SECONDS`` of the signal:

1. stop listening, so that new connections are refused at once and go to another process;
2. stop reading the sockets, and let the writes already under way finish: the shared database
   thread runs out of work, their acks go out, and so do their after-commit broadcasts;
3. close every socket with 4503 (PROTOCOL.md §4: server going away, reconnect and resume) and wait
   for the close handshakes and the consumers' ``disconnect`` (presence, groups); a client that
   does not answer in time has its connection cut;
4. cancel what still runs, as daphne would have, and let the reactor stop.

A watchdog ends the process just before the grace period is up, whatever still runs: a thread
stuck in a call that never returns would otherwise keep the interpreter joining it for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from daphne import ws_protocol
from django.conf import settings
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from . import protocol, publisher

logger = logging.getLogger(__name__)

# Where each step's time runs out, as shares of the grace period. What is left after the last
# one is for the reactor to stop and the interpreter to exit before the watchdog fires.
_WRITES_SHARE = 0.3
_CLOSES_SHARE = 0.6
_DISCONNECTS_SHARE = 0.8
_CANCELLED_SHARE = 0.9
# The watchdog fires this long before the grace period is up, so that the process is gone by
# then (a supervisor's stop timeout set to the grace period then never needs its SIGKILL).
_WATCHDOG_MARGIN_SECONDS = 0.3
_POLL_SECONDS = 0.05
# A no-op that took longer than this to come back from the write thread waited behind some work.
_BUSY_HOP_SECONDS = 0.01
# Exit status when the watchdog had to end the process: the shutdown was not clean.
_FORCED_EXIT_STATUS = 1


def install() -> None:
    """Give daphne's ``Server`` the shutdown above; nothing happens outside daphne's server."""
    # Only the daphne command has imported the server module, and importing it ourselves would
    # install Twisted's reactor on a loop of its own under any other server or in a test.
    server_module = sys.modules.get("daphne.server")
    if server_module is None:
        return
    server_module.Server.kill_all_applications = _kill_all_applications


def _kill_all_applications(server: Any) -> defer.Deferred:
    # Called by Twisted in the reactor's (asyncio) loop, as a "before shutdown" trigger.
    return defer.Deferred.fromFuture(asyncio.ensure_future(shut_down(server)))


async def shut_down(server: Any) -> None:
    grace = settings.CHAT_SHUTDOWN_GRACE_SECONDS
    started = time.monotonic()
    _start_watchdog(grace)

    def by(share: float) -> float:
        return started + grace * share

    try:
        _stop_listening(server)
        sockets = _web_sockets(server)
        logger.info("shutdown: no longer listening; %d sockets open", len(sockets))
        for socket in sockets:
            if socket.state == socket.STATE_OPEN:
                # A post not yet read stays in its client's outbox, re-sent after the reconnect.
                socket.transport.pauseProducing()
        await _finish_writes(server, until=by(_WRITES_SHARE))
        await _close_sockets(server, until=by(_CLOSES_SHARE))
        # The consumers' disconnect handlers (presence, groups) run once their socket is closed.
        running = _running_applications(server)
        if running:
            await asyncio.wait(running, timeout=max(0.0, by(_DISCONNECTS_SHARE) - time.monotonic()))
    except Exception:
        logger.exception("shutdown: the graceful steps failed; cancelling what is left")
    await _cancel_applications(server, until=by(_CANCELLED_SHARE))
    logger.info("shutdown: done in %.2f s", time.monotonic() - started)


def _start_watchdog(grace: float) -> None:
    delay = max(grace - _WATCHDOG_MARGIN_SECONDS, grace * _CANCELLED_SHARE)

    def exit_now() -> None:
        logger.error("shutdown: still running %.1f s after the signal; exiting now", delay)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(_FORCED_EXIT_STATUS)

    # A daemon thread keeps running while the interpreter's exit waits on stuck threads.
    watchdog = threading.Timer(delay, exit_now)
    watchdog.daemon = True
    watchdog.start()


def _stop_listening(server: Any) -> None:
    # daphne keeps no handle on its listening ports (its listen Deferreds end in None), but the
    # reactor reads each of them: they are the readers that hand connections to its factory.
    # Imported only now: where daphne has installed no reactor, importing one installs Twisted's
    # default one.
    from twisted.internet import reactor

    for reader in reactor.getReaders():
        if IListeningPort.providedBy(reader) and getattr(reader, "factory", None) is server.http_factory:
            reader.stopListening()


def _web_sockets(server: Any) -> list[ws_protocol.WebSocketProtocol]:
    return [p for p in list(server.connections) if isinstance(p, ws_protocol.WebSocketProtocol)]


async def _finish_writes(server: Any, *, until: float) -> None:
    """Until the write thread has twice in a row had nothing queued, with time between for the
    consumers to send their answers and queue whatever they do next."""
    idle_rounds = 0
    while idle_rounds < 2 and time.monotonic() < until:
        hop_started = time.monotonic()
        try:
            async with asyncio.timeout(until - hop_started):
                # The socket door's writes share one thread (``database_sync_to_async``), first
                # in, first out: a no-op sent there comes back once all before it are done.
                await sync_to_async(_nothing, thread_sensitive=True)()
        except TimeoutError:
            logger.warning("shutdown: the write thread is still busy; closing the sockets anyway")
            return
        busy = (
            time.monotonic() - hop_started > _BUSY_HOP_SECONDS
            or _publishing()
            or _running_applications(server, web_sockets=False)
        )
        idle_rounds = 0 if busy else idle_rounds + 1
        await asyncio.sleep(_POLL_SECONDS)


def _nothing() -> None:
    return None


def _publishing() -> bool:
    # After-commit broadcasts wait in the publisher's queue: one left there would reach no other
    # process.
    return publisher.waiting() > 0


async def _close_sockets(server: Any, *, until: float) -> None:
    """4503 to every open socket, then wait for the close handshakes; cut those still open."""
    told: set[ws_protocol.WebSocketProtocol] = set()
    while True:
        # A socket accepted meanwhile (its handshake was under way) is told on the next round.
        for socket in _web_sockets(server):
            if socket in told or socket.state == socket.STATE_CLOSED:
                continue
            # Read again: the client's answer to the close is what ends the handshake.
            socket.transport.resumeProducing()
            if socket.state == socket.STATE_OPEN:
                socket.sendClose(code=protocol.CLOSE_GOING_AWAY)
                told.add(socket)
            elif socket.state == socket.STATE_CLOSING:
                told.add(socket)  # closing already (4408, 4401, ...): its own code stands
        if not _open_web_sockets(server) or time.monotonic() >= until:
            break
        await asyncio.sleep(_POLL_SECONDS)
    left = _open_web_sockets(server)
    if left:
        logger.warning("shutdown: %d sockets did not finish their close handshake; cut", len(left))
    for socket in left:
        # Not an abort: a reset would discard what the client has not read yet, the 4503 too.
        socket.dropConnection(abort=False)


def _open_web_sockets(server: Any) -> list[ws_protocol.WebSocketProtocol]:
    return [
        socket
        for socket in _web_sockets(server)
        if socket.state != socket.STATE_CLOSED and "disconnected" not in server.connections.get(socket, {})
    ]


def _running_applications(server: Any, *, web_sockets: bool = True) -> list[asyncio.Future]:
    running = []
    for connection, details in list(server.connections.items()):
        if not web_sockets and isinstance(connection, ws_protocol.WebSocketProtocol):
            continue
        # daphne removes the instance once it has reaped it, so it may be missing.
        instance = details.get("application_instance")
        if instance is not None and not instance.done():
            running.append(instance)
    return running


async def _cancel_applications(server: Any, *, until: float) -> None:
    """daphne's own last step: cancel every application instance still running, and wait (here
    only until ``until``) for them to end."""
    running = _running_applications(server)
    if not running:
        return
    logger.warning("shutdown: cancelling %d application instances still running", len(running))
    for instance in running:
        instance.cancel()
    await asyncio.wait(running, timeout=max(0.0, until - time.monotonic()))
