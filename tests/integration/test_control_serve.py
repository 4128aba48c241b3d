"""``dnstls control`` against a running Service: flushes seen at the fake upstream,
reload, errors, and a silent client that blocks nobody."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import Fakes, Served, ServeFactory, udp_spec

from dnstls.cli.control import exchange
from dnstls.cli.main import main as cli_main
from dnstls.errors import ConfigError
from fakes import FakeUpstream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A short socket path (tmp_path can pass the 107 bytes a Unix socket path has)."""
    directory = tempfile.mkdtemp(prefix="dnstls-ctl-")
    yield os.path.join(directory, "control.sock")
    shutil.rmtree(directory, ignore_errors=True)


def exists(path: str) -> bool:
    return os.path.exists(path)


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def read(path: str) -> str:
    return Path(path).read_text()


async def control(path: str, command: str, *args: str) -> str:
    return await asyncio.to_thread(exchange, path, command, list(args), timeout=10)


async def cli(path: str, *argv: str) -> int:
    return await asyncio.to_thread(cli_main, ["control", "-s", path, *argv])


async def ask(s: Served, name: str, rdtype: str = "A") -> dns.message.Message:
    host, port = s.plain_addr
    query = dns.message.make_query(name, rdtype)
    return await asyncio.to_thread(dns.query.udp, query, host, port=port, timeout=5)


def answer(query: dns.message.Message) -> dns.message.Message:
    """A for A, a TXT record for TXT; NXDOMAIN with an SOA for names under nx."""
    response = dns.message.make_response(query)
    question = query.question[0]
    if question.name.labels[0] == b"nx":
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(dns.rrset.from_text(
            "example.net.", 300, "IN", "SOA", "ns.example.net. h.example.net. 1 2 3 4 300"))
    elif question.rdtype == dns.rdatatype.TXT:
        response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "TXT", "t"))
    else:
        response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A",
                                                   "192.0.2.1"))
    return response


def asked(up: FakeUpstream) -> list[str]:
    return [f"{r.message.question[0].name} {r.message.question[0].rdtype.name}"
            for r in up.received]


async def started(serve: ServeFactory, fake: FakeUpstream, path: str,
                  **kw: Any) -> Served:
    server = {"control": path, **kw.pop("server", {})}
    return await serve(upstreams=[udp_spec(fake)], server=server, **kw)


async def test_socket_is_private_and_removed_at_shutdown(serve: ServeFactory,
                                                         fakes: Fakes, sock_path: str) -> None:
    s = await started(serve, await fakes(), sock_path)
    info = os.stat(sock_path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    status = await control(sock_path, "status")
    lines = status.splitlines()
    assert lines[0].startswith("version: ") and lines[2] == "workers: 1"
    assert lines[-1] == f"dnstls (pid {os.getpid()}) is running..."
    assert any(line.startswith("uptime: ") and line.endswith(" seconds") for line in lines)
    await s.service.aclose()
    assert not exists(sock_path)


async def test_flush_makes_the_next_query_a_miss(serve: ServeFactory, fakes: Fakes,
                                                 sock_path: str) -> None:
    up = await fakes(answer=answer)
    s = await started(serve, up, sock_path)
    for name in ("a.example.net.", "a.example.net.", "b.example.net."):
        await ask(s, name)
    await ask(s, "a.example.net.", "TXT")
    assert asked(up) == ["a.example.net. A", "b.example.net. A", "a.example.net. TXT"]
    assert await control(sock_path, "flush", "A.Example.NET") == "ok\n"
    for name in ("a.example.net.", "b.example.net."):
        await ask(s, name)
    await ask(s, "a.example.net.", "TXT")
    # A went (a miss, asked again); TXT is not in flush's list, b is another name
    assert asked(up)[3:] == ["a.example.net. A"]
    assert await control(sock_path, "flush_type", "a.example.net", "TXT") == "ok\n"
    await ask(s, "a.example.net.", "TXT")
    assert asked(up)[4:] == ["a.example.net. TXT"]
    stats = s.service.statistics()["cache"]
    assert stats["entries"] == 3


async def test_flush_zone_drops_names_under_it_only(serve: ServeFactory, fakes: Fakes,
                                                    sock_path: str) -> None:
    up = await fakes()
    s = await started(serve, up, sock_path)
    names = ["zone.example.", "a.zone.example.", "b.a.zone.example.", "otherzone.example.",
             "example."]
    for name in names:
        await ask(s, name)
    answer = await control(sock_path, "flush_zone", "zone.example")
    assert answer == "ok removed 0 rrsets, 3 messages and 0 key entries\n"
    for name in names:
        await ask(s, name)
    assert asked(up)[len(names):] == [f"{n} A" for n in names[:3]]
    answer = await control(sock_path, "flush_zone", ".")
    assert answer == "ok removed 0 rrsets, 5 messages and 0 key entries\n"
    assert s.service.statistics()["cache"]["entries"] == 0
    assert s.service.statistics()["cache"]["bytes"] == 0


async def test_flush_negative(serve: ServeFactory, fakes: Fakes, sock_path: str) -> None:
    up = await fakes(answer=answer)
    s = await started(serve, up, sock_path)
    await ask(s, "nx.example.net.")
    await ask(s, "ok.example.net.")
    assert await control(sock_path, "flush_negative") == (
        "ok removed 0 rrsets, 1 messages and 0 key entries\n")
    await ask(s, "nx.example.net.")
    await ask(s, "ok.example.net.")
    assert asked(up) == ["nx.example.net. A", "ok.example.net. A", "nx.example.net. A"]


async def test_reload_applies_a_config_change_and_names_a_bad_field(
        serve: ServeFactory, fakes: Fakes, sock_path: str) -> None:
    data: dict[str, Any] = {"local": {"data": ["new.home.arpa. A 192.0.2.7"]}}
    s = await started(serve, await fakes(), sock_path, reload_data=lambda: data)
    assert (await ask(s, "new.home.arpa.")).rcode() == dns.rcode.NXDOMAIN
    assert await control(sock_path, "reload") == "ok\n"
    assert (await ask(s, "new.home.arpa.")).answer[0][0].to_text() == "192.0.2.7"
    data["local"] = {"data": ["new.home.arpa. BOGUS 1"]}
    answer = await control(sock_path, "reload")
    assert answer.startswith("error local.data[0]: ")
    assert answer.rstrip().endswith("the running configuration stays")
    assert await cli(sock_path, "reload") == 1
    assert (await ask(s, "new.home.arpa.")).answer[0][0].to_text() == "192.0.2.7"


@pytest.mark.parametrize(("argv", "first"), [
    (["bogus"], "error unknown command 'bogus'"),
    (["stats"], "error stats resets the counters"),
    (["flush"], "error: this option requires a domain name"),
    (["flush", "bad..name"], "error cannot parse name bad..name: "),
    (["flush_type", "a.example"], "error could not find next argument after a.example"),
    (["flush_type", "a.example", "NOSUCHTYPE"], "error unknown type 'NOSUCHTYPE'"),
])
async def test_bad_commands_are_errors_with_exit_status_1(
        serve: ServeFactory, fakes: Fakes, sock_path: str, argv: list[str], first: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    await started(serve, await fakes(), sock_path)
    assert (await control(sock_path, *argv)).startswith(first)
    assert await cli(sock_path, *argv) == 1
    assert capsys.readouterr().out.startswith(first)


async def test_wrong_protocol_version_and_long_request(serve: ServeFactory, fakes: Fakes,
                                                       sock_path: str) -> None:
    await started(serve, await fakes(), sock_path)

    async def raw(data: bytes, *, eof: bool = False) -> bytes:
        reader, writer = await asyncio.open_unix_connection(sock_path)
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    assert await raw(b"UBCT1 status\n") == (
        b"error unsupported protocol version 'UBCT1' (this server speaks DNSTLSCTL1)\n")
    assert await raw(b"DNSTLSCTL1 " + b"x" * 5000 + b"\n") == (
        b"error request longer than 4096 bytes\n")
    assert (await raw(b"DNSTLSCTL1 status", eof=True)).startswith(b"version: ")


async def test_a_silent_client_blocks_nobody(serve: ServeFactory, fakes: Fakes,
                                             sock_path: str) -> None:
    up = await fakes()
    s = await started(serve, up, sock_path)
    assert s.service.control is not None
    s.service.control.read_timeout = 0.5
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(sock_path)
    try:
        assert (await control(sock_path, "status")).startswith("version: ")
        assert (await ask(s, "q.example.net.")).rcode() == dns.rcode.NOERROR
        # and it is told and closed after the read timeout
        silent.settimeout(10)
        answer = await asyncio.to_thread(silent.recv, 1000)
        assert answer == b"error no request within 0.5 s\n"
    finally:
        silent.close()


async def test_listings(serve: ServeFactory, fakes: Fakes, sock_path: str,
                        zone_file: Path) -> None:
    up = await fakes()
    s = await started(serve, up, sock_path, local={
        "zones": [str(zone_file)],
        "data": ["nas.home.arpa. A 192.0.2.10"], "zone_types": ["ads.example. always_null"]})
    forwards = await control(sock_path, "list_forwards")
    assert forwards == f". IN forward udp://127.0.0.1:{up.port}\n"
    zones = (await control(sock_path, "list_local_zones")).splitlines()
    assert "example.test. static" in zones  # the zone file
    assert "localhost. static" in zones  # a default zone
    assert "ads.example. always_null" in zones
    data = (await control(sock_path, "list_local_data")).splitlines()
    assert "www.example.test.\t300\tIN\tA\t192.0.2.1" in data
    assert "nas.home.arpa.\t3600\tIN\tA\t192.0.2.10" in data
    lookup = await control(sock_path, "lookup", "www.example.test")
    assert lookup == "www.example.test. is answered here, from local zone example.test. " \
                     "(static)\n"
    lookup = await control(sock_path, "lookup", "www.example.net")
    assert lookup.splitlines() == [
        "The following upstreams are used for lookup of www.example.net.",
        "forwarding request (the default upstreams):", f"udp://127.0.0.1:{up.port}"]
    await ask(s, "c.example.net.")
    dump = (await control(sock_path, "dump_cache")).splitlines()
    assert dump[0] == ";; dnstls cache: 1 entries, least recently used first"
    assert dump[1].startswith(";; c.example.net. IN A: positive NOERROR, ")
    assert dump[2].startswith("c.example.net. ") and dump[2].endswith(" IN A 192.0.2.1")
    assert dump[-1] == ";; end"


async def test_stats_noreset(serve: ServeFactory, fakes: Fakes, sock_path: str) -> None:
    s = await started(serve, await fakes(), sock_path)
    await ask(s, "s.example.net.")
    await ask(s, "s.example.net.")
    await ask(s, "www.example.test.")
    lines = (await control(sock_path, "stats_noreset")).splitlines()
    stats = dict(line.split("=", 1) for line in lines)
    assert stats["total.num.queries"] == "3"
    assert stats["num.query.udp"] == "3" and stats["num.query.tls"] == "0"
    assert stats["total.num.cachehits"] == "1"
    assert stats["num.answer.rcode.NOERROR"] == "3"
    assert stats["num.answer.rcode.SERVFAIL"] == "0"
    assert stats["msg.cache.count"] == "1"
    again = dict(line.split("=", 1) for line in
                 (await control(sock_path, "stats_noreset")).splitlines())
    assert again["total.num.queries"] == "3"  # nothing reset


async def test_stop(serve: ServeFactory, fakes: Fakes, sock_path: str) -> None:
    s = await started(serve, await fakes(), sock_path)
    assert await control(sock_path, "stop") == "ok\n"
    await asyncio.wait_for(s.service.run_until_stopped(), 10)
    assert not exists(sock_path)


async def test_start_refuses_a_path_that_is_not_a_socket(
        serve: ServeFactory, fakes: Fakes, sock_path: str) -> None:
    write(sock_path, "precious")
    with pytest.raises(ConfigError, match=r"^server.control: .* exists and is not a socket"):
        await started(serve, await fakes(), sock_path)
    assert read(sock_path) == "precious"


async def test_start_replaces_a_stale_socket_and_refuses_a_live_one(
        serve: ServeFactory, fakes: Fakes, sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # the file stays, nothing listens
    fake = await fakes()
    await started(serve, fake, sock_path)
    assert (await control(sock_path, "status")).startswith("version: ")
    with pytest.raises(ConfigError, match=r"^server.control: .* another process is "
                                          r"listening"):
        await started(serve, fake, sock_path)
    assert (await control(sock_path, "status")).startswith("version: ")


async def test_status_when_nothing_runs(sock_path: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(sock_path, "status") == 3
    captured = capsys.readouterr()
    assert captured.out == "dnstls is stopped\n"
    assert captured.err == f"error: connect: No such file or directory for {sock_path}\n"
    assert await cli(sock_path, "flush", "x.example") == 1


async def test_flush_reaches_exact_repeats_over_dot(serve: ServeFactory, fakes: Fakes,
                                                    sock_path: str) -> None:
    """The same query bytes again on a DoT connection are answered from the exact-
    repeat memo (resolver/cache.ExactMemo): a flushed entry must not be served there."""
    up = await fakes(answer=answer)
    s = await started(serve, up, sock_path)
    client = await s.connect()
    wire = dns.message.make_query("r.example.net.", "A").to_wire()
    try:
        for _ in range(3):
            await client.send(wire)
            assert (await client.recv()).answer[0][0].to_text() == "192.0.2.1"
        assert asked(up) == ["r.example.net. A"]
        assert await control(sock_path, "flush", "r.example.net.") == "ok\n"
        for _ in range(2):
            await client.send(wire)
            assert (await client.recv()).answer[0][0].to_text() == "192.0.2.1"
        assert asked(up) == ["r.example.net. A", "r.example.net. A"]
    finally:
        await client.aclose()
