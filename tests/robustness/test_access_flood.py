"""Case 11: floods from clients that access control refuses or denies.

``access_control = ["127.0.0.1 allow", "127.0.0.2 refuse", "127.0.0.3 deny"]``. While a
legitimate client on 127.0.0.1 keeps asking over DoT, 127.0.0.3 sends 3,000 UDP queries
and opens 200 TCP connections to the DoT port, and 127.0.0.2 sends 3,000 UDP queries and
pipelines 1,000 queries over 20 DoT connections. Denied datagrams get nothing, denied
connections are closed at accept (no handshake); refused queries get REFUSED with EDE
18, over UDP no larger than the query plus the EDE option (no amplification), on DoT
padded. Nothing is logged for any of it; the metrics count every one; the legitimate
client is answered throughout, and the daemon's fds come back to the baseline.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import dns.edns
import dns.message
import dns.rcode
import pytest

from .clients import CLOSE_ERRORS, Conn, answer_ok, frame, legit_client, make_query
from .conftest import StartDaemon
from .harness import LOOPBACK, Daemon

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(120)]

REFUSED, DENIED = "127.0.0.2", "127.0.0.3"
RULES = [f"{LOOPBACK} allow", f"{REFUSED} refuse", f"{DENIED} deny"]
UDP_QUERIES, BURST = 3000, 50
DENIED_CONNECTIONS = 200
REFUSED_CONNECTIONS, PIPELINED = 20, 50


def udp_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def fence(d: Daemon, qid: int) -> None:
    """An allowed query on the same UDP port, answered: every datagram sent to that
    port before it has been read by the daemon (one socket, read in order)."""
    loop = asyncio.get_running_loop()
    with udp_socket(LOOPBACK) as sock:
        await loop.sock_sendto(sock, make_query("www.example.test", qid=qid), d.plain_addr)
        wire = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
    assert answer_ok(wire, qid)


async def udp_denied(d: Daemon) -> int:
    """Bursts from the denied address, each followed by a fence; the answers it got."""
    loop = asyncio.get_running_loop()
    got = 0
    with udp_socket(DENIED) as sock:
        for burst in range(UDP_QUERIES // BURST):
            for i in range(BURST):
                await loop.sock_sendto(sock, make_query("www.example.test", qid=i),
                                       d.plain_addr)
            await fence(d, 60000 + burst)
            while True:
                try:
                    sock.recv(65535)
                except BlockingIOError:
                    break
                got += 1
    return got


async def udp_refused(d: Daemon) -> list[tuple[int, int, bytes]]:
    """Bursts from the refused address; (query size, qid, answer) of every answer."""
    loop = asyncio.get_running_loop()
    out: list[tuple[int, int, bytes]] = []
    with udp_socket(REFUSED) as sock:
        for burst in range(UDP_QUERIES // BURST):
            sizes = {}
            for i in range(BURST):
                qid = burst * BURST + i
                query = make_query("www.example.test", qid=qid, use_edns=0)
                sizes[qid] = len(query)
                await loop.sock_sendto(sock, query, d.plain_addr)
            for _ in range(BURST):
                wire = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
                qid = struct.unpack_from("!H", wire)[0]
                out.append((sizes[qid], qid, wire))
    return out


async def tls_denied(d: Daemon) -> list[str]:
    """Connections from the denied address: how each ended (a handshake never starts)."""
    outcomes = []
    for _ in range(DENIED_CONNECTIONS):
        try:
            conn = await Conn.open(d, source=DENIED, within=5.0)
        except CLOSE_ERRORS:
            outcomes.append("closed")
        else:
            outcomes.append("admitted")
            await conn.aclose()
    return outcomes


async def tls_refused(d: Daemon) -> list[bytes]:
    answers: list[bytes] = []

    async def one(n: int) -> None:
        conn = await Conn.open(d, source=REFUSED)
        try:
            conn.send(b"".join(frame(make_query("www.example.test", qid=n * 1000 + i,
                                                use_edns=0, pad=128))
                               for i in range(PIPELINED)))
            await conn.drain()
            for _ in range(PIPELINED):
                wire = await conn.recv_frame(5.0)
                assert wire is not None, "a refused connection was closed"
                answers.append(wire)
        finally:
            await conn.aclose()

    await asyncio.gather(*(one(n) for n in range(REFUSED_CONNECTIONS)))
    return answers


def is_refused_with_ede_18(wire: bytes) -> bool:
    message = dns.message.from_wire(wire)
    return (message.rcode() == dns.rcode.REFUSED and not message.answer
            and [o.code for o in message.options if isinstance(o, dns.edns.EDEOption)]
            == [dns.edns.EDECode.PROHIBITED])


async def test_access_control_floods(daemon_factory: StartDaemon) -> None:
    d = await daemon_factory(server={"access_control": RULES}, plain=True)
    stop = asyncio.Event()
    latencies: list[float] = []
    errors: list[str] = []
    legit = asyncio.create_task(legit_client(d, stop, latencies, errors, source=LOOPBACK,
                                             pause=0.01))
    start = time.monotonic()
    try:
        denied_answers, refused_udp, denied_tls, refused_tls = await asyncio.wait_for(
            asyncio.gather(udp_denied(d), udp_refused(d), tls_denied(d), tls_refused(d)),
            90)
    finally:
        stop.set()
        await legit
    took = time.monotonic() - start

    assert denied_answers == 0
    assert len(refused_udp) == UDP_QUERIES
    assert all(is_refused_with_ede_18(wire) for _size, _qid, wire in refused_udp)
    # the query carries an OPT; the answer only adds the EDE option (4 + 2 bytes)
    assert max(len(wire) - size for size, _qid, wire in refused_udp) <= 6
    assert denied_tls == ["closed"] * DENIED_CONNECTIONS
    assert len(refused_tls) == REFUSED_CONNECTIONS * PIPELINED
    assert all(is_refused_with_ede_18(w) and len(w) % 468 == 0 for w in refused_tls)
    assert not errors, errors
    assert latencies, "the legitimate client got no answer"

    fds, settle = await d.settle(10.0)
    assert fds <= d.fd_baseline, f"fds {fds} > baseline {d.fd_baseline}"
    m = await d.scrape()
    assert m.by_label("dnstls_access_control_denied_total", "transport") == {
        "udp": UDP_QUERIES, "tls": DENIED_CONNECTIONS}
    assert m.by_label("dnstls_access_control_refused_total", "transport") == {
        "udp": UDP_QUERIES, "tls": REFUSED_CONNECTIONS * PIPELINED}
    assert m.get("dnstls_connections_closed_total", reason="access_denied") \
        == DENIED_CONNECTIONS
    assert m.get("dnstls_tls_handshake_failures_total") == 0
    assert d.count_log(r"access|127\.0\.0\.[23]") == 0  # nothing logged (INFO and up)
    d.assert_healthy()
    latencies.sort()
    print(f"\ncase 11: {took:.2f} s; legit {len(latencies)} answers, median "
          f"{latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f}"
          f" ms; fds back to {fds} in {settle:.2f} s")
