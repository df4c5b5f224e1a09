"""ASGI entry point: HTTP through Django, WebSocket ``/ws/chat/`` through the chat consumer."""

import gc
import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before anything that imports models (the routing below).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat import transport  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.wsauth import ChatOriginValidator, TicketOrSessionAuthMiddleware  # noqa: E402

# Under daphne: close 4408 a socket that stopped reading, answer 1009 to an oversized frame, and
# on SIGTERM close every socket with 4503 within CHAT_SHUTDOWN_GRACE_SECONDS (chat/shutdown.py).
transport.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": ChatOriginValidator(TicketOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

# Everything imported so far lives as long as the process. Left to the cyclic garbage collector,
# each full collection walks all of it, a pause of 80-130 ms measured under load that every
# socket of the process feels at once; frozen, collections only walk what was made since.
gc.freeze()

# The event loop and the database thread share the GIL. A thread coming back from the database
# with its answer waits until the loop lets go of the GIL, at most the switch interval (CPython's
# default, 5 ms): a batch of posts makes about eight round trips, each paying that wait under load.
sys.setswitchinterval(settings.CHAT_GIL_SWITCH_SECONDS)
