"""fetch_chain against in-process TLS servers on loopback port 0 (trustme certificates)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from dnstls.errors import ConfigError, NetworkError, QueryTimeout
from dnstls.net.probe import (
    DEFAULT_PORT,
    ProbeResult,
    failure_reason,
    fetch_chain,
    format_address,
    parse_address,
    presented_chain,
)
from fakes import issue_chain


@dataclass
class Pki:
    root: trustme.CA
    chain_der: list[bytes]
    ca_file: Path
    server_ctx: ssl.SSLContext
    sni_seen: list[str | None] = field(default_factory=list)


@pytest.fixture(scope="module")
def pki_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Pki]:
    def make(alpn: list[str] | None = None) -> Pki:
        issued = issue_chain(tmp_path_factory.mktemp("pki") / "ca.pem",
                             "dns.example", "127.0.0.1", "::1")
        ctx = issued.server_ctx
        if alpn:
            ctx.set_alpn_protocols(alpn)
        pki = Pki(issued.root, issued.chain_der, issued.ca_file, ctx)

        def remember(_sock: Any, name: str | None, _ctx: Any) -> None:
            pki.sni_seen.append(name)

        ctx.sni_callback = remember
        return pki

    return make


@pytest.fixture(scope="module")
def pki(pki_factory: Callable[..., Pki]) -> Pki:
    return pki_factory(alpn=["dot"])


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


@contextlib.asynccontextmanager
async def serving(handler: Handler, *, ctx: ssl.SSLContext | None = None,
                  host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Run ``handler`` per connection on ``host`` port 0; yield the port. On exit every
    connection is cancelled and closed, so no transport outlives the test's loop."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        writers.append(writer)
        with contextlib.suppress(OSError, ssl.SSLError):
            await handler(reader, writer)

    server = await asyncio.start_server(handle, host, 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports run their connection_lost


def tls_server(ctx: ssl.SSLContext, host: str = "127.0.0.1"
               ) -> contextlib.AbstractAsyncContextManager[int]:
    """A TLS server that reads until the client leaves; yields its port."""
    return serving(_read_until_eof, ctx=ctx, host=host)


async def test_presented_chain_leaf_and_intermediate(pki: Pki) -> None:
    async with tls_server(pki.server_ctx) as port:
        result = await fetch_chain("127.0.0.1", port, server_name=None, timeout=5,
                                   verify=False)
    assert result.chain == tuple(pki.chain_der)
    assert len(result.chain) == 2
    assert result.tls_version == "TLSv1.3"
    assert result.cipher is not None and result.cipher.startswith("TLS_")
    assert result.alpn == "dot"
    assert result.verification.checked is False
    assert result.verified is False
    assert (result.host, result.port, result.server_name) == ("127.0.0.1", port, None)


async def test_no_alpn_when_server_has_none(pki_factory: Callable[..., Pki]) -> None:
    plain = pki_factory()
    async with tls_server(plain.server_ctx) as port:
        result = await fetch_chain("127.0.0.1", port, server_name=None, timeout=5,
                                   verify=False, alpn=())
    assert result.alpn is None


async def test_trusted_against_ca_file_with_name_and_sni(pki: Pki) -> None:
    pki.sni_seen.clear()
    async with tls_server(pki.server_ctx) as port:
        result = await fetch_chain("127.0.0.1", port, server_name="dns.example", timeout=5,
                                   cafile=str(pki.ca_file))
    check = result.verification
    assert (check.checked, check.trusted, check.anchor, check.name, check.reason) == (
        True, True, str(pki.ca_file), "dns.example", None)
    assert result.verified
    assert result.chain == tuple(pki.chain_der)
    assert pki.sni_seen == ["dns.example"]  # one handshake: it verified


async def test_name_mismatch_reports_reason_and_still_fetches(pki: Pki) -> None:
    pki.sni_seen.clear()
    async with tls_server(pki.server_ctx) as port:
        result = await fetch_chain("127.0.0.1", port, server_name="other.example", timeout=5,
                                   cafile=str(pki.ca_file))
    check = result.verification
    assert check.checked and not check.trusted
    assert check.reason is not None and "other.example" in check.reason
    assert result.chain == tuple(pki.chain_der)
    assert pki.sni_seen == ["other.example", "other.example"]  # verified, then fetched


async def test_untrusted_against_system_store_without_name(pki: Pki) -> None:
    pki.sni_seen.clear()
    async with tls_server(pki.server_ctx) as port:
        result = await fetch_chain("127.0.0.1", port, server_name=None, timeout=5)
    check = result.verification
    assert (check.checked, check.trusted, check.anchor, check.name) == (
        True, False, "system CA store", None)
    assert check.reason == "unable to get local issuer certificate"
    assert pki.sni_seen == [None, None]  # IP literal without --name: no SNI
    assert result.chain == tuple(pki.chain_der)


async def test_chain_only_verification_for_ip_literal(pki: Pki) -> None:
    async with tls_server(pki.server_ctx) as port:
        result = await fetch_chain("127.0.0.1", port, server_name=None, timeout=5,
                                   cafile=str(pki.ca_file))
    assert result.verified and result.verification.name is None


async def test_host_name_is_used_as_sni_and_name(pki: Pki) -> None:
    pki.sni_seen.clear()
    async with tls_server(pki.server_ctx) as port:
        result = await fetch_chain("localhost", port, server_name=None, timeout=5,
                                   cafile=str(pki.ca_file))
    assert result.server_name == "localhost"
    assert pki.sni_seen[0] == "localhost"
    assert not result.verified  # the certificate is for dns.example, not localhost
    assert "localhost" in (result.verification.reason or "")


async def test_ipv6_literal(pki: Pki) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server_cm = tls_server(pki.server_ctx, "::1")
        port = await server_cm.__aenter__()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        host, parsed_port = parse_address(f"[::1]:{port}")
        result = await fetch_chain(host, parsed_port, server_name="dns.example", timeout=5,
                                   cafile=str(pki.ca_file))
    finally:
        await server_cm.__aexit__(None, None, None)
    assert result.verified
    assert result.host == "::1"


async def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.pem: cannot load CA certificates"):
        await fetch_chain("127.0.0.1", 9, server_name=None, timeout=1,
                          cafile=str(tmp_path / "missing.pem"))


async def test_refused_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NetworkError, match=rf"cannot connect to 127.0.0.1:{port}: "
                                           "Connection refused"):
        await fetch_chain("127.0.0.1", port, server_name=None, timeout=5, verify=False)


async def test_silent_server_times_out() -> None:
    async with serving(_read_until_eof) as port:
        with pytest.raises(QueryTimeout, match=r"timed out after 0.2 s"):
            await fetch_chain("127.0.0.1", port, server_name=None, timeout=0.2)


async def test_non_tls_server_is_a_network_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serving(garbage) as port:
        with pytest.raises(NetworkError, match=r"TLS handshake with 127.0.0.1:\d+ failed: "):
            await fetch_chain("127.0.0.1", port, server_name=None, timeout=5, verify=False)


async def test_alert_without_a_reason_code_is_named() -> None:
    """A server that refuses ALPN "dot" answers the ClientHello with a fatal
    no_application_protocol alert (120). Python 3.11 on OpenSSL 3.0 has no name for it
    (``reason`` None, "[SSL] tlsv1 alert no application protocol (_ssl.c:1006)"); the
    error names it and its cause, without CPython's source line."""
    async def refuse_alpn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(5)  # the ClientHello's record header: it has arrived
        writer.write(bytes([0x15, 3, 3, 0, 2, 2, 120]))  # alert record: fatal, 120
        await writer.drain()
        await reader.read()

    async with serving(refuse_alpn) as port:
        with pytest.raises(NetworkError) as info:
            await fetch_chain("127.0.0.1", port, server_name=None, timeout=5, verify=False)
    assert str(info.value) == (f"TLS handshake with 127.0.0.1:{port} failed: tlsv1 alert no "
                               "application protocol: the server refused ALPN 'dot'")


@pytest.mark.parametrize(("exc", "reason"), [
    (ssl.SSLError(1, "[SSL] tlsv1 alert no application protocol (_ssl.c:1006)"),
     "tlsv1 alert no application protocol: the server refused ALPN 'dot'"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
     "wrong version number: the server answered with something that is not TLS (plain DNS "
     "or another service on this port?)"),
    (ssl.SSLError(1, "[SSL] some future alert (_ssl.c:123)"), "some future alert"),
    (ssl.SSLError(1, "made by hand"), "made by hand"),
])
def test_failure_reason_reads_the_code_from_the_text(exc: ssl.SSLError, reason: str) -> None:
    assert getattr(exc, "reason", None) is None  # as for codes missing from its table
    assert failure_reason(exc) == reason


# --- presented_chain on every Python -------------------------------------------------------

class _Cert:
    def __init__(self, der: bytes) -> None:
        self.der = der

    def public_bytes(self, encoding: int) -> bytes:
        assert encoding == ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]
        return self.der


class _Inner:
    def __init__(self, chain: list[_Cert] | None) -> None:
        self.chain = chain

    def get_unverified_chain(self) -> list[_Cert] | None:
        return self.chain


class _Py311:
    """Python 3.11/3.12: only the private ``_sslobj`` has the chain, as objects."""

    def __init__(self, chain: list[_Cert] | None) -> None:
        self._sslobj = _Inner(chain)


class _Py313:
    """Python 3.13+: a public method returning DER bytes."""

    def get_unverified_chain(self) -> list[bytes]:
        return [b"leaf", b"ca"]


class _NoChainApi:
    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        return b"leaf"


def test_presented_chain_variants() -> None:
    assert presented_chain(_Py313()) == [b"leaf", b"ca"]  # type: ignore[arg-type]
    assert presented_chain(_Py311([_Cert(b"leaf"), _Cert(b"ca")])) == [  # type: ignore[arg-type]
        b"leaf", b"ca"]
    assert presented_chain(_Py311(None)) == []  # type: ignore[arg-type]
    assert presented_chain(_NoChainApi()) == [b"leaf"]  # type: ignore[arg-type]


# --- addresses -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", DEFAULT_PORT)),
    ("192.0.2.1:8853", ("192.0.2.1", 8853)),
    ("[2001:db8::1]", ("2001:db8::1", DEFAULT_PORT)),
    ("[::1]:853", ("::1", 853)),
    ("2001:db8::1", ("2001:db8::1", DEFAULT_PORT)),
    ("dns.example", ("dns.example", DEFAULT_PORT)),
    (" dns.example:65535 ", ("dns.example", 65535)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty server address"),
    ("[::1", "missing ']'"),
    ("[::1]853", "expected ':PORT'"),
    ("[dns.example]:853", "is not an IPv6 address"),
    (":853", "missing host"),
    ("192.0.2.1:", "missing port"),
    ("192.0.2.1:0", "not a number from 1 to 65535"),
    ("192.0.2.1:65536", "not a number from 1 to 65535"),
    ("192.0.2.1:dot", "not a number from 1 to 65535"),
    ("[::1]:", "missing port"),
])
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_address(text)


def test_format_address_round_trips() -> None:
    assert format_address("::1", 853) == "[::1]:853"
    assert format_address("192.0.2.1", 53) == "192.0.2.1:53"
    assert parse_address(format_address("2001:db8::1", 8853)) == ("2001:db8::1", 8853)


def test_probe_result_verified_needs_a_check() -> None:
    from dnstls.net.probe import Verification

    unchecked = ProbeResult("h", 853, None, (), None, None, None, Verification(False, True))
    assert not unchecked.verified
