"""The control channel's sans-IO core: request lines, answer formatting, and joining
the workers' answers."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rrset

from dnstls.control import (
    MAX_REQUEST,
    PROTOCOL,
    Request,
    encode_request,
    format_dump,
    format_forwards,
    format_stats,
    format_status,
    is_error,
    join_answers,
    key_text,
    parse_request,
)


def test_request_round_trip() -> None:
    line = encode_request("flush_type", ["www.example.", "AAAA"])
    assert line == b"DNSTLSCTL1 flush_type www.example. AAAA\n"
    assert parse_request(line) == Request("flush_type", ("www.example.", "AAAA"))
    assert parse_request(b"DNSTLSCTL1 status") == Request("status", ())
    assert parse_request(b"DNSTLSCTL1  status \r\n") == Request("status", ())


def test_bad_requests() -> None:
    assert parse_request(b"UBCT1 status\n") == (
        f"error unsupported protocol version 'UBCT1' (this server speaks {PROTOCOL})")
    assert parse_request(b"\n") == "error empty request"
    assert parse_request(b"DNSTLSCTL1\n") == "error no command given"
    assert parse_request("DNSTLSCTL1 flush é\n".encode()) == "error request is not ASCII text"
    assert parse_request(b"x" * (MAX_REQUEST + 1)) == (
        f"error request longer than {MAX_REQUEST} bytes")


def test_is_error() -> None:
    assert is_error("error unknown command 'x'\n")
    assert is_error("error: this option requires a domain name\n")
    assert not is_error("ok\n") and not is_error("")


def test_status_lines() -> None:
    assert format_status(version="1.0", build="pure Python", workers=2, uptime=61.9,
                         pid=42) == [
        "version: 1.0", "build: pure Python", "workers: 2", "uptime: 61 seconds",
        "dnstls (pid 42) is running..."]


def test_stats_lines_from_the_service_statistics() -> None:
    stats = {
        "handler": {"responses": {("udp", "NOERROR"): 5, ("tls", "NOERROR"): 2,
                                  ("tcp", "NXDOMAIN"): 1, ("tls", "BADVERS"): 1,
                                  ("udp", "NOTIMP"): 0},
                    "rejected": {"FORMERR": 2}, "in_flight": 3},
        "cache": {"hits": 4, "misses": 3, "stale_served": 1, "entries": 3, "bytes": 900,
                  "evictions": 0, "prefetches": 6},
        "access_control": {"refused": {"udp": 1}, "denied": {"tcp": 2},
                           "norec_refused": {}},
        "wire": {"coalesced": 2}, "udp": [{"coalesced": 1}],
    }
    lines = format_stats(stats, now=1000.5, uptime=12.25)
    values = dict(line.split("=", 1) for line in lines)
    assert values["total.num.queries"] == "9"
    assert values["total.num.cachehits"] == "4" and values["total.num.cachemiss"] == "3"
    assert values["total.num.expired"] == "1"
    assert values["total.num.prefetch"] == "6"  # Unbound's: prefetches started
    assert values["total.num.coalesced"] == "3"
    assert values["total.requestlist.current.all"] == "3"
    assert values["num.query.udp"] == "5"
    assert values["num.query.tcp"] == "4"  # TLS included, as Unbound's
    assert values["num.query.tls"] == "3"
    assert values["num.answer.rcode.NOERROR"] == "7"
    assert values["num.answer.rcode.NXDOMAIN"] == "1"
    assert values["num.answer.rcode.SERVFAIL"] == "0"  # always listed
    assert values["num.answer.rcode.BADVERS"] == "1"
    assert values["num.answer.rcode.NOTIMPL"] == "0" and "num.answer.rcode.NOTIMP" not in values
    assert values["num.query.rejected"] == "2"
    assert values["unwanted.queries"] == "3"
    assert values["msg.cache.count"] == "3" and values["mem.cache.message"] == "900"
    assert values["time.up"] == "12.250000" and values["time.now"] == "1000.500000"
    assert lines[0].startswith("total.num.queries=")
    assert format_stats({}, now=0, uptime=0)[0] == "total.num.queries=0"


def test_forwards_lines() -> None:
    assert format_forwards([(".", ["tls://1.1.1.1#one.one.one.one", "udp://192.0.2.1"]),
                            ("corp.example.", ["udp://10.0.0.53"])]) == [
        ". IN forward tls://1.1.1.1#one.one.one.one udp://192.0.2.1",
        "corp.example. IN forward udp://10.0.0.53"]


def _key(name: str, rdtype: int, flags: int = 0) -> bytes:
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire + rdtype.to_bytes(2, "big") + b"\x00\x01" + bytes((flags,))


def test_dump_lines() -> None:
    query = dns.message.make_query("www.example.", "A")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.", 250, "IN", "A", "192.0.2.1"))
    assert key_text(_key("www.example.", 65, 0x03)) == "www.example. IN HTTPS do cd"
    lines = format_dump([(_key("www.example.", 1), "positive", 250.4, response.to_wire()),
                         (_key("old.example.", 1), "positive", -3.0, response.to_wire())])
    assert lines == [
        ";; dnstls cache: 2 entries, least recently used first",
        ";; www.example. IN A: positive NOERROR, 250 s left",
        "www.example. 250 IN A 192.0.2.1",
        ";; old.example. IN A: positive NOERROR, expired 3 s ago, kept for serve-stale",
        "www.example. 250 IN A 192.0.2.1",
        ";; end"]


def test_join_adds_flush_counts_and_reports_a_failing_worker() -> None:
    removed = "ok removed 0 rrsets, {} messages and 0 key entries\n"
    assert join_answers("flush_zone", [(0, removed.format(2)), (1, removed.format(3))],
                        now=0, uptime=0) == [removed.format(5).rstrip("\n")]
    assert join_answers("flush", [(0, "ok\n"), (1, "ok\n")], now=0, uptime=0) == ["ok"]
    assert join_answers("reload", [(0, "ok\n"), (1, "error local.data[0]: bad\n")],
                        now=0, uptime=0) == [
        "error local.data[0]: bad (worker 1; 1 of 2 workers did it)"]
    assert join_answers("bogus", [(0, "error unknown command 'bogus'\n")] * 2,
                        now=0, uptime=0) == ["error unknown command 'bogus'"]
    assert join_answers("list_forwards", [(0, ". IN forward udp://x\n")] * 2,
                        now=0, uptime=0) == [". IN forward udp://x"]


def test_join_sums_stats_with_per_worker_lines() -> None:
    one = "total.num.queries=3\ntotal.num.cachehits=1\ntime.now=1.0\ntime.up=2.0\n" \
          "time.elapsed=2.0\nnum.query.udp=3\nmem.cache.message=10\n"
    two = one.replace("=3", "=4")
    lines = join_answers("stats_noreset", [(0, one), (1, two)], now=5.0, uptime=6.0)
    assert lines == [
        "worker0.num.queries=3", "worker0.num.cachehits=1",
        "worker1.num.queries=4", "worker1.num.cachehits=1",
        "total.num.queries=7", "total.num.cachehits=2",
        "time.now=5.000000", "time.up=6.000000", "time.elapsed=6.000000",
        "num.query.udp=7", "mem.cache.message=20"]


def test_join_dump_names_each_worker() -> None:
    assert join_answers("dump_cache", [(0, ";; a\n"), (1, ";; b\n")], now=0, uptime=0) == [
        ";; worker 0", ";; a", ";; worker 1", ";; b"]
