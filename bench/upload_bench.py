"""Uploads under chat load, through a real daphne server on 127.0.0.1 (docs/performance.md, "Uploads").

    .venv/bin/python bench/upload_bench.py [--binary] [--database-url postgres://postgres@127.0.0.1:5432/chat_upload_bench]
        [--redis-url redis://127.0.0.1:6379/3] [--chat-users 200] [--rooms 10] [--uploaders 10] [--file-mib 5]

1. Creates the bench database if missing, migrates it (never the development database), and
   creates the users, rooms and memberships directly through Django, with a logged-in session
   per user (``Client.force_login``): no sign-up traffic in the measurement.
2. Starts one daphne process (``chatsite.asgi:application``, DEBUG off; ``--servers N`` for
   several, sockets spread round robin, which needs Redis) on free loopback ports, with
   ``CHAT_POST_REFILL_PER_SECOND=2`` (default 1): at exactly one message a second per user,
   timer jitter alone would otherwise run some buckets dry and the bench would measure refusals.
   With Redis it also raises the layer's Redis socket timeout to 15 s (``--keep-redis-timeout``
   to leave it): redis-py 8's default of 5 s equals channels_redis's BZPOPMIN wait, so idle
   sockets crash with 1011 within seconds.
3. Opens a socket per chat user (``--chat-users`` spread over ``--rooms``); each sends one
   message a second to its room and times the round trip to its own copy of the message (stored,
   acked, broadcast through the channel layer).
4. After ``--warmup`` seconds, ``--uploaders`` further users (one per room) each upload a
   ``--file-mib`` MiB file at once, in 64 KiB chunks, as JSON/base64 ``file_chunk`` frames or
   with ``--binary`` as binary frames, keeping ``--window`` chunks in flight; chat goes on.
5. Prints upload throughput (aggregate and per upload) and the chat latency percentiles before
   and during the uploads. Everything stops by itself (``--max-seconds``, default 120).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "ub"


def _environment(args: argparse.Namespace, media_root: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=args.database_url,
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-not-for-any-deployment-0123456789",  # noqa: S106 - a throwaway bench database
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="ERROR",
        MEDIA_ROOT=media_root,
        CHANNEL_PREFIX="upload-bench",
        CHAT_REDIS_KEY_PREFIX="upload-bench:",
        CHAT_POST_REFILL_PER_SECOND="2",
    )
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    else:
        env.pop("REDIS_URL", None)
    if args.redis_url and not args.keep_redis_timeout:
        # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s channels_redis
        # blocks in BZPOPMIN: an idle consumer's receive can time out and crash the socket
        # (1011). Until the project's CHANNEL_LAYERS sets a longer one, the bench does.
        Path(media_root, "upload_bench_settings.py").write_text(
            "from chatsite.settings import *  # noqa: F403\n"
            'CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["socket_timeout"] = 15  # noqa: F405\n'
        )
        env["DJANGO_SETTINGS_MODULE"] = "upload_bench_settings"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [media_root, str(ROOT), env.get("PYTHONPATH")]))
    return env


def _ensure_database(database_url: str) -> None:
    if not database_url.startswith("postgres"):
        return
    import psycopg

    base, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


@dataclass
class Population:
    chat: list[tuple[str, str, str]]  # (username, room slug, session cookie)
    uploaders: list[tuple[str, str, str]]


def prepare(args: argparse.Namespace, env: dict[str, str]) -> Population:
    """Migrate and create the bench's users, rooms and sessions afresh."""
    _ensure_database(args.database_url)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, env.get("PYTHONPATH", "").split(os.pathsep)[0])
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import User
    from chat.models import Membership, Room

    call_command("migrate", verbosity=0)
    Room.objects.filter(slug__startswith=f"{PREFIX}-").delete()
    User.objects.filter(username__startswith=f"{PREFIX}-").delete()
    rooms = Room.objects.bulk_create(
        [Room(slug=f"{PREFIX}-room-{r}", name=f"Bench room {r}") for r in range(args.rooms)]
    )
    names = [f"{PREFIX}-chat-{n}" for n in range(args.chat_users)]
    names += [f"{PREFIX}-up-{n}" for n in range(args.uploaders)]
    # No password: hashing 200 passwords would take longer than the bench itself.
    users = User.objects.bulk_create([User(username=name, password="!") for name in names])  # noqa: S106
    users = list(User.objects.filter(username__in=names).order_by("pk"))
    by_name = {u.username: u for u in users}
    room_of = {}
    for n in range(args.chat_users):
        room_of[f"{PREFIX}-chat-{n}"] = rooms[n % args.rooms]
    for n in range(args.uploaders):
        room_of[f"{PREFIX}-up-{n}"] = rooms[n % args.rooms]
    Membership.objects.bulk_create([Membership(room=room_of[name], user=by_name[name]) for name in names])

    def cookie(user: User) -> str:
        client = Client()
        client.force_login(user)
        return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    def entry(name: str) -> tuple[str, str, str]:
        return name, room_of[name].slug, cookie(by_name[name])

    return Population(
        chat=[entry(f"{PREFIX}-chat-{n}") for n in range(args.chat_users)],
        uploaders=[entry(f"{PREFIX}-up-{n}") for n in range(args.uploaders)],
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(env: dict[str, str], port: int, log_path: str) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed with it
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited: {Path(log_path).read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("daphne did not start")


@dataclass
class Results:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    refused: int = 0
    uploads: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, bytes)
    upload_errors: list[str] = field(default_factory=list)
    acked_bytes: int = 0  # chunks confirmed by file_progress, finished or not


async def _connect(address: str, cookie: str):
    import websockets

    connection = await websockets.connect(
        f"ws://{address}/ws/chat/",
        additional_headers=[("Origin", f"http://{address}"), ("Cookie", cookie)],
        max_size=2**22,
        ping_interval=None,
    )
    while json.loads(await connection.recv())["type"] != "welcome":
        pass
    return connection


async def chat_user(connection, username: str, room: str, stop_at: float, results: Results) -> None:
    """One message a second; the latency is send -> this socket's copy of the broadcast."""
    pending: dict[str, float] = {}
    mine = f'"from":"{username}"'

    async def reader() -> None:
        async for raw in connection:
            if '"type":"error"' in raw:
                results.refused += 1
            elif mine in raw and '"type":"message"' in raw:
                frame = json.loads(raw)
                sent = pending.pop(frame.get("messageId"), None)
                if sent is not None:
                    results.latencies.append((sent, time.monotonic() - sent))

    task = asyncio.ensure_future(reader())
    next_send = time.monotonic() + random.random()  # spreading the load, not security
    n = 0
    try:
        while next_send < stop_at:
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
            message_id = f"{username}-{n}"
            pending[message_id] = time.monotonic()
            await connection.send(
                json.dumps({"type": "message", "to": room, "content": f"ping {n}", "messageId": message_id})
            )
            n += 1
            next_send += 1.0
        await asyncio.sleep(2)  # let the last replies arrive
    finally:
        task.cancel()
        await connection.close()


async def uploader(connection, room: str, data: bytes, args: argparse.Namespace, results: Results) -> None:
    from chat.protocol import binary_chunk_header

    chunk_size = 64 * 1024
    frames: asyncio.Queue = asyncio.Queue()

    async def reader() -> None:
        async for raw in connection:
            if '"type":"file_' in raw or '"type":"ack"' in raw or '"type":"error"' in raw:
                await frames.put(json.loads(raw))

    task = asyncio.ensure_future(reader())

    async def next_frame(*types: str) -> dict:
        while True:
            frame = await asyncio.wait_for(frames.get(), timeout=60)
            if frame["type"] == "error":
                raise RuntimeError(f"refused: {frame}")
            if frame["type"] in types:
                return frame

    started = time.monotonic()
    try:
        await connection.send(
            json.dumps(
                {
                    "type": "file_start",
                    "to": room,
                    "messageId": f"upload-{room}-{started}",
                    "extra": {"name": "bench.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
                }
            )
        )
        ready = await next_frame("file_ready")
        upload_id = ready["extra"]["uploadId"]
        count = -(-len(data) // chunk_size)
        sent = acked = 0
        while acked < count:
            while sent < count and sent - acked < args.window:
                chunk = data[sent * chunk_size : (sent + 1) * chunk_size]
                if args.binary:
                    await connection.send(binary_chunk_header(upload_id, sent) + chunk)
                else:
                    encoded = base64.b64encode(chunk).decode()
                    await connection.send(
                        json.dumps(
                            {"type": "file_chunk", "extra": {"uploadId": upload_id, "index": sent, "data": encoded}}
                        )
                    )
                sent += 1
            await next_frame("file_progress")
            acked += 1
            results.acked_bytes += min(chunk_size, len(data) - (acked - 1) * chunk_size)
        await connection.send(json.dumps({"type": "file_end", "extra": {"uploadId": upload_id}}))
        await next_frame("ack")
        results.uploads.append((started, time.monotonic(), len(data)))
    except Exception as exc:  # reported; the bench goes on
        results.upload_errors.append(repr(exc))
    finally:
        task.cancel()
        await connection.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace, addresses: list[str], population: Population, pids: list[int]) -> Results:
    results = Results()
    limit = asyncio.Semaphore(20)

    async def connect(n, entry):
        # Round robin over the server processes (all of them share PostgreSQL and Redis).
        async with limit:
            return await _connect(addresses[n % len(addresses)], entry[2])

    chat_connections = await asyncio.gather(*(connect(n, e) for n, e in enumerate(population.chat)))
    upload_connections = await asyncio.gather(*(connect(n, e) for n, e in enumerate(population.uploaders)))
    print(f"{len(chat_connections)} chat sockets and {len(upload_connections)} uploader sockets open", flush=True)

    begin = time.monotonic()
    hard_stop = begin + args.max_seconds
    data = [os.urandom(args.file_mib * 1024 * 1024) for _ in population.uploaders]
    # Chat runs until the uploads are over (+ tail) or the hard stop, whichever comes first.

    async def chat_all():
        await asyncio.gather(
            *(
                chat_user(c, e[0], e[1], hard_stop, results)
                for c, e in zip(chat_connections, population.chat, strict=True)
            )
        )

    chat_task = asyncio.ensure_future(chat_all())
    await asyncio.sleep(args.warmup)
    upload_begin = time.monotonic()
    cpu_begin = sum(_cpu_seconds(pid) for pid in pids)
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    uploader(c, e[1], d, args, results)
                    for c, e, d in zip(upload_connections, population.uploaders, data, strict=True)
                )
            ),
            timeout=max(1.0, hard_stop - time.monotonic()),
        )
    except TimeoutError:
        results.upload_errors.append("hard stop reached before every upload finished")
    upload_end = time.monotonic()
    results.server_cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_begin  # type: ignore[attr-defined]
    await asyncio.sleep(max(0.0, min(hard_stop, upload_end + args.tail) - time.monotonic()))
    chat_task.cancel()
    await asyncio.gather(chat_task, return_exceptions=True)
    results.window = (begin, upload_begin, upload_end)  # type: ignore[attr-defined]
    return results


def report(args: argparse.Namespace, results: Results) -> None:
    begin, upload_begin, upload_end = results.window  # type: ignore[attr-defined]
    total = sum(size for _, _, size in results.uploads)
    wall = (max(end for _, end, _ in results.uploads) - upload_begin) if results.uploads else float("nan")
    per_upload = [size / (end - start) / 2**20 for start, end, size in results.uploads]
    before = [lat * 1000 for sent, lat in results.latencies if begin + 1 <= sent < upload_begin]
    during = [lat * 1000 for sent, lat in results.latencies if upload_begin <= sent < upload_end]
    print()
    print(f"mode: {'binary frames' if args.binary else 'JSON + base64'}; window {args.window} chunks")
    print(
        f"uploads: {len(results.uploads)} of {args.uploaders} x {args.file_mib} MiB finished; "
        f"errors {results.upload_errors[:3]}"
    )
    print(f"upload wall time {wall:.2f} s; aggregate {total / 2**20 / wall:.1f} MiB/s")
    print(
        f"bytes confirmed by file_progress: {results.acked_bytes / 2**20:.1f} MiB in {upload_end - upload_begin:.1f} s "
        f"({results.acked_bytes / 2**20 / (upload_end - upload_begin):.2f} MiB/s)"
    )
    if per_upload:
        print(
            f"per upload MiB/s: min {min(per_upload):.2f} median {statistics.median(per_upload):.2f} "
            f"max {max(per_upload):.2f}"
        )
    for label, values in (("before uploads", before), ("during uploads", during)):
        print(
            f"chat latency {label}: n={len(values)} p50 {_percentile(values, 0.5):.1f} ms "
            f"p99 {_percentile(values, 0.99):.1f} ms max {max(values, default=float('nan')):.1f} ms"
        )
    print(f"chat frames refused: {results.refused}")
    busy = results.server_cpu / (upload_end - upload_begin)  # type: ignore[attr-defined]
    print(f"server CPU during uploads: {results.server_cpu:.1f} s ({busy:.0%} of one core, all processes)")  # type: ignore[attr-defined]
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/chat_upload_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3", help="empty for the in-memory layer")
    parser.add_argument("--chat-users", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--uploaders", type=int, default=10)
    parser.add_argument("--file-mib", type=int, default=5)
    parser.add_argument("--window", type=int, default=4, help="chunks in flight per upload")
    parser.add_argument("--binary", action="store_true", help="send chunks as binary frames")
    parser.add_argument("--servers", type=int, default=1, help="daphne processes (more than one needs Redis)")
    parser.add_argument(
        "--keep-redis-timeout", action="store_true", help="run with the project's channel layer settings as they are"
    )
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--tail", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()

    media_root = tempfile.mkdtemp(prefix="upload-bench-media-")
    env = _environment(args, media_root)
    population = prepare(args, env)
    servers: list[subprocess.Popen] = []
    addresses = []
    try:
        for n in range(args.servers):
            port = _free_port()
            servers.append(start_server(env, port, os.path.join(media_root, f"daphne-{n}.log")))
            addresses.append(f"127.0.0.1:{port}")
        print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}", flush=True)
        results = asyncio.run(run(args, addresses, population, [server.pid for server in servers]))
    finally:
        for server in servers:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"servers: {args.servers} daphne process(es); database {args.database_url}; redis {args.redis_url or 'none'}")
    report(args, results)
    print(f"(server logs: {media_root})")


if __name__ == "__main__":
    main()
