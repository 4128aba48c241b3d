"""``dnstls pin``: SPKI pins of files and servers, and the next key for a rollover.

Three modes, exactly one per run:

* ``dnstls pin FILE...`` -- the pin of every certificate (a PEM file may hold a whole
  chain), certificate request, public key or private key (PEM or DER; RSA, EC, Ed25519).
* ``dnstls pin --server ADDR[:PORT] [--name NAME]`` -- handshake with a DoT server
  (:func:`dnstls.net.probe.fetch_chain`) and print every presented certificate's pin,
  marked ``leaf`` or ``CA``, like ``kdig -d`` prints ``SHA-256 PIN:`` lines.
* ``dnstls pin --next-key OUT.pem [--current FILE]...`` -- generate the next private key
  (mode 0600, never overwriting) and print the current plus the next pin, so that the
  next pin is published before the key is switched (RFC 7858 §4.2 backup pin).

``--format`` turns the pins into a ready-to-paste pinset for dnstls (TOML), Stubby
(YAML), Knot Resolver (Lua) or kdig (command-line options); without it the output is a
labelled list for people.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from dnstls.errors import ConfigError
from dnstls.keys import (
    KEY_TYPES,
    KeyType,
    PinnedKey,
    generate_private_key,
    load_pinned_keys,
    parse_pinned_keys,
    pinned_certificate,
    write_private_key,
)
from dnstls.net.probe import DEFAULT_PORT, ProbeResult, fetch_chain, parse_address
from dnstls.proto.pins import PIN_DIGEST, spki_pin_of_key

FORMATS = ("dnstls", "stubby", "kresd", "kdig")
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PinEntry:
    """One pin to print, with the comment that says where it came from."""

    pin: str
    comment: str


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pin",
        help="print SPKI pins of certificates, keys or a server; prepare a key rollover",
        description="Print base64(SHA-256(SubjectPublicKeyInfo)) pins (RFC 7469 form) of "
                    "certificate and key files or of the chain a DNS-over-TLS server "
                    "presents, or generate the next key for a pin rollover.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="PEM or DER certificate(s), certificate request, public or "
                             "private key; - reads standard input")
    parser.add_argument("--server", metavar="ADDR[:PORT]",
                        help=f"fetch the chain from a DoT server (default port "
                             f"{DEFAULT_PORT}; IPv6 as [::1]:853)")
    parser.add_argument("--name", metavar="NAME",
                        help="TLS server name: sent as SNI and checked when verifying")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help=f"seconds for the whole probe (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="verify the server chain against this CA file instead of the "
                             "system store")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not check whether the server chain is trusted")
    parser.add_argument("--next-key", metavar="OUT.pem",
                        help="generate the next private key into OUT.pem (mode 0600)")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec",
                        help="type of the --next-key key: ec (P-256, default), rsa (3072 "
                             "bits) or ed25519")
    parser.add_argument("--current", action="append", default=[], metavar="FILE",
                        help="with --next-key: the current certificate or key (repeatable)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="print a ready-to-paste pinset for dnstls (TOML), stubby "
                             "(YAML), kresd (Lua) or kdig (+tls-pin=)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    modes = [bool(args.files), args.server is not None, args.next_key is not None]
    if sum(modes) != 1:
        return _usage("give FILE..., --server ADDR or --next-key OUT.pem (exactly one)")
    if args.current and args.next_key is None:
        return _usage("--current only goes with --next-key")
    if args.server is None and (args.name or args.ca_file or args.no_verify):
        return _usage("--name, --ca-file and --no-verify only go with --server")
    if args.files:
        return _files(args.files, args.format)
    if args.server is not None:
        return _server(args)
    return _next_key(args)


def _usage(message: str) -> int:
    print(f"dnstls pin: error: {message}", file=sys.stderr)
    return 2


# --- files ----------------------------------------------------------------------------

def _files(paths: Sequence[str], fmt: str | None) -> int:
    items = [item for path in paths for item in _load(path)]
    if fmt is not None:
        sys.stdout.write(render_pinset([_entry(item) for item in items], fmt))
        return 0
    for item in items:
        print(f"{item.pin}  {_role(item)}{item.label}")
    return 0


def _load(path: str) -> list[PinnedKey]:
    """The items of one FILE argument; ``-`` is standard input (``openssl ... | dnstls
    pin -``)."""
    if path == "-":
        return parse_pinned_keys(sys.stdin.buffer.read(), "stdin")
    return load_pinned_keys(path)


def _role(item: PinnedKey) -> str:
    return "CA " if item.kind == "certificate" and item.is_ca else ""


def _entry(item: PinnedKey, prefix: str = "") -> PinEntry:
    return PinEntry(item.pin, f"{prefix}{_role(item)}{item.label}")


# --- server ---------------------------------------------------------------------------

def _server(args: argparse.Namespace) -> int:
    try:
        host, port = parse_address(args.server)
    except ValueError as exc:
        return _usage(f"--server: {exc}")
    if not args.timeout > 0:
        return _usage("--timeout must be a positive number of seconds")
    result = asyncio.run(fetch_chain(host, port, server_name=args.name, timeout=args.timeout,
                                     cafile=args.ca_file, verify=not args.no_verify))
    where = f"{host}@{port}"
    if not result.chain:
        print(f"dnstls pin: error: {where} presented no certificate", file=sys.stderr)
        return 1
    items = [pinned_certificate(der, f"{where} #{i}")
             for i, der in enumerate(result.chain, start=1)]
    if args.format is not None:
        entries = [PinEntry(item.pin, f"{_position(i)} {item.subject or item.what} "
                                      f"({item.source})")
                   for i, item in enumerate(items)]
        sys.stdout.write(render_pinset(entries, args.format))
        return 0
    sys.stdout.write(render_server(result, items, now=datetime.now(UTC)))
    return 0


def _position(index: int) -> str:
    return "leaf" if index == 0 else "CA"


def render_server(result: ProbeResult, items: Sequence[PinnedKey], *,
                  now: datetime | None = None) -> str:
    """The human-readable report of ``dnstls pin --server`` (validity periods marked
    against ``now`` when given)."""
    where = f"{result.host}@{result.port}"
    session = ", ".join(part for part in (
        result.tls_version, result.cipher, result.group, result.signature,
        f"ALPN {result.alpn}" if result.alpn else "no ALPN",
        f"SNI {result.server_name}" if result.server_name else "no SNI") if part)
    lines = [f"# {where}: {session}", "# " + _verdict(result)]
    for index, item in enumerate(items):
        lines.append(f"#{index + 1} {_position(index):<4} {item.subject or '(empty subject)'}")
        lines.append(f"   issuer: {item.issuer or '(empty issuer)'}")
        lines.append(f"   valid: {item.validity(now)}")
        lines.append(f"   SHA-256 PIN: {item.pin}")
    return "\n".join(lines) + "\n"


def _verdict(result: ProbeResult) -> str:
    check = result.verification
    if not check.checked:
        return "chain not verified (--no-verify)"
    against = f"against {check.anchor}"
    if check.name:
        against += f" for {check.name}"
    else:
        against += " (no name checked)"
    if check.trusted:
        return f"chain trusted {against}"
    return f"chain NOT trusted {against}: {check.reason}"


# --- next key -------------------------------------------------------------------------

def _next_key(args: argparse.Namespace) -> int:
    current = [item for path in args.current for item in load_pinned_keys(path)]
    key_type = cast(KeyType, args.key_type)
    key = generate_private_key(key_type)
    write_private_key(args.next_key, key)
    pin = spki_pin_of_key(key.public_key())
    print(f"dnstls pin: wrote the next {key_type} private key to {args.next_key} "
          f"(mode 0600); publish the pinset below before switching to it", file=sys.stderr)
    name = os.path.basename(args.next_key)
    if args.format is not None:
        entries = [_entry(item, "current: ") for item in current]
        entries.append(PinEntry(pin, f"next: private key ({name})"))
        sys.stdout.write(render_pinset(entries, args.format))
        return 0
    for item in current:
        print(f"current  {item.pin}  {_role(item)}{item.label}")
    print(f"next     {pin}  private key ({name})")
    return 0


# --- pinset formats ---------------------------------------------------------------------

def _comment(text: str) -> str:
    """A label safe inside a one-line comment of any of the formats."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def render_pinset(entries: Sequence[PinEntry], fmt: str) -> str:
    """Ready-to-paste pinset text in ``fmt`` (one of :data:`FORMATS`), newline-terminated.

    * ``dnstls`` -- TOML for an ``[[upstream]]`` table, one inline table per pin;
    * ``stubby`` -- the ``tls_pubkey_pinset`` YAML list of an upstream_recursive_servers
      entry;
    * ``kresd`` -- the ``pin_sha256`` field of a ``policy.TLS_FORWARD`` target;
    * ``kdig`` -- one ``+tls-pin=`` option per pin, on one line.
    """
    if fmt == "dnstls":
        lines = ["tls_pubkey_pinset = ["]
        lines += [f'  {{digest = "{PIN_DIGEST}", value = "{e.pin}"}},  # {_comment(e.comment)}'
                  for e in entries]
        lines.append("]")
    elif fmt == "stubby":
        lines = ["tls_pubkey_pinset:"]
        for e in entries:
            lines += [f"  # {_comment(e.comment)}", f'  - digest: "{PIN_DIGEST}"',
                      f"    value: {e.pin}"]
    elif fmt == "kresd":
        lines = ["pin_sha256 = {"]
        lines += [f"  '{e.pin}',  -- {_comment(e.comment)}" for e in entries]
        lines.append("}")
    elif fmt == "kdig":
        lines = [" ".join(f"+tls-pin={e.pin}" for e in entries)]
    else:
        raise ConfigError("--format", f"unknown format {fmt!r}; expected one of "
                                      + ", ".join(FORMATS))
    return "\n".join(lines) + "\n"
