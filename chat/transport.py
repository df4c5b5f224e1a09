"""Two transport rules of PROTOCOL.md that ASGI cannot express, taught to daphne.

ASGI hands the application frames, not the connection, so the consumer can neither see how much
a socket has not yet read nor how an oversized frame is refused. Both live in daphne's WebSocket
protocol (autobahn on Twisted), and ``install()`` makes daphne build ours:

- **4408, a client that stopped reading** (§1). Twisted keeps a socket's unsent bytes in a
  user-space buffer and, once that holds more than 64 KiB, tells a registered streaming producer
  to pause; it says resume only when the buffer is empty again. A socket that takes on
  ``CHAT_SLOW_READER_BYTES`` more while paused has not caught up once in all that time: it is
  closed with 4408 instead of buffering without bound. The client reads what was queued, then
  the close, and resumes by ``seq``.
- **1009, a frame over daphne's 1 MiB limit** (§4). autobahn "fails by drop" by default: it cuts
  the TCP connection and the client sees 1006. We have it send the close frame instead.

It also installs the graceful shutdown of ``chat/shutdown.py``: on SIGTERM every socket is closed
with 4503 (§4, server going away) rather than cut.

``chatsite/asgi.py`` calls ``install()``; under another ASGI server it changes nothing.
"""

from __future__ import annotations

from typing import Any

from daphne import ws_protocol
from django.conf import settings
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from . import protocol, shutdown


@implementer(IPushProducer)
class _SendBufferWatch:
    """Told by the transport when its send buffer fills (pause) and when it empties (resume)."""

    def __init__(self) -> None:
        self.paused = False
        self.bytes_while_paused = 0

    def pauseProducing(self) -> None:  # noqa: N802 — Twisted's interface
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.bytes_while_paused = 0

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = False


class ChatWebSocketProtocol(ws_protocol.WebSocketProtocol):
    def connectionMade(self) -> None:  # noqa: N802 — Twisted's name
        super().connectionMade()
        # Per-connection copies of the factory's options are made just above; change ours.
        self.failByDrop = False
        # A client that stopped reading gets this long to come back for its 4408.
        self.closeHandshakeTimeout = settings.CHAT_CLOSE_HANDSHAKE_SECONDS
        self.send_buffer = _SendBufferWatch()
        # The connection arrives from daphne's HTTP protocol, which is still registered as its
        # producer: the HTTP side is done with it, the WebSocket side watches from now on.
        if self.transport.producer is not None:
            self.transport.unregisterProducer()
        self.transport.registerProducer(self.send_buffer, True)

    def sendMessage(self, payload: bytes, *args: Any, **kwargs: Any) -> None:  # noqa: N802 — autobahn's name
        if self.state != self.STATE_OPEN:
            # Closing already (a slow reader, or the client said goodbye): nothing more to say.
            return
        if self.send_buffer.paused:
            self.send_buffer.bytes_while_paused += len(payload)
            if self.send_buffer.bytes_while_paused > settings.CHAT_SLOW_READER_BYTES:
                self.sendClose(code=protocol.CLOSE_SLOW_READER)
                return
        super().sendMessage(payload, *args, **kwargs)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:  # noqa: N802
        """autobahn's ``sendData`` builds the arguments of a debug log line (coloured type names)
        for every frame it writes, logging on or not: about 4 % of the server's time at 4,000
        deliveries/s. The common case, an open socket with nothing queued, is done here."""
        if sync or chopsize or self.send_queue or self.logOctets or self.state != self.STATE_OPEN:
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if self.transport is not None and getattr(self.transport, "producer", None) is self.send_buffer:
            self.transport.unregisterProducer()
        super().connectionLost(reason)


def install() -> None:
    """Have daphne build ``ChatWebSocketProtocol`` for every WebSocket connection, and shut down
    gracefully."""
    ws_protocol.WebSocketFactory.protocol = ChatWebSocketProtocol
    shutdown.install()
