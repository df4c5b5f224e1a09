"""Browser tests: the real server (daphne) in a subprocess on the test database, driven by
Debian's Chromium through Playwright's sync API.

The server gets the same environment as the tests (``DATABASE_URL`` pointed at the test
database, ``REDIS_URL`` when set, the run's ``TEST_RUN_ID``), with DEBUG off and whitenoise
serving static files from the finders (``chatsite.settings_test``). Tests use
``django_db(transaction=True)`` so that the server sees committed rows.

Playwright's sync API keeps an event loop running in this thread while a browser is open, so
database setup runs in a worker thread (``in_thread``): there, Django's async-safety check and
``async_to_sync`` (used by broadcasts on commit) behave as in any request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAPHNE = Path(sys.executable).with_name("daphne")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Without Chromium there is nothing to drive: skip rather than fail with a launch error.
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


# --- Database helpers ------------------------------------------------------------------------


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in a worker thread (no event loop there) and close its connection after."""

    def run() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def test_database_url() -> str:
    """The URL of the database pytest-django created, for the server subprocess."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


# --- The server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChatServer:
    """daphne serving the site on 127.0.0.1:port; start() and stop() may be repeated."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path) -> None:
        self.port = port
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own daphne, fixed arguments
            [str(DAPHNE), "-b", "127.0.0.1", "-p", str(self.port), "chatsite.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not answer within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def server_env(media_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings_test",
        DATABASE_URL=test_database_url(),
        DEBUG="false",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        MEDIA_ROOT=str(media_root),
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
    )
    # The test settings module read it with setdefault: the server must use the same value.
    env["TEST_RUN_ID"] = settings.TEST_RUN_ID
    env.setdefault("SECRET_KEY", os.environ.get("SECRET_KEY", ""))
    return env


@pytest.fixture(scope="package")
def server_factory(django_db_setup, tmp_path_factory) -> Iterator[Callable[[], ChatServer]]:
    """Start servers on free ports; all are stopped before the test database is dropped."""
    ARTIFACTS.mkdir(exist_ok=True)
    started: list[ChatServer] = []

    def make() -> ChatServer:
        media = tmp_path_factory.mktemp("server-media")
        server = ChatServer(free_port(), server_env(media), ARTIFACTS / "daphne.log")
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="package")
def chat_server(server_factory) -> ChatServer:
    """One server for the package (tests that restart a server start their own)."""
    return server_factory()


# --- The browser -----------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # While Playwright's loop runs in this thread, pytest-django's own flush between
    # transactional tests is an ORM call "from async context": allow it, here only.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def session_cookie_for(user_pk: int) -> str:
    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(pk=user_pk))
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def open_page(browser, request) -> Iterator[Callable[..., Any]]:
    """``open_page(user, path="/", locale="en-US", server=None)``: a logged-in page in its own
    browser context. Uncaught script errors and CSP violations fail the test."""
    contexts = []
    problems: list[str] = []

    def _open(
        user: Any = None,
        path: str = "/",
        *,
        locale: str = "en-US",
        server: ChatServer | None = None,
        viewport: dict | None = None,
    ) -> Any:
        server = server or request.getfixturevalue("chat_server")
        context = browser.new_context(
            base_url=server.url,
            locale=locale,
            viewport=viewport or {"width": 1280, "height": 800},
            extra_http_headers={"Accept-Language": locale},
        )
        contexts.append(context)
        if user is not None:
            value = in_thread(session_cookie_for, user.pk)
            context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": value, "url": server.url}])
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        if path is not None:
            page.goto(path)
        return page

    yield _open
    for context in contexts:
        context.close()
    if contexts:
        # The server answers the sockets' departure after they have gone (the room's presence
        # list is read 50 ms later): let that finish before pytest-django empties the tables, or
        # PostgreSQL may find the TRUNCATE and that read deadlocked.
        time.sleep(0.5)
    assert not problems, problems


# --- Data ------------------------------------------------------------------------------------


def _make_user(username: str, display_name: str = "") -> Any:
    from accounts.models import User

    return User.objects.create_user(username=username, password=f"pw-{username}-123", display_name=display_name)


def _make_room(slug: str, name: str, members: list, kind: str = "public") -> Any:
    from chat.models import Membership, Room

    with transaction.atomic():
        room = Room.objects.create(slug=slug, name=name, kind=kind, created_by=members[0] if members else None)
        for index, member in enumerate(members):
            Membership.objects.create(
                room=room, user=member, role=Membership.Role.OWNER if index == 0 else Membership.Role.MEMBER
            )
    return room


def _add_messages(room_pk: int, author_pk: int, texts: list[str], *, read_by: list | None = None) -> None:
    """Stored messages with the model's invariants (gap-free seq, room.last_seq)."""
    from chat.models import Membership, Message, Room

    with transaction.atomic():
        room = Room.objects.select_for_update().get(pk=room_pk)
        start = room.last_seq
        Message.objects.bulk_create(
            Message(room=room, author_id=author_pk, seq=start + i + 1, content=text) for i, text in enumerate(texts)
        )
        room.last_seq = start + len(texts)
        room.save(update_fields=["last_seq"])
        for user in read_by or []:
            Membership.objects.filter(room=room, user=user).update(read_seq=room.last_seq)


@pytest.fixture
def make_user() -> Callable[..., Any]:
    return lambda username, display_name="": in_thread(_make_user, username, display_name)


@pytest.fixture
def make_room() -> Callable[..., Any]:
    return lambda slug, name, members, kind="public": in_thread(_make_room, slug, name, members, kind)


@pytest.fixture
def add_messages() -> Callable[..., None]:
    return lambda room, author, texts, read_by=None: in_thread(
        _add_messages, room.pk, author.pk, texts, read_by=read_by
    )


@pytest.fixture
def db_query() -> Callable[..., Any]:
    """Run a read (a callable) in the worker thread and return its result."""
    return in_thread


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(autouse=True)
def clean_shared_state() -> Iterator[None]:
    """The suite's reset (presence, rate limits, layers), run from a worker thread: this
    thread has Playwright's event loop, where asyncio.run and async_to_sync cannot run."""
    from channels.layers import channel_layers

    from chat import shared_state

    def reset() -> None:
        shared_state.reset_for_tests()
        channel_layers.backends.clear()

    in_thread(reset)
    yield
    in_thread(reset)


def wait_for_room(page: Any, slug: str, timeout: float = 10_000) -> None:
    """Until the page shows ``slug`` with its history loaded over the socket."""
    page.locator(f'#app[data-loaded-room="{slug}"]').wait_for(state="attached", timeout=timeout)
