from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse


@login_required
def chat_page(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """The chat page; the script opens one socket and shows ``slug`` (or the last or first room).

    What the script needs arrives as JSON through ``json_script`` (the CSP forbids inline
    scripts), never interpolated into JavaScript.
    """
    user = request.user
    config = {
        "user": {
            "username": user.get_username(),
            "displayName": getattr(user, "display_name", "") or user.get_username(),
            "isStaff": user.is_staff,
        },
        "initialRoom": slug or "",
        "wsUrl": "/ws/chat/",
        "loginUrl": reverse(settings.LOGIN_URL) if not settings.LOGIN_URL.startswith("/") else settings.LOGIN_URL,
    }
    return render(request, "chat/index.html", {"initial_room": slug or "", "chat_config": config})
