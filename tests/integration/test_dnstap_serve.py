"""dnstap from ``dnstls serve`` (``[dnstap]``) to a Frame Streams collector on a Unix
socket: CLIENT_QUERY and CLIENT_RESPONSE with the exact bytes and both addresses over
UDP, TCP and DoT -- forwarded, from the cache, local data and rejected messages --
FORWARDER_QUERY and FORWARDER_RESPONSE of the forwarded ones; a slow or absent
collector costs messages (counted), never answers."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from conftest import Fakes, Served, ServeFactory, udp_spec

from dnstls.net import dnstap as dnstap_mod
from dnstls.proto import dnstap
from fakes.dnstap_collector import Collector

pytestmark = pytest.mark.timeout(60)

ALL = {"log_client_query": True, "log_client_response": True,
       "log_forwarder_query": True, "log_forwarder_response": True}
PROTOCOL = {"udp": dnstap.UDP, "tcp": dnstap.TCP, "dot": dnstap.DOT}
LOOPBACK = socket.inet_aton("127.0.0.1")


@pytest.fixture
async def sock_path() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dt") as tmp:  # AF_UNIX: a short path
        yield Path(tmp) / "tap.sock"


@pytest.fixture
async def collector(sock_path: Path) -> AsyncIterator[Collector]:
    collector = await Collector.start(sock_path)
    yield collector
    await collector.aclose()


async def exchange(served: Served, transport: str, wire: bytes,
                   ) -> tuple[bytes, tuple[str, int], tuple[str, int]]:
    """Send ``wire``; (the answer's bytes, the client's address, the server's)."""
    if transport == "udp":
        server = served.plain_addr
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.bind(("127.0.0.1", 0))
            await loop.sock_sendto(sock, wire, server)
            answer = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
            return answer, sock.getsockname(), server
        finally:
            sock.close()
    server = served.tls_addr if transport == "dot" else served.plain_addr
    ctx: ssl.SSLContext | None = served.client_context() if transport == "dot" else None
    reader, writer = await asyncio.open_connection(
        *server, ssl=ctx, server_hostname="dns.test" if ctx else None)
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
        answer = await asyncio.wait_for(reader.readexactly(size), 5)
        return answer, writer.get_extra_info("sockname")[:2], server
    finally:
        writer.close()


def query(name: str, qid: int) -> bytes:
    message = dns.message.make_query(name, "A", use_edns=0)
    message.id = qid
    return message.to_wire()


async def test_client_and_forwarder_messages_on_every_transport(
        serve: ServeFactory, fakes: Fakes, collector: Collector, sock_path: Path) -> None:
    fake = await fakes("udp")
    served = await serve(upstreams=[udp_spec(fake)],
                         dnstap={"enabled": True, "socket_path": str(sock_path),
                                 "identity": "dot-1", **ALL})
    await collector.wait_sessions(1)
    expected: list[tuple[str, Any]] = []
    for i, transport in enumerate(("udp", "tcp", "dot")):
        for name in (f"fwd{i}.example.net", f"fwd{i}.example.net", "www.example.test"):
            wire = query(name, 0x1000 + len(expected))
            answer, client, server = await exchange(served, transport, wire)
            assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR
            expected.append((transport, (wire, answer, client, server)))
    # a query the server rejects (FORMERR: no question) is logged with its answer too
    formerr = dns.message.Message(id=0x2222).to_wire()
    answer, client, server = await exchange(served, "tcp", formerr)
    assert dns.message.from_wire(answer).rcode() == dns.rcode.FORMERR
    expected.append(("tcp", (formerr, answer, client, server)))

    # 10 client exchanges, the first of each forwarded name forwarded: 3 upstream ones
    messages = await collector.wait_frames(2 * len(expected) + 2 * 3)
    client_messages = [m for m in messages if m["message_type"].startswith("CLIENT")]
    forwarder = [m for m in messages if m["message_type"].startswith("FORWARDER")]
    assert len(client_messages) == 2 * len(expected)
    for transport, (wire, answer, client, server) in expected:
        asked = [m for m in client_messages if m.get("query_message") == wire]
        answered = [m for m in client_messages if m.get("response_message") == answer]
        assert len(asked) == 1 and len(answered) == 1, (transport, wire)
        for message in (asked[0], answered[0]):
            assert message["socket_protocol"] == PROTOCOL[transport]
            assert message["socket_family"] == dnstap.INET
            assert message["query_address"] == LOOPBACK
            assert message["query_port"] == client[1]
            assert message["response_address"] == LOOPBACK
            assert message["response_port"] == server[1]
            assert message["identity"] == b"dot-1"
            assert message["version"].startswith(b"dnstls ")
        assert asked[0]["message_type"] == "CLIENT_QUERY" and "query_time_sec" in asked[0]
        assert answered[0]["message_type"] == "CLIENT_RESPONSE"
        assert "response_time_sec" in answered[0]
    # the forwarder's: what the upstream received, and its answer, from its address
    assert [m["message_type"] for m in forwarder] == ["FORWARDER_QUERY",
                                                      "FORWARDER_RESPONSE"] * 3
    received = {r.message.id: r for r in fake.received}
    for message in forwarder:
        assert message["socket_protocol"] == dnstap.UDP
        assert message["response_address"] == LOOPBACK
        assert message["response_port"] == fake.port
        sent = dns.message.from_wire(message["query_message"])
        assert sent == received[sent.id].message  # same ID, question, flags, EDNS
    for response in forwarder[1::2]:
        assert dns.message.from_wire(response["response_message"]).answer


async def test_only_the_chosen_messages(serve: ServeFactory, fakes: Fakes,
                                        collector: Collector, sock_path: Path) -> None:
    fake = await fakes("udp")
    served = await serve(upstreams=[udp_spec(fake)],
                         dnstap={"enabled": True, "socket_path": str(sock_path),
                                 "log_client_response": True})
    await collector.wait_sessions(1)
    for transport in ("udp", "dot"):
        await exchange(served, transport, query("one.example.net", 7))
    messages = await collector.wait_frames(2)
    await asyncio.sleep(0.05)  # nothing else arrives (checked below, not timed)
    assert [m["message_type"] for m in collector.messages] == ["CLIENT_RESPONSE"] * 2
    assert [m["socket_protocol"] for m in messages] == [dnstap.UDP, dnstap.DOT]


async def test_absent_collector_the_resolver_still_answers(
        serve: ServeFactory, fakes: Fakes, sock_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnstap_mod, "MAX_QUEUE", 5)
    fake = await fakes("udp")
    served = await serve(upstreams=[udp_spec(fake)],
                         dnstap={"enabled": True, "socket_path": str(sock_path), **ALL})
    for i in range(10):
        for transport in ("udp", "tcp", "dot"):
            answer, _, _ = await exchange(served, transport, query(f"n{i}.example.net", i))
            assert dns.message.from_wire(answer).answer
    stats = served.service.statistics()["dnstap"]
    assert stats["connected"] == 0 and stats["queued"] == 5
    assert stats["dropped"] == 10 * 3 * 2 + 10 * 2 - 5  # client + forwarder messages
    # the collector comes up: the writer connects and sends what waited
    collector = await Collector.start(sock_path)
    try:
        assert len(await collector.wait_frames(5, within=10)) == 5
    finally:
        await collector.aclose()


async def test_slow_collector_the_resolver_still_answers(
        serve: ServeFactory, fakes: Fakes, sock_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnstap_mod, "MAX_QUEUE", 20)
    collector = await Collector.start(sock_path, paused=True)
    try:
        served = await serve(dnstap={"enabled": True, "socket_path": str(sock_path),
                                     **ALL})
        await collector.wait_sessions(1)
        big = dns.message.make_query("big.example.test", "TXT", use_edns=0,
                                     payload=4096).to_wire()
        for _ in range(300):  # ~1 MB of dnstap: more than the socket buffers take
            answer, _, _ = await exchange(served, "udp", big)
            assert len(dns.message.from_wire(answer).answer[0]) == 10
        assert served.service.statistics()["dnstap"]["dropped"] > 0
    finally:
        await collector.aclose()


async def test_file_output_and_metrics(serve: ServeFactory, tmp_path: Path) -> None:
    from fakes.dnstap_collector import decode, read_file

    path = tmp_path / "tap.fstrm"
    served = await serve(server={"metrics": "127.0.0.1:0"},
                         dnstap={"enabled": True, "file": str(path), **ALL})
    wire = query("www.example.test", 0x4242)
    answer, _, _ = await exchange(served, "tcp", wire)
    stats = served.service.statistics()["dnstap"]
    async with asyncio.timeout(5):
        while served.service.statistics()["dnstap"]["sent"] < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    import urllib.request

    host, port = served.service.endpoints.metrics or ("", 0)
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics").read().decode())
    assert "dnstls_dnstap_sent_total 2.0" in text
    assert "dnstls_dnstap_dropped_total 0.0" in text
    assert stats["dropped"] == 0
    await served.service.aclose()
    got = [decode(f) for f in read_file(path)]
    assert [(m["message_type"], m.get("query_message"), m.get("response_message"))
            for m in got] == [("CLIENT_QUERY", wire, None), ("CLIENT_RESPONSE", None, answer)]


async def test_config_errors_name_the_field(serve: ServeFactory, tmp_path: Path) -> None:
    from dnstls.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^dnstap\.socket_path: dnstap is enabled"):
        await serve(dnstap={"enabled": True, "log_client_query": True})
    with pytest.raises(ConfigError, match=r"^dnstap\.file: give socket_path or file"):
        await serve(dnstap={"enabled": True, "file": "a", "socket_path": "b"})
    with pytest.raises(ConfigError, match=r"^dnstap\.file: cannot open"):
        await serve(dnstap={"enabled": True, "file": str(tmp_path / "no" / "f"),
                            "log_client_query": True})
    with pytest.raises(ConfigError, match=r"^dnstap\.log_client_query: expected true"):
        await serve(dnstap={"log_client_query": "yes"})


async def test_refused_rd0_queries_are_logged_once(serve: ServeFactory, fakes: Fakes,
                                                   collector: Collector,
                                                   sock_path: Path) -> None:
    """RD=0 from a client of ``allow`` (REFUSED, EDE 18: the listeners' own path)."""
    fake = await fakes("udp")
    served = await serve(upstreams=[udp_spec(fake)],
                         server={"access_control": ["127.0.0.0/8 allow"]},
                         dnstap={"enabled": True, "socket_path": str(sock_path), **ALL})
    await collector.wait_sessions(1)
    sent = []
    for i, transport in enumerate(("udp", "tcp", "dot")):
        message = dns.message.make_query(f"norec{i}.example.net", "A", use_edns=0)
        message.flags &= ~dns.flags.RD
        wire = message.to_wire()
        answer, _, _ = await exchange(served, transport, wire)
        assert dns.message.from_wire(answer).rcode() == dns.rcode.REFUSED
        sent.append((transport, wire, answer))
    messages = await collector.wait_frames(2 * len(sent))
    assert [(m["message_type"], m.get("query_message") or m.get("response_message"))
            for m in messages] == [(kind, data) for _, wire, answer in sent
                                   for kind, data in (("CLIENT_QUERY", wire),
                                                      ("CLIENT_RESPONSE", answer))]
    assert not fake.received


async def test_file_reopened_on_reload_and_by_control(serve: ServeFactory, tmp_path: Path,
                                                      sock_path: Path) -> None:
    """Log rotation: logrotate moves the file away, then SIGHUP (the service's reload)
    or ``dnstls control dnstap_reopen``; each file holds its own messages, START to
    STOP. A path that cannot be opened: the command says so naming dnstap.file, the
    service answers on, messages are dropped, and the next reopen writes again."""
    from dnstls.cli.control import exchange as control_exchange
    from fakes.dnstap_collector import decode, read_file

    path = tmp_path / "tap.fstrm"
    control_path = str(sock_path.with_name("control.sock"))
    served = await serve(server={"control": control_path},
                         dnstap={"enabled": True, "file": str(path),
                                 "log_client_query": True})

    async def control(command: str) -> str:
        return await asyncio.to_thread(control_exchange, control_path, command, [],
                                       timeout=10)

    async def asked(name: str) -> None:
        await exchange(served, "udp", query(name, 1))

    async def sent(count: int) -> None:
        async with asyncio.timeout(5):
            while served.service.statistics()["dnstap"]["sent"] < count:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    await asked("one.example.test")
    path.rename(tmp_path / "tap.fstrm.1")
    assert served.service.reload()  # SIGHUP
    await asked("two.example.test")
    await sent(2)
    path.rename(tmp_path / "tap.fstrm.2")
    assert await control("dnstap_reopen") == "ok\n"
    await asked("three.example.test")
    await sent(3)
    # the path cannot be opened: an error naming the field; answers go on, messages
    # are dropped until the next reopen
    path.rename(tmp_path / "tap.fstrm.3")
    path.mkdir()
    answer = await control("dnstap_reopen")
    assert answer.startswith(f"error dnstap.file: cannot open {path}: "), answer
    await asked("lost.example.test")
    assert served.service.statistics()["dnstap"]["dropped"] == 1
    path.rmdir()
    assert await control("dnstap_reopen") == "ok\n"
    await asked("four.example.test")
    await sent(4)
    from prometheus_client import CollectorRegistry, generate_latest

    from dnstls.metrics import ServiceCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(served.service.statistics))
    assert "dnstls_dnstap_reopens_total 3.0" in generate_latest(registry).decode()
    await served.service.aclose()

    def names(file: Path) -> list[str]:
        return [dns.message.from_wire(decode(f)["query_message"]).question[0].name
                .to_text() for f in read_file(file)]

    assert names(tmp_path / "tap.fstrm.1") == ["one.example.test."]
    assert names(tmp_path / "tap.fstrm.2") == ["two.example.test."]
    assert names(tmp_path / "tap.fstrm.3") == ["three.example.test."]
    assert names(path) == ["four.example.test."]


async def test_dnstap_reopen_without_a_file(serve: ServeFactory, sock_path: Path) -> None:
    from dnstls.cli.control import exchange as control_exchange

    control_path = str(sock_path.with_name("control.sock"))
    await serve(server={"control": control_path})
    answer = await asyncio.to_thread(control_exchange, control_path, "dnstap_reopen", [],
                                     timeout=10)
    assert answer == "error dnstap is not enabled (no [dnstap] file to reopen)\n"
