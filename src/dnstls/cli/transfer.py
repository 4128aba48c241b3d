"""``dnstls query`` zone transfers: ``AXFR``, ``IXFR=SERIAL`` as kdig 3.2.6 does them.

The transfer goes over TCP (or TLS with the ``+tls`` options, XFR-over-TLS, RFC 9103;
UDP only when ``+notcp`` says so, as kdig) on a connection of its own
(:func:`dnstls.net.xfr.transfer`), and is printed as it arrives, in kdig's layout:
``;; AXFR for ZONE.`` once the first message is in (``+header``), every answer record
of every message (with its TSIG record under ``+tsig``), then the footer
``;; Received N B (M messages, R records)`` (``+stats``). ``+short`` prints the
records' data, ``+json`` kdig's array of one RFC 8427 object per message.

A transfer that fails is reported as kdig reports it, on stderr, after what arrived
(kdig prints the footer all the same): ``;; ERROR: server replied with error
'REFUSED'``, ``;; ERROR: first answer record from ADDR@PORT(TCP) isn't SOA``,
``;; ERROR: reply verification for ... (failed to verify TSIG)``, ``;; WARNING:
response timeout for ...``, ``;; WARNING: can't receive reply from ...``, ``;; ERROR:
malformed reply packet from ...``, each followed by ``;; ERROR: failed to query server
ADDR@PORT(TCP)``. Exit status: 0 when the transfer completed, 4 when it ended in a
timeout, else 1 (3 for a failed TLS authentication, before anything is sent).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import dns.message
import dns.rdatatype

from dnstls.cli.output import (
    ReplyInfo,
    Style,
    TlsSession,
    render_chain_debug,
    render_kdig,
    render_xfr_footer,
    render_xfr_header,
    render_xfr_message,
    xfr_message_json,
)
from dnstls.errors import DnsTlsError, MalformedAnswer, QueryTimeout, TLSAuthenticationError
from dnstls.net.probe import Verification
from dnstls.net.xfr import TransferClosed
from dnstls.proto import xfr

if TYPE_CHECKING:
    from dnstls.cli.query import QueryOptions


async def run_transfer(opts: QueryOptions, out: TextIO | None = None,
                       err: TextIO | None = None) -> int:
    """Do the transfer ``opts`` asks for, print it as kdig does; the exit status."""
    from dnstls.cli import query as cli

    out = out or sys.stdout
    err = err or sys.stderr
    question = opts.transfer
    assert question is not None and opts.server is not None
    kind = "IXFR" if question.rdtype == dns.rdatatype.IXFR else "AXFR"
    message = cli.query_message(question, opts)
    client = cli.build_client(opts)
    spec = client.spec
    transport = spec.transport
    wire = client.wire_transfer(message, serial=question.serial)
    style = opts.style
    label = transport.upper()
    where = f"{spec.address}@{spec.port}({label})"
    loop = asyncio.get_running_loop()
    info = ReplyInfo(server=spec.address, port=spec.port, transport=label, elapsed_ms=0.0,
                     received=0, time=datetime.now(UTC))
    items: list[dict[str, Any]] = []
    started = client.transfer_started
    header = False
    failure: BaseException | None = None
    state: xfr.Transfer | None = None
    tls_details = None

    def start() -> None:
        nonlocal header
        if not header and style.format != "json":
            out.write(render_xfr_header(kind, question.name.to_text(), style))
        header = True

    try:
        async for item in client.transfer(message, serial=question.serial):
            if tls_details is None and item.connection.tls is not None:
                tls_details = item.connection.tls
                if opts.debug:
                    err.write(_chain_debug(tls_details, opts))
            if not header and style.qr and style.format != "json":
                out.write(_sent(wire, info, item.connection.tls, style))
            start()
            state = item.transfer
            now = datetime.now(UTC)
            info = _replace(info, elapsed_ms=item.elapsed * 1000.0, time=now,
                            received=item.size)
            if style.format == "json":
                items.append(xfr_message_json(item.message, info))
            else:
                out.write(render_xfr_message(item.message, style))
    except (DnsTlsError, OSError) as exc:
        failure = exc
        if isinstance(exc, TLSAuthenticationError) or not started:
            # not connected (or not authenticated): nothing was sent, nothing printed
            if opts.debug and isinstance(exc, TLSAuthenticationError):
                err.write(cli.debug_block([exc], opts))
            print(f"dnstls query: error: {cli.describe_failure(exc, opts)}", file=err)
            return cli.exit_status([exc])
        info = _replace(info, elapsed_ms=(loop.time() - started[0]) * 1000.0,
                        time=datetime.now(UTC))
        if isinstance(exc, xfr.TransferError) and exc.response is not None:
            if style.qr and not header and style.format != "json":
                out.write(_sent(wire, info, tls_details, style))
            start()
            if style.format == "json":
                items.append(xfr_message_json(exc.response,
                                              _replace(info, received=exc.size)))
            elif exc.kind == "tsig":  # kdig prints the message, then fails
                out.write(render_xfr_message(exc.response, style))
    if style.format == "json":
        document: Any = items
        if style.qr:  # kdig: {"queryMessage": {...}, "responseMessage": [...]}
            sent = dns.message.from_wire(wire, keyring=False)
            document = {"queryMessage": xfr_message_json(sent, _replace(
                info, received=len(wire))), "responseMessage": items}
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(render_xfr_footer(_replace(info, received=state.size if state else 0),
                                    state.messages if state else 0,
                                    state.records if state else 0, style))
    if failure is None:
        return cli.EXIT_ANSWERED
    for line in failure_lines(failure, where):
        err.write(line + "\n")
    return cli.EXIT_TIMEOUT if isinstance(failure, QueryTimeout) else cli.EXIT_FAILED


def failure_lines(failure: BaseException, where: str) -> list[str]:
    """kdig's lines for a transfer that broke after the query was sent."""
    if isinstance(failure, xfr.TransferError):
        if failure.kind == "no-soa":
            first = f";; ERROR: first answer record from {where} isn't SOA"
        elif failure.kind == "tsig":
            first = f";; ERROR: reply verification for {where} ({failure})"
        else:
            first = f";; ERROR: {failure}"
    elif isinstance(failure, QueryTimeout):
        first = f";; WARNING: response timeout for {where}"
    elif isinstance(failure, MalformedAnswer):
        first = f";; ERROR: malformed reply packet from {where}"
    elif isinstance(failure, TransferClosed):
        first = f";; WARNING: can't receive reply from {where}"
    else:
        first = f";; ERROR: {failure}"
    return [first, f";; ERROR: failed to query server {where}"]


def _sent(wire: bytes, info: ReplyInfo, tls: Any, style: Style) -> str:
    """``+qr``: the query as sent, as for a query (the TLS session line first over
    TLS, as kdig prints it), then an empty line."""
    session = (TlsSession(tls.version or "TLS", tls.cipher or "unknown", group=tls.group,
                          signature=tls.signature, chain=tls.chain)
               if tls is not None else None)
    sent = dns.message.from_wire(wire, keyring=False)
    return render_kdig(sent, _replace(info, received=len(wire), elapsed_ms=-1.0, tls=session),
                       style, incoming=False) + "\n"


def _replace(info: ReplyInfo, **changes: Any) -> ReplyInfo:
    return dataclasses.replace(info, **changes)


def _chain_debug(tls: Any, opts: QueryOptions) -> str:
    """``-d``: the chain the server presented, as for a query."""
    if tls.resumed:
        return ";; DEBUG: TLS, session resumed: no certificates presented\n"
    verification = (Verification(True, True, tls.anchor, tls.verified_name)
                    if tls.verified else None)
    return render_chain_debug(tls.chain, pins=opts.pins, verification=verification,
                              now=datetime.now(UTC))


__all__ = ["failure_lines", "run_transfer"]
