"""``dnstls.Client`` without a server (options, validation, query building), and the
examples of ``docs/client.md`` run against a fake DoT server on loopback."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import pytest

import dnstls
from dnstls.client import Client, SyncClient, make_query
from dnstls.errors import ConfigError, NetworkError
from fakes import FakeUpstream, TestPKI
from fakes.primary import SCRIPTS, Primary

PIN = "irpvrlmxGn2NHC+4HcsikesCkV7BFfolX2wA5TFtkLs="
DOCS = Path(__file__).resolve().parents[2] / "docs" / "client.md"


# ---------------------------------------------------------------- options


def test_uri_and_options_become_the_spec(tmp_path: Path) -> None:
    ca_file = str(TestPKI.create(tmp_path).ca_file)
    client = Client("tls://[2001:db8::1]#dns.example", pins=[PIN], ca_file=ca_file,
                    timeout=1.5, padding=256, max_in_flight=500, max_connections=2)
    spec = client.spec
    assert (spec.address, spec.port, spec.transport) == ("2001:db8::1", 853, "tls")
    assert spec.tls_auth_name == "dns.example" and spec.tls_pubkey_pinset == (PIN,)
    assert spec.ca_file == ca_file and client.verify
    assert (spec.connect_timeout, spec.query_timeout) == (1.5, 1.5)
    assert spec.tls_query_padding_blocksize == 256
    assert (spec.max_queries_per_connection, spec.max_connections) == (500, 2)
    assert repr(client) == "<Client tls://[2001:db8::1]:853#dns.example>"
    assert client.statistics() == {"name": "tls://[2001:db8::1]:853#dns.example",
                                   "transport": "tls"}


def test_defaults() -> None:
    client = Client("tls://192.0.2.1#dns.example")
    assert client.timeout == 3.0 and client.keepalive and client.verify
    assert client.spec.tls_query_padding_blocksize == 128
    assert client.spec.max_connections == 1
    assert not Client("tls://192.0.2.1", pins=[PIN]).verify  # pins alone: no CA check
    assert Client("udp://192.0.2.1").spec.port == 53
    assert Client("tcp://192.0.2.1:5353").spec.port == 5353
    assert Client("tls://192.0.2.1#x", padding=False).spec.tls_query_padding_blocksize == 0


@pytest.mark.parametrize(("uri", "options", "field", "text"), [
    ("tls://192.0.2.1", {}, "upstream", "authenticate the server by name"),
    ("tls://192.0.2.1#x", {"opportunistic": True}, "opportunistic", "does not authenticate"),
    ("tls://192.0.2.1", {"opportunistic": True, "pins": [PIN]}, "opportunistic", ""),
    ("tcp://192.0.2.1", {"pins": [PIN]}, "pins", "need a tls:// upstream"),
    ("tls://192.0.2.1", {"pins": ["no pe"]}, "upstream.pins[0]", "not valid base64"),
    ("tls://dns.example", {}, "upstream", "is not an IP address"),
    ("https://192.0.2.1", {}, "upstream", "unknown transport"),
    ("tls://192.0.2.1#x", {"timeout": 0}, "timeout", "positive"),
    ("tls://192.0.2.1#x", {"padding": 5000}, "padding", "0..1024"),
    ("tls://192.0.2.1#x", {"padding_length": -1}, "padding_length", "0..4096"),
    ("tls://192.0.2.1#x", {"max_in_flight": 0}, "max_in_flight", "1..65535"),
    ("tls://192.0.2.1#x", {"max_connections": 0}, "max_connections", "1..1024"),
    # a CA file that cannot be loaded is a setting to fix, found by the constructor (not
    # a CertificateError at the first query, which says "the server is untrusted")
    ("tls://192.0.2.1#x", {"ca_file": "/nonexistent/ca.pem"}, "ca_file",
     "/nonexistent/ca.pem: cannot load CA certificates: No such file or directory"),
    ("tls://192.0.2.1#x", {"ca_file": __file__}, "ca_file", "no certificate or crl found"),
])
def test_bad_options_raise_config_error(uri: str, options: dict[str, object], field: str,
                                        text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Client(uri, **options)  # type: ignore[arg-type]
    assert info.value.field == field
    assert text in info.value.message


def test_make_query_flags() -> None:
    query = make_query("example.com", "AAAA", "CH", dnssec=True, cd=True, rd=False)
    assert query.question[0].rdtype == dns.rdatatype.AAAA
    assert query.question[0].rdclass == 3
    assert query.ednsflags & dns.flags.DO and query.flags & dns.flags.CD
    assert not query.flags & dns.flags.RD
    assert query.edns == 0 and query.payload == 1232
    assert make_query("example.com").flags & dns.flags.RD


def test_wire_query_is_what_each_transport_sends() -> None:
    """``wire_query``: the client's EDNS options first, then keepalive over streams and
    padding over TLS only (what ``dnstls query +qr`` prints)."""
    nsid = dns.edns.GenericOption(dns.edns.NSID, b"")
    query = make_query("example.com", "A")
    query.id = 4242

    def options(wire: bytes) -> list[int]:
        message = dns.message.from_wire(wire)
        assert message.id == 4242 and message.payload == 1232
        return [int(option.otype) for option in message.options]

    assert options(Client("udp://192.0.2.1", edns_options=[nsid]).wire_query(query)) == [3]
    tcp = Client("tcp://192.0.2.1", edns_options=[nsid]).wire_query(query)
    assert options(tcp) == [3, 11]  # keepalive asked for by default
    tls = Client("tls://192.0.2.1#dns.example", edns_options=[nsid]).wire_query(query)
    assert options(tls) == [3, 11, 12] and len(tls) % 128 == 0
    exact = Client("tls://192.0.2.1#dns.example", keepalive=False,
                   padding_length=20).wire_query(query)
    assert options(exact) == [12] and dns.message.from_wire(exact).options[0].to_wire() == (
        bytes(20))


async def test_a_query_needs_one_question() -> None:
    client = Client("tls://192.0.2.1#x")
    with pytest.raises(ValueError, match="exactly one question"):
        await client.exchange(dns.message.Message())
    await client.aclose()
    with pytest.raises(NetworkError, match="closed"):
        await client.query("example.com")


async def test_truthy_options_reach_the_pool_as_bools() -> None:
    """The (compiled) pool checks its attributes' types: the client hands it bools."""
    client = Client("tls://127.0.0.1#dns.example", keepalive=1, verify=1)  # type: ignore[arg-type]
    stream = client._adapter()
    assert stream.ask_keepalive is True  # type: ignore[union-attr]
    await client.aclose()


def test_sync_client_validates_before_starting_a_thread() -> None:
    before = threading.active_count()
    with pytest.raises(ConfigError):
        SyncClient("tls://192.0.2.1")
    assert threading.active_count() == before
    assert repr(SyncClient("udp://192.0.2.1", timeout=1)).startswith("<SyncClient udp://")


def test_package_exports() -> None:
    for name in ("Client", "SyncClient", "query_sync", "Reply", "QueryTimeout", "PinMismatch",
                 "CertificateError", "NetworkError", "TLSAuthenticationError", "DnsTlsError"):
        assert hasattr(dnstls, name), name
    assert issubclass(dnstls.PinMismatch, dnstls.TLSAuthenticationError)


# ---------------------------------------------------------------- docs/client.md examples


def doc_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)


@pytest.fixture
def threaded_dot(tmp_path: Path) -> Iterator[tuple[FakeUpstream, TestPKI]]:
    """A DoT fake for dns.test served by its own loop in a thread (the examples call
    asyncio.run themselves)."""
    pki = TestPKI.create(tmp_path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeUpstream("tls", ssl_context=pki.server_context())
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake, pki
    finally:
        asyncio.run_coroutine_threadsafe(fake.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def localize(code: str, fake: FakeUpstream, pki: TestPKI) -> str:
    """Point an example at the fake: its address, name, pin and CA file."""
    here = f"127.0.0.1:{fake.port}"
    for old, new in (("tls://1.1.1.1#cloudflare-dns.com", f"tls://{here}#dns.test"),
                     ("tls://192.0.2.53#dns.example", f"tls://{here}#dns.test"),
                     ("tls://192.0.2.53", f"tls://{here}"),
                     (PIN, TestPKI.leaf_pin(pki.leaf)),
                     ("/etc/dnstls/ca.pem", pki.ca_file)):
        code = code.replace(old, new)
    assert "1.1.1.1" not in code and "192.0.2.53" not in code, code  # never a real server
    return code


def test_docs_examples_run(threaded_dot: tuple[FakeUpstream, TestPKI],
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    fake, pki = threaded_dot
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)  # the "system store" trusts the fake
    examples = doc_examples()
    assert len(examples) == 8
    outputs = []
    primary = Primary(SCRIPTS["axfr"], pki.server_context())  # the zone transfer example's
    try:
        for index, code in enumerate(examples):
            namespace: dict[str, object] = {"__name__": f"docs_client_example_{index}"}
            code = code.replace("tls://192.0.2.53#ns.example",
                                f"tls://127.0.0.1:{primary.port}#dns.test")
            exec(compile(localize(code, fake, pki), f"docs/client.md example {index + 1}",
                         "exec"), namespace)
            outputs.append(capsys.readouterr().out)
    finally:
        primary.close()
    first, pinned, many, prepared, detailed, transfer, errors, sync = outputs
    assert transfer.endswith("2 messages, 4 records\n")
    assert "example.com. 300 IN AAAA 2001:db8::1" in first
    assert "www.example.com. 300 IN A 192.0.2.1" in pinned
    assert "example.net ['192.0.2.1']" in many and "1 connection" in many
    assert prepared.startswith("0 ")  # NOERROR, the ID check passed inside
    assert "over TLSv1." in detailed
    assert f"leaf pin: {TestPKI.leaf_pin(pki.leaf)} verified for dns.test" in detailed
    assert errors.startswith("expected one of ('AAAA")
    assert f"'{TestPKI.leaf_pin(pki.leaf)}'" in errors
    assert sync.count("2001:db8::1") == 1 and "192.0.2.1" in sync
    questions = [r.message.question[0] for r in fake.received]
    assert [(q.name.to_text(), dns.rdatatype.to_text(q.rdtype)) for q in questions[:2]] == [
        ("example.com.", "AAAA"), ("www.example.com.", "A")]


def test_edns_version_and_no_edns() -> None:
    query = make_query("example.com", "A")
    query.id = 7
    tls = Client("tls://192.0.2.1#dns.example", edns=None).wire_query(query)
    assert dns.message.from_wire(tls).edns == -1  # no OPT: no keepalive, no padding
    assert dns.message.from_wire(Client("udp://192.0.2.1", edns=2).wire_query(query)).edns == 2
    for bad in (256, -1, True, "0"):
        with pytest.raises(ConfigError, match=r"^edns: "):
            Client("udp://192.0.2.1", edns=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^edns: None .* cannot carry edns_options"):
        Client("udp://192.0.2.1", edns=None,
               edns_options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
