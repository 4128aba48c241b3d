"""Case 2: clients that vanish at every stage of a connection.

Each stage is repeated ``REPEAT`` times (half with FIN, half with RST where both make
sense), all stages concurrently. Afterwards the daemon must be alive and clean, its file
descriptors and ``dnstls_connections_open`` back to the baseline within the longest
timeout involved (handshake/idle/message/query: 1 s) plus slack, nothing left in
flight, and a new client must be answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import pytest

from fakes import Behavior, FakeUpstream

from .clients import BioTLS, Conn, answer_ok, frame, make_query, open_tcp, rst_socket
from .conftest import StartDaemon
from .harness import SMALL_LIMITS, Daemon

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(120)]

REPEAT = 20
SETTLE = max(SMALL_LIMITS[k] for k in ("handshake_timeout", "idle_timeout",
                                        "message_timeout", "query_timeout")) + 3.0


async def tcp_only(d: Daemon, i: int) -> None:
    _reader, writer = await open_tcp(d)
    if i % 2:
        rst_socket(writer.get_extra_info("socket"))
        writer.transport.abort()
    else:
        writer.close()
        await writer.wait_closed()


async def mid_client_hello(d: Daemon, i: int) -> None:
    tls = await BioTLS(d).connect()
    hello = tls.client_hello()
    tls.write_raw(hello[: max(1, len(hello) * (i % 5 + 1) // 6)])
    await asyncio.sleep(0.05)
    if i % 2:
        tls.rst()
    else:
        await tls.aclose()


async def after_client_hello(d: Daemon, i: int) -> None:
    """Full ClientHello, the server's flight read, then gone before Finished."""
    tls = await BioTLS(d).connect()
    tls.write_raw(tls.client_hello())
    assert tls.reader is not None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tls.reader.read(65536), 2)
    if i % 2:
        tls.rst()
    else:
        await tls.aclose()


async def after_handshake(d: Daemon, i: int) -> None:
    tls = await BioTLS(d).connect()
    await tls.handshake()
    if i % 2:
        tls.rst()
    else:
        await tls.aclose()  # no close_notify


async def mid_record(d: Daemon, i: int) -> None:
    tls = await BioTLS(d).connect()
    await tls.handshake()
    record = tls.encrypt(frame(make_query("www.example.test", qid=i)))
    tls.write_raw(record[: len(record) // 2])
    await asyncio.sleep(0.05)
    if i % 2:
        tls.rst()
    else:
        await tls.aclose()


async def mid_message(d: Daemon, i: int) -> None:
    conn = await Conn.open(d)
    wire = frame(make_query("www.example.test", qid=i))
    conn.send(wire[: 1 + i % (len(wire) - 1)])
    await conn.drain()
    await asyncio.sleep(0.05)
    if i % 2:
        conn.rst()
    else:
        await conn.aclose()


async def query_before_answer(d: Daemon, i: int) -> None:
    """Queries that wait on a stalled upstream; the client leaves before the answer."""
    conn = await Conn.open(d)
    conn.send(b"".join(frame(make_query(f"q{i}-{k}.stall.example", qid=k)) for k in range(5)))
    await conn.drain()
    await asyncio.sleep(0.2)
    if i % 2:
        conn.rst()
    else:
        await conn.aclose()


async def rst_during_response(d: Daemon, i: int) -> None:
    """200 queries for a 2 KB answer, a little read, then RST while the server writes."""
    conn = await Conn.open(d, rcvbuf=4096)
    conn.send(b"".join(frame(make_query("big.example.test", "TXT", qid=k)) for k in range(200)))
    await conn.drain()
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(conn.reader.read(1000), 2)
    conn.rst()


STAGES = [tcp_only, mid_client_hello, after_client_hello, after_handshake, mid_record,
          mid_message, query_before_answer, rst_during_response]


async def test_abort_at_every_stage(daemon_factory: StartDaemon) -> None:
    async with FakeUpstream("udp", behavior=Behavior.STALL) as upstream:
        upstream.script.append(Behavior.NORMAL)
        daemon = await daemon_factory(upstreams=[upstream.uri()])
        warm = await Conn.open(daemon)  # the upstream socket exists before the baseline
        assert (await warm.query(make_query("warm.example", qid=1))) is not None
        await warm.aclose()
        await daemon.settle(SETTLE)
        daemon.fd_baseline = await daemon.quiet_fds()
        failures: Counter[str] = Counter()

        async def run(stage: object, i: int) -> None:
            try:
                await stage(daemon, i)  # type: ignore[operator]
            except Exception as exc:  # a client-side failure is reported, not fatal
                failures[f"{stage.__name__}: {type(exc).__name__}"] += 1  # type: ignore[attr-defined]

        start = time.monotonic()
        await asyncio.gather(*(run(stage, i) for stage in STAGES for i in range(REPEAT)))
        clients_done = time.monotonic() - start
        peak_fds = daemon.fds()
        fds, settle = await daemon.settle(SETTLE)
        m = await daemon.scrape()
        stalled = sum(1 for r in upstream.received if "stall" in r.message.question[0]
                      .name.to_text())
        conn = await Conn.open(daemon)
        got = await conn.query(make_query("www.example.test", qid=99))
        await conn.aclose()
    closed = m.by_label("dnstls_connections_closed_total", "reason", transport="tls")
    print(f"\nabort: {len(STAGES)} stages x {REPEAT} in {clients_done:.1f}s; fds peak {peak_fds}"
          f", back to {fds}/{daemon.fd_baseline} after {settle:.2f}s; closed {closed}; "
          f"handshake failures {m.by_label('dnstls_tls_handshake_failures_total', 'reason')};"
          f" upstream saw {stalled} stalled queries; in flight "
          f"{m.get('dnstls_queries_in_flight')}; client-side errors {dict(failures)}")
    assert not failures, failures
    assert got is not None and answer_ok(got.to_wire(), 99)
    daemon.assert_healthy()
    assert fds <= daemon.fd_baseline
    assert m.get("dnstls_connections_open") == 0
    assert m.get("dnstls_queries_in_flight") == 0
    assert closed.get("query_limit", 0) == 0  # no limit configured (was mislabelled)
    assert stalled > 0  # the query-before-answer stage did reach the upstream
