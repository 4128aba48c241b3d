"""``[local] data`` (Unbound's local-data): records answered here, never forwarded.

A record in a loaded zone (here the default zone ``home.arpa``, or a zone file) joins
that zone; any other record makes its owner a transparent name: exactly that name is
answered here (the type, the CNAME, or NODATA without SOA), names below it and every
other name are forwarded. Compared with Unbound 1.17 on loopback by hand (the same
answers, flags and TTLs; Unbound answers ANY for such a name with NODATA, dnstls with
its records, as for its zones). A recording upstream shows what leaves.
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest
from conftest import Fakes, ServeFactory, stub_with_local, udp_spec

from fakes import FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)

DATA = ["nas.lan. A 192.168.1.10", "nas.lan. 60 TXT hello", "www.lan. CNAME nas.lan.",
        "printer.home.arpa. A 192.168.1.20", "nas.lan. A 192.168.1.11"]

# (name, type) -> (rcode, AA, answer lines, authority owners)
EXPECTED = [
    (("nas.lan.", "A"), ("NOERROR", True,
                         ["nas.lan. 3600 IN A 192.168.1.10", "nas.lan. 3600 IN A 192.168.1.11"],
                         [])),
    (("NAS.Lan.", "TXT"), ("NOERROR", True, ['NAS.Lan. 60 IN TXT "hello"'], [])),
    (("nas.lan.", "AAAA"), ("NOERROR", True, [], [])),  # NODATA, no SOA (no zone)
    (("www.lan.", "A"), ("NOERROR", True, ["www.lan. 3600 IN CNAME nas.lan."], [])),
    (("printer.home.arpa.", "A"), ("NOERROR", True,
                                   ["printer.home.arpa. 3600 IN A 192.168.1.20"], [])),
    (("printer.home.arpa.", "AAAA"), ("NOERROR", True, [], ["home.arpa."])),
    (("scanner.home.arpa.", "A"), ("NXDOMAIN", True, [], ["home.arpa."])),
]


@pytest.fixture
async def fake(fakes: Fakes) -> FakeUpstream:
    return await fakes()


def received(fake: FakeUpstream) -> list[str]:
    return [str(r.message.question[0].name) for r in fake.received]


def wrong_in(response: dns.message.Message, name: str,
             expected: tuple[str, bool, list[str], list[str]]) -> list[str]:
    rcode, aa, answer, authority = expected
    got = (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
           sorted(line for rrset in response.answer for line in rrset.to_text().splitlines()),
           [rrset.name.to_text() for rrset in response.authority])
    return [] if got == (rcode, aa, sorted(answer), authority) else [f"{name}: {got}"]


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_local_data_is_answered_here(serve: ServeFactory, fake: FakeUpstream,
                                           log_queries: bool) -> None:
    served = await serve(upstreams=[udp_spec(fake)],
                         server={"log_queries": log_queries}, local={"data": DATA})
    wrong = []
    for transport in ("udp", "tcp", "dot"):
        for _round in range(2):  # the second answer: the kept rendering (fast path)
            for (name, rdtype), expected in EXPECTED:
                query = dns.message.make_query(name, rdtype, use_edns=0)
                response = await served.ask(transport, query)
                assert response.id == query.id
                wrong += [f"{transport}: {w}" for w in wrong_in(response, name, expected)]
    assert wrong == [], "\n".join(wrong)
    assert received(fake) == []
    # names below a transparent name, and others, are forwarded
    for name in ("sub.nas.lan.", "lan.", "www.example.com."):
        response = await served.ask("udp", dns.message.make_query(name, "A"))
        assert not response.flags & dns.flags.AA
    assert received(fake) == ["sub.nas.lan.", "lan.", "www.example.com."]


def test_a_bad_line_is_one_error_naming_it() -> None:
    from dnstls import config
    from dnstls.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^local\.data\[1\]: 'nas\.lan A 1\.2\.3': "):
        config.load(overrides={"local": {"data": ["ok.lan A 192.0.2.1", "nas.lan A 1.2.3"]}})


async def test_the_stub_answers_local_data(pki: TestPKI) -> None:
    async with stub_with_local(pki, {"data": DATA}) as ((host, port), upstream):
        wrong = []
        for (name, rdtype), expected in EXPECTED:
            response = await asyncio.to_thread(
                dns.query.udp, dns.message.make_query(name, rdtype), host, port=port,
                timeout=5)
            wrong += wrong_in(response, name, expected)
        assert wrong == [], "\n".join(wrong)
        assert received(upstream) == []
