"""History paging through the real HTTP stack: daphne serving the site, on PostgreSQL.

    .venv/bin/python bench/history_bench.py [--database-url postgres://postgres@127.0.0.1:5432/chat_bench]
        [--messages 100000] [--requests 3000] [--concurrency 1 8]

1. Creates the bench database if missing and migrates it (never the development database).
2. Fills one room with ``--messages`` messages by bulk insert (once; later runs reuse them).
3. Starts daphne (a child process, ``chatsite.asgi:application``, DEBUG off) and sends
   ``GET /api/rooms/bench-history/messages/?before=R&limit=50`` with random anchors ``R`` from
   keep-alive HTTP connections, token-authenticated: the full path of a client scrolling back
   (daphne, middleware, DRF authentication and throttles, the selector, serialization).
4. Prints requests/s, latency percentiles and daphne's CPU time per request for each
   concurrency level (with the load average: the figures are only as quiet as the machine),
   then the EXPLAIN ANALYZE of the page query exactly as the selector sends it (captured, not
   rebuilt).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOM = "bench-history"
PAGE = 50
READERS = 60


def _environment(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=database_url,
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-not-for-any-deployment-0123456789",  # noqa: S106 - a throwaway bench database
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        LOG_LEVEL="ERROR",
    )
    env.pop("REDIS_URL", None)  # reads need no channel layer
    return env


def _django(database_url: str) -> None:
    os.environ.update(_environment(database_url))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _ensure_database(database_url: str) -> None:
    import psycopg

    base, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


def prepare(database_url: str, count: int) -> list[str]:
    """Migrate, fill the room once, and return the API tokens of the readers."""
    _ensure_database(database_url)
    _django(database_url)
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from chat import services
    from chat.models import Message, Room

    call_command("migrate", verbosity=0)
    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench", password=None)
    room = Room.objects.filter(slug=ROOM).first() or services.room_create(user=user, slug=ROOM, name="Bench")
    if room.last_seq < count:
        started = time.perf_counter()
        batch = 10_000
        for first in range(room.last_seq + 1, count + 1, batch):
            last = min(first + batch - 1, count)
            Message.objects.bulk_create(
                Message(room=room, author=user, seq=seq, content=f"bench message number {seq}")
                for seq in range(first, last + 1)
            )
        Room.objects.filter(pk=room.pk).update(last_seq=count)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chat_message")
        print(f"filled {ROOM} up to seq {count} in {time.perf_counter() - started:.1f} s")
    else:
        print(f"{ROOM} already holds {room.last_seq} messages")
    # Many readers, each well inside the read throttle (api_read, per user), so that the real
    # throttle runs on every request without refusing the bench's own load.
    tokens = []
    for number in range(READERS):
        reader = User.objects.filter(username=f"reader{number}").first() or User.objects.create_user(
            f"reader{number}", password=None
        )
        services.room_join(user=reader, slug=ROOM)
        tokens.append(services.api_token_issue(user=reader)[0])
    return tokens


def serve(port: int) -> None:
    """The child process: daphne with the site's ASGI application, settings as they are."""
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(["-b", "127.0.0.1", "-p", str(port), "-v", "0", "chatsite.asgi:application"])


def _wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("daphne did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), a figure that other load on the
    machine does not inflate the way it inflates latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(*, port: int, tokens: list[str], total: int, concurrency: int, count: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(share: int, seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(share):
            headers = {"Authorization": f"Token {rng.choice(tokens)}", "Host": "127.0.0.1"}
            before = rng.randint(PAGE + 1, count + 1)
            started = time.perf_counter()
            conn.request("GET", f"/api/rooms/{ROOM}/messages/?before={before}&limit={PAGE}", headers=headers)
            response = conn.getresponse()
            body = response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                errors.append(f"{response.status} {body[:200]!r}")
                continue
            seqs = [m["seq"] for m in json.loads(body)["results"]]
            if seqs != list(range(before - PAGE, before)):
                errors.append(f"wrong page for before={before}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(total // concurrency, seed)) for seed in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "mean": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }


def explain(count: int) -> None:
    """EXPLAIN ANALYZE of the query ``selectors.history_before`` really sends."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat import selectors
    from chat.models import Room

    room = Room.objects.get(slug=ROOM)
    anchor = count // 2
    with CaptureQueriesContext(connection) as captured:
        page, _ = selectors.history_before(room=room, seq=anchor, limit=PAGE)
    assert [m.seq for m in page] == list(range(anchor - PAGE, anchor))
    sql = captured.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        plan = [row[0] for row in cursor.fetchall()]
    print(f"\nPage query (history_before, seq < {anchor}, limit {PAGE}):\n{sql}\n")
    print("\n".join(plan))
    uses_index = any("Index Scan" in line and "message_room_seq_unique" in line for line in plan)
    print(f"\nindex scan on (room, seq): {'yes' if uses_index else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/chat_bench")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        raise SystemExit("the benchmark runs on PostgreSQL")

    if args.serve:
        _django(args.database_url)
        serve(args.port)
        return

    tokens = prepare(args.database_url, args.messages)
    server_log = tempfile.NamedTemporaryFile(prefix="history-bench-daphne-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, __file__, "--serve", "--port", str(args.port), "--database-url", args.database_url],
        env=_environment(args.database_url),
        cwd=ROOT,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    failed = False
    try:
        _wait_for(args.port)
        load(port=args.port, tokens=tokens, total=200, concurrency=2, count=args.messages)  # warm-up
        print(f"\nGET /api/rooms/{ROOM}/messages/?before=<random>&limit={PAGE} via daphne, {args.messages} messages")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        for concurrency in args.concurrency:
            cpu = _cpu_seconds(server.pid)
            r = load(port=args.port, tokens=tokens, total=args.requests, concurrency=concurrency, count=args.messages)
            cpu_ms = (_cpu_seconds(server.pid) - cpu) * 1000 / r["requests"]
            print(
                f"concurrency {concurrency:>2}: {r['requests']} requests, {r['rps']:.0f} req/s, "
                f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms, "
                f"server CPU {cpu_ms:.1f} ms/request"
            )
            if r["errors"]:
                failed = True
                print(f"  {len(r['errors'])} bad answers (see daphne's log), e.g. {r['errors'][:2]}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        print(f"daphne's log: {server_log.name}")
    explain(args.messages)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
