"""``dnstls.Client``: ask one DNS-over-TLS (or TCP/UDP) server questions from Python.

A :class:`Client` wraps one upstream adapter of the pool (:mod:`dnstls.net.pool`), so
it inherits everything the resolver service relies on:

* **pipelining** (RFC 7766 §6.2.1.1, RFC 7858 §3.3): concurrent :meth:`Client.query`
  calls share the connection -- by default exactly one -- each under a random message
  ID not in flight on it; answers are matched by ID *and* question, in any order;
* **authentication** (RFC 8310): by name against a CA store (``tls://ADDR#NAME``), by
  SPKI pins (``pins=``), by both, or by the chain alone (``verify=True``) -- or, only if
  asked for with ``opportunistic=True``, not at all. A failure is a typed error from
  :mod:`dnstls.errors` raised before any query is written: :class:`~dnstls.errors.PinMismatch`
  (naming the expected and the presented pins) or :class:`~dnstls.errors.CertificateError`;
* **padding** of queries to 128-byte blocks over TLS (RFC 8467), and edns-tcp-keepalive
  (RFC 7828) so that idle connections close before the server closes them;
* **one deadline per query** (``timeout``): :class:`~dnstls.errors.QueryTimeout` when it
  passes, :class:`~dnstls.errors.NetworkError` when the server cannot be reached.

The outgoing query is rendered afresh from the caller's message (header flags, the
question, the EDNS buffer size and DO bit); EDNS options the caller put in it are *not*
sent, the transport's own padding and keepalive are. The answer is the server's, under
the caller's message ID.

:class:`SyncClient` and :func:`query_sync` are for scripts without an event loop: they
run a private loop in a background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from dnstls.errors import ConfigError, NetworkError, QueryTimeout
from dnstls.net import xfr
from dnstls.net.pool import ConnectionDetails, Reply, StreamUpstream
from dnstls.net.tls_client import TlsDetails, check_ca_file
from dnstls.net.udp_upstream import UdpUpstream
from dnstls.net.xfr import XfrMessage
from dnstls.proto import xfr as proto_xfr
from dnstls.proto.upstream import prepare_query
from dnstls.upstreams import UpstreamSpec, parse_upstream_uri

__all__ = ["Client", "ConnectionDetails", "Reply", "SyncClient", "TlsDetails", "XfrMessage",
           "query_sync"]

DEFAULT_TIMEOUT = 3.0
DEFAULT_MAX_IN_FLIGHT = 100
CLOSE_GRACE = 0.25  # seconds aclose() waits for the server's close_notify
PADDING_BLOCK = 128  # RFC 8467 §4.1, recommended query block size

T = TypeVar("T")


def make_query(name: str | dns.name.Name, rdtype: str | int = "A",
               rdclass: str | int = "IN", *, dnssec: bool = False, cd: bool = False,
               rd: bool = True, payload: int = 1232) -> dns.message.Message:
    """A query message as :meth:`Client.query` sends it (EDNS, RD set by default)."""
    message = dns.message.make_query(name, dns.rdatatype.RdataType.make(rdtype),
                                     dns.rdataclass.RdataClass.make(rdclass),
                                     use_edns=0, payload=payload, want_dnssec=dnssec)
    if not rd:
        message.flags &= ~dns.flags.RD
    if cd:
        message.flags |= dns.flags.CD
    return message


class Client:
    """A client for one DNS server, used as ``async with Client(...) as client:``.

    ``upstream`` is a URI: ``tls://ADDR[:PORT][#NAME]`` (DNS over TLS, port 853; the
    certificate must carry NAME, checked against ``ca_file`` or the system CA store),
    ``tcp://ADDR[:PORT]`` or ``udp://ADDR[:PORT]`` (port 53; UDP falls back to TCP on
    truncation). ADDR is an IP address, IPv6 in brackets.

    Keyword options:

    * ``pins`` -- base64 SHA-256 SPKI pins; one certificate of the presented chain (leaf
      or CA) must match. With a name, both checks must pass.
    * ``ca_file`` -- PEM CA certificates to verify against instead of the system store.
    * ``verify`` -- check the chain against the CA store; default: when a name is given.
      ``verify=True`` without a name checks the chain only.
    * ``opportunistic`` -- encrypt without authenticating (RFC 8310 §4). Without a name,
      pins, ``verify=True`` or this, a ``tls://`` URI is refused (:class:`ConfigError`).
    * ``sni`` -- the TLS server name to send when it is not the checked name.
    * ``timeout`` -- seconds per query (connection set-up included), default 3.
    * ``padding`` -- ``True`` (128-byte blocks over TLS, RFC 8467), ``False``, or a
      block size in bytes; ``padding_length`` instead asks for a padding option of
      exactly that many bytes (kdig's ``+padding=N``). Queries are padded over TLS only.
    * ``keepalive`` -- ask for edns-tcp-keepalive (TCP and TLS), default on.
    * ``max_connections`` (default 1) and ``max_in_flight`` (queries in flight per
      connection, default 100): further queries wait for a slot within their timeout.
    * ``tcp_fallback`` -- UDP: ask again over TCP when the answer is truncated (TC=1),
      default on; off, the truncated answer is returned (kdig's ``+ignore``).
    * ``edns_options`` -- ``dns.edns.Option`` objects sent in every query's OPT record,
      before the transport's own keepalive and padding (kdig's ``+nsid``, ``+subnet``,
      ``+cookie``, ``+ednsopt``). Default none: a message's own options are never sent.
    * ``edns`` -- the EDNS version of every query's OPT record (default 0); None sends no
      OPT record at all, so no options, padding or keepalive either (kdig's ``+noedns``).
    """

    def __init__(self, upstream: str, *, pins: Iterable[str] = (), ca_file: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, padding: bool | int = True,
                 keepalive: bool = True, verify: bool | None = None,
                 opportunistic: bool = False, sni: str | None = None,
                 max_connections: int = 1, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 padding_length: int | None = None, tcp_fallback: bool = True,
                 edns_options: Iterable[dns.edns.Option] = (),
                 edns: int | None = 0) -> None:
        if not timeout > 0:
            raise ConfigError("timeout", f"{timeout!r}: expected a positive number of seconds")
        self.timeout = timeout
        self.spec = _build_spec(upstream, pins=tuple(pins), ca_file=ca_file, timeout=timeout,
                                padding=padding, opportunistic=opportunistic,
                                max_connections=max_connections, max_in_flight=max_in_flight)
        if verify is None:
            verify = self.spec.tls_auth_name is not None
        _check_authentication(self.spec, verify=verify)
        if ca_file is not None and verify and self.spec.transport == "tls":
            check_ca_file(ca_file)
        self.verify = verify
        self.sni = sni
        self.keepalive = keepalive
        if padding_length is not None and not 0 <= padding_length <= 4096:
            raise ConfigError("padding_length", f"{padding_length!r} out of range 0..4096")
        self.padding_length = padding_length
        self.tcp_fallback = tcp_fallback
        self.edns_options = _options_wire(edns_options)
        if edns is not None and (isinstance(edns, bool) or not isinstance(edns, int)
                                 or not 0 <= edns <= 255):
            raise ConfigError("edns", f"{edns!r}: expected an EDNS version 0..255 or None")
        if edns is None and self.edns_options:
            raise ConfigError("edns", "None (no OPT record) cannot carry edns_options")
        self.edns = edns
        self._upstream: StreamUpstream | UdpUpstream | None = None
        self._closed = False
        #: loop times the transfer queries were sent at (:meth:`transfer`)
        self.transfer_started: list[float] = []

    def __repr__(self) -> str:
        return f"<Client {self.spec.name}>"

    # -- lifecycle
    async def __aenter__(self) -> Client:
        self._adapter()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (waits briefly for TLS close_notify)."""
        self._closed = True
        if self._upstream is not None:
            upstream, self._upstream = self._upstream, None
            await upstream.aclose()

    def _adapter(self) -> StreamUpstream | UdpUpstream:
        if self._closed:
            raise NetworkError(f"{self.spec.name}: client is closed")
        if self._upstream is None:
            if self.spec.transport == "udp":
                udp = UdpUpstream(self.spec)
                udp.tcp_fallback = bool(self.tcp_fallback)
                udp.extra_options = self.edns_options
                udp.edns_version = self.edns
                self._upstream = udp
            else:
                # bool(): the compiled pool checks its attributes' types (a truthy 1 would
                # raise TypeError there)
                stream = StreamUpstream(self.spec, sni=self.sni,
                                        verify=bool(self.verify) if self.spec.transport == "tls"
                                        else None)
                stream.ask_keepalive = bool(self.keepalive)
                stream.close_grace = CLOSE_GRACE
                stream.pad_length = self.padding_length
                stream.extra_options = self.edns_options
                stream.edns_version = self.edns
                self._upstream = stream
        return self._upstream

    # -- queries
    async def query(self, name: str | dns.name.Name, rdtype: str | int = "A",
                    rdclass: str | int = "IN", *, dnssec: bool = False, cd: bool = False,
                    rd: bool = True,
                    timeout: float | None = None,  # noqa: ASYNC109 - becomes the pool's deadline
                    ) -> dns.message.Message:
        """Ask for ``name``/``rdtype``/``rdclass``; returns the server's answer.

        ``dnssec`` sets the DO bit, ``cd`` checking disabled, ``rd=False`` clears
        recursion desired. Raises :class:`~dnstls.errors.QueryTimeout`,
        :class:`~dnstls.errors.NetworkError`, :class:`~dnstls.errors.ProtocolError` or a
        :class:`~dnstls.errors.TLSAuthenticationError` (``PinMismatch``,
        ``CertificateError``).
        """
        message = make_query(name, rdtype, rdclass, dnssec=dnssec, cd=cd, rd=rd)
        return (await self.exchange(message, timeout=timeout)).message

    async def query_message(self, message: dns.message.Message, *,
                            timeout: float | None = None,  # noqa: ASYNC109 - see query()
                            ) -> dns.message.Message:
        """Send a prepared query; the answer carries ``message.id`` (see the module
        docstring for what of the message is sent)."""
        return (await self.exchange(message, timeout=timeout)).message

    async def exchange(self, message: dns.message.Message, *,
                       timeout: float | None = None,  # noqa: ASYNC109 - see query()
                       ) -> Reply:
        """Send ``message``; returns a :class:`~dnstls.net.pool.Reply`: the answer (under
        ``message.id``), its size on the wire, the round-trip time and the connection
        that carried it (with the TLS session details and the presented chain)."""
        if len(message.question) != 1:
            raise ValueError("a query needs exactly one question")
        upstream = self._adapter()
        budget = self.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + budget
        reply = await upstream.exchange_detailed(message, deadline=deadline)
        reply.message.id = message.id
        return reply

    def wire_query(self, message: dns.message.Message) -> bytes:
        """``message`` as :meth:`exchange` sends it on this client's transport, under
        ``message.id`` (on the wire the transport picks an ID not in flight): the
        header flags, the question, the EDNS header, then :attr:`edns_options`, the
        keepalive option over TCP and TLS when asked for, and padding over TLS. What
        ``dnstls query +qr`` prints. A UDP query asked again over TCP after a truncated
        answer is not shown."""
        if self.spec.transport == "udp":
            return prepare_query(message, qid=message.id, extra=self.edns_options,
                                 edns_version=self.edns)
        tls = self.spec.transport == "tls"
        return prepare_query(message, qid=message.id,
                             pad=self.spec.tls_query_padding_blocksize if tls else 0,
                             keepalive=bool(self.keepalive),
                             pad_length=self.padding_length if tls else None,
                             extra=self.edns_options, edns_version=self.edns)

    async def transfer(self, message: dns.message.Message, *, serial: int | None = None,
                       timeout: float | None = None,  # noqa: ASYNC109 - per message
                       ) -> AsyncIterator[XfrMessage]:
        """A zone transfer: ``message`` asks AXFR (RFC 5936) or IXFR (RFC 1995, with
        ``serial``, the version the caller has) for a zone; yields the answer's
        messages (:class:`~dnstls.net.xfr.XfrMessage`: the message, its size, the time
        since the query, the connection, the transfer's counts) until the last one.

        The transfer runs on a connection of its own (not the pipelined one), over this
        client's transport -- TLS authenticated as for queries (XFR-over-TLS, RFC
        9103) -- with ``timeout`` (default the client's) for each message. A query
        signed with ``message.use_tsig(key)`` has every message verified (RFC 8945
        §5.3.1). Raises :class:`~dnstls.proto.xfr.TransferError` (error RCODE, no SOA
        first, TSIG), :class:`~dnstls.errors.QueryTimeout`,
        :class:`~dnstls.net.xfr.TransferClosed` and the connection errors of
        :meth:`exchange`."""
        if len(message.question) != 1 or message.question[0].rdtype not in (
                dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            raise ValueError("a transfer asks one AXFR or IXFR question")
        ixfr = message.question[0].rdtype == dns.rdatatype.IXFR
        if ixfr != (serial is not None):
            raise ValueError("an IXFR needs the serial the client has (serial=), an AXFR none")
        wire = self.wire_transfer(message, serial=serial)
        spec = self.spec
        async for item in xfr.transfer(
                spec, message, wire, per_message=self.timeout if timeout is None else timeout,
                sni=self.sni, verify=bool(self.verify) if spec.transport == "tls" else None,
                started=self.transfer_started):
            yield item

    def wire_transfer(self, message: dns.message.Message, *,
                      serial: int | None = None) -> bytes:
        """The transfer query as :meth:`transfer` sends it (signed now if ``message``
        has a TSIG key): :meth:`wire_query`'s form, with the IXFR's SOA in the
        authority section (``ZONE 0 IN SOA . . SERIAL 0 0 0 0``, as kdig sends it)."""
        transport = self.spec.transport
        tls = transport == "tls"
        return proto_xfr.query_wire(
            message, qid=message.id, serial=serial,
            pad=self.spec.tls_query_padding_blocksize if tls else 0,
            keepalive=bool(self.keepalive) and transport != "udp",
            pad_length=self.padding_length if tls else None,
            extra=self.edns_options, edns_version=self.edns)

    def statistics(self) -> dict[str, Any]:
        """Counters of the underlying upstream adapter (queries, connections, errors)."""
        if self._upstream is None:
            return {"name": self.spec.name, "transport": self.spec.transport}
        return self._upstream.statistics()


def _options_wire(options: Iterable[dns.edns.Option]) -> bytes:
    """EDNS options in wire form (code, length, data each), checked to fit an OPT."""
    parts = []
    for option in options:
        if not isinstance(option, dns.edns.Option):
            raise ConfigError("edns_options", f"{option!r} is not a dns.edns.Option")
        data = option.to_wire() or b""
        parts.append(struct.pack("!HH", int(option.otype), len(data)) + data)
    wire = b"".join(parts)
    if len(wire) > 60000:
        raise ConfigError("edns_options", f"{len(wire)} bytes of options do not fit a query")
    return wire


def _build_spec(upstream: str, *, pins: tuple[str, ...], ca_file: str | None, timeout: float,
                padding: bool | int, opportunistic: bool, max_connections: int,
                max_in_flight: int) -> UpstreamSpec:
    spec = parse_upstream_uri(upstream, pins=pins, ca_file=ca_file, path="upstream",
                              strict=False)
    if isinstance(padding, bool):
        block = PADDING_BLOCK if padding else 0
    elif 0 <= padding <= 1024:
        block = padding
    else:
        raise ConfigError("padding", f"{padding!r}: expected True, False or 0..1024 bytes")
    if not 1 <= max_connections <= 1024:
        raise ConfigError("max_connections", f"{max_connections!r} out of range 1..1024")
    if not 1 <= max_in_flight <= 65535:
        raise ConfigError("max_in_flight", f"{max_in_flight!r} out of range 1..65535")
    return replace(spec, name="", opportunistic=opportunistic and spec.transport == "tls",
                   connect_timeout=timeout, query_timeout=timeout,
                   tls_query_padding_blocksize=block, max_connections=max_connections,
                   max_queries_per_connection=max_in_flight)


def _check_authentication(spec: UpstreamSpec, *, verify: bool) -> None:
    if spec.transport != "tls":
        if spec.tls_pubkey_pinset:
            raise ConfigError("pins", f"{spec.transport} cannot be authenticated: pins "
                                      "need a tls:// upstream")
        return
    if spec.opportunistic and (verify or spec.tls_pubkey_pinset):
        raise ConfigError("opportunistic", "an opportunistic client does not authenticate: "
                                           "drop the name, pins and verify, or "
                                           "opportunistic=True")
    if not (spec.opportunistic or verify or spec.tls_pubkey_pinset):
        raise ConfigError("upstream", f"{spec.uri}: authenticate the server by name "
                                      "(tls://ADDR#NAME), pins=[...] or verify=True; or "
                                      "set opportunistic=True to encrypt without "
                                      "authentication")


# ---------------------------------------------------------------- synchronous wrapper


class SyncClient:
    """A :class:`Client` for code without an event loop (scripts, the REPL).

    It runs a private event loop in a daemon thread; every method blocks until done.
    Use as a context manager (``with SyncClient("tls://...#name") as client:``) or call
    :meth:`close`. Takes the same arguments as :class:`Client`. Thread-safe: calls from
    several threads are pipelined over the same connection.
    """

    def __init__(self, upstream: str, **options: Any) -> None:
        self._client = Client(upstream, **options)  # validates before a thread exists
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"dnstls-client {self._client.spec.name}",
                                        daemon=True)
        self._thread.start()
        self._closed = False

    def __repr__(self) -> str:
        return f"<SyncClient {self._client.spec.name}>"

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise NetworkError(f"{self._client.spec.name}: client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # pragma: no cover - loop stopped under us
            raise QueryTimeout("query cancelled") from None

    def query(self, name: str | dns.name.Name, rdtype: str | int = "A",
              rdclass: str | int = "IN", **options: Any) -> dns.message.Message:
        """Blocking :meth:`Client.query`."""
        return self._run(self._client.query(name, rdtype, rdclass, **options))

    def query_message(self, message: dns.message.Message, *,
                      timeout: float | None = None) -> dns.message.Message:
        """Blocking :meth:`Client.query_message`."""
        return self._run(self._client.query_message(message, timeout=timeout))

    def exchange(self, message: dns.message.Message, *, timeout: float | None = None) -> Reply:
        """Blocking :meth:`Client.exchange`."""
        return self._run(self._client.exchange(message, timeout=timeout))

    def statistics(self) -> dict[str, Any]:
        return self._client.statistics()

    def close(self) -> None:
        """Close the connection and stop the background loop (idempotent)."""
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()


def query_sync(upstream: str, name: str | dns.name.Name, rdtype: str | int = "A",
               rdclass: str | int = "IN", **options: Any) -> dns.message.Message:
    """One query, one connection, blocking: ``query_sync("tls://...#name", "example.com",
    "AAAA", timeout=2)``. Options are those of :class:`Client` (``pins``, ``ca_file``,
    ``timeout``, ...) plus ``dnssec``, ``cd`` and ``rd`` of :meth:`Client.query`."""
    query_options = {key: options.pop(key) for key in ("dnssec", "cd", "rd") if key in options}
    with SyncClient(upstream, **options) as client:
        return client.query(name, rdtype, rdclass, **query_options)
