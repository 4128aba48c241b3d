"""Case 9: certificate reload and graceful shutdown under load.

Reload: three clients query on one long-lived connection each, three reconnect every
five queries; after a second the certificate file is replaced (a new key) and SIGHUP
sent. Pass: zero failed queries, zero reset connections, the long-lived connections
keep being answered after the reload, and new connections get the new certificate. A
reload from a broken file keeps the running certificate and breaks nothing.

Shutdown: 100 queries on five connections wait on an upstream that answers after
0.7 s; once the upstream has seen all of them, SIGTERM. Pass: all 100 answered
correctly, each connection then closed cleanly (EOF, not reset), exit status 0 within
``shutdown_grace`` + slack, and new connections refused.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import dns.message
import pytest

from fakes.upstream import default_answer

from .clients import CLOSE_ERRORS, Conn, answer_ok, frame, make_query
from .conftest import StartDaemon
from .harness import Daemon

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(120)]

LOAD_SECONDS = 3.0
RELOAD_AT = 1.0


class Load:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = asyncio.Event()
        self.answered = 0
        self.failed: list[str] = []
        self.resets = 0
        self.certs_seen: list[tuple[float, bytes]] = []  # (time connected, leaf DER)
        self.after_reload_on_old = 0  # answers on connections opened before the reload
        self.reload_time = float("inf")
        self.qid = 0

    async def _connect(self) -> Conn:
        conn = await Conn.open(self.daemon)
        der = conn.ssl_object.getpeercert(binary_form=True)
        assert der is not None
        self.certs_seen.append((time.monotonic(), der))
        return conn

    async def _one(self, conn: Conn, opened: float) -> bool:
        self.qid = self.qid % 65535 + 1
        qid = self.qid
        try:
            got = await conn.query(make_query("www.example.test", qid=qid), 5.0)
        except CLOSE_ERRORS:
            got = None
        if got is None:
            self.resets += 1
            return False
        if not answer_ok(got.to_wire(), qid):
            self.failed.append(str(got))
            return False
        self.answered += 1
        if opened < self.reload_time < time.monotonic():
            self.after_reload_on_old += 1
        return True

    async def persistent(self, limit: int = 20000) -> None:
        conn = await self._connect()
        opened = time.monotonic()
        try:
            for _ in range(limit):
                if self.stop.is_set() or not await self._one(conn, opened):
                    break
        finally:
            await conn.aclose()

    async def reconnecting(self, limit: int = 2000) -> None:
        for _ in range(limit):
            if self.stop.is_set():
                return
            conn = await self._connect()
            opened = time.monotonic()
            try:
                for _ in range(5):
                    if not await self._one(conn, opened):
                        return
            finally:
                await conn.aclose()


async def run_load(daemon: Daemon, action: Any) -> Load:
    load = Load(daemon)
    tasks = [asyncio.create_task(load.persistent()) for _ in range(3)]
    tasks += [asyncio.create_task(load.reconnecting()) for _ in range(3)]
    await asyncio.sleep(RELOAD_AT)
    load.reload_time = time.monotonic()
    action()
    await asyncio.sleep(LOAD_SECONDS - RELOAD_AT)
    load.stop.set()
    await asyncio.gather(*tasks)
    return load


async def test_certificate_reload_under_load(daemon_factory: StartDaemon) -> None:
    daemon = await daemon_factory(server={"idle_timeout": 5.0})
    certs = daemon.certs
    first = await Conn.open(daemon)
    old_der = first.ssl_object.getpeercert(binary_form=True)
    await first.aclose()
    new_der = b""

    def reload() -> None:
        nonlocal new_der
        new_der = certs.issue()
        daemon.send_signal(signal.SIGHUP)

    load = await run_load(daemon, reload)
    seen = Counter("new" if der == new_der else "old" if der == old_der else "other"
                   for _, der in load.certs_seen)
    late = [der for t, der in load.certs_seen if t > load.reload_time + 0.5]
    print(f"\nreload: {load.answered} answered, {len(load.failed)} failed, {load.resets} "
          f"resets; {load.after_reload_on_old} answers after the reload on connections "
          f"opened before it; handshakes by certificate {dict(seen)}")
    assert not load.failed and load.resets == 0
    assert load.after_reload_on_old > 0
    assert late and all(der == new_der for der in late)
    assert seen["other"] == 0
    assert daemon.count_log("certificate reloaded") >= 1
    daemon.assert_healthy()

    # a broken file: the running certificate stays, nothing fails
    def break_it() -> None:
        certs.server_pem.write_text("not a certificate\n")
        daemon.send_signal(signal.SIGHUP)

    load = await run_load(daemon, break_it)
    late = [der for t, der in load.certs_seen if t > load.reload_time + 0.5]
    print(f"broken reload: {load.answered} answered, {len(load.failed)} failed, "
          f"{load.resets} resets")
    assert not load.failed and load.resets == 0
    assert late and all(der == new_der for der in late)
    assert daemon.count_log("certificate reload failed") >= 1
    problems = [p for p in daemon.problems() if "certificate reload failed" not in p]
    assert daemon.alive() and not problems, problems


class DelayedUpstream(asyncio.DatagramProtocol):
    """A UDP upstream that answers every query after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        self.received += 1
        wire = default_answer(query).to_wire()
        asyncio.get_running_loop().call_later(self.delay, self._send, wire, addr)

    def _send(self, wire: bytes, addr: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


async def test_sigterm_answers_everything_received(daemon_factory: StartDaemon) -> None:
    loop = asyncio.get_running_loop()
    transport, upstream = await loop.create_datagram_endpoint(
        lambda: DelayedUpstream(0.7), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        grace = 3.0
        daemon = await daemon_factory(upstreams=[f"udp://127.0.0.1:{port}"],
                                      server={"shutdown_grace": grace, "query_timeout": 2.5,
                                              "idle_timeout": 5.0})
        conns = [await Conn.open(daemon) for _ in range(5)]
        names = {}
        for c, conn in enumerate(conns):
            data = b""
            for k in range(20):
                qid = c * 100 + k + 1
                names[qid] = f"n{qid}.delay.example."
                data += frame(make_query(names[qid], qid=qid))
            conn.send(data)
            await conn.drain()
        seen = await daemon.wait_until(lambda: upstream.received >= 100, 5.0)
        assert seen is not None, f"upstream saw {upstream.received} of 100"
        start = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        ok, outcomes = 0, Counter[str]()

        async def collect(conn: Conn) -> None:
            nonlocal ok
            for _ in range(20):
                wire = await conn.recv_frame(grace + 2)
                if wire is None:
                    return
                qid = int.from_bytes(wire[:2], "big")
                if answer_ok(wire, qid, name=names[qid]):
                    ok += 1
            outcomes[await conn.closed_by_server(grace + 2)] += 1

        await asyncio.gather(*(collect(conn) for conn in conns))
        await asyncio.sleep(0.2)
        refused = 0
        try:
            late = await Conn.open(daemon, within=2.0)
            await late.aclose()
        except (*CLOSE_ERRORS, TimeoutError):
            refused = 1
        code = await asyncio.to_thread(daemon.proc.wait, grace + 5)
        took = time.monotonic() - start
        for conn in conns:
            await conn.aclose()
    finally:
        transport.close()
    print(f"\nshutdown: {ok}/100 in-flight queries answered after SIGTERM, connections "
          f"closed {dict(outcomes)}, new connection refused {bool(refused)}, exit {code} "
          f"after {took:.2f}s (grace {grace}s)")
    assert ok == 100
    assert outcomes == Counter({"eof": 5})
    assert refused == 1
    assert code == 0 and took < grace + 2.0
    assert "cut off" not in daemon.log()
    problems = daemon.problems()
    assert not problems, problems
