"""Case 3: slowloris -- 200 connections that hold a slot while saying (almost) nothing.

Five kinds, 40 each, from 127.0.0.2: silent TCP (no ClientHello), a ClientHello trickled
a byte per 100 ms, a silent TLS connection, a query trickled a byte per 100 ms, and a
65535-byte length prefix followed by a trickle. Each must be closed by the server within
the deadline that applies (handshake_timeout, idle_timeout, message_timeout) plus slack.
Meanwhile a legitimate client on 127.0.0.1 keeps querying; its latency with and without
the attack is reported (not asserted).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict

import pytest

from .clients import BioTLS, Conn, frame, legit_client, make_query, read_until_closed
from .conftest import StartDaemon
from .harness import SMALL_LIMITS, Daemon

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(120)]

PER_KIND = 40
TRICKLE = 0.1  # seconds between bytes
SLACK = 1.5
HANDSHAKE_TIMEOUT = 3.0
LIMITS = {**SMALL_LIMITS, "handshake_timeout": HANDSHAKE_TIMEOUT}
ATTACKER = "127.0.0.2"
LEGIT = "127.0.0.1"  # the well-behaved client, from another address than the attack
DEADLINE = {"silent_tcp": "handshake_timeout", "trickle_hello": "handshake_timeout",
            "silent_tls": "idle_timeout", "trickle_query": "message_timeout",
            "declare_65535": "message_timeout"}


async def _trickle(write: object, data: bytes, stop: asyncio.Event) -> None:
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            write(data[i : i + 1])  # type: ignore[operator]
        except (ConnectionError, RuntimeError, OSError):
            return
        await asyncio.sleep(TRICKLE)


async def slow_client(d: Daemon, kind: str) -> float:
    """Seconds from the start of the relevant phase until the server closed."""
    stop = asyncio.Event()
    within = LIMITS[DEADLINE[kind]] + SLACK + 5
    if kind in ("silent_tcp", "trickle_hello"):
        tls = BioTLS(d)
        start = time.monotonic()
        await tls.connect(source=ATTACKER)
        assert tls.reader is not None and tls.writer is not None
        trickler = None
        if kind == "trickle_hello":
            trickler = asyncio.create_task(_trickle(tls.write_raw, tls.client_hello(), stop))
        _outcome, _ = await read_until_closed(tls.reader, within)
        took = time.monotonic() - start
        stop.set()
        if trickler is not None:
            await trickler
        await tls.aclose()
        return took
    conn = await Conn.open(d, source=ATTACKER)
    start = time.monotonic()
    trickler = None
    if kind == "trickle_query":
        trickler = asyncio.create_task(_trickle(
            conn.send, frame(make_query("www.example.test", qid=1)), stop))
    elif kind == "declare_65535":
        trickler = asyncio.create_task(_trickle(conn.send, b"\xff\xff" + bytes(200), stop))
    await conn.closed_by_server(within)
    took = time.monotonic() - start
    stop.set()
    if trickler is not None:
        await trickler
    await conn.aclose()
    return took


def pcts(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms (n={len(values)})"


async def test_slowloris(daemon_factory: StartDaemon) -> None:
    # 120 TLS handshakes at once on 2 busy cores can take more than 1 s: a longer
    # handshake timeout keeps the TLS kinds from being cut before they start to stall
    daemon = await daemon_factory(server={"handshake_timeout": HANDSHAKE_TIMEOUT})
    # without the attack: a bounded number of queries
    base: list[float] = []
    errors: list[str] = []
    await legit_client(daemon, asyncio.Event(), base, errors, source=LEGIT, limit=300)
    # with the attack
    stop = asyncio.Event()
    during: list[float] = []
    legit_task = asyncio.create_task(legit_client(daemon, stop, during, errors, source=LEGIT))
    kinds = [k for k in DEADLINE for _ in range(PER_KIND)]
    start = time.monotonic()
    results = await asyncio.gather(*(slow_client(daemon, k) for k in kinds),
                                   return_exceptions=True)
    attack = time.monotonic() - start
    stop.set()
    await legit_task
    fds, settle = await daemon.settle(5.0)
    m = await daemon.scrape()
    took: dict[str, list[float]] = defaultdict(list)
    late: list[tuple[str, float]] = []
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    for kind, r in zip(kinds, results, strict=True):
        if isinstance(r, float):
            took[kind].append(r)
            if r > LIMITS[DEADLINE[kind]] + SLACK:
                late.append((kind, round(r, 2)))
    summary = {k: f"max {max(v):.2f}s" for k, v in took.items()}
    closed = m.by_label("dnstls_connections_closed_total", "reason", transport="tls")
    print(f"\nslowloris: {len(kinds)} connections over {attack:.1f}s; closed after {summary};"
          f" legit without attack {pcts(base)}; during attack {pcts(during)}; closed {closed}"
          f"; handshake failures "
          f"{m.by_label('dnstls_tls_handshake_failures_total', 'reason')}; fds {fds}/"
          f"{daemon.fd_baseline} after {settle:.2f}s")
    assert not failures, failures[:5]
    assert not errors, errors[:5]
    assert not late, late
    assert len(during) > 0
    daemon.assert_healthy()
    assert fds <= daemon.fd_baseline
    assert m.get("dnstls_connections_open") == 0
    assert closed.get("idle_timeout", 0) >= PER_KIND
    assert closed.get("message_timeout", 0) >= 2 * PER_KIND
