"""The server restarts under an open page: the banner shows, and what was written meanwhile
arrives exactly once, on the writer's page, on a watcher's page and in the database."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .conftest import screenshot, wait_for_room

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WHILE_DOWN = ["while down 1", "while down 2", "while down 3"]


def _count(content: str) -> int:
    from chat.models import Message

    return Message.objects.filter(content=content).count()


def test_server_restart_resends_exactly_once(make_user, make_room, open_page, server_factory, db_query):
    server = server_factory()  # its own server: this test stops it
    alice = make_user("alice", "Alice")
    bob = make_user("bob", "Bob")
    make_room("lobby", "Lobby", [alice, bob])
    page = open_page(alice, "/rooms/lobby/", server=server)
    watcher = open_page(bob, "/rooms/lobby/", server=server)
    wait_for_room(page, "lobby")
    wait_for_room(watcher, "lobby")
    box = page.get_by_role("textbox", name="Message")
    box.fill("before the restart")
    box.press("Enter")
    expect(watcher.get_by_role("log", name="Messages")).to_contain_text("before the restart")

    server.stop()
    banner = page.get_by_role("status").filter(has_text="Reconnecting…")
    expect(banner).to_be_visible()
    expect(watcher.get_by_role("status").filter(has_text="Reconnecting…")).to_be_visible()
    for text in WHILE_DOWN:
        box.fill(text)
        box.press("Enter")
    log = page.get_by_role("log", name="Messages")
    expect(log.locator(".message.pending")).to_have_count(3)
    screenshot(page, "reconnecting")

    server.start()
    # The browsers come back "online" and retry at once instead of waiting out their back-off
    # timers (whose timings the JavaScript unit tests check).
    for view in (page, watcher):
        view.context.set_offline(True)
        view.context.set_offline(False)
    expect(banner).to_have_count(0, timeout=20_000)
    expect(watcher.get_by_role("status").filter(has_text="Reconnecting…")).to_have_count(0, timeout=40_000)

    for view in (page, watcher):
        items = view.get_by_role("log", name="Messages").get_by_role("listitem")
        for text in WHILE_DOWN:
            expect(items.filter(has_text=text)).to_have_count(1)
    expect(log.locator(".message.pending")).to_have_count(0)
    for text in WHILE_DOWN:
        assert db_query(_count, text) == 1

    page.reload()
    wait_for_room(page, "lobby")
    texts = [t.strip() for t in log.locator(".message-text").all_inner_texts()]
    assert texts == ["before the restart", *WHILE_DOWN]
    screenshot(page, "after-restart")
