"""Configuration: TOML file plus command-line overrides, validated in one step.

Every section is a frozen dataclass. :func:`load` merges the file and the overrides,
checks every field, and raises one :class:`~dnstls.errors.ConfigError` naming the dotted
path of the first bad field (``server.idle_timeout``, ``tls.certificates[1].key``,
``upstream[0].tls_pubkey_pinset[0].value``) -- the same shape Knot Resolver uses.
Unknown keys are errors too: a typo must not silently fall back to a default.

Example::

    [server]
    listen = ["127.0.0.1:853", "[::1]:853"]
    plain = ["127.0.0.1:53"]
    idle_timeout = 10.0

    [[tls.certificates]]
    cert = "/etc/dnstls/fullchain.pem"
    key = "/etc/dnstls/privkey.pem"

    [local]
    zones = ["/etc/dnstls/home.zone"]
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dnstls.errors import ConfigError
from dnstls.proto.acl import DEFAULT_RULES, AccessControl, parse_rules
from dnstls.proto.edns import parse_nsid

DEFAULT_DOT_PORT = 853
DEFAULT_DNS_PORT = 53
STRATEGIES = ("round_robin", "fastest", "ordered")  # how the forwarder picks an upstream


def parse_hostport(text: str, default_port: int, *, field: str) -> tuple[str, int]:
    """Parse ``ADDR``, ``ADDR:PORT``, ``[V6]``, ``[V6]:PORT`` (addresses must be IPs)."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(field, f"invalid address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(field, f"invalid address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(field, f"invalid address {text!r}: {host!r} is not an IP address"
                          ) from None
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(field, f"invalid port in {text!r}")
        port = int(port_text)
    return host, port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def metrics_url(endpoint: tuple[str, int]) -> str:
    """The Prometheus URL of a metrics listener bound to ``endpoint``."""
    return f"http://{format_hostport(*endpoint)}/metrics"


def access_control(rules: tuple[str, ...], field: str) -> AccessControl:
    """The :class:`AccessControl` of validated rules (``field`` names them in errors);
    :data:`DEFAULT_RULES` itself reads as the default."""
    if rules == DEFAULT_RULES:
        return AccessControl(None)
    try:
        return AccessControl(parse_rules(rules, field))
    except ValueError as exc:
        raise ConfigError(exc.args[0], exc.args[1]) from None


def nsid_value(text: str, field: str) -> bytes:
    """The NSID bytes of ``text`` (:func:`dnstls.proto.edns.parse_nsid`); a bad value
    is a ConfigError naming ``field``."""
    try:
        return parse_nsid(text)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/dnstls")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dnstls"


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, ...] = ("127.0.0.1:853", "[::1]:853")
    plain: tuple[str, ...] = ()
    metrics: str = ""
    state_dir: str = ""
    log_queries: bool = False
    query_timeout: float = 4.0
    handshake_timeout: float = 5.0
    idle_timeout: float = 10.0
    message_timeout: float = 5.0
    write_timeout: float = 10.0
    max_in_flight: int = 100
    max_queries_per_connection: int = 0
    max_pending_output: int = 1 << 20
    max_connections: int = 10000
    max_connections_per_client: int = 100
    shutdown_grace: float = 5.0
    reload_check_interval: float = 2.0
    #: Unbound-style "NETBLOCK ACTION" rules (proto/acl.py); the default is dnsdist's
    #: (loopback and private networks allowed). Rules given replace it entirely.
    access_control: tuple[str, ...] = DEFAULT_RULES
    #: The server's NSID (RFC 5001), as Unbound's ``nsid:``: hex ("646e73746c73") or
    #: ``ascii_`` and text ("ascii_dot-1"); sent to queries that ask for it. "": none.
    nsid: str = ""
    #: The control socket (a Unix domain socket path) of ``dnstls control``, as
    #: Unbound's ``control-interface`` with a path; "": no control channel (the default,
    #: as Unbound's ``control-enable: no``).
    control: str = ""

    @property
    def nsid_bytes(self) -> bytes | None:
        """The NSID to send (validated by :func:`load`), or None when there is none."""
        return nsid_value(self.nsid, "server.nsid") if self.nsid else None


@dataclass(frozen=True)
class CertificateConfig:
    cert: str
    key: str


@dataclass(frozen=True)
class TlsConfig:
    certificates: tuple[CertificateConfig, ...] = ()
    #: TLS sessions kept for resumption by one process (OpenSSL's session cache); 0:
    #: session tickets instead. ``serve --workers N`` always uses tickets.
    session_cache: int = 10_000


@dataclass(frozen=True)
class BlocklistConfig:
    """``[[local.blocklist]]``: a file of names (one a line, or hosts-file lines), each
    given the local-zone ``type`` (dnstls.resolver.zonetypes)."""

    file: str
    type: str = "always_nxdomain"


@dataclass(frozen=True)
class LocalConfig:
    zones: tuple[str, ...] = ()
    ddr: bool = True
    ddr_name: str = ""
    #: Answer the special-use and locally served zones here (localhost, private
    #: reverse zones, onion, test, ...: dnstls.resolver.default_zones) and refuse
    #: classes other than IN; false: forward them as any other name.
    default_zones: bool = True
    #: Default zones forwarded instead (Unbound's ``local-zone: NAME nodefault``).
    nodefault: tuple[str, ...] = ()
    #: Records answered here, one per line (Unbound's ``local-data``;
    #: dnstls.resolver.local): ``"nas.home.arpa. A 192.168.1.10"``.
    data: tuple[str, ...] = ()
    #: Unbound's local-zone lines, ``"ads.example. always_nxdomain"``
    #: (dnstls.resolver.zonetypes); the longest name wins.
    zone_types: tuple[str, ...] = ()
    #: Files of names given one local-zone type each (read at start and on SIGHUP).
    blocklist: tuple[BlocklistConfig, ...] = ()


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    max_entries: int = 100_000
    max_bytes: int = 64 << 20
    min_ttl: int = 0
    max_ttl: int = 86400
    max_negative_ttl: int = 3600
    servfail_ttl: float = 2.0
    serve_stale: bool = False
    stale_ttl: int = 86400
    #: Refresh an answer asked for in the last tenth of its TTL in the background
    #: (Unbound's ``prefetch``, off by default as there; docs/serve.md "Prefetch")
    prefetch: bool = False
    #: Forwarded answers without the sections they do not need (docs/serve.md); applies
    #: with ``enabled = false`` too.
    minimal_responses: bool = True


@dataclass(frozen=True)
class ForwardConfig:
    enabled: bool = True
    strategy: str = "round_robin"
    upstreams: tuple[Any, ...] = ()  # UpstreamSpec objects, built by dnstls.upstreams
    #: ForwardZoneSpec objects, built by dnstls.upstreams from [[forward_zone]]
    zones: tuple[Any, ...] = ()
    #: Networks whose addresses are removed from forwarded answers (DNS rebinding
    #: protection, Unbound's ``private-address``; dnstls.resolver.rebind); none: off.
    private_addresses: tuple[str, ...] = ()
    #: Names (and the names under them) whose answers keep them (``private-domain``).
    private_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnstapConfig:
    """``[dnstap]``: Unbound's ``dnstap:`` options (``dnstap-enable``,
    ``dnstap-socket-path``, ``dnstap-identity``, ``dnstap-version``,
    ``dnstap-log-client-query-messages``, ...) under shorter names; see docs/serve.md."""

    enabled: bool = False
    socket_path: str = ""
    file: str = ""
    identity: str = ""  # "": the host name (as Unbound)
    version: str = ""  # "": "dnstls VERSION"
    log_client_query: bool = False
    log_client_response: bool = False
    log_forwarder_query: bool = False
    log_forwarder_response: bool = False
    #: RESOLVER_QUERY / RESOLVER_RESPONSE: the recursion's exchanges with authoritative
    #: servers (Unbound's dnstap-log-resolver-query-messages, -response-messages)
    log_resolver_query: bool = False
    log_resolver_response: bool = False

    @property
    def any_message(self) -> bool:
        return (self.log_client_query or self.log_client_response
                or self.log_forwarder_query or self.log_forwarder_response
                or self.log_resolver_query or self.log_resolver_response)

    @property
    def identity_text(self) -> str:
        import socket

        return self.identity or socket.gethostname()

    @property
    def version_text(self) -> str:
        from dnstls import __version__

        return self.version or f"dnstls {__version__}"


def check_dnstap(dnstap: DnstapConfig) -> DnstapConfig:
    if dnstap.socket_path and dnstap.file:
        raise ConfigError("dnstap.file", "give socket_path or file, not both")
    if dnstap.enabled and not (dnstap.socket_path or dnstap.file):
        raise ConfigError("dnstap.socket_path", "dnstap is enabled: give socket_path (a "
                          "Unix socket a collector listens on) or file")
    return dnstap


@dataclass(frozen=True)
class DnssecConfig:
    """``[dnssec]``: validation of forwarded answers (dnstls.resolver.validating; Unbound's
    ``module-config: "validator iterator"``, ``trust-anchor-file``, ``domain-insecure``)."""

    validation: bool = False
    #: Unbound's trust-anchor-file format (DS or DNSKEY records); "": Debian's
    #: /usr/share/dns/root.key when present, else the built-in root KSK DS records.
    trust_anchor_file: str = ""
    #: Names (and the names under them) whose answers are not validated (RFC 7646).
    domain_insecure: tuple[str, ...] = ()


def check_dnssec(dnssec: DnssecConfig) -> DnssecConfig:
    """Names that parse; with validation on, trust anchors that load (a ConfigError
    naming ``dnssec.trust_anchor_file`` at start-up and on reload, not at the first
    query)."""
    from dnstls.resolver.validating import load_anchors, parse_insecure

    parse_insecure(dnssec.domain_insecure)
    if dnssec.validation:
        load_anchors(dnssec.trust_anchor_file)
    elif dnssec.trust_anchor_file:
        raise ConfigError("dnssec.trust_anchor_file", "given, but dnssec.validation is "
                          "off: set validation = true (or serve --dnssec)")
    return dnssec


@dataclass(frozen=True)
class RecursionConfig:
    """``[recursion]``: resolve from the root servers (dnstls.resolver.iterate) instead of
    forwarding to upstreams, as Unbound does without a ``forward-zone: "."``; its
    ``root-hints``, ``qname-minimisation``, ``do-not-query-localhost``, ``do-ip4`` and
    ``do-ip6`` under these names. Forward zones still go to their upstreams."""

    enabled: bool = False
    #: named.root format (Unbound's ``root-hints``); "": Debian's
    #: /usr/share/dns/root.hints when present, else the built-in IANA root servers.
    root_hints: str = ""
    #: RFC 9156, relaxed: ask each zone only for the next label (Unbound's default).
    qname_minimisation: bool = True
    #: Never send queries to 127.0.0.0/8 or ::1 (Unbound's default).
    do_not_query_localhost: bool = True
    do_ip4: bool = True
    do_ip6: bool = True
    #: StubZoneSpec objects, built by dnstls.upstreams from [[stub_zone]]
    stub_zones: tuple[Any, ...] = ()


def check_recursion(recursion: RecursionConfig, forward: ForwardConfig) -> RecursionConfig:
    """Root hints that load (a ConfigError naming ``recursion.root_hints`` at start-up,
    not at the first query), and no setting that contradicts resolving from the root."""
    if not recursion.enabled:
        if recursion.stub_zones:
            raise ConfigError("stub_zone", "stub zones are where the recursion starts "
                              "for their names, but recursion.enabled is off: set "
                              "enabled = true (or serve --recursive), or make them "
                              "[[forward_zone]]s")
        if recursion.root_hints:
            raise ConfigError("recursion.root_hints", "given, but recursion.enabled is "
                              "off: set enabled = true (or serve --recursive)")
        return recursion
    if not forward.enabled:
        raise ConfigError("recursion.enabled", "conflicts with forward.enabled = false "
                          "(--no-upstream): recursion is how names outside local data "
                          "are resolved")
    if forward.upstreams:
        raise ConfigError("recursion.enabled", "resolving from the root, but [[upstream]] "
                          "tables are given: remove them, or keep them and recursion "
                          "off; names that must go to an upstream are [[forward_zone]]s")
    if not (recursion.do_ip4 or recursion.do_ip6):
        raise ConfigError("recursion.do_ip4", "do_ip4 and do_ip6 are both false: no "
                          "authoritative server could be asked")
    forwarded = {zone.name for zone in forward.zones}
    for i, zone in enumerate(recursion.stub_zones):
        if zone.name in forwarded:
            raise ConfigError(f"stub_zone[{i}].name", f"{zone.name} is a forward zone "
                              "too: give it one or the other")
    from dnstls.resolver.iterate import load_root_hints

    load_root_hints(recursion.root_hints)
    return recursion


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    dnstap: DnstapConfig = field(default_factory=DnstapConfig)
    dnssec: DnssecConfig = field(default_factory=DnssecConfig)
    recursion: RecursionConfig = field(default_factory=RecursionConfig)
    source: str = ""


T = TypeVar("T")

_POSITIVE = {"query_timeout", "handshake_timeout", "idle_timeout", "message_timeout",
             "write_timeout", "max_in_flight", "max_pending_output", "max_connections",
             "max_connections_per_client", "max_entries", "max_bytes", "servfail_ttl",
             "shutdown_grace", "reload_check_interval"}
_NON_NEGATIVE = {"max_queries_per_connection", "min_ttl", "max_ttl", "max_negative_ttl",
                 "stale_ttl", "session_cache"}


def _convert(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {value!r}")
        return tuple(_convert(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, path)
    if isinstance(hint, types.UnionType):  # pragma: no cover - not used yet
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def build(cls: type[T], data: Any, path: str) -> T:
    """Build dataclass ``cls`` from a mapping, validating every field."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        if key not in fields or key == "source":
            raise ConfigError(sub, "unknown setting")
        converted = _convert(value, hints[key], sub)
        if key in _POSITIVE and converted <= 0:
            raise ConfigError(sub, f"must be positive, got {value!r}")
        if key in _NON_NEGATIVE and converted < 0:
            raise ConfigError(sub, f"must not be negative, got {value!r}")
        values[key] = converted
    missing = [name for name, f in fields.items()
               if name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}" if path else missing[0], "required")
    return cls(**values)


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: invalid TOML: {exc}") from None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested tables; override wins for non-table values."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


#: The longest path a Unix domain socket can be bound to (Linux's sun_path, less the NUL)
MAX_SOCKET_PATH = 107


def check_control_path(path: str, field: str) -> str:
    """``path`` if it can name a control socket; a ConfigError naming ``field`` if not."""
    size = len(os.fsencode(path))
    if "\0" in path:
        raise ConfigError(field, "a socket path must not contain NUL")
    if size > MAX_SOCKET_PATH:
        raise ConfigError(field, f"{path!r} is {size} bytes long; a Unix socket path can "
                          f"have at most {MAX_SOCKET_PATH}")
    if path.endswith("/"):
        raise ConfigError(field, f"{path!r} names a directory; give the socket's file name "
                          "(e.g. /run/dnstls/control.sock)")
    return path


def check_local(local: LocalConfig) -> LocalConfig:
    """``local`` once its names and records are known to parse (ConfigError naming the
    first bad entry otherwise); serve's and the stub's ``[local]`` alike."""
    from dnstls.resolver.default_zones import parse_nodefault
    from dnstls.resolver.local import parse_local_data
    from dnstls.resolver.zonetypes import check_type, parse_zone_types

    parse_nodefault(local.nodefault, field="local.nodefault")
    parse_local_data(local.data, field="local.data")
    parse_zone_types(local.zone_types, field="local.zone_types")
    for i, item in enumerate(local.blocklist):
        check_type(item.type, f"local.blocklist[{i}].type")
        if not item.file:
            raise ConfigError(f"local.blocklist[{i}].file", "a file name is required")
    return local


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
         ) -> Config:
    """Load, merge and validate. Raises ConfigError naming the first bad field."""
    data: dict[str, Any] = read_toml(path) if path else {}
    if overrides:
        data = merge(data, overrides)
    upstream_items = data.pop("upstream", [])
    zone_items = data.pop("forward_zone", None)
    stub_items = data.pop("stub_zone", None)
    known = {"server", "tls", "local", "cache", "forward", "dnstap", "dnssec",
             "recursion"}
    for key in data:
        if key not in known:
            raise ConfigError(key, "unknown section")
    server = build(ServerConfig, data.get("server", {}), "server")
    for i, item in enumerate(server.listen):
        parse_hostport(item, DEFAULT_DOT_PORT, field=f"server.listen[{i}]")
    for i, item in enumerate(server.plain):
        parse_hostport(item, DEFAULT_DNS_PORT, field=f"server.plain[{i}]")
    if server.metrics:
        parse_hostport(server.metrics, 9153, field="server.metrics")
    access_control(server.access_control, "server.access_control")
    if server.control:
        check_control_path(server.control, "server.control")
    if "nsid" in data.get("server", {}):  # given, even empty: a value to check
        nsid_value(server.nsid, "server.nsid")
    forward_data = dict(data.get("forward", {}))
    if "upstreams" in forward_data:  # a field of ForwardConfig, but built from [[upstream]]
        raise ConfigError("forward.upstreams", "upstreams are [[upstream]] tables, one per "
                          "upstream: [[upstream]] uri = \"udp://192.0.2.53\" (or "
                          "--upstream URI); see docs/upstreams.md")
    if "zones" in forward_data:  # built from [[forward_zone]]
        raise ConfigError("forward.zones", "forward zones are [[forward_zone]] tables: "
                          "[[forward_zone]] name = \"corp.example.\" with "
                          "[[forward_zone.upstream]] uri = \"udp://10.0.0.53\" (or "
                          "--forward-zone NAME=URI); see docs/serve.md")
    forward = build(ForwardConfig, forward_data, "forward")
    from dnstls.resolver.rebind import parse_domains, parse_networks

    parse_networks(forward.private_addresses, "forward.private_addresses")
    parse_domains(forward.private_domains, "forward.private_domains")
    if forward.private_domains and not forward.private_addresses:
        raise ConfigError("forward.private_domains", "names allowed to hold private "
                          "addresses, but forward.private_addresses lists none")
    if forward.strategy not in STRATEGIES:
        raise ConfigError("forward.strategy",
                          f"unknown strategy {forward.strategy!r} "
                          "(round_robin, fastest or ordered)")
    if upstream_items:
        from dnstls.upstreams import upstreams_from_toml

        if not isinstance(upstream_items, list):
            raise ConfigError("upstream", "expected an array of tables ([[upstream]])")
        specs = upstreams_from_toml(upstream_items, path="upstream")
        forward = dataclasses.replace(forward, upstreams=tuple(specs))
    if zone_items is not None:
        from dnstls.upstreams import forward_zones_from_toml

        zones = forward_zones_from_toml(zone_items, path="forward_zone")
        if zones and not forward.enabled:
            raise ConfigError("forward.enabled", "forwarding is off (forward.enabled = "
                              "false or --no-upstream) but [[forward_zone]] tables are "
                              "given: remove one or the other")
        forward = dataclasses.replace(forward, zones=tuple(zones))
    recursion_data = dict(data.get("recursion", {}))
    if "stub_zones" in recursion_data:  # built from [[stub_zone]]
        raise ConfigError("recursion.stub_zones", "stub zones are [[stub_zone]] tables: "
                          "[[stub_zone]] name = \"corp.example.\" addresses = "
                          "[\"10.0.0.53\"] (or --stub-zone NAME=ADDR); see docs/serve.md")
    recursion = build(RecursionConfig, recursion_data, "recursion")
    if stub_items is not None:
        from dnstls.upstreams import stub_zones_from_toml

        recursion = dataclasses.replace(recursion, stub_zones=tuple(
            stub_zones_from_toml(stub_items, path="stub_zone")))
    cache = build(CacheConfig, data.get("cache", {}), "cache")
    if cache.min_ttl > cache.max_ttl:
        raise ConfigError("cache.min_ttl", "must not exceed cache.max_ttl")
    if not 1 <= cache.servfail_ttl <= 5:
        raise ConfigError("cache.servfail_ttl",
                          f"must be between 1 and 5 seconds, got {cache.servfail_ttl:g}")
    local = check_local(build(LocalConfig, data.get("local", {}), "local"))
    return Config(server=server, tls=build(TlsConfig, data.get("tls", {}), "tls"),
                  local=local,
                  cache=cache, forward=forward,
                  dnstap=check_dnstap(build(DnstapConfig, data.get("dnstap", {}), "dnstap")),
                  dnssec=check_dnssec(build(DnssecConfig, data.get("dnssec", {}), "dnssec")),
                  recursion=check_recursion(recursion, forward),
                  source=str(path or ""))
