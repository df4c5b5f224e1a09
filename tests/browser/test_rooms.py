"""Rooms and people from the page: create, browse and join, direct messages from a name,
replies, the "new messages" line, a moderator's delete."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .conftest import screenshot, wait_for_room

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_browse_join_and_direct_message(make_user, make_room, open_page):
    alice = make_user("alice", "Alice")
    bob = make_user("bob", "Bob")
    carol = make_user("carol", "Carol")
    make_room("lobby", "Lobby", [alice, bob])
    make_room("garden", "Garden", [carol])
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    nav = page.get_by_role("navigation", name="Rooms")

    page.get_by_role("button", name="Create a room").click()
    dialog = page.get_by_role("dialog", name="Create a room")
    dialog.get_by_label("Name").fill("Book club")
    expect(dialog.get_by_label("Address")).to_have_value("book-club")
    dialog.get_by_role("button", name="Create", exact=True).click()
    wait_for_room(page, "book-club")
    expect(nav.get_by_role("link", name="Book club")).to_have_attribute("aria-current", "page")
    expect(page).to_have_url(re.compile(r"/rooms/book-club/$"))

    page.get_by_role("button", name="Browse public rooms").click()
    browse = page.get_by_role("dialog", name="Public rooms")
    expect(browse.get_by_role("button", name="Join #Garden")).to_be_visible()
    page.keyboard.press("Escape")  # closes the dialog
    expect(browse).to_be_hidden()
    page.get_by_role("button", name="Browse public rooms").click()
    browse.get_by_role("button", name="Join #Garden").click()
    wait_for_room(page, "garden")
    expect(nav.get_by_role("link", name="Garden")).to_be_visible()

    # A direct message from a name in the online list.
    watcher = open_page(bob, "/rooms/lobby/")
    wait_for_room(watcher, "lobby")
    nav.get_by_role("link", name="Lobby").click()
    wait_for_room(page, "lobby")
    page.get_by_role("list", name="Online").get_by_role("button", name="Bob").click()
    page.get_by_role("dialog", name="Bob").get_by_role("button", name="Direct message").click()
    slug = f"dm-{min(alice.pk, bob.pk)}-{max(alice.pk, bob.pk)}"
    # The pair's room opens with its first message (PROTOCOL.md section 2); until then a draft.
    expect(page.get_by_role("heading", level=1)).to_have_text("Bob")
    page.get_by_role("textbox", name="Message").fill("psst")
    page.keyboard.press("Enter")
    wait_for_room(page, slug)
    expect(page.get_by_role("heading", level=1)).to_have_text("Bob")
    dm_link = watcher.get_by_role("navigation", name="Rooms").get_by_role("link", name="Alice")
    expect(dm_link).to_contain_text("1")
    dm_link.click()
    wait_for_room(watcher, slug)
    expect(watcher.get_by_role("log", name="Messages")).to_contain_text("psst")
    screenshot(watcher, "direct-message")


def test_reply_new_messages_line_and_moderator_delete(make_user, make_room, open_page, add_messages):
    alice = make_user("alice", "Alice")  # the lobby's owner
    bob = make_user("bob", "Bob")
    lobby = make_room("lobby", "Lobby", [alice, bob])
    add_messages(lobby, bob, ["read one", "read two"], read_by=[alice, bob])
    add_messages(lobby, bob, ["unread three", "unread four"], read_by=[bob])
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    log = page.get_by_role("log", name="Messages")
    marker = log.get_by_role("separator", name="New messages")
    expect(marker).to_be_visible()
    # The line sits right before the first unread message.
    assert log.locator(".new-marker + li").inner_text().find("unread three") >= 0

    watcher = open_page(bob, "/rooms/lobby/")
    wait_for_room(watcher, "lobby")
    original = watcher.get_by_role("log", name="Messages").get_by_role("listitem").filter(has_text="unread four")
    original.hover()
    original.get_by_role("button", name="Reply").click()
    expect(watcher.get_by_text("Replying to Bob")).to_be_visible()
    watcher.get_by_role("textbox", name="Message").fill("answering myself")
    watcher.keyboard.press("Enter")
    reply = log.get_by_role("listitem").filter(has_text="answering myself")
    expect(reply.locator(".reply-quote")).to_contain_text("unread four")

    # The owner may delete someone else's message.
    target = log.get_by_role("listitem").filter(has_text="read two")
    target.hover()
    target.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(
        watcher.get_by_role("log", name="Messages").get_by_role("listitem").filter(has_text="Message deleted")
    ).to_have_count(1)
    # Bob may not delete Alice's messages: no Delete button on them.
    page.get_by_role("textbox", name="Message").fill("from the owner")
    page.keyboard.press("Enter")
    mine = watcher.get_by_role("log", name="Messages").get_by_role("listitem").filter(has_text="from the owner")
    mine.hover()
    expect(mine.get_by_role("button", name="Reply")).to_be_visible()
    expect(mine.get_by_role("button", name="Delete")).to_have_count(0)
    screenshot(page, "reply-and-delete")


NOTIFICATION_SPY = """
window.__notifications = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notifications.push({ title, body: options?.body ?? "" }); }
  close() {}
};
"""
HIDE_TAB = """() => {
  Object.defineProperty(document, "visibilityState", { get: () => "hidden", configurable: true });
  Object.defineProperty(document, "hidden", { get: () => true, configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_desktop_notifications_for_mentions_when_hidden(make_user, make_room, open_page):
    alice = make_user("alice", "Alice")
    bob = make_user("bob", "Bob")
    make_room("lobby", "Lobby", [alice, bob])
    page = open_page(alice, None)
    page.add_init_script(NOTIFICATION_SPY)
    page.goto("/rooms/lobby/")
    wait_for_room(page, "lobby")
    toggle = page.get_by_role("button", name="Notifications off")
    toggle.click()  # opt in
    expect(page.get_by_role("button", name="Notifications on")).to_have_attribute("aria-pressed", "true")
    page.evaluate(HIDE_TAB)

    writer = open_page(bob, "/rooms/lobby/")
    wait_for_room(writer, "lobby")
    box = writer.get_by_role("textbox", name="Message")
    box.fill("no mention here")
    box.press("Enter")
    box.fill("@alice are you there?")
    box.press("Enter")
    expect(page.get_by_role("log", name="Messages")).to_contain_text("are you there?")
    notes = page.evaluate("window.__notifications")
    assert notes == [{"title": "Bob in #Lobby", "body": "@alice are you there?"}]
    expect(page).to_have_title(re.compile(r"^\(2\) "))
