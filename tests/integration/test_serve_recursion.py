"""``dnstls serve`` with ``[recursion]``: the iterator wired behind the cache, stub zones
(Unbound's ``stub-zone``) pointing at fake authoritative servers on loopback ports, forward
zones still forwarded, failures as SERVFAIL with an Extended DNS Error, the metrics and
the control commands that describe where recursion starts.

The root hints name an address where nothing listens: only stub zones and forward zones
answer here. The real hierarchy (nsd on 127.x.y.z:53, Unbound as the reference) is
tests/interop/test_recursion_unbound.py.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import Fakes, Served, ServeFactory, udp_spec
from prometheus_client import CollectorRegistry, generate_latest
from test_control_serve import control

from dnstls.metrics import ServiceCollector
from dnstls.proto import dnstap
from fakes import FakeUpstream
from fakes.dnstap_collector import Collector

pytestmark = pytest.mark.timeout(60)

SOA = "ns.corp.example. hostmaster.corp.example. 1 3600 600 86400 300"


def authoritative(query: dns.message.Message) -> dns.message.Message:
    """corp.example. as its authoritative server answers: www A, alias CNAME www, the rest
    NXDOMAIN with the SOA; AA set."""
    response = dns.message.make_response(query, pad=0)
    response.flags |= dns.flags.AA
    question = query.question[0]
    name = question.name.to_text().lower()
    if name == "www.corp.example." and question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.80"))
    elif name == "alias.corp.example.":
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", "www.corp.example."))
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text("www.corp.example.", 300, "IN", "A",
                                                       "192.0.2.80"))
    elif name in ("corp.example.", "www.corp.example."):
        response.authority.append(dns.rrset.from_text("corp.example.", 300, "IN", "SOA", SOA))
    else:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(dns.rrset.from_text("corp.example.", 300, "IN", "SOA", SOA))
    return response


def dead_address() -> str:
    """A loopback address with nothing on port 53 (the root hints' only server)."""
    for last in range(2, 250):
        address = f"127.53.{last}.1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, 53))
            except OSError:
                continue
            return address
    raise AssertionError("no free loopback address")


class Hints(NamedTuple):
    path: Path
    root: str  # the one root server's address (nothing listens there)


@pytest.fixture
def hints(tmp_path: Path) -> Hints:
    path = tmp_path / "root.hints"
    root = dead_address()
    path.write_text(f".  3600000 NS a.root.test.\na.root.test. 3600000 A {root}\n")
    return Hints(path, root)


async def start(serve: ServeFactory, hints: Hints, auth: FakeUpstream, sock: str = "",
                *, log_queries: bool = False, **sections: Any) -> Served:
    """serve recursing; ``log_queries`` puts every miss on the message path (the
    query log needs the parsed query), else the iterator answers on the wire path."""
    server: dict[str, Any] = {"control": sock} if sock else {}
    if log_queries:
        server["log_queries"] = True
    return await serve(server=server, recursion={
        "enabled": True, "root_hints": str(hints.path), "do_not_query_localhost": False},
        stub_zone=[{"name": "corp.example.", "addresses": [f"127.0.0.1@{auth.port}"]}],
        **sections)


async def ask(s: Served, transport: str, name: str, rdtype: str = "A",
              **kw: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)
    response = await s.ask(transport, query)
    assert response.id == query.id
    return response


def shown(response: dns.message.Message) -> list[str]:
    return [f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rr}"
            for rrset in response.answer for rr in rrset]


@pytest.mark.parametrize("path", ["wire", "message"])
@pytest.mark.parametrize("transport", ["udp", "dot"])
async def test_stub_zone_answers_through_the_iterator(serve: ServeFactory, fakes: Fakes,
                                                      hints: Hints, transport: str,
                                                      path: str) -> None:
    auth = await fakes(answer=authoritative, also_tcp=True)
    s = await start(serve, hints, auth, log_queries=path == "message")
    first_round = 0
    for round_ in range(2):  # the second from the cache: the authority is not asked again
        if round_:
            first_round = len(auth.received)
        www = await ask(s, transport, "www.corp.example.")
        assert www.rcode() == dns.rcode.NOERROR
        assert shown(www) == ["www.corp.example. A 192.0.2.80"]
        assert www.flags & dns.flags.RA and not www.flags & dns.flags.AA
        alias = await ask(s, transport, "alias.corp.example.")
        assert shown(alias) == ["alias.corp.example. CNAME www.corp.example.",
                                "www.corp.example. A 192.0.2.80"]
        nx = await ask(s, transport, "nothere.corp.example.")
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert [r.rdtype for r in nx.authority] == [dns.rdatatype.SOA]
        nodata = await ask(s, transport, "www.corp.example.", "MX")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    asked = [(str(r.message.question[0].name), r.message.flags & dns.flags.RD)
             for r in auth.received]
    # each question asked in the first round (more than once only if the fake was
    # slower than the iterator's retransmission timeout), then the cache
    assert len({(r.message.question[0].name, r.message.question[0].rdtype)
                for r in auth.received}) == 4 and len(asked) == first_round
    assert not any(rd for _, rd in asked)  # authorities are asked without RD
    sent = len(asked)
    stats = s.service.statistics()["recursion"]
    assert stats["resolutions"] == 4 and stats["sends"] == sent and stats["failures"] == 0
    # www, nothere and the MX NODATA taken as bytes; the CNAME chain read (message path)
    assert stats["wire_answers"] == (3 if path == "wire" else 0)
    assert s.service.statistics()["wire"]["forwarded"] == (4 if path == "wire" else 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(s.service.statistics))
    text = generate_latest(registry).decode()
    assert "dnstls_recursion_resolutions_total 4.0" in text
    assert f"dnstls_recursion_sends_total {sent}.0" in text
    assert f'dnstls_recursion_authority_total{{kind="udp"}} {sent}.0' in text


async def test_unreachable_root_is_servfail_with_ede(serve: ServeFactory, fakes: Fakes,
                                                     hints: Hints) -> None:
    auth = await fakes(answer=authoritative)
    s = await start(serve, hints, auth)
    response = await ask(s, "udp", "www.example.org.", use_edns=0)
    assert response.rcode() == dns.rcode.SERVFAIL
    codes = [o.code for o in response.options if isinstance(o, dns.edns.EDEOption)]
    assert codes and codes[0] in (dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                                  dns.edns.EDECode.NETWORK_ERROR)


async def test_forward_zones_still_forward(serve: ServeFactory, fakes: Fakes,
                                           hints: Hints) -> None:
    auth = await fakes(answer=authoritative)
    upstream = await fakes()
    s = await start(serve, hints, auth, forward_zone=[
        {"name": "fwd.example.", "upstream": [{"uri": f"udp://127.0.0.1:{upstream.port}"}]}])
    response = await ask(s, "udp", "a.fwd.example.")
    assert shown(response) == ["a.fwd.example. A 192.0.2.1"]
    assert upstream.received[0].message.flags & dns.flags.RD  # a forwarder: RD kept
    assert not auth.received


async def test_control_lists_where_recursion_starts(serve: ServeFactory, fakes: Fakes,
                                                    hints: Hints, tmp_path: Path) -> None:
    auth = await fakes(answer=authoritative)
    upstream = await fakes()
    sock = str(tmp_path / "control.sock")
    await start(serve, hints, auth, sock, forward_zone=[
        {"name": "fwd.example.", "upstream": [{"uri": f"udp://127.0.0.1:{upstream.port}"}]}])
    root = hints.root
    stubs = (await control(sock, "list_stubs")).splitlines()
    assert stubs == [f". IN stub prime a.root.test. {root}",
                     f"corp.example. IN stub noprime 127.0.0.1@{auth.port}"]
    assert (await control(sock, "list_forwards")).splitlines() == [
        f"fwd.example. IN forward udp://127.0.0.1:{upstream.port}"]
    assert (await control(sock, "lookup", "www.example.org")).splitlines() == [
        "The following name servers are used for lookup of www.example.org.",
        "resolved by recursion, from the root servers:", "a.root.test.", root]
    assert (await control(sock, "lookup", "www.corp.example")).splitlines()[1:] == [
        "resolved by recursion, from stub zone corp.example.:", f"127.0.0.1@{auth.port}"]
    assert (await control(sock, "lookup", "x.fwd.example")).splitlines()[1] == \
        "forwarding request (forward zone fwd.example.):"


async def test_forwarding_lists_no_stubs(serve: ServeFactory, fakes: Fakes,
                                         tmp_path: Path) -> None:
    sock = str(tmp_path / "control.sock")
    await serve(upstreams=[udp_spec(await fakes())], server={"control": sock})
    assert await control(sock, "list_stubs") == ""


async def test_dnstap_logs_the_resolver_exchanges(serve: ServeFactory, fakes: Fakes,
                                                  hints: Hints) -> None:
    """RESOLVER_QUERY and RESOLVER_RESPONSE (Unbound's dnstap-log-resolver-*): what the
    authority received, with the ID it was sent with, and its answer, from its address
    and port; the forwarder's messages stay off."""
    auth = await fakes(answer=authoritative)
    with tempfile.TemporaryDirectory(prefix="dt") as tmp:  # AF_UNIX: a short path
        path = Path(tmp) / "tap.sock"
        collector = await Collector.start(path)
        try:
            s = await start(serve, hints, auth, dnstap={
                "enabled": True, "socket_path": str(path), "log_resolver_query": True,
                "log_resolver_response": True})
            await collector.wait_sessions(1)
            assert shown(await ask(s, "udp", "www.corp.example.")) == [
                "www.corp.example. A 192.0.2.80"]
            messages = await collector.wait_frames(2)
        finally:
            await collector.aclose()
    assert [m["message_type"] for m in messages] == ["RESOLVER_QUERY", "RESOLVER_RESPONSE"]
    sent = dns.message.from_wire(messages[0]["query_message"])
    assert sent == auth.received[0].message  # the ID, question and flags it got
    assert not sent.flags & dns.flags.RD
    for message in messages:
        assert message["socket_protocol"] == dnstap.UDP
        assert message["response_address"] == socket.inet_aton("127.0.0.1")
        assert message["response_port"] == auth.port
    assert shown(dns.message.from_wire(messages[1]["response_message"])) == [
        "www.corp.example. A 192.0.2.80"]
