"""Case 1: a storm of malformed frames over 50 concurrent TLS connections.

Each connection runs sessions: three pipelined batches of 10 (valid query, continuing
malformed frame) pairs in one write each, then a valid query answered, then one terminal
frame, after which the server must close the connection within its deadline and the
client reconnects. Every valid query must be answered correctly, every continuing frame
must get exactly the response the server promises (by ID), and nothing else may arrive.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import dns.message
import pytest

from fakes import FakeUpstream

from .clients import Conn, answer_ok, frame, make_query
from .conftest import StartDaemon
from .harness import SMALL_LIMITS
from .malformed import IMMEDIATE_CLOSE, continuing, terminal

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(180)]

CONNECTIONS = 50
MALFORMED_BUDGET = 3000  # frames in all (continuing + terminal)
BATCHES, PAIRS = 3, 10
# after a terminal frame the server closes at once, or when a started message times out,
# or (if the bytes happened to form whole messages) when the connection is idle
CLOSE_DEADLINE = SMALL_LIMITS["message_timeout"] + SMALL_LIMITS["idle_timeout"] + 1.5


@dataclass
class Tally:
    budget: int = MALFORMED_BUDGET
    sessions: int = 0
    valid_sent: int = 0
    valid_ok: int = 0
    malformed_sent: Counter[str] = field(default_factory=Counter)
    promised_replies: int = 0
    promised_ok: int = 0
    wrong: list[str] = field(default_factory=list)
    unexpected_close: int = 0
    terminal_closed: Counter[str] = field(default_factory=Counter)
    terminal_late: list[tuple[str, float]] = field(default_factory=list)
    immediate_slow: list[tuple[str, float]] = field(default_factory=list)

    def take(self, n: int) -> bool:
        if self.budget < n:
            return False
        self.budget -= n
        return True


async def _batch(conn: Conn, rng: random.Random, tally: Tally, next_id: list[int]) -> bool:
    data = bytearray()
    expected: dict[int, tuple[str, int | None]] = {}  # id -> (kind, rcode or None)
    valid: set[int] = set()
    for _ in range(PAIRS):
        vid, mid = next_id[0], next_id[0] + 1
        next_id[0] += 2
        data += frame(make_query("www.example.test", qid=vid))
        valid.add(vid)
        bad = continuing(rng, mid)
        data += bad.data
        tally.malformed_sent[bad.kind] += 1
        if bad.reply:
            expected[mid] = (bad.kind, bad.rcode)
    tally.valid_sent += len(valid)
    tally.promised_replies += len(expected)
    conn.send(bytes(data))
    await conn.drain()
    while valid or expected:
        wire = await conn.recv_frame(10.0)
        if wire is None:
            tally.unexpected_close += 1
            tally.wrong.append(f"closed with {len(valid)} valid and {len(expected)} "
                               f"promised replies outstanding")
            return False
        qid = int.from_bytes(wire[:2], "big")
        if qid in valid:
            valid.discard(qid)
            if answer_ok(wire, qid):
                tally.valid_ok += 1
            else:
                tally.wrong.append(f"wrong answer to a valid query: {wire!r}")
        elif qid in expected:
            kind, rcode = expected.pop(qid)
            got = dns.message.from_wire(wire).rcode() if rcode is not None else None
            if rcode is None or got == rcode:
                tally.promised_ok += 1
            else:
                tally.wrong.append(f"{kind}: rcode {got}, promised {rcode}")
        else:
            tally.wrong.append(f"response nobody asked for (ID {qid})")
    return True


async def _worker(daemon: object, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    while tally.take(BATCHES * PAIRS + 1):
        conn = await Conn.open(daemon)  # type: ignore[arg-type]
        tally.sessions += 1
        next_id = [1]
        try:
            for _ in range(BATCHES):
                if not await _batch(conn, rng, tally, next_id):
                    break
            else:
                vid = next_id[0]
                query = make_query("www.example.test", qid=vid)
                tally.valid_sent += 1
                got = await conn.query(query, within=10.0)
                if got is not None and answer_ok(got.to_wire(), vid):
                    tally.valid_ok += 1
                else:
                    tally.wrong.append(f"valid query before a terminal frame: {got}")
                bad = terminal(rng, vid + 1, query)
                tally.malformed_sent[bad.kind] += 1
                conn.send(bad.data)
                start = time.monotonic()
                outcome = await conn.closed_by_server(CLOSE_DEADLINE + 5)
                took = time.monotonic() - start
                tally.terminal_closed[outcome] += 1
                if outcome == "timeout" or took > CLOSE_DEADLINE:
                    tally.terminal_late.append((bad.kind, round(took, 2)))
                if bad.kind in IMMEDIATE_CLOSE and took > 1.0:
                    tally.immediate_slow.append((bad.kind, round(took, 2)))
        finally:
            await conn.aclose()


async def test_malformed_frame_storm(daemon_factory: StartDaemon) -> None:
    async with FakeUpstream("udp") as upstream:  # random frames that parse get forwarded
        daemon = await daemon_factory(upstreams=[upstream.uri()])
        before = await daemon.scrape()
        tally = Tally()
        start = time.monotonic()
        await asyncio.gather(*(_worker(daemon, seed, tally) for seed in range(CONNECTIONS)))
        elapsed = time.monotonic() - start
        fds, settle = await daemon.settle(SMALL_LIMITS["idle_timeout"] + 5)
        after = await daemon.scrape()
    sent = sum(tally.malformed_sent.values())
    closed = after.by_label("dnstls_connections_closed_total", "reason", transport="tls")
    print(f"\nstorm: {tally.sessions} sessions, {sent} malformed + {tally.valid_sent} valid "
          f"frames in {elapsed:.1f}s; valid answered {tally.valid_ok}/{tally.valid_sent}; "
          f"promised replies {tally.promised_ok}/{tally.promised_replies}; terminal closes "
          f"{dict(tally.terminal_closed)}; fds {fds}/{daemon.fd_baseline} after {settle:.1f}s; "
          f"closed by reason {closed}; RSS {daemon.rss_baseline >> 20}->{daemon.rss() >> 20}"
          f" MiB; kinds {dict(tally.malformed_sent)}")
    assert sent >= MALFORMED_BUDGET - BATCHES * PAIRS
    assert not tally.wrong, tally.wrong[:10]
    assert tally.valid_ok == tally.valid_sent
    assert tally.promised_ok == tally.promised_replies
    assert tally.unexpected_close == 0
    assert not tally.terminal_late, tally.terminal_late
    assert not tally.immediate_slow, tally.immediate_slow
    assert sum(tally.terminal_closed.values()) == tally.sessions
    daemon.assert_healthy()
    assert fds <= daemon.fd_baseline
    assert after.get("dnstls_connections_open") == 0
    assert after.get("dnstls_queries_in_flight") == 0
    zero = tally.malformed_sent["zero_length"]
    assert closed.get("framing_error", 0) - before.get("dnstls_connections_closed_total",
                                                       reason="framing_error") >= zero
    short = sum(tally.malformed_sent[k] for k in ("length_1", "length_11", "truncated_header"))
    assert closed.get("bad_message", 0) >= short


async def test_valid_query_pipelined_before_a_closing_frame(daemon_factory: StartDaemon,
                                                            ) -> None:
    """A valid query in the same write as a frame that closes the connection: the
    query is answered first, then the connection closes (nothing received is lost)."""
    daemon = await daemon_factory()
    outcomes: Counter[str] = Counter()
    for closing in (b"\x00\x00", frame(b"\x01"), frame(bytes(11))):
        for _ in range(5):
            conn = await Conn.open(daemon)
            conn.send(frame(make_query("www.example.test", qid=7)) + closing)
            got = await conn.recv_frame(3.0)
            outcomes["answered" if got is not None and answer_ok(got, 7) else "lost"] += 1
            assert await conn.closed_by_server(3.0) != "timeout"
            await conn.aclose()
    print(f"\nvalid query followed by a closing frame in one write: {dict(outcomes)}")
    assert outcomes == {"answered": 15}
    daemon.assert_healthy()
