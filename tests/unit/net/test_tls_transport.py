"""TLSServer / TLSTransport on loopback with a recording protocol: admission before the
handshake, handshake timeout and failure reasons, reads coalesced per readiness, write
back-pressure, close (output first, then close_notify), the client's close_notify."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from dnstls.net.tls_transport import TLSServer, TLSTransport, failure_reason
from fakes import TestPKI

pytestmark = pytest.mark.timeout(30)


class Recorder:
    def __init__(self, admit: bool = True, eof_keep_open: bool = False) -> None:
        self.admit = admit
        self.eof_keep_open = eof_keep_open
        self.peer: tuple[str, int] | None = None
        self.failed: list[str] = []
        self.transport: TLSTransport | None = None
        self.data: list[bytes] = []
        self.events: list[str] = []
        self.made = asyncio.Event()
        self.lost = asyncio.Event()
        self.got = asyncio.Event()

    def accepted(self, peer: tuple[str, int]) -> bool:
        self.peer = peer
        self.events.append("accepted")
        return self.admit

    def handshake_failed(self, reason: str) -> None:
        self.failed.append(reason)
        self.lost.set()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")
        self.made.set()

    def data_received(self, data: bytes) -> None:
        self.data.append(data)
        self.got.set()

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return self.eof_keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set()

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")


class Harness:
    def __init__(self, pki: TestPKI, **kw: Any) -> None:
        self.pki = pki
        self.kw = kw
        self.protocols: list[Recorder] = []
        self.server: TLSServer | None = None

    async def start(self, handshake_timeout: float = 5.0) -> tuple[str, int]:
        def factory() -> Recorder:
            p = Recorder(**self.kw)
            self.protocols.append(p)
            return p

        ctx = self.pki.server_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server = await TLSServer.create(asyncio.get_running_loop(), ctx, factory,
                                             "127.0.0.1", 0,
                                             handshake_timeout=handshake_timeout)
        addr = self.server.sockets[0].getsockname()
        return addr[0], addr[1]

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        return ctx

    async def connect(self, addr: tuple[str, int]
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*addr, ssl=self.client_context(),
                                             server_hostname="dns.test")


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI.create(tmp_path)


async def test_data_both_ways_and_close_notify_from_client(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start()
    reader, writer = await h.connect(addr)
    p = h.protocols[0]
    await asyncio.wait_for(p.made.wait(), 5)
    assert p.events[:2] == ["accepted", "made"]
    assert p.transport is not None
    assert p.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    assert p.transport.get_extra_info("peername") == p.peer
    writer.write(b"hello")
    await asyncio.wait_for(p.got.wait(), 5)
    assert b"".join(p.data) == b"hello"
    p.transport.write(b"world")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"world"
    writer.close()  # close_notify, then FIN
    await asyncio.wait_for(p.lost.wait(), 5)
    assert p.events[-2:] == ["eof", "lost"]
    assert h.server is not None and h.server.connections == 0
    h.server.close()


async def test_records_arriving_together_are_one_data_received(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start()
    raw = socket.create_connection(addr)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = h.client_context()
    tls = await asyncio.to_thread(ctx.wrap_socket, raw, server_hostname="dns.test")
    p = h.protocols[0]
    await asyncio.wait_for(p.made.wait(), 5)
    assert p.transport is not None
    p.transport.pause_reading()
    for i in range(20):  # 20 records
        tls.send(bytes([65 + i]) * 10)
    await asyncio.sleep(0.2)
    assert p.data == []  # paused
    p.transport.resume_reading()
    await asyncio.wait_for(p.got.wait(), 5)
    await asyncio.sleep(0.1)
    assert b"".join(p.data) == b"".join(bytes([65 + i]) * 10 for i in range(20))
    assert len(p.data) == 1
    tls.close()
    await asyncio.wait_for(p.lost.wait(), 5)
    assert h.server is not None
    h.server.close()


async def test_write_back_pressure_then_close_sends_everything(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start()
    raw = socket.create_connection(addr)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tls = await asyncio.to_thread(h.client_context().wrap_socket, raw,
                                  server_hostname="dns.test")
    p = h.protocols[0]
    await asyncio.wait_for(p.made.wait(), 5)
    t = p.transport
    assert t is not None
    t.set_write_buffer_limits(high=32 << 10)
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    chunk = bytes(range(256)) * 64  # 16 KB
    for _ in range(400):  # 6.4 MB, far more than the socket buffers hold
        t.write(chunk)
        if "pause_writing" in p.events:
            break
    assert "pause_writing" in p.events
    assert t.get_write_buffer_size() > 32 << 10
    total = t.get_write_buffer_size()
    t.close()  # what is buffered still goes out, then close_notify
    assert t.is_closing()

    def read_all() -> bytes:
        out = bytearray()
        while True:
            try:
                data = tls.recv(1 << 16)
            except ssl.SSLZeroReturnError:
                break
            if not data:
                break
            out += data
        return bytes(out)

    got = await asyncio.wait_for(asyncio.to_thread(read_all), 10)
    assert len(got) >= total and len(got) % len(chunk) == 0
    assert got[:len(chunk)] == chunk
    await asyncio.wait_for(p.lost.wait(), 5)
    tls.close()
    assert h.server is not None
    h.server.close()


async def test_refused_at_accept_gets_no_handshake(pki: TestPKI) -> None:
    h = Harness(pki, admit=False)
    addr = await h.start()
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await asyncio.wait_for(h.connect(addr), 5)
    p = h.protocols[0]
    assert p.events == ["accepted"]
    assert p.failed == []
    assert h.server is not None
    h.server.close()


async def test_handshake_timeout_and_garbage(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start(handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection(*addr)  # TCP, never speaks TLS
    assert await asyncio.wait_for(reader.read(100), 3) == b""
    writer.close()
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(b"\x00\x10plain DNS, not a ClientHello")
    got = await asyncio.wait_for(reader.read(100), 3)
    assert got[:1] in (b"", b"\x15")  # at most OpenSSL's alert record, then closed
    assert await asyncio.wait_for(reader.read(100), 3) == b""  # closed, not reset
    writer.close()
    await asyncio.sleep(0.05)
    assert [p.failed for p in h.protocols] == [["timeout"], ["wrong_version_number"]]
    assert all("made" not in p.events for p in h.protocols)
    assert h.server is not None
    h.server.close()


async def test_close_drops_connections_in_their_handshake(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start()
    reader, writer = await asyncio.open_connection(*addr)
    for _ in range(50):
        if h.protocols:
            break
        await asyncio.sleep(0.01)
    assert h.server is not None
    h.server.close()
    assert h.protocols[0].failed == ["aborted"]
    assert await asyncio.wait_for(reader.read(100), 3) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(*addr)


async def test_tls_1_1_refused(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start()
    ctx = h.client_context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(asyncio.open_connection(*addr, ssl=ctx,
                                                       server_hostname="dns.test"), 5)
    await asyncio.sleep(0.05)
    assert len(h.protocols[0].failed) == 1
    assert h.server is not None
    h.server.close()


def test_failure_reason_labels() -> None:
    assert failure_reason(TimeoutError()) == "timeout"
    assert failure_reason(ConnectionResetError(104, "reset")) == "reset"
    assert failure_reason(ssl.SSLEOFError()) == "eof"
    err = ssl.SSLError(1, "x")
    err.reason = "NO_SHARED_CIPHER"
    assert failure_reason(err) == "no_shared_cipher"


async def test_resume_writing_when_the_client_reads_again(pki: TestPKI) -> None:
    h = Harness(pki)
    addr = await h.start()
    reader, writer = await h.connect(addr)
    writer.transport.pause_reading()  # the client stops reading
    p = h.protocols[0]
    await asyncio.wait_for(p.made.wait(), 5)
    t = p.transport
    assert t is not None
    t.set_write_buffer_limits(high=32 << 10)
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    chunk = b"x" * 16384
    written = 0
    while "pause_writing" not in p.events and written < 64 << 20:
        t.write(chunk)
        written += len(chunk)
        await asyncio.sleep(0)
    assert "pause_writing" in p.events
    writer.transport.resume_reading()
    got = 0
    while got < written:
        got += len(await asyncio.wait_for(reader.read(1 << 16), 5))
    assert got == written
    assert p.events[-2:] == ["pause_writing", "resume_writing"]
    assert t.get_write_buffer_size() == 0
    writer.close()
    await asyncio.wait_for(p.lost.wait(), 5)
    assert h.server is not None
    h.server.close()
