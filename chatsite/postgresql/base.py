"""Django's PostgreSQL backend, whose connection pool checks a connection without a query.

With ``CONN_HEALTH_CHECKS`` on, Django gives psycopg_pool ``ConnectionPool.check_connection``,
which sends an empty query and waits for the answer: a round trip on every checkout, that is on
every ``database_sync_to_async`` call. Django always passes ``check`` itself (``None`` with the
checks off), so a ``check`` in the pool options is refused as a duplicate argument; this backend
sets it on the pool instead.

The check asks the connection's socket. An idle connection is owed nothing by the server, so a
readable socket means the server spoke first: in practice the FATAL notice and end of file of a
restart, a failover or ``pg_terminate_backend``. Reading that input tells a closed connection
(refused: the pool drops it and takes or makes another) from a harmless notice (kept). What it
cannot see is a host that vanished without closing its sockets: there the first query fails
(``server_error``), and the pool drops the broken connection when it comes back.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg.pq import ConnStatus
from psycopg_pool import ConnectionPool


def check_idle_connection(conn: psycopg.Connection) -> None:
    """Raise if the server has closed ``conn``; costs a ``poll``, no query."""
    if conn.closed or conn.pgconn.status != ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()  # not select(): a busy process's descriptors pass 1024
    poller.register(conn.fileno(), select.POLLIN)
    # One read takes the FATAL message (libpq files it as a notice), the next one finds the end
    # of file and raises OperationalError; a socket with nothing left to read is healthy.
    while poller.poll(0):
        conn.pgconn.consume_input()
    if conn.pgconn.status != ConnStatus.OK:
        raise psycopg.OperationalError("the server closed the connection")


class _PoolCheck:
    """The pool's check: ``check_idle_connection``, and on the first closed connection a sweep of
    the idle others. A restart closes them all, and psycopg_pool backs off (0, 1, 2 … s) between
    failed checks of one checkout: with three dead connections queued first, a request would
    time out while fresh ones waited behind them."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def __call__(self, conn: psycopg.Connection) -> None:
        try:
            check_idle_connection(conn)
        except psycopg.Error:
            # ConnectionPool.check takes every idle connection out, keeps those that answer an
            # empty query (a round trip each, only now) and replaces the others.
            self.pool.check()
            raise


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and not isinstance(pool._check, _PoolCheck):
            # psycopg_pool keeps its check callable here (``ConnectionPool(check=…)``); set
            # before the first getconn, since every checkout comes through this property.
            # tests/test_database_outage.py proves the effect, should a release rename it.
            pool._check = _PoolCheck(pool)
        return pool
