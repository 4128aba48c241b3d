"""Case 5: a client that asks for large answers and never reads them.

The zone has a ~2.1 KB TXT answer (``big.example.test``). The reader-that-never-reads
uses a 4 KB receive buffer and sends up to ``FLOOD`` queries (bounded in time too).
With ``max_pending_output = 65536`` and ``write_timeout = 1``, the server must close it
(output_limit or write_timeout) instead of buffering answers without bound. Measured:
how many answers the server produced for it before closing (from dnstls_queries_total),
the daemon's RSS, and a legitimate client's answers and latency meanwhile.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from .clients import CLOSE_ERRORS, Conn, frame, legit_client, make_query
from .conftest import StartDaemon
from .harness import SMALL_LIMITS, Daemon, Metrics

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(120)]

FLOOD = 20000  # queries at most (42 MB of answers if nothing bounded them)
FLOOD_SECONDS = 10.0
CHUNK = 200
SLACK = 2.0


def limit_closes(m: Metrics) -> float:
    closed = m.by_label("dnstls_connections_closed_total", "reason", transport="tls")
    return closed.get("output_limit", 0) + closed.get("write_timeout", 0)


async def flood(d: Daemon, count: int) -> tuple[int, float | None]:
    """Send up to ``count`` big queries and never read; (sent, seconds until closed).

    The server's close is observed through its metrics (a client that does not read
    cannot see it otherwise); None if it did not come within the write timeout + slack
    after the last query was sent.
    """
    closes = limit_closes(await d.scrape())
    conn = await Conn.open(d, rcvbuf=4096)
    query = frame(make_query("big.example.test", "TXT", qid=1))
    sent = 0
    start = time.monotonic()
    try:
        while sent < count and time.monotonic() - start < FLOOD_SECONDS:
            conn.send(query * CHUNK)
            sent += CHUNK
            await asyncio.wait_for(conn.drain(), FLOOD_SECONDS)
            await asyncio.sleep(0.001)
    except (*CLOSE_ERRORS, TimeoutError):
        pass
    m = await d.wait_metric(lambda m: limit_closes(m) > closes,
                            SMALL_LIMITS["write_timeout"] + SLACK)
    took = time.monotonic() - start
    conn.rst()
    return sent, took if m is not None else None


async def test_reader_that_never_reads(daemon_factory: StartDaemon) -> None:
    daemon = await daemon_factory()
    before = await daemon.scrape()
    rss_peak = daemon.rss()
    stop = asyncio.Event()
    latencies: list[float] = []
    errors: list[str] = []
    legit_task = asyncio.create_task(legit_client(daemon, stop, latencies, errors,
                                                  source="127.0.0.3", pause=0.005))

    async def watch_rss() -> None:
        nonlocal rss_peak
        while not stop.is_set():
            rss_peak = max(rss_peak, daemon.rss())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_rss())
    results = [await flood(daemon, FLOOD) for _ in range(3)]
    stop.set()
    await legit_task
    await watcher
    fds, _ = await daemon.settle(5.0)
    after = await daemon.scrape()
    answered_big = (after.get("dnstls_queries_total", transport="tls", rcode="NOERROR")
                    - before.get("dnstls_queries_total", transport="tls", rcode="NOERROR")
                    - len(latencies))
    closed = after.by_label("dnstls_connections_closed_total", "reason", transport="tls")
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(f"\nslow reader: 3 floods sent {[r[0] for r in results]} queries, refused after "
          f"{[r[1] and round(r[1], 2) for r in results]}s; server answered {answered_big:.0f} big "
          f"queries in all ({answered_big * 2.1 / 3:.0f} KB per connection); closed {closed};"
          f" RSS {daemon.rss_baseline >> 20} -> peak {rss_peak >> 20} MiB; legit "
          f"{len(latencies)} answered, p50 {q[49] * 1000:.2f} ms p99 {q[98] * 1000:.2f} ms; "
          f"fds {fds}/{daemon.fd_baseline}")
    assert all(took is not None for _, took in results), "not closed by a limit"
    assert limit_closes(after) == 3
    assert not errors, errors
    # what the server took on is bounded by the limit plus kernel buffers, far below the
    # flood: 3 x 20000 x 2.1 KB = 126 MB
    assert answered_big * 2100 < 3 * 8 * 1024 * 1024
    daemon.assert_healthy()
    assert fds <= daemon.fd_baseline
    assert after.get("dnstls_connections_open") == 0
