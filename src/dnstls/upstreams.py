"""Upstream resolvers: what to forward to, and how to reach it.

An upstream is written as a URI on the command line and as a TOML table in the
configuration file; both become one frozen :class:`UpstreamSpec`.

URI syntax (IPv6 addresses in brackets)::

    udp://ADDR[:PORT]                 plain DNS over UDP (falls back to TCP on TC=1)
    tcp://ADDR[:PORT]                 plain DNS over TCP, connections reused
    tls://ADDR[:PORT][#AUTH_NAME]     DNS over TLS (RFC 7858), port 853 by default

TOML (Stubby vocabulary)::

    [[upstream]]
    address = "1.1.1.1"
    port = 853
    transport = "tls"
    tls_auth_name = "cloudflare-dns.com"
    tls_pubkey_pinset = [{ digest = "sha256", value = "base64..." }]
    tls_pubkey_pinset_mode = "enforce"   # or "report"
    # or: uri = "tls://1.1.1.1#cloudflare-dns.com"

Forward zones (Unbound's ``forward-zone:``) send the names at or under a zone to upstreams
of their own; names under no zone go to ``[[upstream]]``::

    [[forward_zone]]
    name = "corp.example."
    strategy = "ordered"          # optional, as forward.strategy
    [[forward_zone.upstream]]
    uri = "udp://10.0.0.53"

On the command line: ``--forward-zone corp.example=udp://10.0.0.53,udp://10.0.0.54``.

Strict authentication (RFC 8310 §5) is the default: a DoT upstream needs an
authentication name (checked against the CA store) and/or a pinset. ``opportunistic =
true`` encrypts without authenticating. Errors name the dotted field path
(``upstream[2].tls_pubkey_pinset[0].value``).

``tls_pubkey_pinset_mode = "report"`` is for rolling a pinset out: the upstream is
authenticated by name against the CA, and a pin mismatch is logged and counted but not
enforced (:func:`dnstls.net.tls_client.pins_report_only`). It never weakens
authentication: it needs ``tls_auth_name`` (refused here without one, and enforced
anyway by the TLS client whenever no name was checked against a CA).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from dnstls.errors import ConfigError
from dnstls.proto.pins import PIN_DIGEST, parse_pin

TransportName = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[str, ...] = get_args(TransportName)
PinsetMode = Literal["enforce", "report"]
PIN_MODES: tuple[str, ...] = get_args(PinsetMode)
REPORT_NEEDS_NAME = ("report-only pins need tls_auth_name: without a name checked against "
                     "a CA the upstream would not be authenticated at all")
DEFAULT_PORTS: dict[str, int] = {"udp": 53, "tcp": 53, "tls": 853}

DEFAULT_IDLE_TIMEOUT = 8.0  # below Cloudflare's ~10 s server-side idle timeout
DEFAULT_MAX_CONNECTIONS = 2
DEFAULT_MAX_QUERIES_PER_CONNECTION = 100  # in flight (pipelining), like Unbound/dnsdist
DEFAULT_CONNECT_TIMEOUT = 3.0  # TCP connect + TLS handshake
DEFAULT_QUERY_TIMEOUT = 2.0  # one attempt on one upstream before failing over


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One upstream resolver. ``name`` (its URI) is used in logs, metrics and errors."""

    address: str
    port: int
    transport: TransportName = "tls"
    tls_auth_name: str | None = None
    tls_pubkey_pinset: tuple[str, ...] = ()
    tls_pubkey_pinset_mode: PinsetMode = "enforce"
    ca_file: str | None = None
    opportunistic: bool = False
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_queries_per_connection: int = DEFAULT_MAX_QUERIES_PER_CONNECTION
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    tls_query_padding_blocksize: int = 128
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.uri)

    @property
    def uri(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        text = f"{self.transport}://{host}:{self.port}"
        if self.transport == "tls" and self.tls_auth_name:
            text += f"#{self.tls_auth_name}"
        return text

    @property
    def key(self) -> tuple[str, int, str, str | None]:
        """Connections are shared only between identical (address, port, transport, name)."""
        return (self.address, self.port, self.transport, self.tls_auth_name)


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(path, message)


def _check_address(text: str, path: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _fail(path, f"{text!r} is not an IP address (upstreams are given by "
                          "address; put the TLS name after '#')") from None


def check_auth_name(text: str, path: str) -> str:
    """A host name to authenticate (trailing dot dropped); ConfigError naming ``path``."""
    name = text.strip().rstrip(".")
    if not name or len(name) > 253 or any(
            not label or len(label) > 63 for label in name.split(".")):
        raise _fail(path, f"{text!r} is not a valid host name")
    return name


def check_pinset_mode(text: str, path: str) -> PinsetMode:
    """``"enforce"`` or ``"report"``; anything else raises ConfigError naming ``path``."""
    if text == "enforce":
        return "enforce"
    if text == "report":
        return "report"
    raise _fail(path, f"{text!r}: expected \"enforce\" or \"report\"")


def _pins(values: Iterable[str], path: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, value in enumerate(values):
        try:
            out.append(parse_pin(value))
        except ValueError as exc:
            raise _fail(f"{path}[{i}]", str(exc)) from None
    return tuple(out)


def parse_upstream_uri(text: str, *, pins: Sequence[str] = (), ca_file: str | None = None,
                       path: str = "upstream", strict: bool = True) -> UpstreamSpec:
    """Parse ``udp://``, ``tcp://`` or ``tls://ADDR[:PORT][#AUTH_NAME]``.

    Raises :class:`ConfigError` naming ``path`` and what is wrong with ``text``.
    ``strict=False`` skips the "strict TLS needs a name or a pin" check (used when a
    TOML table adds those next to its ``uri``).
    """
    raw = text.strip()
    if "://" not in raw:
        raise _fail(path, f"{text!r}: expected udp://, tcp:// or tls://ADDR[:PORT][#NAME]")
    netloc = raw.split("://", 1)[1].split("#", 1)[0].split("/", 1)[0]
    if netloc.count(":") > 1 and not netloc.startswith("["):
        raise _fail(path, f"{text!r}: put an IPv6 address in brackets, e.g. tls://[::1]:853")
    try:
        parts = urllib.parse.urlsplit(raw)
        port_part = parts.port
    except ValueError as exc:
        raise _fail(path, f"{text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in TRANSPORTS:
        raise _fail(path, f"{text!r}: unknown transport {scheme!r} "
                          "(expected udp, tcp or tls)")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise _fail(path, f"{text!r}: unexpected path, query or user part")
    host = parts.hostname
    if not host:
        raise _fail(path, f"{text!r}: missing address")
    address = _check_address(host, path)
    port = DEFAULT_PORTS[scheme] if port_part is None else port_part
    if not 0 < port < 65536:
        raise _fail(path, f"{text!r}: port {port} out of range")
    auth_name: str | None = None
    if parts.fragment:
        if scheme != "tls":
            raise _fail(path, f"{text!r}: '#NAME' applies only to tls://")
        auth_name = check_auth_name(parts.fragment, path)
    transport: TransportName = "udp" if scheme == "udp" else "tcp" if scheme == "tcp" else "tls"
    spec = UpstreamSpec(address=address, port=port, transport=transport,
                        tls_auth_name=auth_name, tls_pubkey_pinset=_pins(pins, f"{path}.pins"),
                        ca_file=ca_file)
    if strict:
        _check_strict(spec, path)
    return spec


def _check_strict(spec: UpstreamSpec, path: str) -> None:
    if spec.transport != "tls":
        if spec.tls_pubkey_pinset or spec.tls_auth_name:
            raise _fail(path, f"{spec.transport} upstream cannot be authenticated; "
                              "tls_auth_name and tls_pubkey_pinset need transport = \"tls\"")
        return
    if spec.opportunistic and (spec.tls_pubkey_pinset or spec.tls_auth_name):
        # Stubby would silently ignore them; say so instead.
        raise _fail(f"{path}.opportunistic",
                    "opportunistic upstreams are not authenticated: drop tls_auth_name "
                    "and tls_pubkey_pinset, or set opportunistic = false")
    if not spec.opportunistic and not spec.tls_auth_name and not spec.tls_pubkey_pinset:
        raise _fail(path, f"{spec.uri}: strict TLS needs tls_auth_name (tls://ADDR#NAME) "
                          "and/or tls_pubkey_pinset; or set opportunistic = true")
    if spec.tls_pubkey_pinset_mode == "report" and spec.tls_pubkey_pinset \
            and not spec.tls_auth_name:
        raise _fail(f"{path}.tls_pubkey_pinset_mode", REPORT_NEEDS_NAME)


_KEYS = {"uri", "address", "port", "transport", "tls_auth_name", "tls_pubkey_pinset",
         "tls_pubkey_pinset_mode", "ca_file", "opportunistic", "idle_timeout", "max_connections",
         "max_queries_per_connection", "connect_timeout", "query_timeout",
         "tls_query_padding_blocksize"}


def _number(item: Mapping[str, Any], key: str, path: str, *, lo: float, hi: float,
            integer: bool = False) -> float | int | None:
    if key not in item:
        return None
    value = item[key]
    ok_type = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        kind = "an integer" if integer else "a number"
        raise _fail(f"{path}.{key}", f"expected {kind}, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(f"{path}.{key}", f"{value!r} out of range {lo:g}..{hi:g}")
    return value


def pinset_from_toml(value: Any, path: str) -> tuple[str, ...]:
    """A TOML ``tls_pubkey_pinset``: ``{ digest = "sha256", value = "..." }`` tables (or
    bare base64 strings) -> normalised pins; ConfigError naming the entry's dotted path."""
    if not isinstance(value, list):
        raise _fail(path, "expected a list of { digest = \"sha256\", value = \"...\" }")
    pins: list[str] = []
    for i, entry in enumerate(value):
        entry_path = f"{path}[{i}]"
        if isinstance(entry, str):  # accept the bare-string shorthand too
            entry = {"digest": PIN_DIGEST, "value": entry}
        if not isinstance(entry, Mapping):
            raise _fail(entry_path, "expected a table { digest = \"sha256\", value = \"...\" }")
        unknown = set(entry) - {"digest", "value"}
        if unknown:
            raise _fail(f"{entry_path}.{sorted(unknown)[0]}", "unknown key")
        digest = entry.get("digest", PIN_DIGEST)
        if not isinstance(digest, str) or digest.lower() != PIN_DIGEST:
            raise _fail(f"{entry_path}.digest", f"{digest!r}: only \"sha256\" is supported")
        if "value" not in entry or not isinstance(entry["value"], str):
            raise _fail(f"{entry_path}.value", "missing base64 SHA-256 SPKI pin")
        try:
            pins.append(parse_pin(entry["value"]))
        except ValueError as exc:
            raise _fail(f"{entry_path}.value", str(exc)) from None
    return tuple(pins)


def _string(item: Mapping[str, Any], key: str, path: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(f"{path}.{key}", f"expected a string, got {value!r}")
    return value


def upstream_from_table(item: Mapping[str, Any], path: str) -> UpstreamSpec:
    """One ``[[upstream]]`` table; see the module docstring for the keys."""
    if not isinstance(item, Mapping):
        raise _fail(path, "expected a table")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", "unknown key")
    uri = _string(item, "uri", path)
    if uri is not None:
        clash = sorted({"address", "port", "transport"} & set(item))
        if clash:
            raise _fail(f"{path}.{clash[0]}", "give either uri or address/port/transport")
        base = parse_upstream_uri(uri, path=f"{path}.uri", strict=False)
    else:
        address_text = _string(item, "address", path)
        if address_text is None:
            raise _fail(f"{path}.address", "missing (or give uri = \"tls://ADDR#NAME\")")
        address = _check_address(address_text, f"{path}.address")
        transport = _string(item, "transport", path) or "tls"
        if transport not in TRANSPORTS:
            raise _fail(f"{path}.transport", f"{transport!r}: expected udp, tcp or tls")
        port = _number(item, "port", path, lo=1, hi=65535, integer=True)
        base = UpstreamSpec(address=address, transport=transport,  # type: ignore[arg-type]
                            port=int(port) if port is not None else DEFAULT_PORTS[transport])
    changes: dict[str, Any] = {}
    auth_name = _string(item, "tls_auth_name", path)
    if auth_name is not None:
        changes["tls_auth_name"] = check_auth_name(auth_name, f"{path}.tls_auth_name")
    if "tls_pubkey_pinset" in item:
        changes["tls_pubkey_pinset"] = pinset_from_toml(item["tls_pubkey_pinset"],
                                                        f"{path}.tls_pubkey_pinset")
    mode = _string(item, "tls_pubkey_pinset_mode", path)
    if mode is not None:
        changes["tls_pubkey_pinset_mode"] = check_pinset_mode(
            mode, f"{path}.tls_pubkey_pinset_mode")
    ca_file = _string(item, "ca_file", path)
    if ca_file is not None:
        changes["ca_file"] = ca_file
    if "opportunistic" in item:
        if not isinstance(item["opportunistic"], bool):
            raise _fail(f"{path}.opportunistic", "expected true or false")
        changes["opportunistic"] = item["opportunistic"]
    for key, lo, hi, integer in (("idle_timeout", 0.0, 3600.0, False),
                                 ("connect_timeout", 0.01, 60.0, False),
                                 ("query_timeout", 0.01, 60.0, False),
                                 ("max_connections", 1, 1024, True),
                                 ("max_queries_per_connection", 1, 65535, True),
                                 ("tls_query_padding_blocksize", 0, 1024, True)):
        value = _number(item, key, path, lo=lo, hi=hi, integer=integer)
        if value is not None:
            changes[key] = value
    spec = replace(base, name="", **changes)
    _check_strict(spec, path)
    return spec


def upstreams_from_toml(items: Any, path: str = "upstream") -> list[UpstreamSpec]:
    """Validate the ``[[upstream]]`` array; raises ConfigError naming the dotted path."""
    if not isinstance(items, list):
        raise _fail(path, "expected an array of tables ([[upstream]])")
    specs = [upstream_from_table(item, f"{path}[{i}]") for i, item in enumerate(items)]
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise _fail(f"{path}[{i}]", f"duplicate of {path}[{seen[spec.name]}] ({spec.name})")
        seen[spec.name] = i
    return specs


@dataclass(frozen=True, slots=True)
class ForwardZoneSpec:
    """One ``[[forward_zone]]``: names at or under ``name`` (absolute, lower case, with
    the final dot) go to ``upstreams``; ``strategy`` None means forward.strategy."""

    name: str
    upstreams: tuple[UpstreamSpec, ...]
    strategy: str | None = None


_ZONE_KEYS = {"name", "strategy", "upstream"}
_STRATEGIES = ("round_robin", "fastest", "ordered")


def check_zone_name(text: Any, path: str) -> str:
    """A forward zone's name: absolute, lower case, with the final dot (case and the
    final dot do not matter on input); ConfigError naming ``path``."""
    import dns.exception
    import dns.name

    if not isinstance(text, str):
        raise _fail(path, f"expected a domain name, got {text!r}")
    stripped = text.strip()
    if stripped in ("", "."):
        raise _fail(path, f"{text!r}: the root is not a forward zone; the default "
                          "upstreams are [[upstream]] (or --upstream)")
    try:
        name = dns.name.from_text(stripped)
    except dns.exception.DNSException as exc:
        raise _fail(path, f"{text!r} is not a valid domain name: {exc}") from None
    if any(not label for label in name.labels[:-1]):
        raise _fail(path, f"{text!r} is not a valid domain name: empty label")
    return name.to_text().lower()


def _check_zones(zones: Sequence[ForwardZoneSpec | StubZoneSpec], path: str,
                 suffix: str) -> None:
    seen: dict[str, int] = {}
    for i, zone in enumerate(zones):
        if zone.name in seen:
            raise _fail(f"{path}[{i}]{suffix}",
                        f"duplicate of {path}[{seen[zone.name]}] ({zone.name})")
        seen[zone.name] = i


def forward_zone_from_table(item: Any, path: str) -> ForwardZoneSpec:
    """One ``[[forward_zone]]`` table: ``name``, ``strategy`` and its upstream tables."""
    if not isinstance(item, Mapping):
        raise _fail(path, "expected a table")
    unknown = sorted(set(item) - _ZONE_KEYS)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", "unknown key (name, strategy, [[forward_zone."
                                            "upstream]])")
    if "name" not in item:
        raise _fail(f"{path}.name", "required: the zone, e.g. name = \"corp.example.\"")
    name = check_zone_name(item["name"], f"{path}.name")
    strategy = item.get("strategy")
    if strategy is not None and strategy not in _STRATEGIES:
        raise _fail(f"{path}.strategy", f"unknown strategy {strategy!r} "
                                        "(round_robin, fastest or ordered)")
    items = item.get("upstream")
    if not items:
        raise _fail(f"{path}.upstream", f"zone {name} has no upstream: add "
                                        "[[forward_zone.upstream]] uri = \"udp://ADDR\"")
    if not isinstance(items, list):
        raise _fail(f"{path}.upstream", "expected an array of tables "
                                        "([[forward_zone.upstream]])")
    specs = upstreams_from_toml(items, path=f"{path}.upstream")
    return ForwardZoneSpec(name=name, upstreams=tuple(specs), strategy=strategy)


def forward_zones_from_toml(items: Any, path: str = "forward_zone",
                            ) -> list[ForwardZoneSpec]:
    """Validate the ``[[forward_zone]]`` array; ConfigError naming the dotted path."""
    if not isinstance(items, list):
        raise _fail(path, "expected an array of tables ([[forward_zone]])")
    zones = [forward_zone_from_table(item, f"{path}[{i}]") for i, item in enumerate(items)]
    _check_zones(zones, path, ".name")
    return zones


def _zone_args(values: Sequence[str], path: str, syntax: str,
               ) -> Iterable[tuple[str, str, str, list[str]]]:
    """``NAME=ITEM[,ITEM...]`` command-line values: (``path[i]``, the value, the name,
    the items stripped, empty ones kept); ConfigError naming ``path[i]`` without "="."""
    for i, text in enumerate(values):
        item_path = f"{path}[{i}]"
        name_text, sep, items = text.partition("=")
        if not sep:
            raise _fail(item_path, f"{text!r}: expected {syntax}")
        yield item_path, text, name_text, [item.strip() for item in items.split(",")]


def forward_zones_from_args(values: Sequence[str], path: str = "--forward-zone",
                            ) -> list[ForwardZoneSpec]:
    """``--forward-zone NAME=URI[,URI...]`` values (URIs as ``--upstream``'s; pins and CA
    files need the configuration file); ConfigError naming ``--forward-zone[i]``."""
    zones = []
    for item_path, text, name_text, parts in _zone_args(
            values, path, "NAME=URI[,URI...], e.g. corp.example=udp://10.0.0.53"):
        name = check_zone_name(name_text, item_path)
        if not any(parts):
            raise _fail(item_path, f"zone {name} has no upstream: {text!r}")
        specs: list[UpstreamSpec] = []
        for j, uri in enumerate(parts):
            if not uri:
                raise _fail(item_path, f"{text!r}: empty URI in the list")
            spec = parse_upstream_uri(uri, path=f"{item_path}.upstream[{j}]")
            if any(s.name == spec.name for s in specs):
                raise _fail(f"{item_path}.upstream[{j}]", f"{spec.name} given twice")
            specs.append(spec)
        zones.append(ForwardZoneSpec(name=name, upstreams=tuple(specs)))
    _check_zones(zones, path, "")
    return zones


def default_upstreams() -> list[UpstreamSpec]:
    """Cloudflare over DoT, authenticated by name against the system CA store."""
    return [UpstreamSpec(address=address, port=853, transport="tls",
                         tls_auth_name="cloudflare-dns.com")
            for address in ("1.1.1.1", "1.0.0.1")]


@dataclass(frozen=True, slots=True)
class StubZoneSpec:
    """One ``[[stub_zone]]`` (Unbound's ``stub-zone``): with recursion, the names at or
    under ``name`` are resolved from these authoritative servers (address, port) instead
    of from the root, as a delegation the operator gives."""

    name: str
    addresses: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return ", ".join(f"{host}@{port}" for host, port in self.addresses)


_STUB_KEYS = {"name", "addresses"}


def parse_stub_address(text: Any, path: str) -> tuple[str, int]:
    """Unbound's ``stub-addr`` syntax: an IP address, ``@PORT`` after it for a port
    other than 53 (``10.0.0.53``, ``10.0.0.53@5353``, ``2001:db8::53@5353``)."""
    if not isinstance(text, str):
        raise _fail(path, f"expected an address string, got {text!r}")
    host, sep, port_text = text.strip().partition("@")
    port = 53
    if sep:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _fail(path, f"{text!r}: the port after @ must be 1-65535")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _fail(path, f"{text!r} is not an IP address (optionally with @PORT; "
                          "server names are not looked up)") from None
    return host, port


def _stub_zone(name_text: Any, addresses: Sequence[Any], path: str,
               address_path: str) -> StubZoneSpec:
    import dns.exception
    import dns.name

    if not isinstance(name_text, str) or name_text.strip() in ("", "."):
        raise _fail(path, f"{name_text!r}: a stub zone needs a name below the root (the root "
                    "servers are recursion.root_hints)")
    try:
        name = dns.name.from_text(name_text.strip()).to_text().lower()
    except dns.exception.DNSException as exc:
        raise _fail(path, f"{name_text!r} is not a valid domain name: {exc}") from None
    if not addresses:
        raise _fail(address_path, f"stub zone {name} has no address")
    parsed = tuple(parse_stub_address(a, f"{address_path}[{j}]")
                   for j, a in enumerate(addresses))
    return StubZoneSpec(name=name, addresses=parsed)


def stub_zones_from_toml(items: Any, path: str = "stub_zone") -> list[StubZoneSpec]:
    """The ``[[stub_zone]]`` array (``name``, ``addresses``); ConfigError naming the
    dotted path."""
    if not isinstance(items, list):
        raise _fail(path, "expected an array of tables ([[stub_zone]])")
    zones = []
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise _fail(item_path, "expected a table")
        unknown = sorted(set(item) - _STUB_KEYS)
        if unknown:
            raise _fail(f"{item_path}.{unknown[0]}", "unknown key (name, addresses)")
        addresses = item.get("addresses", [])
        if not isinstance(addresses, list):
            raise _fail(f"{item_path}.addresses", "expected a list of addresses")
        zones.append(_stub_zone(item.get("name"), addresses, f"{item_path}.name",
                                f"{item_path}.addresses"))
    _check_zones(zones, path, ".name")
    return zones


def stub_zones_from_args(values: Sequence[str], path: str = "--stub-zone",
                         ) -> list[StubZoneSpec]:
    """``--stub-zone NAME=ADDR[@PORT][,ADDR...]`` values."""
    zones = []
    for item_path, _text, name_text, parts in _zone_args(
            values, path, "NAME=ADDR[@PORT][,ADDR...], e.g. corp.example=10.0.0.53"):
        zones.append(_stub_zone(name_text, [p for p in parts if p], item_path, item_path))
    _check_zones(zones, path, "")
    return zones

