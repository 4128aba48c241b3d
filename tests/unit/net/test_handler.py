"""QueryHandler.route: local data answered on the fast path exactly as the message path
would answer it (built once by dnspython, then served from the kept wire bytes)."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Rejection, Transport
from dnstls.resolver.base import Refuse
from dnstls.resolver.local import LocalData, ddr_records, load_zone

BIG = " ".join('"' + c * 200 + '"' for c in "abc")
ZONE = f"""$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.1
alias IN CNAME www
big IN TXT {BIG}
sub IN NS ns.sub
ns.sub IN A 192.0.2.8
"""


@pytest.fixture
def handler(tmp_path: Path) -> QueryHandler:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    local = LocalData(Refuse(), zones=[load_zone(path)], ddr=ddr_records("dns.test", 853))
    return QueryHandler(local, local=local, keepalive=30.0)


async def slow(handler: QueryHandler, wire: bytes, transport: Transport) -> bytes:
    parsed = handler.parse(wire, transport)
    assert isinstance(parsed, dns.message.Message)
    return await handler.answer(parsed, transport, None)


def make(name: str, rdtype: str = "A", *, qid: int = 4660, edns: bool = True,
         pad: int = 0, ecs: bool = False, keepalive: bool = False) -> bytes:
    options: list[dns.edns.Option] = []
    if ecs:
        options.append(dns.edns.ECSOption("0.0.0.0", 0))  # Stubby's default
    if keepalive:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b""))
    return dns.message.make_query(name, rdtype, id=qid, use_edns=0 if edns else None,
                                  options=options or None, pad=pad).to_wire()


@pytest.mark.parametrize("name,rdtype", [
    ("www.example.test", "A"), ("WwW.ExAmPlE.tEsT", "A"), ("www.example.test", "MX"),
    ("nope.example.test", "A"), ("alias.example.test", "A"), ("example.test", "SOA"),
    ("_dns.resolver.arpa", "SVCB"),
])
@pytest.mark.parametrize("transport", [Transport.TLS, Transport.TCP, Transport.UDP])
@pytest.mark.parametrize("variant", ["plain", "no-edns", "padded", "ecs+padded+keepalive"])
async def test_local_fast_path_equals_message_path(handler: QueryHandler, name: str,
                                                   rdtype: str, transport: Transport,
                                                   variant: str) -> None:
    kwargs = {"plain": {}, "no-edns": {"edns": False}, "padded": {"pad": 128},
              "ecs+padded+keepalive": {"pad": 128, "ecs": True, "keepalive": True}}[variant]
    first = make(name, rdtype, qid=1, **kwargs)  # type: ignore[arg-type]
    assert handler.route(first, transport) is None  # not built yet: the message path
    await slow(handler, first, transport)
    again = make(name, rdtype, qid=2, **kwargs)  # type: ignore[arg-type]
    fast = handler.route(again, transport)
    assert isinstance(fast, bytes)
    assert fast == await slow(handler, again, transport)


async def test_other_names_are_not_local(handler: QueryHandler) -> None:
    wire = make("www.example.org")
    assert handler.route(wire, Transport.TLS) is None  # no cache, no forwarder: message path
    assert handler.local is not None and len(handler.local.answers) == 0  # type: ignore[attr-defined]


async def test_answers_without_soa_are_kept_too(handler: QueryHandler) -> None:
    """Local answers are the same every time: one without SOA (NXDOMAIN under
    resolver.arpa, a blocked name's) is kept like the others (Cache.keeps_all), where a
    forwarded one could not be (RFC 2308 §5)."""
    wire = make("other.resolver.arpa")  # NXDOMAIN under resolver.arpa
    first = await slow(handler, wire, Transport.TLS)
    assert handler.route(wire, Transport.TLS) == first


async def test_a_referral_is_kept_as_built(handler: QueryHandler) -> None:
    """A delegation in a local zone: kept like a positive answer (the cache keeps
    referrals), then served from its bytes, the same answer."""
    wire = make("x.sub.example.test")
    first = await slow(handler, wire, Transport.TLS)
    assert dns.message.from_wire(first).authority  # the referral
    assert handler.route(wire, Transport.TLS) == first


async def test_udp_answer_too_large_takes_the_truncating_path(handler: QueryHandler) -> None:
    wire = make("big.example.test", "TXT", edns=False)
    await slow(handler, wire, Transport.UDP)
    assert handler.route(wire, Transport.UDP) is None  # 512-byte limit: message path truncates
    truncated = dns.message.from_wire(await slow(handler, wire, Transport.UDP))
    assert truncated.flags & dns.flags.TC
    assert isinstance(handler.route(wire, Transport.TLS), bytes)  # streams take it whole


async def test_local_answers_keep_the_zone_ttls(handler: QueryHandler) -> None:
    wire = make("www.example.test")
    await slow(handler, wire, Transport.TLS)
    handler.clock = lambda: 1e9  # the shared cache's clock does not age local answers
    fast = handler.route(wire, Transport.TLS)
    assert isinstance(fast, bytes)
    assert dns.message.from_wire(fast).answer[0].ttl == 300


async def test_query_logging_takes_the_message_path(handler: QueryHandler) -> None:
    wire = make("www.example.test")
    await slow(handler, wire, Transport.TLS)
    handler.log_queries = True
    assert handler.route(wire, Transport.TLS) is None


async def test_the_answer_store_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    local = LocalData(Refuse(), zones=[load_zone(path)], max_answers=10)
    handler = QueryHandler(local, local=local)
    for i in range(50):  # a flood of random names under the zone: NXDOMAIN each
        await slow(handler, make(f"n{i}.example.test"), Transport.TLS)
    assert len(local.answers) == 10
    assert isinstance(handler.route(make("n49.example.test"), Transport.TLS), bytes)
    assert handler.route(make("n0.example.test"), Transport.TLS) is None  # evicted


@pytest.mark.parametrize("rdtype,opcode,rcode", [
    ("AXFR", dns.opcode.QUERY, dns.rcode.REFUSED), ("IXFR", dns.opcode.QUERY, dns.rcode.REFUSED),
    # other opcodes: NOTIMP, which carried no OPT at all (only the question was read)
    ("SOA", dns.opcode.NOTIFY, dns.rcode.NOTIMP), ("SOA", dns.opcode.UPDATE, dns.rcode.NOTIMP),
    ("A", dns.opcode.UPDATE, dns.rcode.NOTIMP), ("A", dns.opcode.IQUERY, dns.rcode.NOTIMP),
    ("A", dns.opcode.STATUS, dns.rcode.NOTIMP), ("A", 3, dns.rcode.NOTIMP),
    ("A", 6, dns.rcode.NOTIMP), ("A", 15, dns.rcode.NOTIMP)])
def test_rejections_on_a_stream_are_padded_and_carry_keepalive(
        handler: QueryHandler, rdtype: str, opcode: int, rcode: int) -> None:
    # RFC 7830 §4: a padded query gets a padded response, refused or not (such answers
    # went out unpadded: their length told an observer what was refused)
    query = dns.message.make_query("example.test", rdtype, id=77, use_edns=0, pad=128,
                                   options=[dns.edns.GenericOption(
                                       dns.edns.OptionType.KEEPALIVE, b"")])
    query.set_opcode(opcode)
    for transport, padded in ((Transport.TLS, True), (Transport.TCP, False)):
        parsed = handler.parse(query.to_wire(), transport)
        assert isinstance(parsed, Rejection) and parsed.wire is not None
        response = _as_query(parsed.wire)
        assert (response.id, response.rcode(), response.opcode()) == (77, rcode, opcode)
        otypes = {o.otype for o in response.options}
        assert dns.edns.OptionType.KEEPALIVE in otypes
        assert (dns.edns.OptionType.PADDING in otypes) is padded
        if padded:
            assert len(parsed.wire) % 468 == 0
    udp = handler.parse(query.to_wire(), Transport.UDP)  # UDP: as before, no padding
    assert isinstance(udp, Rejection) and udp.wire is not None
    assert dns.edns.OptionType.PADDING not in {o.otype for o in _as_query(udp.wire).options}


def _as_query(wire: bytes) -> dns.message.Message:
    """``wire`` parsed as a QUERY's response, whatever its opcode (dnspython reads an
    UPDATE's by UPDATE's rules), the opcode put back."""
    message = dns.message.from_wire(wire[:2] + bytes((wire[2] & 0x87,)) + wire[3:])
    message.set_opcode(dns.opcode.Opcode.make((wire[2] >> 3) & 0xF))
    return message


def test_a_badvers_answer_on_tls_is_padded(handler: QueryHandler) -> None:
    query = dns.message.make_query("example.test", "A", use_edns=1, pad=128)
    parsed = handler.parse(query.to_wire(), Transport.TLS)
    assert isinstance(parsed, Rejection) and parsed.wire is not None
    response = dns.message.from_wire(parsed.wire)
    assert response.rcode() == dns.rcode.BADVERS and len(parsed.wire) % 468 == 0


def _zone_with(tmp_path: Path, records: str) -> QueryHandler:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE + records)
    local = LocalData(Refuse(), zones=[load_zone(path)])
    return QueryHandler(local, local=local, keepalive=30.0)


async def test_a_local_answer_larger_than_the_first_askers_payload_is_kept(
        tmp_path: Path) -> None:
    # ~2.6 KB of TXT: more than the 1232-byte EDNS payload of the query that builds it.
    # The answer store rendered it with dnspython's default limit (the query's payload)
    # and dropped it: every later query for it took the message path again.
    strings = " ".join('"' + str(i) * 250 + '"' for i in range(10))
    handler = _zone_with(tmp_path, f"huge IN TXT {strings}\n")
    first = await slow(handler, make("huge.example.test", "TXT", qid=1), Transport.TCP)
    assert len(first) > 2500 and not dns.message.from_wire(first).flags & dns.flags.TC
    again = make("huge.example.test", "TXT", qid=2)
    fast = handler.route(again, Transport.TCP)
    assert isinstance(fast, bytes) and fast == await slow(handler, again, Transport.TCP)
    assert handler.route(again, Transport.UDP) is None  # over the payload: truncated there
    udp = dns.message.from_wire(await slow(handler, again, Transport.UDP))
    assert udp.flags & dns.flags.TC and not udp.answer


async def test_a_local_rrset_too_large_for_a_stream_gets_tc(tmp_path: Path) -> None:
    # 300 x 255 bytes: more than the 65,535 bytes a stream can frame (RFC 7766 §8)
    records = "".join(f'wide IN TXT "{i:03d}{"x" * 251}"\n' for i in range(300))
    handler = _zone_with(tmp_path, records)
    wire = make("wide.example.test", "TXT")
    for transport in (Transport.TCP, Transport.TLS, Transport.UDP):
        out = await slow(handler, wire, transport)
        response = dns.message.from_wire(out)
        assert response.flags & dns.flags.TC and not response.answer
        assert handler.route(wire, transport) is None  # never kept


def test_refuse_is_padded_on_tls_and_counted(handler: QueryHandler) -> None:
    # access control's REFUSED: padded for a padded query on DoT, keepalive on streams,
    # no padding and no keepalive over UDP; never resolved (local data would answer)
    query = dns.message.make_query("www.example.test", "A", id=5, use_edns=0, pad=128,
                                   options=[dns.edns.GenericOption(
                                       dns.edns.OptionType.KEEPALIVE, b"")])
    for transport, padded, keepalive in ((Transport.TLS, True, True),
                                         (Transport.TCP, False, True),
                                         (Transport.UDP, False, False)):
        refused = handler.refuse(query.to_wire(), transport)
        assert refused.wire is not None
        response = dns.message.from_wire(refused.wire)
        assert response.rcode() == dns.rcode.REFUSED and not response.answer
        otypes = [o.otype for o in response.options]
        assert dns.edns.OptionType.EDE in otypes
        assert (dns.edns.OptionType.PADDING in otypes) is padded
        assert (dns.edns.OptionType.KEEPALIVE in otypes) is keepalive
        if padded:
            assert len(refused.wire) % 468 == 0
        assert handler.responses[(transport.value, "REFUSED")] == 1
    assert handler.refuse(b"\0" * 5, Transport.TLS).fatal
