"""The chat page end to end: two people, live messages, typing, history, safety, languages."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .conftest import screenshot, wait_for_room

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pair(make_user, make_room):
    alice = make_user("alice", "Alice")
    bob = make_user("bob", "Bob")
    lobby = make_room("lobby", "Lobby", [alice, bob])
    make_room("random", "Random", [alice, bob])
    return alice, bob, lobby


def test_two_people_see_messages_and_typing_live_and_html_stays_text(pair, open_page):
    alice, bob, _ = pair
    page_a = open_page(alice, "/rooms/lobby/")
    page_b = open_page(bob, "/rooms/lobby/")
    wait_for_room(page_a, "lobby")
    wait_for_room(page_b, "lobby")

    # The contract's names (PROTOCOL.md section 9).
    rooms_nav = page_a.get_by_role("navigation", name="Rooms")
    expect(rooms_nav.get_by_role("link", name="Lobby")).to_be_visible()
    expect(rooms_nav.get_by_role("link", name="Random")).to_be_visible()
    expect(page_a.get_by_role("log", name="Messages")).to_be_visible()
    expect(page_a.get_by_label("Attach file")).to_have_attribute("type", "file")
    expect(page_a.get_by_role("list", name="Online")).to_contain_text("Bob")
    expect(page_b.get_by_role("list", name="Online")).to_contain_text("Alice")

    box = page_a.get_by_role("textbox", name="Message")
    box.press_sequentially("Hello Bob")
    expect(page_b.get_by_role("status").filter(has_text="Alice is typing…")).to_be_visible()
    page_a.get_by_role("button", name="Send").click()

    log_b = page_b.get_by_role("log", name="Messages")
    item = log_b.get_by_role("listitem").filter(has_text="Hello Bob")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Alice")
    expect(page_b.get_by_role("status").filter(has_text="is typing")).to_have_count(0)

    reply = page_b.get_by_role("textbox", name="Message")
    reply.fill("Hi Alice, welcome!\nSecond line")
    reply.press("Enter")
    item_a = page_a.get_by_role("log", name="Messages").get_by_role("listitem").filter(has_text="Hi Alice, welcome!")
    expect(item_a).to_contain_text("Bob")
    expect(item_a).to_contain_text("Second line")
    expect(box).to_have_value("")
    screenshot(page_a, "two-people-alice")
    screenshot(page_b, "two-people-bob")

    # HTML in a message stays text: a <script> never runs, an <img> is never made.
    evil = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> <b>bold</b> javascript:alert(1)'
    reply.fill(evil)
    reply.press("Enter")
    log_a = page_a.get_by_role("log", name="Messages")
    expect(log_a.get_by_role("listitem").filter(has_text="<script>")).to_contain_text(evil)
    assert log_a.locator("script, img[src='x'], b").count() == 0
    assert page_a.evaluate("window.__xss") is None
    assert page_b.evaluate("window.__xss") is None

    # Only http(s) URLs become links, opened with rel="noopener noreferrer".
    reply.fill("see https://example.com/docs, and (https://example.org/x)")
    reply.press("Enter")
    links = log_a.get_by_role("link")
    expect(links).to_have_count(2)
    expect(links.first).to_have_attribute("href", "https://example.com/docs")
    expect(links.first).to_have_attribute("rel", re.compile(r"noopener noreferrer"))
    expect(links.last).to_have_attribute("href", "https://example.org/x")


def test_unread_counts_in_sidebar_and_title(pair, open_page):
    alice, bob, _ = pair
    page_a = open_page(alice, "/rooms/lobby/")
    page_b = open_page(bob, "/rooms/random/")
    wait_for_room(page_a, "lobby")
    wait_for_room(page_b, "random")
    for text in ("one", "two"):
        page_b.get_by_role("textbox", name="Message").fill(f"random {text}")
        page_b.get_by_role("button", name="Send").click()
    link = page_a.get_by_role("navigation", name="Rooms").get_by_role("link", name="Random")
    expect(link).to_contain_text("2")
    expect(page_a).to_have_title(re.compile(r"^\(2\) "))
    link.click()
    wait_for_room(page_a, "random")
    expect(page_a.get_by_role("log", name="Messages").get_by_role("listitem")).to_have_count(2)
    expect(link).not_to_contain_text("2")
    expect(page_a).not_to_have_title(re.compile(r"^\("))
    expect(page_a).to_have_url(re.compile(r"/rooms/random/$"))


def test_history_in_order_after_reload_and_older_pages(pair, open_page, add_messages):
    alice, bob, lobby = pair
    add_messages(lobby, bob, [f"history {n:02d}" for n in range(1, 71)], read_by=[alice])
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    log = page.get_by_role("log", name="Messages")
    items = log.get_by_role("listitem")
    expect(items).to_have_count(50)  # the socket's first page
    expect(items.last).to_contain_text("history 70")

    page.get_by_role("textbox", name="Message").fill("after the history")
    page.keyboard.press("Enter")
    expect(items.last).to_contain_text("after the history")

    page.reload()
    wait_for_room(page, "lobby")
    expect(items).to_have_count(50)
    texts = [t.strip() for t in log.locator(".message-text").all_inner_texts()]
    assert texts == [f"history {n:02d}" for n in range(22, 71)] + ["after the history"]

    # Scrolling to the top loads the older messages through REST, in front, in order.
    log.evaluate("el => { el.scrollTop = 0; }")
    expect(items).to_have_count(71)
    texts = [t.strip() for t in log.locator(".message-text").all_inner_texts()]
    assert texts == [f"history {n:02d}" for n in range(1, 71)] + ["after the history"]
    expect(page.get_by_text("This is the beginning of the room.")).to_be_visible()
    screenshot(page, "history")

    # Scrolled up, a new message does not pull the reader down: a button offers the jump.
    writer = open_page(bob, "/rooms/lobby/")
    wait_for_room(writer, "lobby")
    top = log.evaluate("el => el.scrollTop")
    writer.get_by_role("textbox", name="Message").fill("while you were reading")
    writer.keyboard.press("Enter")
    expect(items.last).to_contain_text("while you were reading")
    jump = page.get_by_role("button", name="New messages below")
    expect(jump).to_be_visible()
    assert log.evaluate("el => el.scrollTop") == top
    jump.click()
    expect(jump).to_be_hidden()
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 50
    # At the bottom, the next one keeps it pinned there.
    writer.get_by_role("textbox", name="Message").fill("and one more")
    writer.keyboard.press("Enter")
    expect(items.last).to_contain_text("and one more")
    expect(jump).to_be_hidden()
    at_bottom = "() => { const el = document.querySelector('#message-log');"
    at_bottom += " return el.scrollHeight - el.scrollTop - el.clientHeight < 50; }"
    page.wait_for_function(at_bottom)


def test_edit_and_delete_own_message_and_mentions(pair, open_page):
    alice, bob, _ = pair
    page_a = open_page(alice, "/rooms/lobby/")
    page_b = open_page(bob, "/rooms/lobby/")
    wait_for_room(page_a, "lobby")
    wait_for_room(page_b, "lobby")
    box = page_a.get_by_role("textbox", name="Message")
    box.fill("hey @bob, typo here")
    box.press("Enter")
    log_b = page_b.get_by_role("log", name="Messages")
    expect(log_b.locator("mark.mention.me")).to_have_text("@bob")

    # The counter shows near the limit; over it, Send is disabled.
    send = page_a.get_by_role("button", name="Send")
    box.fill("x" * 3500)
    expect(page_a.locator("#char-counter")).to_have_text("3500 / 4000")
    expect(send).to_be_enabled()
    box.fill("x" * 4001)
    expect(send).to_be_disabled()
    box.fill("")
    expect(page_a.locator("#char-counter")).to_have_text("")

    # Up in the empty composer edits the last own message.
    expect(box).to_have_value("")
    box.press("ArrowUp")
    expect(box).to_have_value("hey @bob, typo here")
    box.fill("hey @bob, fixed")
    box.press("Enter")
    item_b = log_b.get_by_role("listitem").filter(has_text="hey @bob, fixed")
    expect(item_b).to_contain_text("(edited)")

    item_a = page_a.get_by_role("log", name="Messages").get_by_role("listitem").filter(has_text="hey @bob, fixed")
    item_a.hover()
    item_a.get_by_role("button", name="Delete").click()
    page_a.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(log_b.get_by_role("listitem").filter(has_text="Message deleted")).to_have_count(1)
    expect(log_b).not_to_contain_text("hey @bob, fixed")
    screenshot(page_b, "deleted")


def test_chinese_labels_from_accept_language_and_the_switcher(pair, open_page):
    alice, _, _ = pair
    page = open_page(alice, "/rooms/lobby/", locale="zh-CN")
    wait_for_room(page, "lobby")
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_role("navigation", name="聊天室")).to_be_visible()
    expect(page.get_by_role("log", name="消息列表")).to_be_visible()
    expect(page.get_by_role("textbox", name="消息")).to_be_visible()
    expect(page.get_by_role("button", name="发送")).to_be_visible()
    expect(page.get_by_label("添加附件")).to_be_attached()
    expect(page.get_by_role("list", name="在线")).to_contain_text("Alice")
    page.get_by_role("textbox", name="消息").fill("你好")
    page.get_by_role("button", name="发送").click()
    expect(page.get_by_role("log", name="消息列表").get_by_role("listitem")).to_contain_text(["你好"])
    expect(page.get_by_role("log", name="消息列表")).to_contain_text("今天")
    screenshot(page, "chinese")

    # The switcher (Django's set_language) takes an English reader to Chinese and back.
    english = open_page(alice, "/rooms/lobby/", locale="en-US")
    wait_for_room(english, "lobby")
    english.get_by_label("Language").select_option("zh-hans")
    expect(english.get_by_role("button", name="发送")).to_be_visible()
    english.get_by_label("语言").select_option("en")
    expect(english.get_by_role("button", name="Send")).to_be_visible()


def test_login_page_logs_in_and_is_translated(pair, open_page, chat_server):
    page = open_page(None, "/", locale="zh-CN")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="登录")).to_be_visible()
    page.get_by_label("用户名").fill("alice")
    page.get_by_label("密码").fill("pw-alice-123")
    page.get_by_role("button", name="登录").click()
    wait_for_room(page, "lobby")
    expect(page.get_by_role("navigation", name="聊天室")).to_be_visible()
    screenshot(page, "after-login")
    for path in ("/accounts/password_change/", "/accounts/password_reset/", "/accounts/signup/"):
        page.goto(path)
        expect(page.locator(".card h1")).to_be_visible()
    screenshot(page, "signup")


def test_phone_width_shows_rooms_in_a_drawer(pair, open_page):
    alice, _, _ = pair
    page = open_page(alice, "/rooms/lobby/", viewport={"width": 390, "height": 800})
    wait_for_room(page, "lobby")
    nav = page.get_by_role("navigation", name="Rooms")
    expect(nav).to_be_hidden()
    page.get_by_role("button", name="Show rooms").click()
    expect(nav).to_be_visible()
    page.keyboard.press("Escape")
    expect(nav).to_be_hidden()
    box = page.get_by_role("textbox", name="Message")
    box.fill("from a phone")
    box.press("Enter")
    expect(page.get_by_role("log", name="Messages")).to_contain_text("from a phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "phone")


def test_logging_out_elsewhere_sends_the_page_to_the_login_form(pair, open_page):
    alice, _, _ = pair
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    # Another tab of the same browser logs out: the socket is closed with 4401, and the page
    # goes to the login form instead of reconnecting forever.
    other = page.context.new_page()
    other.goto("/rooms/random/")
    other.locator("summary").filter(has_text="Alice").click()
    other.get_by_role("button", name="Log out").click()
    expect(other).to_have_url(re.compile(r"/accounts/login/"))
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/rooms/lobby/"), timeout=15_000)
    expect(page.get_by_label("Username")).to_be_visible()
