"""Case 4: the per-client and global connection caps hold exactly, and recover.

``max_connections_per_client = 4`` and ``max_connections = 10``; clients bind
127.0.0.2 .. 127.0.0.5 to be distinct addresses. A connection is *admitted* when a
query on it is answered, *refused* when the server closes it without an answer.
"""

from __future__ import annotations

import time

import pytest

from .clients import CLOSE_ERRORS, Conn, answer_ok, make_query
from .conftest import StartDaemon
from .harness import Daemon

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(90)]

PER_CLIENT, GLOBAL = 4, 10
A, B, C, D = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


class Clients:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.open: dict[str, list[Conn]] = {}
        self.refusals: list[float] = []
        self.qid = 0

    async def try_open(self, source: str) -> bool:
        """True if admitted (kept open), False if the server refused it."""
        self.qid += 1
        start = time.monotonic()
        try:
            conn = await Conn.open(self.daemon, source=source)
        except CLOSE_ERRORS:
            self.refusals.append(time.monotonic() - start)
            return False
        got = await conn.query(make_query("www.example.test", qid=self.qid), 5.0)
        if got is not None and answer_ok(got.to_wire(), self.qid):
            self.open.setdefault(source, []).append(conn)
            return True
        self.refusals.append(time.monotonic() - start)
        await conn.aclose()
        return False

    async def admit_count(self, source: str, attempts: int) -> int:
        return sum([await self.try_open(source) for _ in range(attempts)])

    async def close(self, source: str, n: int | None = None) -> None:
        conns = self.open.get(source, [])
        n = len(conns) if n is None else n
        for conn in conns[:n]:
            await conn.aclose()
        del conns[:n]

    async def close_all(self) -> None:
        for source in list(self.open):
            await self.close(source)


async def wait_open(daemon: Daemon, n: int) -> float:
    m = await daemon.wait_metric(lambda m: m.get("dnstls_connections_open") == n, 5.0)
    assert m is not None, f"dnstls_connections_open never reached {n}"
    return m.get("dnstls_connections_closed_total", reason="connection_limit")


async def test_connection_caps_hold_exactly(daemon_factory: StartDaemon) -> None:
    daemon = await daemon_factory(server={"max_connections_per_client": PER_CLIENT,
                                          "max_connections": GLOBAL})
    c = Clients(daemon)
    try:
        # per-client cap
        assert await c.admit_count(A, PER_CLIENT + 3) == PER_CLIENT
        assert await wait_open(daemon, PER_CLIENT) == 3
        # other addresses are unaffected by A's cap; then the global cap
        assert await c.admit_count(B, PER_CLIENT) == PER_CLIENT
        assert await c.admit_count(C, 3) == GLOBAL - 2 * PER_CLIENT
        assert await c.admit_count(D, 2) == 0
        assert await wait_open(daemon, GLOBAL) == 3 + 1 + 2
        # closing two of A's frees two global slots (and two of A's)
        await c.close(A, 2)
        await wait_open(daemon, GLOBAL - 2)
        assert await c.admit_count(D, 3) == 2
        assert await wait_open(daemon, GLOBAL) == 7
        assert await c.admit_count(A, 1) == 0  # global again, although A has room
        # everything closed: the counters recover completely
        await c.close_all()
        await wait_open(daemon, 0)
        assert await c.admit_count(A, PER_CLIENT + 1) == PER_CLIENT
        assert await c.admit_count(B, PER_CLIENT + 1) == PER_CLIENT
        assert await c.admit_count(C, 3) == GLOBAL - 2 * PER_CLIENT
        refused = await wait_open(daemon, GLOBAL)
    finally:
        await c.close_all()
    fds, _ = await daemon.settle(5.0)
    m = await daemon.scrape()
    print(f"\ncaps: per-client {PER_CLIENT}, global {GLOBAL}; refused {len(c.refusals)} "
          f"(metric connection_limit {refused}), each closed within "
          f"{max(c.refusals):.3f}s of connecting; fds {fds}/{daemon.fd_baseline}")
    assert refused == len(c.refusals) == 3 + 1 + 2 + 1 + 1 + 1 + 1 + 1
    daemon.assert_healthy()
    assert fds <= daemon.fd_baseline
    assert m.get("dnstls_connections_open") == 0
    # each refusal is logged with the address and which limit, within the log budget
    # (10 lines per 5 s: the 11th refusal, the last, is only counted if it came within
    # the first 5 s; docs/serve.md)
    assert daemon.count_log(r"closing connection from 127\.0\.0\.[2-5]: per-client") == 5
    assert daemon.count_log(r"closing connection from 127\.0\.0\.[2-5]: global") in (5, 6)
