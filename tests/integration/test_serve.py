"""``dnstls serve`` end to end on loopback: streams, limits, bad input, reload, shutdown."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import struct
import urllib.request
import warnings
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest
from conftest import DotClient, Served, ServeFactory
from cryptography import x509

from dnstls.proto import edns
from fakes.records import RecordStream

pytestmark = pytest.mark.timeout(60)


def q(name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


async def _records(served: Served, queries: list[bytes], want: int,
                   tls_version: ssl.TLSVersion) -> list[bytes]:
    """Send ``queries`` in one write over a TLS client that sees record boundaries
    (memory BIOs fed one record at a time); the plaintext of each application-data
    record until ``want`` framed answers have arrived (records without data -- TLS 1.3
    session tickets -- are left out)."""
    loop = asyncio.get_running_loop()
    ctx = served.client_context()
    ctx.maximum_version = tls_version
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, served.tls_addr)
    stream = RecordStream(sock, ctx, server_side=False, server_hostname="dns.test")
    tls = stream.tls

    async def next_record() -> None:
        assert await stream.next_record(), "server closed the connection"

    try:
        assert await stream.handshake(), "server closed the connection"
        tls.write(b"".join(struct.pack("!H", len(w)) + w for w in queries))
        await stream.send_pending()
        records: list[bytes] = []
        answers = 0
        while answers < want:
            await next_record()
            try:
                plain = tls.read(65536)
            except ssl.SSLWantReadError:
                continue  # a record without application data (a session ticket)
            records.append(plain)
            pos = 0
            while pos < len(plain):
                pos += 2 + struct.unpack_from("!H", plain, pos)[0]
                answers += 1
        return records
    finally:
        sock.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["TLSv1.3", "TLSv1.2"])
async def test_one_answer_per_tls_record(serve: ServeFactory, version: ssl.TLSVersion) -> None:
    """Pipelined queries read together are answered together (one send), but every
    answer is its own TLS record: Stubby (getdns) reads one DNS message per record and
    loses the rest of a record (interop test_stubby_bursts_get_every_answer)."""
    s: Served = await serve()
    names = ["www.example.test", "nope.example.test", "example.test", "www.example.test"]
    queries = [q(names[i % 4], id=i + 1).to_wire() for i in range(16)]
    await _records(s, queries, 16, version)  # local answers are built on first sight
    records = await _records(s, queries, 16, version)  # ... then come from the fast path
    assert len(records) == 16
    for plain in records:
        assert struct.unpack_from("!H", plain)[0] == len(plain) - 2  # exactly one message
    ids = sorted(dns.message.from_wire(plain[2:]).id for plain in records)
    assert ids == list(range(1, 17))


async def test_answer_over_tls_with_padding_and_keepalive(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    query = q("www.example.test", use_edns=0, pad=128, options=[edns.keepalive_option(None)])
    await client.send(query)
    wire = await client.recv_wire()
    response = dns.message.from_wire(wire)
    assert response.id == query.id and response.rcode() == dns.rcode.NOERROR
    assert response.answer[0][0].to_text() == "192.0.2.1"
    assert len(wire) % 468 == 0
    ka = edns.find_option(response, edns.KEEPALIVE)
    assert ka is not None and edns.keepalive_timeout(ka) == s.service.config.server.idle_timeout
    ssl_obj = client.writer.get_extra_info("ssl_object")
    assert ssl_obj.selected_alpn_protocol() == "dot"
    assert ssl_obj.version() in ("TLSv1.3", "TLSv1.2")
    await client.aclose()


async def test_pipelining_200_queries_on_one_connection(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    queries = [q("www.example.test") for _ in range(200)]
    await client.send(*queries)
    got = {(await client.recv()).id for _ in queries}
    assert got == {m.id for m in queries}
    assert s.service.listeners[0].stats.accepted == 1
    await client.aclose()


async def test_answers_out_of_order(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    slow, fast = q("a.slow.example"), q("www.example.test")
    await client.send(slow, fast)
    first = await client.recv()
    assert first.id == fast.id  # the later query was answered first
    await s.gate.wait_arrived(1)
    s.gate.release("a.slow.example.")
    assert (await client.recv()).id == slow.id
    await client.aclose()


async def test_in_flight_bound_pauses_reading(serve: ServeFactory) -> None:
    s: Served = await serve(server={"max_in_flight": 3})
    client = await s.connect()
    names = [f"n{i}.slow.example." for i in range(8)]
    await client.send(*[q(n) for n in names])
    await s.gate.wait_arrived(3)
    await asyncio.sleep(0.1)  # give the server the chance to (wrongly) read more
    assert len(s.gate.waiting) == 3
    for n in names:
        s.gate.release(n)
    ids = {(await client.recv()).id for _ in names}
    assert len(ids) == 8 and s.gate.max_concurrent == 3
    await client.aclose()


async def test_plain_udp_and_tcp(serve: ServeFactory) -> None:
    s: Served = await serve()
    host, port = s.plain_addr
    query = q("www.example.test", use_edns=0, pad=128)
    udp = await asyncio.to_thread(dns.query.udp, query, host, port=port, timeout=3)
    tcp = await asyncio.to_thread(dns.query.tcp, query, host, port=port, timeout=3)
    for response in (udp, tcp):
        assert response.answer[0][0].to_text() == "192.0.2.1"
        assert not edns.has_option(response, edns.PADDING)  # never padded in cleartext


def _free_port_for_both_families() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            for family, kind in ((socket.AF_INET6, socket.SOCK_DGRAM),
                                 (socket.AF_INET6, socket.SOCK_STREAM),
                                 (socket.AF_INET, socket.SOCK_STREAM)):
                with socket.socket(family, kind) as sock:
                    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free for both families")


async def test_ipv6_wildcard_and_ipv4_on_one_port(serve: ServeFactory) -> None:
    """``[::]:P`` and ``127.0.0.1:P`` together, as Unbound's ``interface: ::0`` and
    ``0.0.0.0``: each family answered by its own listener over UDP and TCP. (A
    dual-stack ``[::]`` UDP socket took the IPv4 port: "address already in use".)"""
    port = _free_port_for_both_families()
    s: Served = await serve(server={"plain": [f"[::]:{port}", f"127.0.0.1:{port}"]})
    query = q("www.example.test")
    for host in ("::1", "127.0.0.1"):
        udp = await asyncio.to_thread(dns.query.udp, query, host, port=port, timeout=3)
        tcp = await asyncio.to_thread(dns.query.tcp, query, host, port=port, timeout=3)
        for response in (udp, tcp):
            assert response.answer[0][0].to_text() == "192.0.2.1"
    udp_v6 = s.service.udp[0].transport
    assert udp_v6 is not None
    sock = udp_v6.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


async def test_udp_truncates_and_tcp_does_not(serve: ServeFactory) -> None:
    s: Served = await serve()
    host, port = s.plain_addr
    udp = await asyncio.to_thread(dns.query.udp, q("big.example.test", "TXT"), host,
                                  port=port, timeout=3)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = await asyncio.to_thread(dns.query.tcp, q("big.example.test", "TXT"), host,
                                  port=port, timeout=3)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 10


async def test_refused_outside_local_data_without_upstream(serve: ServeFactory) -> None:
    from dnstls.resolver.base import Refuse

    s: Served = await serve(stage=Refuse())
    client = await s.connect()
    await client.send(q("example.com", use_edns=0))
    response = await client.recv()
    assert response.rcode() == dns.rcode.REFUSED
    ede = edns.find_option(response, edns.EDE)
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == 20
    await client.aclose()


# -- bad input ------------------------------------------------------------------------

def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, 0, 0, 0)


async def _still_serves(s: Served) -> None:
    client = await s.connect()
    await client.send(q("www.example.test"))
    assert (await client.recv()).rcode() == dns.rcode.NOERROR
    await client.aclose()


@pytest.mark.parametrize(("payload", "expect"), [
    (header() + b"\xff\xff\xff", dns.rcode.FORMERR),
    (header() + b"\x03www", dns.rcode.FORMERR),  # question cut short
])
async def test_malformed_with_header_gets_formerr(serve: ServeFactory, payload: bytes,
                                                  expect: int) -> None:
    s: Served = await serve()
    client = await s.connect()
    await client.send(payload, q("www.example.test"))
    first = await client.recv()
    assert first.id == 0x1234 and first.rcode() == expect
    assert (await client.recv()).rcode() == dns.rcode.NOERROR  # connection still usable
    await client.aclose()


async def test_rcodes_for_unsupported_queries(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    notify = q("www.example.test")
    notify.set_opcode(dns.opcode.NOTIFY)
    two = q("www.example.test")
    two.question = two.question * 2
    cases = [(notify, dns.rcode.NOTIMP), (two, dns.rcode.FORMERR),
             (q("example.test", "AXFR"), dns.rcode.REFUSED),
             (q("example.test", "IXFR"), dns.rcode.REFUSED),
             (q("www.example.test", use_edns=1), dns.rcode.BADVERS)]
    for message, rcode in cases:
        await client.send(message)
        response = await client.recv()
        assert response.id == message.id and response.rcode() == rcode, message
    await client.aclose()


async def test_response_message_is_dropped_and_connection_kept(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    bogus = bytearray(q("www.example.test").to_wire())
    bogus[2] |= 0x80
    good = q("www.example.test")
    await client.send(bytes(bogus), good)
    assert (await client.recv()).id == good.id
    assert s.service.listeners[0].stats.dropped["qr_set"] == 1
    await client.aclose()


@pytest.mark.parametrize("bad", [b"\x00\x00", b"\x00\x05hello"])
async def test_queries_before_a_closing_frame_are_answered(serve: ServeFactory,
                                                           bad: bytes) -> None:
    s: Served = await serve()
    client = await s.connect()
    first, cached, slow = q("www.example.test"), q("www.example.test"), q("x.slow.example")
    after = q("www.example.test")
    wires = [m.to_wire() for m in (first, cached, slow)]
    client.writer.write(b"".join(struct.pack("!H", len(w)) + w for w in wires) + bad
                        + struct.pack("!H", len(after.to_wire())) + after.to_wire())
    got = {(await client.recv()).id for _ in range(2)}
    assert got == {first.id, cached.id}
    await s.gate.wait_arrived(1)
    s.gate.release("x.slow.example.")
    assert (await client.recv()).id == slow.id  # answered even though in flight at the bad frame
    assert await client.closed_by_server(3.0)  # and nothing after it


@pytest.mark.parametrize("payload", [
    b"\x00\x00",  # zero length
    b"\x00\x05hello",  # shorter than a header
    b"\x00\x0b" + header()[:11],
])
async def test_unframeable_input_closes(serve: ServeFactory, payload: bytes) -> None:
    s: Served = await serve()
    client = await s.connect()
    client.writer.write(payload)
    assert await client.closed_by_server(3.0)
    await _still_serves(s)


@pytest.mark.parametrize("payload", [
    b"\x00\x40" + header(),  # declared longer than what follows
    b"\xff\xff" + header() + b"x" * 100,  # 65535 declared, short body
    b"\x00",  # half a length prefix
])
async def test_incomplete_message_closed_at_message_deadline(serve: ServeFactory,
                                                             payload: bytes) -> None:
    s: Served = await serve(server={"message_timeout": 0.5, "idle_timeout": 30})
    client = await s.connect()
    client.writer.write(payload)
    assert await client.closed_by_server(3.0)
    closed = s.service.listeners[0].stats.closed
    assert closed["message_timeout"] == 1
    await _still_serves(s)


async def test_trickled_query_cannot_hold_the_connection(serve: ServeFactory) -> None:
    s: Served = await serve(server={"message_timeout": 0.6, "idle_timeout": 30})
    client = await s.connect()
    wire = struct.pack("!H", 40) + header() + b"\x00" * 28
    for i in range(len(wire)):
        if client.reader.at_eof():
            break
        client.writer.write(wire[i:i + 1])
        await asyncio.sleep(0.1)
    assert await client.closed_by_server(2.0)
    assert s.service.listeners[0].stats.closed["message_timeout"] == 1


async def test_idle_connection_closed(serve: ServeFactory) -> None:
    s: Served = await serve(server={"idle_timeout": 0.5})
    client = await s.connect()
    await client.send(q("www.example.test"))
    await client.recv()
    assert await client.closed_by_server(3.0)
    assert s.service.listeners[0].stats.closed["idle_timeout"] == 1


async def _raw_connect(addr: tuple[str, int]) -> tuple[asyncio.StreamReader,
                                                       asyncio.StreamWriter]:
    return await asyncio.open_connection(*addr)


async def test_tcp_without_handshake_closed_by_handshake_timeout(serve: ServeFactory) -> None:
    s: Served = await serve(server={"handshake_timeout": 0.5})
    reader, writer = await _raw_connect(s.tls_addr)
    data = await asyncio.wait_for(reader.read(100), 3.0)  # EOF within the bound
    assert data == b""
    writer.close()
    await _still_serves(s)


async def test_plaintext_dns_to_tls_port_is_closed(serve: ServeFactory) -> None:
    s: Served = await serve(server={"handshake_timeout": 0.5})
    reader, writer = await _raw_connect(s.tls_addr)
    wire = q("www.example.test").to_wire()
    writer.write(struct.pack("!H", len(wire)) + wire)
    try:
        data = await asyncio.wait_for(reader.read(100), 3.0)
    except ConnectionResetError:
        data = b""
    assert b"www" not in data  # never a cleartext answer
    writer.close()
    await _still_serves(s)


async def test_tls_1_1_refused(serve: ServeFactory) -> None:
    s: Served = await serve()
    ctx = s.client_context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client would do TLS 1.1; the server must not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # alert or reset
        await s.connect(ctx=ctx)


async def test_tls_1_2_only_client_works(serve: ServeFactory) -> None:
    s: Served = await serve()
    ctx = s.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = await s.connect(ctx=ctx)
    await client.send(q("www.example.test"))
    assert (await client.recv()).rcode() == dns.rcode.NOERROR
    assert client.writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    cipher = client.writer.get_extra_info("cipher")[0]
    assert "GCM" in cipher or "CHACHA20" in cipher
    await client.aclose()


async def test_per_client_connection_limit(serve: ServeFactory) -> None:
    s: Served = await serve(server={"max_connections_per_client": 2})
    a, b = await s.connect(), await s.connect()
    # refused at accept, before any TLS: the client's handshake is cut off
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await s.connect()
    listener = s.service.listeners[0]
    admission = listener.admission
    assert admission.count("127.0.0.1") == 2
    assert admission.statistics()["refused_per_client"] == 1
    assert listener.stats.handshake_failures == {}  # no handshake was started for it
    assert listener.stats.closed == {"connection_limit": 1}
    await a.aclose()
    await b.aclose()
    for _ in range(50):
        if admission.count("127.0.0.1") == 0:
            break
        await asyncio.sleep(0.02)
    assert admission.statistics()["open"] == 0  # counters recover
    await _still_serves(s)


async def test_refusal_log_lines_are_rate_limited(serve: ServeFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from dnstls.proto.ratelimit import LogBudget

    s: Served = await serve(server={"max_connections_per_client": 1})
    listener = s.service.listeners[0]
    listener.log_budget = budget = LogBudget(burst=3, interval=3600.0)
    kept = await s.connect()
    caplog.set_level("INFO", logger="dnstls.net.server")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "closing connection" in r.msg]

    for _ in range(20):  # a flood from one address: refused at accept, 20 times
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await s.connect()
    assert listener.admission.statistics()["refused_per_client"] == 20
    assert lines() == ["closing connection from 127.0.0.1: per-client connection limit"] * 3
    budget.interval = 1e-9  # the next refusal starts a new interval
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await s.connect()
    assert lines()[3:] == ["closing connection from 127.0.0.1: per-client connection limit"
                           " (17 similar messages suppressed)"]
    await kept.aclose()


async def test_queries_per_connection_limit(serve: ServeFactory) -> None:
    s: Served = await serve(server={"max_queries_per_connection": 3})
    client = await s.connect()
    await client.send(*[q("www.example.test") for _ in range(5)])
    answers = [await client.recv() for _ in range(3)]
    assert len(answers) == 3
    assert await client.closed_by_server(3.0)


# -- reload and shutdown ----------------------------------------------------------------

async def test_certificate_reload_keeps_open_connections(serve: ServeFactory,
                                                         tmp_path: Path) -> None:
    s: Served = await serve()
    old = await s.connect()
    new_leaf = s.pki.ca.issue_cert("dns.test")
    new_leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    assert s.service.reload()
    fresh = await s.connect()
    der = fresh.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    serial = x509.load_der_x509_certificate(der).serial_number
    expected = x509.load_pem_x509_certificate(new_leaf.cert_chain_pems[0].bytes()).serial_number
    assert serial == expected
    for client in (old, fresh):
        await client.send(q("www.example.test"))
        assert (await client.recv()).rcode() == dns.rcode.NOERROR
        await client.aclose()


async def test_bad_reload_keeps_the_running_certificate(serve: ServeFactory,
                                                        tmp_path: Path) -> None:
    s: Served = await serve()
    (tmp_path / "server.pem").write_text("not a pem")
    assert not s.service.reload()
    await _still_serves(s)


async def test_graceful_shutdown_answers_received_queries(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    names = [f"g{i}.slow.example." for i in range(5)]
    await client.send(*[q(n) for n in names])
    await s.gate.wait_arrived(5)
    shutdown = asyncio.create_task(s.service.shutdown())
    await asyncio.sleep(0.05)
    with pytest.raises(OSError):
        await asyncio.wait_for(s.connect(), 2)  # no longer accepting
    for n in names:
        s.gate.release(n)
    got = [await client.recv() for _ in names]
    assert all(r.rcode() == dns.rcode.NOERROR for r in got)
    assert await asyncio.wait_for(shutdown, 5) == 0
    assert await client.closed_by_server(2.0)


async def test_shutdown_grace_is_bounded(serve: ServeFactory) -> None:
    s: Served = await serve(server={"shutdown_grace": 0.3})
    client = await s.connect()
    await client.send(q("stuck.slow.example"))
    await s.gate.wait_arrived(1)
    cut = await asyncio.wait_for(s.service.shutdown(), 5)
    assert cut == 1
    await client.aclose()


async def test_metrics_endpoint(serve: ServeFactory) -> None:
    s: Served = await serve(server={"metrics": "127.0.0.1:0"})
    await _still_serves(s)
    assert s.service.endpoints.metrics is not None
    host, port = s.service.endpoints.metrics
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read())
    text = body.decode()
    assert 'dnstls_queries_total{rcode="NOERROR",transport="tls"} 1.0' in text
    assert 'dnstls_connections_accepted_total{transport="tls"} 1.0' in text
    assert "dnstls_tls_handshakes_total{version=" in text
    # one process: OpenSSL's session cache, which now holds that connection's session
    assert "dnstls_tls_session_cache_sessions 1.0" in text
    assert "dnstls_tls_session_cache_hits_total 0.0" in text
    assert "dnstls_tls_session_cache_evictions_total 0.0" in text


async def test_metrics_udp_listener(serve: ServeFactory) -> None:
    """The plain-DNS UDP listener's own counters reach /metrics: datagrams received,
    dropped by reason, queries coalesced, in flight."""
    s: Served = await serve(server={"metrics": "127.0.0.1:0"})
    host, port = s.plain_addr
    answer = await asyncio.to_thread(dns.query.udp, q("www.example.test"), host, port=port,
                                     timeout=3)
    assert answer.rcode() == dns.rcode.NOERROR
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        response = q("www.example.test").to_wire()
        sock.sendto(response[:2] + bytes([response[2] | 0x80]) + response[3:], (host, port))
        sock.sendto(b"\x12", (host, port))  # not even a header
    assert s.service.endpoints.metrics is not None
    mhost, mport = s.service.endpoints.metrics

    def scrape() -> str:
        return urllib.request.urlopen(f"http://{mhost}:{mport}/metrics",
                                      timeout=5).read().decode()

    for _ in range(50):  # the two datagrams are read after the answered one
        text = await asyncio.to_thread(scrape)
        if 'dnstls_udp_datagrams_dropped_total{reason="unanswerable"} 2.0' in text:
            break
        await asyncio.sleep(0.05)
    assert 'dnstls_udp_datagrams_dropped_total{reason="unanswerable"} 2.0' in text
    assert "dnstls_udp_datagrams_received_total 3.0" in text
    assert 'dnstls_udp_datagrams_dropped_total{reason="overload"} 0.0' in text
    assert "dnstls_udp_coalesced_total 0.0" in text
    assert "dnstls_udp_in_flight 0.0" in text


async def test_random_garbage_never_kills_the_server(serve: ServeFactory) -> None:
    s: Served = await serve(server={"message_timeout": 0.5})
    rng = random.Random(7)
    for _ in range(20):
        client = await s.connect()
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        client.writer.write(struct.pack("!H", len(body)) + body)
        await client.closed_by_server(0.2)
        await client.aclose()
    await _still_serves(s)
    assert s.service.handler is not None and s.service.handler.internal_errors == 0


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    from dnstls import config
    from dnstls.errors import ConfigError
    from dnstls.net import loop
    from dnstls.service import Service

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    cfg = config.load(overrides={"server": {"listen": [f"127.0.0.1:{port}"],
                                            "state_dir": str(tmp_path)}})

    async def main() -> None:
        await Service(cfg).start()

    with pytest.raises(ConfigError, match=r"server.listen\[0\].*already in use"):
        loop.run(main())
    sock.close()


_ = DotClient


async def _settled(s: Served, failures: dict[str, int]) -> None:
    """Wait (bounded) until the listener's handshake failures are ``failures``."""
    stats = s.service.listeners[0].stats
    for _ in range(100):
        if dict(stats.handshake_failures) == failures:
            break
        await asyncio.sleep(0.02)
    assert dict(stats.handshake_failures) == failures


async def test_failed_handshakes_are_counted_by_reason_and_released(
        serve: ServeFactory) -> None:
    s: Served = await serve(server={"handshake_timeout": 0.3})
    listener = s.service.listeners[0]
    reader, writer = await _raw_connect(s.tls_addr)  # not TLS at all
    writer.write(b"\x00\x10not a tls client hello")
    assert await asyncio.wait_for(reader.read(100), 3.0) == b""
    writer.close()
    await _settled(s, {"wrong_version_number": 1})
    reader, writer = await _raw_connect(s.tls_addr)  # silent: the handshake timeout
    assert await asyncio.wait_for(reader.read(100), 3.0) == b""
    writer.close()
    await _settled(s, {"wrong_version_number": 1, "timeout": 1})
    reader, writer = await _raw_connect(s.tls_addr)  # gone before its ClientHello
    writer.close()
    await _settled(s, {"wrong_version_number": 1, "timeout": 1, "peer_closed": 1})
    assert listener.stats.open == 0 and listener.stats.handshakes == {}
    assert listener.admission.statistics()["open"] == 0  # every admission released
    await _still_serves(s)
    assert listener.admission.statistics()["refused_per_client"] == 0


async def test_connections_in_handshake_count_against_the_limits(
        serve: ServeFactory) -> None:
    # Admission happens at accept: two connections that never finish (never start) a
    # handshake hold the client's two slots, so a third is refused without any TLS work.
    s: Served = await serve(server={"max_connections_per_client": 2,
                                    "handshake_timeout": 0.5})
    listener = s.service.listeners[0]
    stalled = [await _raw_connect(s.tls_addr) for _ in range(2)]
    for _ in range(50):
        if listener.admission.count("127.0.0.1") == 2:
            break
        await asyncio.sleep(0.02)
    assert listener.admission.count("127.0.0.1") == 2
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await s.connect()
    assert listener.admission.statistics()["refused_per_client"] == 1
    for reader, writer in stalled:  # the handshake timeout ends them and frees the slots
        assert await asyncio.wait_for(reader.read(100), 3.0) == b""
        writer.close()
    await _settled(s, {"timeout": 2})
    assert listener.admission.count("127.0.0.1") == 0
    await _still_serves(s)


async def test_tls_session_resumption(serve: ServeFactory) -> None:
    s: Served = await serve()
    ctx = s.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is available right away
    first = await s.connect(ctx=ctx)
    await first.send(q("www.example.test"))
    await first.recv()
    session = first.writer.get_extra_info("ssl_object").session
    await first.aclose()
    host, port = s.tls_addr

    def resume() -> bool:  # asyncio cannot hand a session to open_connection
        import socket as socketlib

        with socketlib.create_connection((host, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="dns.test", session=session) as tls:
            return tls.session_reused
    assert await asyncio.to_thread(resume)
    assert s.service.listeners[0].stats.resumed >= 1


async def test_tls13_session_resumption_with_one_ticket(serve: ServeFactory) -> None:
    s: Served = await serve()
    ctx = s.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    host, port = s.tls_addr
    wire = q("www.example.test").to_wire()

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        """One connection, one query (the ticket arrives before its answer); the
        session and whether it resumed."""
        with socket.create_connection((host, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="dns.test", session=session) as tls:
            tls.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", tls.recv(2))
            answer = b""
            while len(answer) < length:
                answer += tls.recv(length - len(answer))
            assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR
            return tls.session, tls.session_reused

    first, reused = await asyncio.to_thread(connect, None)
    assert first is not None and not reused and first.has_ticket
    second, reused = await asyncio.to_thread(connect, first)
    assert reused
    assert second is not None and second.has_ticket  # a fresh ticket on the resumed one
    _, reused = await asyncio.to_thread(connect, second)
    assert reused
    assert s.service.listeners[0].stats.resumed == 2
    assert s.service.listeners[0].stats.handshakes == {"TLSv1.3": 3}
    assert s.service.tls is not None and s.service.tls.context.num_tickets == 1


def _blocking_exchange(addr: tuple[str, int], ctx: ssl.SSLContext, wire: bytes,
                       session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """One query over a blocking TLS socket that closes without close_notify (as
    Python's blocking sockets do); the session and whether it was resumed."""
    with socket.create_connection(addr, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="dns.test", session=session) as tls:
        tls.sendall(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", tls.recv(2))
        while length:
            length -= len(tls.recv(length))
        return tls.session, tls.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_sessions_cached_by_one_process_resume_after_an_abrupt_close(
        serve: ServeFactory, version: ssl.TLSVersion) -> None:
    """One process keeps sessions in OpenSSL's cache, not in tickets: a TLS 1.2 full
    handshake sends no ticket. The client closes without close_notify (Python's blocking
    socket does), which made OpenSSL drop the cached session when the connection was
    freed; the listener records close_notify as sent, so the next connection resumes."""
    s: Served = await serve()
    ctx = s.client_context()
    ctx.minimum_version = ctx.maximum_version = version
    host, port = s.tls_addr
    wire = q("www.example.test").to_wire()

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        return _blocking_exchange((host, port), ctx, wire, session)

    assert s.service.tls is not None and s.service.tls.session_cache
    session, reused = await asyncio.to_thread(connect, None)
    assert session is not None and not reused
    assert session.has_ticket == (version is ssl.TLSVersion.TLSv1_3)
    for _ in range(3):
        await asyncio.sleep(0.05)  # the server has seen the close
        session, reused = await asyncio.to_thread(connect, session)
        assert reused
    assert s.service.listeners[0].stats.resumed == 3
    assert s.service.tls.context.session_stats()["hits"] == 3
    cache = s.service.statistics()["tls_session_cache"]  # what the metrics export
    assert cache["hits"] == 3 and cache["misses"] == 0 and cache["sessions"] >= 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_session_cache_zero_resumes_with_tickets(serve: ServeFactory, tmp_path: Path,
                                                       version: ssl.TLSVersion) -> None:
    """``tls.session_cache = 0``: session tickets as before (no server state), a TLS 1.2
    full handshake sends one; nothing is cached and resumption still works."""
    pem = str(tmp_path / "server.pem")
    s: Served = await serve(tls={"certificates": [{"cert": pem, "key": pem}],
                                 "session_cache": 0})
    assert s.service.tls is not None and not s.service.tls.session_cache
    ctx = s.client_context()
    ctx.minimum_version = ctx.maximum_version = version
    host, port = s.tls_addr
    wire = q("www.example.test").to_wire()

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        return _blocking_exchange((host, port), ctx, wire, session)

    session, reused = await asyncio.to_thread(connect, None)
    assert session is not None and session.has_ticket and not reused
    session, reused = await asyncio.to_thread(connect, session)
    assert reused
    assert s.service.tls.context.session_stats()["number"] == 0
    assert "tls_session_cache" not in s.service.statistics()  # tickets: nothing cached


async def test_accepted_sockets_are_nodelay(serve: ServeFactory) -> None:
    """Answers must not wait for Nagle: the event loop sets TCP_NODELAY on every
    accepted TCP transport (the server no longer does it itself), DoT and plain TCP."""
    s: Served = await serve()
    client = await s.connect()
    await client.send(q("www.example.test"))
    await client.recv()
    reader, writer = await asyncio.open_connection(*s.plain_addr)
    wire = q("www.example.test").to_wire()
    writer.write(struct.pack("!H", len(wire)) + wire)
    await reader.readexactly(2)
    seen = 0
    for listener in s.service.listeners:
        for conn in listener.connections:
            assert conn.raw is not None
            sock = conn.raw.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen += 1
    assert seen == 2
    await client.aclose()
    writer.close()


async def test_unknown_edns_options_are_ignored(serve: ServeFactory) -> None:
    s: Served = await serve()
    client = await s.connect()
    query = q("www.example.test", use_edns=0,
              options=[dns.edns.GenericOption(65001, b"\x01\x02"),
                       dns.edns.GenericOption(10, b"\x00" * 8)])  # a client cookie
    await client.send(query)
    response = await client.recv()
    assert response.rcode() == dns.rcode.NOERROR
    assert not any(o.otype == 65001 for o in response.options)
    await client.aclose()


async def test_certificate_chosen_by_sni(serve: ServeFactory, tmp_path: Path) -> None:
    s: Served = await serve()  # (only to reach the per-test PKI)
    other = s.pki.ca.issue_cert("other.test")
    other_pem = tmp_path / "other.pem"
    other.private_key_and_cert_chain_pem.write_to_path(str(other_pem))
    await s.service.aclose()
    s2: Served = await serve(tls={"certificates": [
        {"cert": str(tmp_path / "server.pem"), "key": str(tmp_path / "server.pem")},
        {"cert": str(other_pem), "key": str(other_pem)}]})
    for name, expected in (("dns.test", "dns.test"), ("other.test", "other.test")):
        client = await s2.connect(server_hostname=name)
        der = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert names == [expected]
        await client.aclose()


async def test_certificate_files_watched_for_changes(serve: ServeFactory,
                                                     tmp_path: Path) -> None:
    s: Served = await serve(server={"reload_check_interval": 0.1})
    new_leaf = s.pki.ca.issue_cert("dns.test")
    new_leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    expected = x509.load_pem_x509_certificate(new_leaf.cert_chain_pems[0].bytes()).serial_number
    for _ in range(50):
        if s.service.tls is not None and s.service.tls.reloads:
            break
        await asyncio.sleep(0.05)
    client = await s.connect()
    der = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert x509.load_der_x509_certificate(der).serial_number == expected
    await client.aclose()
