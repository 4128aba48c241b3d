"""NSID (RFC 5001) in QueryHandler's answers: every answer to a query that asks for it
carries the configured NSID -- cache hits on the fast path and on the message path, the
exact-repeat memo, local data, error answers -- and nothing changes for a query that
does not ask or when none is configured. What Unbound 1.17 does was checked on loopback
(``nsid: "ascii_x"``): NSID in NOERROR/NXDOMAIN (local, forwarded, cached), SERVFAIL,
FORMERR, REFUSED (zone transfer), NOTIMP; none in BADVERS, and access control's REFUSED
has no OPT at all (ours keeps its EDE, without NSID: no amplification)."""

from __future__ import annotations

import random
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from dnstls.net.handler import QueryHandler
from dnstls.proto import edns
from dnstls.proto.answers import Rejection, Transport, make_response
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import Refuse, Request, servfail
from dnstls.resolver.cache import Cache, CacheStage
from dnstls.resolver.local import LocalData, load_zone

NSID = b"dot-1"
ZONE = """$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.1
"""


def ask(name: str = "www.example.test", rdtype: str = "A", *, qid: int = 7,
        nsid: bool = True, pad: int = 0, keepalive: bool = False,
        payload: int = 1232) -> bytes:
    options: list[dns.edns.Option] = []
    if keepalive:
        options.append(dns.edns.GenericOption(edns.KEEPALIVE, b""))
    if nsid:
        options.append(dns.edns.GenericOption(edns.NSID, b""))
    return dns.message.make_query(name, rdtype, id=qid, use_edns=0, pad=pad,
                                  payload=payload, options=options).to_wire()


def nsid_of(wire: bytes) -> bytes | None:
    message = dns.message.from_wire(wire[:2] + bytes((wire[2] & 0x87,)) + wire[3:])
    option = edns.find_option(message, edns.NSID)
    return None if option is None else option.to_wire()


async def slow(handler: QueryHandler, wire: bytes, transport: Transport) -> bytes:
    parsed = handler.parse(wire, transport)
    assert isinstance(parsed, dns.message.Message)
    return await handler.answer(parsed, transport, None)


def cached(nsid: bytes | None, **kw: object) -> tuple[QueryHandler, Cache]:
    cache = Cache()
    now = 100.0
    for name in ("www.example.com.", "mail.example.com."):
        q = dns.message.make_query(name, "A", use_edns=0)
        r = make_response(q)
        r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.9"))
        assert cache.insert_wire(key_from_message(q), r.to_wire(), now)
    handler = QueryHandler(CacheStage(Refuse(), cache, lambda: now), keepalive=15.0,
                           cache=cache, clock=lambda: now, nsid=nsid, **kw)  # type: ignore[arg-type]
    return handler, cache


def local_handler(tmp_path: Path, nsid: bytes | None) -> QueryHandler:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    local = LocalData(Refuse(), zones=[load_zone(path)])
    return QueryHandler(local, local=local, keepalive=30.0, nsid=nsid)


SHAPES = [{"nsid": True}, {"nsid": False}, {"nsid": True, "pad": 128},
          {"nsid": True, "pad": 128, "keepalive": True}, {"nsid": False, "pad": 128}]


@pytest.mark.parametrize("transport", list(Transport))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("configured", [NSID, None], ids=["nsid", "none"])
async def test_cache_hits_on_both_paths(transport: Transport, shape: dict[str, object],
                                        configured: bytes | None) -> None:
    handler, _ = cached(configured, exact_memo=False)
    wire = ask("WwW.example.com", **shape)  # type: ignore[arg-type]
    fast = handler.route(wire, transport)
    assert isinstance(fast, bytes)  # an NSID query stays on the fast path
    assert fast == await slow(handler, wire, transport)
    want = configured if shape["nsid"] else None
    assert nsid_of(fast) == want
    if shape.get("pad") and transport is Transport.TLS:
        assert len(fast) % 468 == 0  # padded with the NSID already in
    response = dns.message.from_wire(fast)
    assert response.answer and response.id == 7


@pytest.mark.parametrize("transport", list(Transport))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
async def test_local_answers_on_both_paths(tmp_path: Path, transport: Transport,
                                           shape: dict[str, object]) -> None:
    handler = local_handler(tmp_path, NSID)
    for name in ("www.example.test", "nx.example.test"):
        wire = ask(name, **shape)  # type: ignore[arg-type]
        first = await slow(handler, wire, transport)  # builds and keeps the answer
        assert nsid_of(first) == (NSID if shape["nsid"] else None)
        fast = handler.route(wire, transport)
        assert fast == first, name
        if shape.get("pad") and transport is Transport.TLS:
            assert len(fast) % 468 == 0


def test_the_memo_keeps_queries_with_and_without_nsid_apart() -> None:
    """An answer memoised for a query without NSID never answers one with it, and vice
    versa; and every memo answer equals the full path's (a handler without the memo)."""
    memo, memo_cache = cached(NSID)
    ref, ref_cache = cached(NSID, exact_memo=False)
    rng = random.Random(5)
    wires = [ask(name, nsid=n, pad=p, keepalive=k)[2:]
             for name in ("www.example.com", "mail.example.com")
             for n in (True, False) for p in (0, 128) for k in (True, False)]
    for _ in range(4):
        for rest in rng.sample(wires, len(wires)):
            wire = rng.getrandbits(16).to_bytes(2, "big") + rest
            transport = rng.choice([Transport.TLS, Transport.TCP])
            got, want = memo.route(wire, transport), ref.route(wire, transport)
            assert isinstance(got, bytes) and got == want
            asked = edns.has_option(dns.message.from_wire(wire), edns.NSID)
            assert nsid_of(got) == (NSID if asked else None)
    assert memo_cache.statistics() == ref_cache.statistics()
    assert all(len(m) for m in memo._memos.values())  # the memo did answer


@pytest.mark.parametrize("transport", list(Transport))
def test_error_answers_carry_the_nsid_as_unbound_does(tmp_path: Path,
                                                      transport: Transport) -> None:
    handler = local_handler(tmp_path, NSID)
    two = dns.message.from_wire(ask())
    two.question.append(two.question[0])
    status = dns.message.from_wire(ask())
    status.set_opcode(dns.opcode.STATUS)
    badvers = dns.message.make_query("www.example.test", "A", use_edns=1,
                                     options=[dns.edns.GenericOption(edns.NSID, b"")])
    cases = [("FORMERR", two.to_wire(), dns.rcode.FORMERR, NSID),
             ("TSIG", ask(rdtype="TSIG"), dns.rcode.FORMERR, NSID),
             ("NOTIMP", status.to_wire(), dns.rcode.NOTIMP, NSID),
             ("AXFR", ask(rdtype="AXFR"), dns.rcode.REFUSED, NSID),
             ("BADVERS", badvers.to_wire(), dns.rcode.BADVERS, None),
             ("FORMERR unasked", dns.message.make_query(
                 "a.", "A", use_edns=0, payload=1232).to_wire()[:-1], dns.rcode.FORMERR, None)]
    for what, wire, rcode, want in cases:
        parsed = handler.parse(wire, transport)
        assert isinstance(parsed, Rejection) and parsed.wire is not None, what
        assert parsed.rcode == rcode, what
        if len(parsed.wire) > 12:
            assert nsid_of(parsed.wire) == want, what
    unasked = dns.message.from_wire(ask(nsid=False))
    unasked.question.append(unasked.question[0])
    parsed = handler.parse(unasked.to_wire(), transport)
    assert isinstance(parsed, Rejection) and parsed.wire is not None
    assert nsid_of(parsed.wire) is None


@pytest.mark.parametrize("transport", list(Transport))
def test_access_controls_refused_has_no_nsid(tmp_path: Path, transport: Transport) -> None:
    # Unbound answers a refused client with a bare header; ours has an OPT with EDE 18
    # and nothing else, so that a spoofed UDP query gets nothing much larger back
    refused = local_handler(tmp_path, NSID).refuse(ask(), transport)
    assert refused.wire is not None and nsid_of(refused.wire) is None


class Failing:
    async def resolve(self, request: Request) -> dns.message.Message:
        raise servfail(dns.edns.EDECode.NETWORK_ERROR, "down")


@pytest.mark.parametrize("transport", list(Transport))
async def test_servfail_carries_the_nsid(transport: Transport) -> None:
    handler = QueryHandler(Failing(), nsid=NSID)
    out = await slow(handler, ask(pad=128), transport)
    response = dns.message.from_wire(out)
    assert response.rcode() == dns.rcode.SERVFAIL and nsid_of(out) == NSID
    assert edns.has_option(response, edns.EDE)
    if transport is Transport.TLS:
        assert len(out) % 468 == 0
    assert nsid_of(await slow(handler, ask(nsid=False), transport)) is None


async def test_the_nsid_never_pushes_a_udp_answer_past_the_clients_size(
        tmp_path: Path) -> None:
    path = tmp_path / "example.test.zone"
    big = " ".join('"' + c * 200 + '"' for c in "ab")
    path.write_text(ZONE + f"big IN TXT {big}\n")
    local = LocalData(Refuse(), zones=[load_zone(path)])
    handler = QueryHandler(local, local=local, nsid=b"n" * 255)
    plain = ask("big.example.test", "TXT", nsid=False, payload=512)
    wire = ask("big.example.test", "TXT", payload=512)
    assert len(await slow(handler, plain, Transport.UDP)) <= 512  # fits without it
    out = await slow(handler, wire, Transport.UDP)
    assert len(out) <= 512 and dns.message.from_wire(out).flags & dns.flags.TC
    assert handler.route(wire, Transport.UDP) is None  # kept, but too long for 512
    full = await slow(handler, wire, Transport.TCP)
    assert nsid_of(full) == b"n" * 255 and dns.message.from_wire(full).answer
