"""The chat's ASGI application with one more HTTP path, for tests/test_shutdown.py: a request to
``/stuck/`` never ends, because it holds the socket door's shared write thread for ever, as a
database call that never returns would (the thread the interpreter then waits for at exit)."""

import threading

from asgiref.sync import sync_to_async

from chatsite.asgi import application as chat_application

_never = threading.Event()


async def application(scope: dict, receive, send) -> None:  # noqa: ANN001 — ASGI's callables
    if scope["type"] == "http" and scope["path"] == "/stuck/":
        # No ThreadSensitiveContext here: this lands on the thread database_sync_to_async uses.
        await sync_to_async(_never.wait, thread_sensitive=True)()
        return
    await chat_application(scope, receive, send)
