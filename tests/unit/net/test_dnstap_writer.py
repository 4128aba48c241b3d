"""The dnstap writer (net/dnstap.py) against the tests' Frame Streams collector: the
bidirectional handshake, messages in order, STOP/FINISH at close, drops when the
collector is slow or absent, reconnection, and the file output."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dnstls.errors import ConfigError
from dnstls.net.dnstap import DnstapWriter, endpoint
from dnstls.proto import dnstap
from fakes.dnstap_collector import ACCEPT, READY, START, STOP, Collector, decode, read_file

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def sock_path() -> AsyncIterator[Path]:
    # a short path: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be long
    with tempfile.TemporaryDirectory(prefix="dt") as tmp:
        yield Path(tmp) / "tap.sock"


def writer(**kw: object) -> DnstapWriter:
    options: dict[str, object] = {"identity": "ns1", "version": "dnstls test",
                                  "client_query": True, "client_response": True,
                                  "reconnect_min": 0.01, "reconnect_max": 0.05,
                                  "clock_ns": lambda: 1_700_000_000_000_000_001}
    options.update(kw)
    return DnstapWriter(**options)  # type: ignore[arg-type]


async def wait_for(predicate: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_handshake_messages_and_close(sock_path: Path) -> None:
    collector = await Collector.start(sock_path)
    tap = writer(socket_path=str(sock_path))
    tap.start()
    server = endpoint(("127.0.0.1", 853))
    tap.client_query(b"query", dnstap.DOT, ("127.0.0.2", 40000), server)
    tap.client_response(b"answer", dnstap.DOT, ("127.0.0.2", 40000), server)
    got = await collector.wait_frames(2)
    session = collector.sessions[0]
    assert [k for k, _ in session.controls] == [READY, START]
    assert session.controls[0][1] == [dnstap.CONTENT_TYPE]
    assert session.controls[1][1] == [dnstap.CONTENT_TYPE]
    assert got[0] == {"identity": b"ns1", "version": b"dnstls test", "dnstap_type": 1,
                      "type": 5, "message_type": "CLIENT_QUERY", "socket_family": 1,
                      "socket_protocol": 3, "query_address": b"\x7f\x00\x00\x02",
                      "response_address": b"\x7f\x00\x00\x01", "query_port": 40000,
                      "response_port": 853, "query_time_sec": 1_700_000_000,
                      "query_time_nsec": 1, "query_message": b"query"}
    assert got[1]["message_type"] == "CLIENT_RESPONSE"
    assert got[1]["response_message"] == b"answer" and "query_time_sec" not in got[1]
    assert tap.connected and tap.statistics()["sent"] == 2
    await tap.aclose()
    assert session.controls[-1][0] == STOP and session.finished
    assert not tap.connected
    await collector.aclose()


async def test_slow_collector_drops_and_counts(sock_path: Path) -> None:
    collector = await Collector.start(sock_path, paused=True)
    tap = writer(socket_path=str(sock_path), max_queue=50)
    tap.start()
    await collector.wait_sessions(1)
    big = b"x" * 4000
    for _ in range(2000):  # 8 MB: more than the socket buffers hold
        tap.client_query(big, dnstap.UDP, ("127.0.0.1", 1), None)
        await asyncio.sleep(0)
    assert tap.dropped > 0
    assert len(tap._queue) <= 50
    await tap.aclose()  # bounded, though the collector reads nothing
    await collector.aclose()


async def test_absent_collector_then_reconnect(sock_path: Path) -> None:
    tap = writer(socket_path=str(sock_path), max_queue=3)
    tap.start()
    for i in range(5):  # nobody listens: 3 wait, 2 dropped
        tap.client_query(bytes([i]), dnstap.UDP, ("127.0.0.1", 1), None)
    assert tap.dropped == 2
    await wait_for(lambda: tap.connect_failures >= 2)
    collector = await Collector.start(sock_path)
    got = await collector.wait_frames(3)
    assert [m["query_message"] for m in got] == [b"\x00", b"\x01", b"\x02"]
    # the collector goes away (restarts): the writer reconnects and goes on
    collector.drop_connections()
    await wait_for(lambda: not tap.connected)
    tap.client_query(b"after", dnstap.UDP, ("127.0.0.1", 1), None)
    await collector.wait_sessions(2)
    got = await collector.wait_frames(4)
    assert got[-1]["query_message"] == b"after"
    assert tap.connections == 2
    await tap.aclose()
    await collector.aclose()


async def test_a_reader_that_refuses_the_content_type(sock_path: Path) -> None:
    async def refuse(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)
        from fakes.dnstap_collector import control

        w.write(control(ACCEPT, b"protobuf:other"))
        await reader.read()  # until the writer gives up
        w.close()
        await w.wait_closed()

    server = await asyncio.start_unix_server(refuse, str(sock_path))
    tap = writer(socket_path=str(sock_path))
    tap.start()
    await wait_for(lambda: tap.connect_failures >= 1)
    tap.client_query(b"q", dnstap.UDP, ("127.0.0.1", 1), None)
    assert not tap.connected and tap.connections == 0
    await tap.aclose()
    server.close()
    await server.wait_closed()


async def test_file_output(tmp_path: Path) -> None:
    path = tmp_path / "tap.fstrm"
    tap = writer(file=str(path))
    tap.start()
    for i in range(300):  # more than one batch
        tap.client_query(i.to_bytes(2, "big"), dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.sent == 300)
    await tap.aclose()
    frames = read_file(path)  # START ... STOP
    assert [decode(f)["query_message"] for f in frames] == [
        i.to_bytes(2, "big") for i in range(300)]
    assert decode(frames[0])["socket_family"] == 2


def test_file_that_cannot_be_opened_names_the_field(tmp_path: Path) -> None:
    tap = writer(file=str(tmp_path / "missing" / "tap.fstrm"))
    with pytest.raises(ConfigError, match=r"dnstap\.file.*cannot open"):
        tap.open()


def test_endpoint_of_socket_addresses() -> None:
    assert endpoint(("127.0.0.1", 53)) == dnstap.Endpoint(b"\x7f\x00\x00\x01", 53)
    assert endpoint(("::1", 53, 0, 0)) == dnstap.Endpoint(b"\x00" * 15 + b"\x01", 53)
    assert endpoint(None) is None and endpoint("/run/sock") is None
    assert endpoint(("?", 0)) is None


class _Spec:
    transport = "tls"
    address = "127.0.0.9"
    port = 853


class _Upstream:
    """An upstream that answers (exchange_detailed, as the pool's) or fails."""

    name = "up"
    spec = _Spec()

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.other = "delegated"

    async def exchange_detailed(self, query: Any, *, deadline: float) -> Any:
        import dns.message

        from dnstls.errors import QueryTimeout
        from dnstls.net.pool import ConnectionDetails, Reply

        if self.fail:
            raise QueryTimeout("no answer")
        sent = dns.message.from_wire(query.to_wire())
        sent.id = 4321  # the transport's own ID
        response = dns.message.make_response(sent)
        return Reply(response, 0, 0.0, ConnectionDetails("tcp", "127.0.0.8", 5353))


async def test_forwarder_exchanges_are_logged() -> None:
    import dns.message

    from dnstls.errors import QueryTimeout
    from dnstls.net.dnstap import TappedUpstream, tap_forwarders

    tap = writer(file="unused", forwarder_query=True, forwarder_response=True)
    query = dns.message.make_query("a.example.", "A")
    query.id = 1
    up = TappedUpstream(_Upstream(), tap)
    response = await up.exchange(query, deadline=0.0)
    assert response.id == 4321 and query.id == 1  # the query is left as it was
    assert up.other == "delegated" and up.name == "up"
    failing = TappedUpstream(_Upstream(fail=True), tap)
    with pytest.raises(QueryTimeout):
        await failing.exchange(query, deadline=0.0)
    got = [decode(frame[4:]) for frame in tap._queue]
    assert [m["message_type"] for m in got] == ["FORWARDER_QUERY", "FORWARDER_RESPONSE",
                                                "FORWARDER_QUERY"]
    # the exchange's own ID in both; TCP and the address the reply came from
    assert dns.message.from_wire(got[0]["query_message"]).id == 4321
    assert dns.message.from_wire(got[1]["response_message"]).id == 4321
    assert got[1]["query_message"] == got[0]["query_message"]
    assert (got[0]["socket_protocol"], got[0]["response_port"]) == (dnstap.TCP, 5353)
    assert got[0]["response_address"] == bytes([127, 0, 0, 8])
    # no answer: the query alone, as built, with the configured transport (DoT)
    assert dns.message.from_wire(got[2]["query_message"]).id == 1
    assert (got[2]["socket_protocol"], got[2]["response_port"]) == (dnstap.DOT, 853)

    class Forwarder:
        def __init__(self) -> None:
            self.upstreams = [_Upstream(), _Upstream()]

    class Router:
        def __init__(self) -> None:
            self.default = Forwarder()
            self.zones = [("corp.", Forwarder())]

    router = Router()
    assert tap_forwarders(router, tap) == 4
    assert tap_forwarders(router, tap) == 0  # not wrapped twice
    assert all(isinstance(u, TappedUpstream) for u in router.zones[0][1].upstreams)


async def test_reopen_for_log_rotation(tmp_path: Path) -> None:
    """``reopen()`` (SIGHUP, ``dnstls control dnstap_reopen``): what was queued before
    goes to the file that was open, which ends with STOP; PATH is opened anew and starts
    with START; what comes after goes there."""
    path = tmp_path / "tap.fstrm"
    tap = writer(file=str(path))
    tap.start()
    for i in range(300):  # queued, not necessarily written yet when reopen is asked
        tap.client_query(i.to_bytes(2, "big"), dnstap.TCP, ("::1", 5300), None)
    path.rename(tmp_path / "tap.fstrm.1")  # logrotate moves the file away
    assert await tap.reopen() == ""
    for i in range(300, 305):
        tap.client_query(i.to_bytes(2, "big"), dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.sent == 305)
    assert tap.statistics()["reopens"] == 1
    await tap.aclose()
    rotated = read_file(tmp_path / "tap.fstrm.1")  # START ... STOP (checked there)
    assert [decode(f)["query_message"] for f in rotated] == [
        i.to_bytes(2, "big") for i in range(300)]
    assert [decode(f)["query_message"] for f in read_file(path)] == [
        i.to_bytes(2, "big") for i in range(300, 305)]
    assert tap.dropped == 0


async def test_a_file_that_cannot_be_reopened_drops_until_the_next_reopen(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "dnstap"
    directory.mkdir()
    path = directory / "tap.fstrm"
    tap = writer(file=str(path))
    tap.start()
    tap.client_query(b"\x00\x01", dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.sent == 1)
    path.rename(tmp_path / "tap.fstrm.1")
    directory.rmdir()  # PATH cannot be created
    error = await tap.reopen()
    assert error.startswith(f"dnstap.file: cannot open {path}: ")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "dnstap.file" in errors[0] and str(path) in errors[0]
    assert tap.statistics()["connected"] == 0
    for _ in range(3):  # never raises into the caller, counted as dropped
        tap.client_query(b"\x00\x02", dnstap.TCP, ("::1", 5300), None)
    assert tap.dropped == 3 and tap.statistics()["queued"] == 0
    directory.mkdir()
    assert await tap.reopen() == ""
    assert tap.statistics()["connected"] == 1
    tap.client_query(b"\x00\x03", dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.sent == 2)
    await tap.aclose()
    assert [decode(f)["query_message"] for f in read_file(tmp_path / "tap.fstrm.1")] == [
        b"\x00\x01"]
    assert [decode(f)["query_message"] for f in read_file(path)] == [b"\x00\x03"]


async def test_a_write_error_drops_until_a_reopen(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A file that fails to be written (the disk is full, ...) stops the writing until
    a reopen, which then starts a new file."""
    path = tmp_path / "tap.fstrm"
    tap = writer(file=str(path))
    tap.start()

    class Full:
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    tap._fh.close()  # the disk "fills up": the file the writer holds fails from now on
    tap._fh = Full()
    tap.client_query(b"\x00\x01", dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.dropped == 1)
    assert "No space left on device" in caplog.text and "dnstap.file" in caplog.text
    tap.client_query(b"\x00\x02", dnstap.TCP, ("::1", 5300), None)
    assert tap.dropped == 2
    assert await tap.reopen() == ""
    tap.client_query(b"\x00\x03", dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.sent == 1)
    await tap.aclose()
    assert [decode(f)["query_message"] for f in read_file(path)] == [b"\x00\x03"]


async def test_reopen_of_a_socket_writer_changes_nothing(sock_path: Path) -> None:
    tap = writer(socket_path=str(sock_path))
    tap.start()
    assert await tap.reopen() == ""
    assert tap.statistics()["reopens"] == 0
    await tap.aclose()


async def test_a_file_not_moved_away_is_kept(tmp_path: Path) -> None:
    """A reload for another reason (SIGHUP, a certificate change) must not truncate the
    file in use: it is still at the path, so the writer goes on writing to it."""
    path = tmp_path / "tap.fstrm"
    tap = writer(file=str(path))
    tap.start()
    tap.client_query(b"\x00\x01", dnstap.TCP, ("::1", 5300), None)
    assert await tap.reopen() == ""
    tap.client_query(b"\x00\x02", dnstap.TCP, ("::1", 5300), None)
    await wait_for(lambda: tap.sent == 2)
    assert tap.statistics()["reopens"] == 0
    await tap.aclose()
    assert [decode(f)["query_message"] for f in read_file(path)] == [b"\x00\x01",
                                                                     b"\x00\x02"]
