"""Access control (``server.access_control``, the stub's ``access_control``) end to end.

All of 127.0.0.0/8 is loopback: clients bind 127.0.0.2 (refused) and 127.0.0.3
(denied) as their source; 127.0.0.1 is allowed. Both sides are asserted: what the client
got and what reached the resolver (the Gate stage for names under ``slow.``, the fake
upstream for the stub). The default's refusal of a non-private source is shown in a
network namespace with 192.0.2.1 on its loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
from conftest import Served, ServeFactory

from dnstls.metrics import ServiceCollector
from dnstls.proto import edns
from dnstls.proto.acl import AccessControl
from dnstls.service import access_control_line

pytestmark = pytest.mark.timeout(60)

ALLOWED, REFUSED, DENIED = "127.0.0.1", "127.0.0.2", "127.0.0.3"
RULES = ["127.0.0.0/8 allow", f"{REFUSED} refuse", f"{DENIED} deny"]


def q(name: str = "www.example.test", **kw: Any) -> dns.message.Message:
    return dns.message.make_query(name, "A", **kw)


def ede_codes(response: dns.message.Message) -> list[int]:
    return [int(o.code) for o in response.options if isinstance(o, dns.edns.EDEOption)]


def udp_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def udp_ask(addr: tuple[str, int], wire: bytes, source: str) -> bytes:
    loop = asyncio.get_running_loop()
    with udp_socket(source) as sock:
        await loop.sock_sendto(sock, wire, addr)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)


async def stream_connect(addr: tuple[str, int], source: str, *,
                         ctx: ssl.SSLContext | None = None,
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        *addr, ssl=ctx, server_hostname="dns.test" if ctx else None,
        local_addr=(source, 0)), 5)


async def stream_ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     *messages: bytes) -> list[bytes]:
    writer.write(b"".join(struct.pack("!H", len(m)) + m for m in messages))
    await writer.drain()
    out = []
    for _ in messages:
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
        out.append(await asyncio.wait_for(reader.readexactly(size), 5))
    return out


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


def assert_refused(wire: bytes, query: dns.message.Message) -> dns.message.Message:
    response = dns.message.from_wire(wire)
    assert response.id == query.id and response.rcode() == dns.rcode.REFUSED
    assert response.question == query.question
    assert not response.answer and not response.authority
    if query.edns >= 0:
        assert ede_codes(response) == [dns.edns.EDECode.PROHIBITED]
    else:
        assert response.edns < 0
    return response


# ------------------------------------------------------------------------ serve

async def test_allowed_clients_are_answered(serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": RULES})
    query = q(use_edns=0)
    answer = dns.message.from_wire(await udp_ask(s.plain_addr, query.to_wire(), ALLOWED))
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    reader, writer = await stream_connect(s.tls_addr, "127.0.0.9", ctx=s.client_context())
    (wire,) = await stream_ask(reader, writer, query.to_wire())
    assert dns.message.from_wire(wire).answer[0][0].to_text() == "192.0.2.1"
    await close(writer)
    assert s.service.acl.statistics()["refused"] == {}


async def test_refused_over_udp_tcp_and_dot_never_reach_the_resolver(
        serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": RULES})
    # names under slow. would wait in the Gate stage: nothing may arrive there
    udp_query = q("a.slow.example", use_edns=0)
    udp_wire = await udp_ask(s.plain_addr, udp_query.to_wire(), REFUSED)
    assert_refused(udp_wire, udp_query)
    assert len(udp_wire) <= len(udp_query.to_wire()) + 6  # OPT + EDE 18 only

    plain_query = q("www.example.test")  # no EDNS: no OPT back
    assert_refused(await udp_ask(s.plain_addr, plain_query.to_wire(), REFUSED), plain_query)

    reader, writer = await stream_connect(s.plain_addr, REFUSED)
    tcp_queries = [q(f"t{i}.slow.example", use_edns=0) for i in range(3)]
    answers = await stream_ask(reader, writer, *(m.to_wire() for m in tcp_queries))
    for wire, query in zip(answers, tcp_queries, strict=True):
        assert_refused(wire, query)
    await close(writer)

    # DoT: the handshake is done (as Unbound), then every query gets REFUSED, padded
    reader, writer = await stream_connect(s.tls_addr, REFUSED, ctx=s.client_context())
    dot_queries = [q(f"d{i}.slow.example", use_edns=0, pad=128,
                     options=[edns.keepalive_option(None)]) for i in range(5)]
    answers = await stream_ask(reader, writer, *(m.to_wire() for m in dot_queries))
    for wire, query in zip(answers, dot_queries, strict=True):
        response = assert_refused(wire, query)
        assert len(wire) % 468 == 0
        assert edns.has_option(response, edns.KEEPALIVE)
    # local data is not answered either
    local = q("www.example.test", use_edns=0)
    (wire,) = await stream_ask(reader, writer, local.to_wire())
    assert_refused(wire, local)
    await close(writer)

    assert s.gate.waiting == {}  # nothing was resolved (or forwarded)
    stats = s.service.acl.statistics()
    assert stats["refused"] == {"udp": 2, "tcp": 3, "tls": 6}
    assert stats["denied"] == {}
    tls_stats = s.service.listeners[0].stats
    assert sum(tls_stats.handshakes.values()) == 1 and tls_stats.accepted == 1
    assert s.service.handler is not None
    assert s.service.handler.responses[("tls", "REFUSED")] == 6


async def test_a_refused_stream_closes_on_a_message_without_header(
        serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": RULES})
    reader, writer = await stream_connect(s.plain_addr, REFUSED)
    first = q(use_edns=0)
    writer.write(struct.pack("!H", len(first.to_wire())) + first.to_wire()
                 + b"\x00\x05short")
    await writer.drain()
    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
    assert_refused(await reader.readexactly(size), first)  # what came before it
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
    await close(writer)
    assert s.service.listeners[1].stats.dropped["no_header"] == 1


async def test_denied_datagrams_are_dropped(serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": RULES})
    loop = asyncio.get_running_loop()
    with udp_socket(DENIED) as denied:
        await loop.sock_sendto(denied, q().to_wire(), s.plain_addr)
        # one socket, datagrams in order: once the allowed one is answered, the denied
        # one has been read -- and had no answer
        answer = await udp_ask(s.plain_addr, q().to_wire(), ALLOWED)
        assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR
        with pytest.raises(BlockingIOError):
            denied.recv(65535)
    assert s.service.acl.statistics()["denied"] == {"udp": 1}
    assert s.service.udp[0].statistics()["received"] == 2


async def test_refused_source_without_a_header_or_with_qr_gets_nothing(
        serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": RULES})
    loop = asyncio.get_running_loop()
    response = dns.message.make_response(q()).to_wire()
    with udp_socket(REFUSED) as refused:
        for wire in (b"\x12\x34\x01", response):  # too short for a header; QR set
            await loop.sock_sendto(refused, wire, s.plain_addr)
        answer = await udp_ask(s.plain_addr, q().to_wire(), ALLOWED)  # read after them
        assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR
        with pytest.raises(BlockingIOError):
            refused.recv(65535)
    assert s.service.udp[0].statistics()["dropped"] == {"unanswerable": 2}
    assert s.service.acl.statistics()["refused"] == {}


@pytest.mark.parametrize("tls", [True, False], ids=["dot", "tcp"])
async def test_denied_connections_are_closed_before_any_tls(serve: ServeFactory,
                                                            tls: bool) -> None:
    s: Served = await serve(server={"access_control": RULES})
    addr = s.tls_addr if tls else s.plain_addr
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        *addr, local_addr=(DENIED, 0)), 5)
    if tls:  # a ClientHello is never answered: the connection is gone at once
        writer.write(b"\x16\x03\x01\x00\x05hello")
    else:
        writer.write(struct.pack("!H", 29) + q().to_wire())
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    await close(writer)
    listener = s.service.listeners[0 if tls else 1]
    assert listener.stats.closed == {"access_denied": 1}
    assert listener.stats.handshake_failures == {}  # no handshake was started
    assert listener.stats.accepted == 1 and listener.connections == set()
    assert listener.admission.statistics()["open"] == 0  # never admitted
    assert s.service.acl.statistics()["denied"] == {"tls" if tls else "tcp": 1}
    if tls:  # a real TLS client: its handshake is cut off
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await stream_connect(addr, DENIED, ctx=s.client_context())
        assert listener.stats.handshake_failures == {}


async def test_metrics_count_refused_and_denied(serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": RULES})
    await udp_ask(s.plain_addr, q().to_wire(), REFUSED)
    with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
        await stream_connect(s.tls_addr, DENIED, ctx=s.client_context())
    samples = {(m.name, sample.labels.get("transport"), sample.labels.get("reason")):
               sample.value
               for m in ServiceCollector(s.service.statistics).collect()
               for sample in m.samples}
    assert samples[("dnstls_access_control_refused", "udp", None)] == 1
    assert samples[("dnstls_access_control_denied", "tls", None)] == 1
    assert samples[("dnstls_connections_closed", "tls", "access_denied")] == 1
    assert samples[("dnstls_queries", "udp", None)] == 1  # the REFUSED answer


async def test_default_allows_loopback(serve: ServeFactory) -> None:
    # no access_control: dnsdist's default; every loopback source is answered
    s: Served = await serve()
    assert s.service.acl.default
    for source in (ALLOWED, REFUSED, DENIED):
        answer = await udp_ask(s.plain_addr, q().to_wire(), source)
        assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR


def test_start_up_line_only_for_addresses_beyond_loopback() -> None:
    default = AccessControl()
    field = "server.access_control"
    assert access_control_line(default, [("127.0.0.1", 853), ("::1", 853)], field) is None
    assert access_control_line(default, [("127.0.0.1", 853), ("0.0.0.0", 53)], field) == (
        "access control: loopback and private networks allowed, others refused "
        "(server.access_control)")
    assert access_control_line(default, [("::", 53)], "access_control") == (
        "access control: loopback and private networks allowed, others refused "
        "(access_control)")


async def test_banner_says_what_access_control_allows(serve: ServeFactory) -> None:
    s: Served = await serve(server={"access_control": ["0.0.0.0/0 allow", "::/0 allow"]})
    assert not any("access control" in line for line in s.service.banner())  # loopback
    s.service.endpoints.plain.append(("192.0.2.1", 53))  # as if it listened there
    assert s.service.banner()[-1] == (
        "access control: allow 0.0.0.0/0, ::/0; others refused (server.access_control)")


# ------------------------------------------------------------------------ stub

async def test_stub_refuses_and_reload_applies_new_rules(tmp_path: Path, pki: Any) -> None:
    from dnstls.stub import StubRuntime, load_stub_config
    from fakes import FakeUpstream

    fake = await FakeUpstream("tls", ssl_context=pki.server_context()).start()
    path = tmp_path / "stub.toml"

    def write(rules: list[str]) -> None:
        path.write_text(textwrap.dedent(f"""\
            listen_addresses = ["127.0.0.1@0"]
            timeout = 1500
            access_control = {json.dumps(rules)}
            [[upstream_recursive_servers]]
            address_data = "{fake.address}"
            tls_port = {fake.port}
            tls_auth_name = "dns.test"
            tls_ca_file = "{pki.ca_file}"
            """))

    write(["127.0.0.0/8 allow", f"{REFUSED} refuse"])
    runtime = StubRuntime(load_stub_config(path), path=path)
    service = runtime.service()
    await service.start()
    try:
        addr = service.endpoints.plain[0]
        query = q("refused.example.", use_edns=0)
        assert_refused(await udp_ask(addr, query.to_wire(), REFUSED), query)
        assert fake.received == []  # never forwarded
        allowed = q("allowed.example.", use_edns=0)
        answer = dns.message.from_wire(await udp_ask(addr, allowed.to_wire(), ALLOWED))
        assert answer.rcode() == dns.rcode.NOERROR
        assert [r.message.question[0].name.to_text() for r in fake.received] == [
            "allowed.example."]
        # reload (SIGHUP): the new rules apply to the next datagram
        write(["127.0.0.0/8 allow"])
        assert service.reload()
        answer = dns.message.from_wire(await udp_ask(addr, query.to_wire(), REFUSED))
        assert answer.rcode() == dns.rcode.NOERROR
        assert service.acl.statistics()["refused"] == {"udp": 1}  # counters kept
    finally:
        await service.aclose()
        await fake.aclose()


# ------------------------------------------------------------------------ namespace

NETNS_SCRIPT = r"""
import asyncio, json, socket, ssl, struct, sys
import dns.message
from dnstls import config
from dnstls.service import Service

async def main(state, zone):
    cfg = config.load(overrides={
        "server": {"listen": ["0.0.0.0:0"], "plain": ["0.0.0.0:0"], "state_dir": state},
        "local": {"zones": [zone]}, "forward": {"enabled": False}})
    service = Service(cfg)
    await service.start()
    loop = asyncio.get_running_loop()
    out = {"banner": service.banner()}
    udp_port = service.endpoints.plain[0][1]
    for source in ("192.0.2.1", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.setblocking(False)
            query = dns.message.make_query("www.example.test", "A", use_edns=0)
            await loop.sock_sendto(sock, query.to_wire(), ("192.0.2.1", udp_port))
            wire = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
        response = dns.message.from_wire(wire)
        out["udp " + source] = [dns.rcode.to_text(response.rcode()),
                                [int(o.code) for o in response.options
                                 if o.otype == 15]]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "192.0.2.1", service.endpoints.tls[0][1], ssl=ctx,
        local_addr=("192.0.2.1", 0)), 5)
    query = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    writer.write(struct.pack("!H", len(query)) + query)
    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
    response = dns.message.from_wire(await reader.readexactly(size))
    out["tls 192.0.2.1"] = [dns.rcode.to_text(response.rcode()),
                            [int(o.code) for o in response.options if o.otype == 15]]
    writer.close()
    out["peers"] = sorted(service.acl._memo)
    await service.aclose()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_default_refuses_a_public_source_in_a_namespace(tmp_path: Path,
                                                        zone_file: Path) -> None:
    """192.0.2.1 (TEST-NET-1, not private) on the loopback interface of a network
    namespace of our own: the default refuses it over UDP and over DoT; 127.0.0.1 is
    answered. (A "[::]" listener is IPv6 only, as Unbound's: IPv4-mapped sources are
    matched as IPv4 in tests/unit/proto/test_acl.py.)"""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-n", "true"], capture_output=True,
                           check=False) if unshare else None
    if probe is None or probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("network namespaces (unshare -n) are needed with CI=true")
        pytest.skip("network namespaces (unshare -n) are not available")
    script = tmp_path / "netns_acl.py"
    script.write_text(NETNS_SCRIPT)
    shell = ('ip link set lo up && ip addr add 192.0.2.1/24 dev lo && exec "$@"')
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", shell, "sh", sys.executable, str(script),
         str(tmp_path / "state"), str(zone_file)],
        capture_output=True, text=True, timeout=40, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["udp 192.0.2.1"] == ["REFUSED", [18]]
    assert out["tls 192.0.2.1"] == ["REFUSED", [18]]
    assert out["udp 127.0.0.1"] == ["NOERROR", []]
    assert "192.0.2.1" in out["peers"] and "127.0.0.1" in out["peers"]
    assert out["banner"][-1] == ("access control: loopback and private networks "
                                 "allowed, others refused (server.access_control)")
