from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def chat_page(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """The chat page; the script opens one socket and shows ``slug`` (or the first room)."""
    return render(request, "chat/index.html", {"initial_room": slug or ""})
