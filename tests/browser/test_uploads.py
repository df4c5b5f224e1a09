"""Attachments from the page: a progress bar per upload, images as thumbnails that open full
size, other files as cards, cancel."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from .conftest import screenshot, wait_for_room

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pair(make_user, make_room):
    alice = make_user("alice", "Alice")
    bob = make_user("bob", "Bob")
    make_room("lobby", "Lobby", [alice, bob])
    return alice, bob


def noise_png(path, size=700):
    """A PNG that does not compress: a few hundred KB, so the upload takes many chunks."""
    from PIL import Image

    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(path, "PNG")
    return path


def test_image_upload_shows_progress_then_a_thumbnail(pair, open_page, tmp_path):
    alice, bob = pair
    page = open_page(alice, "/rooms/lobby/")
    watcher = open_page(bob, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    wait_for_room(watcher, "lobby")
    image = noise_png(tmp_path / "noise.png")

    page.get_by_label("Attach file").set_input_files(str(image))
    progress = page.get_by_role("progressbar", name="Uploading noise.png")
    expect(progress).to_be_visible()
    screenshot(page, "upload-progress")

    for view in (page, watcher):
        thumbnail = view.get_by_role("log", name="Messages").get_by_role("img", name="noise.png")
        expect(thumbnail).to_be_visible(timeout=20_000)
    expect(progress).to_have_count(0)
    # Visible is not loaded: wait until the thumbnail's bytes really arrived and decoded.
    page.wait_for_function("document.querySelector('.attachment-image img')?.naturalWidth > 0", timeout=15_000)
    assert page.evaluate("document.querySelector('.attachment-image img').naturalWidth") > 0

    # The thumbnail opens the full image; Escape closes it.
    watcher.get_by_role("button", name="Open image noise.png").click()
    dialog = watcher.get_by_role("dialog")
    expect(dialog.get_by_role("img", name="noise.png")).to_be_visible()
    expect(dialog.get_by_role("img", name="noise.png")).to_have_js_property("naturalWidth", 700)
    screenshot(watcher, "image-open")
    watcher.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_other_files_are_cards_with_name_and_size(pair, open_page, tmp_path):
    alice, _ = pair
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n" * 500)  # 3000 bytes
    page.get_by_label("Attach file").set_input_files(str(notes))
    card = page.get_by_role("log", name="Messages").get_by_role("link", name=re.compile("notes.txt"))
    expect(card).to_be_visible(timeout=20_000)
    expect(card).to_contain_text("2.9 KB")
    expect(card).to_have_attribute("href", re.compile(r"^/files/"))


def test_an_upload_can_be_cancelled(pair, open_page, tmp_path):
    alice, _ = pair
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    page.get_by_label("Attach file").set_input_files(str(big))
    progress = page.get_by_role("progressbar", name="Uploading big.bin")
    expect(progress).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(progress).to_have_count(0)
    page.wait_for_timeout(500)
    expect(page.get_by_role("log", name="Messages").get_by_role("link", name=re.compile("big.bin"))).to_have_count(0)


PASTE_IMAGE = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 40;
  canvas.height = 30;
  canvas.getContext("2d").fillRect(0, 0, 40, 30);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const data = new DataTransfer();
  data.items.add(new File([blob], "image.png", { type: "image/png" }));
  document.querySelector("#message-input").dispatchEvent(
    new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }),
  );
}"""

DROP_FILE = """() => {
  const data = new DataTransfer();
  data.items.add(new File(["dropped text"], "dropped.txt", { type: "text/plain" }));
  const room = document.querySelector("#room");
  room.dispatchEvent(new DragEvent("dragenter", { dataTransfer: data, bubbles: true, cancelable: true }));
  room.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
  room.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
}"""


def test_pasted_images_and_dropped_files_are_uploaded(pair, open_page):
    alice, _ = pair
    page = open_page(alice, "/rooms/lobby/")
    wait_for_room(page, "lobby")
    log = page.get_by_role("log", name="Messages")
    page.evaluate(PASTE_IMAGE)
    expect(log.get_by_role("img", name=re.compile(r"^pasted-.*\.png$"))).to_be_visible(timeout=20_000)
    page.evaluate(DROP_FILE)
    expect(log.get_by_role("link", name=re.compile("dropped.txt"))).to_be_visible(timeout=20_000)
    expect(page.locator("#drop-zone")).to_be_hidden()
