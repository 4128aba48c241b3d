"""``dnstls stub`` configuration: Stubby's vocabulary in TOML, validated into a
:class:`StubConfig` (the running side is :mod:`dnstls.stub`).

**Configuration** is TOML in Stubby's vocabulary (so a ``stubby.yml`` translates line by
line, see :mod:`dnstls.stubby`), all durations in milliseconds like Stubby::

    listen_addresses = ["127.0.0.1@53", "0::1@53"]
    round_robin_upstreams = 1            # 0: ordered (first healthy one)
    strategy = "fastest"                 # dnstls: round_robin, fastest or ordered
    idle_timeout = 8000                  # ms; below the upstream's own
    timeout = 4000                       # ms per client query, end to end
    tls_authentication = "GETDNS_AUTHENTICATION_REQUIRED"
    tls_query_padding_blocksize = 128
    tls_ca_file = "/etc/ssl/certs/ca-certificates.crt"
    metrics = "127.0.0.1:9153"
    nsid = "ascii_stub-1"                # dnstls: the NSID (RFC 5001), as serve's
    private_addresses = ["10.0.0.0/8"]   # dnstls: DNS rebinding protection, as serve's
    private_domains = ["home.arpa."]     #   [forward] keys (Unbound's private-address)
    dnssec = true                        # Stubby's: validate (serve's DNSSEC stage)
    dnssec_trust_anchors = ["/usr/share/dns/root.key"]  # Stubby's: a file or a list
    domain_insecure = ["corp.example."]  # dnstls: not validated, as serve's
    [cache]
    enabled = true
    [local]                              # dnstls: default_zones, nodefault (as serve's)
    nodefault = ["test."]
    [[upstream_recursive_servers]]
    address_data = "1.1.1.1"
    tls_port = 853
    tls_auth_name = "cloudflare-dns.com"
    tls_pubkey_pinset_mode = "enforce"   # or "report"
    tls_pubkey_pinset = [{ digest = "sha256", value = "base64..." }]

Every bad value raises one :class:`~dnstls.errors.ConfigError` naming the dotted field
(``upstream_recursive_servers[1].tls_pubkey_pinset[0].value``).

**Strict by default** (RFC 8310 §5): every upstream is TLS and is authenticated by name
against a CA store and/or by an SPKI pinset; one that cannot be authenticated is never
used, and there is no cleartext fallback at all (the stub only knows ``tls://``
upstreams). ``tls_authentication = "GETDNS_AUTHENTICATION_NONE"`` (``--opportunistic``)
is opportunistic privacy (RFC 8310 §4): encrypted, not authenticated, pins dropped; it is
logged as a warning at start and shown per upstream in the metrics.

**Report-only pins** (``tls_pubkey_pinset_mode = "report"``), for rolling a pinset out
or over without an outage: the upstream's spec carries the pins and the mode
(:attr:`~dnstls.upstreams.UpstreamSpec.tls_pubkey_pinset_mode`), so the pool
authenticates it by name against the CA and, after each full handshake, logs a pin
mismatch with the expected and the seen pins and counts it (``pin_mismatches_reported``)
instead of refusing the server. Report mode without ``tls_auth_name`` is refused, as the
upstream would then not be authenticated at all.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnstls.config import (
    DEFAULT_DNS_PORT,
    STRATEGIES,
    CacheConfig,
    Config,
    ForwardConfig,
    LocalConfig,
    ServerConfig,
    access_control,
    build,
    check_local,
    format_hostport,
    nsid_value,
    parse_hostport,
    read_toml,
)
from dnstls.errors import ConfigError
from dnstls.proto.acl import DEFAULT_RULES
from dnstls.proto.pins import parse_pin
from dnstls.upstreams import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_QUERY_TIMEOUT,
    PIN_MODES,
    REPORT_NEEDS_NAME,
    PinsetMode,
    UpstreamSpec,
    check_auth_name,
    check_pinset_mode,
    parse_upstream_uri,
    pinset_from_toml,
)

log = logging.getLogger("dnstls.stub")

DEFAULT_LISTEN = ("127.0.0.1:53", "[::1]:53")
DEFAULT_UPSTREAM_ADDRESSES = ("1.1.1.1", "1.0.0.1", "2606:4700:4700::1111",
                              "2606:4700:4700::1001")
DEFAULT_AUTH_NAME = "cloudflare-dns.com"
DEFAULT_TIMEOUT_MS = 4000
DEFAULT_PADDING = 128
AUTH_REQUIRED = "GETDNS_AUTHENTICATION_REQUIRED"
AUTH_NONE = "GETDNS_AUTHENTICATION_NONE"

_TOP_KEYS = {"listen_addresses", "round_robin_upstreams", "strategy", "idle_timeout",
             "timeout", "tls_authentication", "tls_query_padding_blocksize", "tls_ca_file",
             "tls_pubkey_pinset_mode", "metrics", "log_queries", "cache", "local",
             "upstream_recursive_servers", "access_control", "nsid", "private_addresses",
             "private_domains", "dnssec", "dnssec_trust_anchors", "domain_insecure"}
#: The stub's [local] table: serve's default-zone settings only (no zone files, no DDR).
_LOCAL_KEYS = {"default_zones", "nodefault", "data", "zone_types", "blocklist"}
_UPSTREAM_KEYS = {"address_data", "tls_port", "tls_auth_name", "tls_pubkey_pinset",
                  "tls_pubkey_pinset_mode", "tls_ca_file"}


@dataclass(frozen=True)
class StubUpstream:
    """One upstream of the stub: the pool's ``spec`` (pins and their mode included)."""

    spec: UpstreamSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def report_pins(self) -> tuple[str, ...]:
        """The pins that are only reported, not enforced (empty in enforce mode)."""
        if self.spec.tls_pubkey_pinset_mode == "report":
            return self.spec.tls_pubkey_pinset
        return ()


@dataclass(frozen=True)
class StubOverrides:
    """Command-line options; each one given replaces the file's setting."""

    listen: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()
    pin_mode: str | None = None
    ca_file: str | None = None
    opportunistic: bool = False
    strategy: str | None = None
    metrics: str | None = None
    no_cache: bool = False
    prefetch: bool = False
    log_queries: bool = False
    access_control: tuple[str, ...] = ()
    private_addresses: tuple[str, ...] = ()
    private_domains: tuple[str, ...] = ()
    dnssec: bool = False
    trust_anchors: tuple[str, ...] = ()
    domain_insecure: tuple[str, ...] = ()


@dataclass(frozen=True)
class StubConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    upstreams: tuple[StubUpstream, ...] = ()
    strategy: str = "round_robin"
    opportunistic: bool = False
    query_timeout: float = DEFAULT_TIMEOUT_MS / 1000
    metrics: str = ""
    log_queries: bool = False
    cache: CacheConfig = field(default_factory=CacheConfig)
    local: LocalConfig = field(default_factory=lambda: LocalConfig(ddr=False))
    #: "NETBLOCK ACTION" rules (proto/acl.py), as ``server.access_control`` of serve.
    access_control: tuple[str, ...] = DEFAULT_RULES
    #: What the operator calls the rules' setting: ``access_control`` in the file,
    #: ``--access-control`` when the command line gave them.
    access_control_field: str = "access_control"
    #: The NSID sent to queries that ask for it, as ``server.nsid`` of serve ("": none).
    nsid: str = ""
    #: DNS rebinding protection, as ``forward.private_addresses`` / ``private_domains``
    #: of serve (Unbound's ``private-address`` / ``private-domain``): networks whose
    #: addresses are removed from forwarded answers, and names that may hold them.
    private_addresses: tuple[str, ...] = ()
    private_domains: tuple[str, ...] = ()
    #: What the operator calls them: the file's keys, or ``--private-address`` /
    #: ``--private-domain`` when the command line gave them (errors name these).
    private_addresses_field: str = "private_addresses"
    private_domains_field: str = "private_domains"
    #: DNSSEC validation of the upstreams' answers (Stubby's ``dnssec``; serve's
    #: ``dnssec.validation``): :mod:`dnstls.resolver.validating`, one stage per generation.
    dnssec: bool = False
    #: Stubby's ``dnssec_trust_anchors``: files of DS or DNSKEY records, all loaded;
    #: (): /usr/share/dns/root.key when present, else the built-in root KSK DS records.
    dnssec_trust_anchors: tuple[str, ...] = ()
    #: Names (and below) not validated, as serve's ``dnssec.domain_insecure``.
    domain_insecure: tuple[str, ...] = ()
    #: What the operator calls them (``--trust-anchor`` / ``--domain-insecure`` when the
    #: command line gave them): errors name these.
    dnssec_trust_anchors_field: str = "dnssec_trust_anchors"
    domain_insecure_field: str = "domain_insecure"
    listen_is_default: bool = True
    upstreams_are_default: bool = True
    source: str = ""

    def service_config(self, *, listen: Sequence[str] | None = None) -> Config:
        """The :class:`~dnstls.config.Config` of the plain-DNS front (no TLS listener)."""
        server = ServerConfig(listen=(), plain=tuple(self.listen if listen is None else listen),
                              metrics=self.metrics, log_queries=self.log_queries,
                              query_timeout=self.query_timeout,
                              access_control=self.access_control, nsid=self.nsid)
        return Config(server=server, cache=self.cache,
                      local=dataclasses.replace(self.local, zones=(), ddr=False),
                      forward=ForwardConfig(strategy=self.strategy,
                                            upstreams=tuple(u.spec for u in self.upstreams)),
                      source=self.source)


def _local(data: Any) -> LocalConfig:
    """The ``[local]`` table: ``default_zones``, ``nodefault`` and ``data`` as in
    serve's."""
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - _LOCAL_KEYS)
        if unknown:
            raise ConfigError(f"local.{unknown[0]}", "unknown setting")
    local = check_local(build(LocalConfig, data, "local"))
    return dataclasses.replace(local, ddr=False)


def _ms(data: Mapping[str, Any], key: str, path: str, default: float) -> float:
    """A positive duration in milliseconds, returned in seconds."""
    if key not in data:
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(path, f"expected a positive number of milliseconds, got {value!r}")
    if value > 3_600_000:
        raise ConfigError(path, f"{value!r} ms is more than an hour")
    return float(value) / 1000


def _str(data: Mapping[str, Any], key: str, path: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {value!r}")
    return value


def parse_listen(text: str, path: str) -> str:
    """Stubby's ``ADDR@PORT`` (or ``ADDR:PORT``, ``[V6]:PORT``, ``ADDR``) -> ``ADDR:PORT``."""
    if not isinstance(text, str):
        raise ConfigError(path, f"expected a string like \"127.0.0.1@53\", got {text!r}")
    raw = text.strip()
    if "@" in raw:
        host, _, port_text = raw.partition("@")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(path, f"invalid address {text!r}: {host!r} is not an IP address",
                              ) from None
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(path, f"invalid port in {text!r}")
        return format_hostport(str(ipaddress.ip_address(host)), int(port_text))
    if raw.count(":") > 1 and not raw.startswith("["):  # a bare IPv6 address
        raw = f"[{raw}]"
    host, port = parse_hostport(raw, DEFAULT_DNS_PORT, field=path)
    return format_hostport(host, port)


def _check_ca_file(path_text: str, path: str) -> str:
    try:
        ssl.create_default_context(cafile=path_text)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(path, f"cannot load CA file {path_text}: {reason}") from None
    return path_text


@dataclass(frozen=True)
class _Globals:
    """Settings every upstream inherits."""

    opportunistic: bool
    pin_mode: PinsetMode
    ca_file: str | None
    idle_timeout: float
    padding: int
    connect_timeout: float


def _make_upstream(*, address: str, port: int, auth_name: str | None, pins: tuple[str, ...],
                   pin_mode: PinsetMode, ca_file: str | None, g: _Globals, path: str,
                   ) -> StubUpstream:
    """Apply the authentication rules of the module docstring to one upstream."""
    if g.opportunistic:
        if pins:
            log.warning("%s: tls_authentication is %s: its pins are not checked",
                        path, AUTH_NONE)
        pins = ()
    elif pin_mode == "report" and pins and not auth_name:
        raise ConfigError(f"{path}.tls_pubkey_pinset_mode", REPORT_NEEDS_NAME)
    if not g.opportunistic and not auth_name and not pins:
        how = ("add #AUTH_NAME (tls://ADDR#NAME) and/or --pin (or --opportunistic)"
               if path.startswith("--") else  # in the words of the command line
               f"give tls_auth_name and/or tls_pubkey_pinset (or tls_authentication = "
               f"\"{AUTH_NONE}\")")
        raise ConfigError(path, f"tls://{format_hostport(address, port)} cannot be "
                                f"authenticated: {how}")
    spec = UpstreamSpec(address=address, port=port, transport="tls", tls_auth_name=auth_name,
                        tls_pubkey_pinset=pins,
                        tls_pubkey_pinset_mode=pin_mode if pins else "enforce",
                        ca_file=ca_file, opportunistic=g.opportunistic,
                        idle_timeout=g.idle_timeout, connect_timeout=g.connect_timeout,
                        tls_query_padding_blocksize=g.padding)
    return StubUpstream(spec)


def _upstream_from_table(item: Any, path: str, g: _Globals) -> StubUpstream:
    if not isinstance(item, Mapping):
        raise ConfigError(path, "expected a table")
    unknown = sorted(set(item) - _UPSTREAM_KEYS)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", "unknown setting")
    address_text = _str(item, "address_data", f"{path}.address_data")
    if address_text is None:
        raise ConfigError(f"{path}.address_data", "required (the upstream's IP address)")
    try:
        address = str(ipaddress.ip_address(address_text.strip()))
    except ValueError:
        raise ConfigError(f"{path}.address_data",
                          f"{address_text!r} is not an IP address (the name to authenticate "
                          "goes in tls_auth_name)") from None
    port = item.get("tls_port", 853)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{path}.tls_port", f"expected a port 1..65535, got {port!r}")
    name_text = _str(item, "tls_auth_name", f"{path}.tls_auth_name")
    auth_name = check_auth_name(name_text, f"{path}.tls_auth_name") if name_text else None
    pins = pinset_from_toml(item["tls_pubkey_pinset"], f"{path}.tls_pubkey_pinset") \
        if "tls_pubkey_pinset" in item else ()
    mode = check_pinset_mode(_str(item, "tls_pubkey_pinset_mode",
                                  f"{path}.tls_pubkey_pinset_mode") or g.pin_mode,
                             f"{path}.tls_pubkey_pinset_mode")
    ca_text = _str(item, "tls_ca_file", f"{path}.tls_ca_file")
    ca_file = _check_ca_file(ca_text, f"{path}.tls_ca_file") if ca_text else g.ca_file
    return _make_upstream(address=address, port=port, auth_name=auth_name, pins=pins,
                          pin_mode=mode, ca_file=ca_file, g=g, path=path)


def _strategy(data: Mapping[str, Any]) -> str:
    strategy = _str(data, "strategy", "strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError("strategy", f"unknown strategy {strategy!r} "
                                      "(round_robin, fastest or ordered)")
    if "round_robin_upstreams" in data:
        value = data["round_robin_upstreams"]
        if value not in (0, 1) or isinstance(value, float):
            raise ConfigError("round_robin_upstreams", f"expected 0 or 1, got {value!r}")
        from_rr = "round_robin" if value else "ordered"
        if strategy is not None and strategy != from_rr and not (value and strategy
                                                                 == "fastest"):
            raise ConfigError("strategy", f"{strategy!r} contradicts "
                                          f"round_robin_upstreams = {int(value)}")
        return strategy or from_rr
    return strategy or "round_robin"


def stub_config_from_data(data: Mapping[str, Any], overrides: StubOverrides | None = None, *,
                          source: str = "") -> StubConfig:
    """Validate a parsed TOML document plus command-line overrides (module docstring)."""
    cli = overrides or StubOverrides()
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(unknown[0], "unknown setting")
    auth = _str(data, "tls_authentication", "tls_authentication") or AUTH_REQUIRED
    if auth not in (AUTH_REQUIRED, AUTH_NONE):
        raise ConfigError("tls_authentication", f"{auth!r}: expected \"{AUTH_REQUIRED}\" "
                                                f"(strict) or \"{AUTH_NONE}\" (opportunistic)")
    padding = data.get("tls_query_padding_blocksize", DEFAULT_PADDING)
    if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= 1024:
        raise ConfigError("tls_query_padding_blocksize",
                          f"expected an integer 0..1024, got {padding!r}")
    pin_mode = check_pinset_mode(
        cli.pin_mode or _str(data, "tls_pubkey_pinset_mode", "tls_pubkey_pinset_mode")
        or "enforce", "--pin-mode" if cli.pin_mode else "tls_pubkey_pinset_mode")
    ca_text = _str(data, "tls_ca_file", "tls_ca_file")
    timeout = _ms(data, "timeout", "timeout", DEFAULT_TIMEOUT_MS / 1000)
    g = _Globals(opportunistic=cli.opportunistic or auth == AUTH_NONE, pin_mode=pin_mode,
                 ca_file=_check_ca_file(ca_text, "tls_ca_file") if ca_text else None,
                 idle_timeout=_ms(data, "idle_timeout", "idle_timeout", DEFAULT_IDLE_TIMEOUT),
                 padding=padding, connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, timeout))
    listen_items = cli.listen or data.get("listen_addresses", DEFAULT_LISTEN)
    where = "--listen" if cli.listen else "listen_addresses"
    if isinstance(listen_items, str) or not isinstance(listen_items, list | tuple) \
            or not listen_items:
        raise ConfigError(where, "expected a non-empty list of addresses like \"127.0.0.1@53\"")
    listen = tuple(parse_listen(t, f"{where}[{i}]") for i, t in enumerate(listen_items))
    upstreams = _upstreams(data, cli, g)
    # One attempt's share of the query's budget, so that a query can still fail over past
    # a few stalled upstreams (up to four; the last one tried gets whatever is left).
    share = min(DEFAULT_QUERY_TIMEOUT, timeout / max(2, min(len(upstreams.items), 4)))
    upstreams.items = tuple(dataclasses.replace(u, spec=dataclasses.replace(
        u.spec, query_timeout=share)) for u in upstreams.items)
    metrics = cli.metrics if cli.metrics is not None else _str(data, "metrics", "metrics") or ""
    if metrics:
        parse_hostport(metrics, 9153, field="--metrics" if cli.metrics else "metrics")
    log_queries = data.get("log_queries", False)
    if not isinstance(log_queries, bool):
        raise ConfigError("log_queries", f"expected true or false, got {log_queries!r}")
    cache = build(CacheConfig, data.get("cache", {}), "cache")
    if cli.no_cache and cli.prefetch:
        raise ConfigError("--prefetch", "conflicts with --no-cache")
    if cli.no_cache:
        cache = dataclasses.replace(cache, enabled=False)
    if cli.prefetch:
        cache = dataclasses.replace(cache, prefetch=True)
    local = _local(data.get("local", {}))
    acl_field = "--access-control" if cli.access_control else "access_control"
    acl_items = cli.access_control or data.get("access_control", DEFAULT_RULES)
    if isinstance(acl_items, str):
        acl_items = [acl_items]
    if not isinstance(acl_items, list | tuple):
        raise ConfigError(acl_field, "expected a list of rules like \"192.168.0.0/16 allow\"")
    rules = tuple(acl_items)
    access_control(rules, acl_field)  # validated: one ConfigError naming the rule
    nsid = data.get("nsid", "")
    if not isinstance(nsid, str):
        raise ConfigError("nsid", f"expected a string, got {nsid!r}")
    if "nsid" in data:
        nsid_value(nsid, "nsid")
    private = _private(data, cli)
    dnssec = _dnssec(data, cli)
    return StubConfig(listen=listen, upstreams=upstreams.items, strategy=cli.strategy
                      or _strategy(data), opportunistic=g.opportunistic, query_timeout=timeout,
                      metrics=metrics, log_queries=log_queries or cli.log_queries, cache=cache,
                      local=local, access_control=rules, access_control_field=acl_field,
                      nsid=nsid, private_addresses=private.addresses,
                      private_domains=private.domains,
                      private_addresses_field=private.addresses_field,
                      private_domains_field=private.domains_field,
                      dnssec=dnssec.on, dnssec_trust_anchors=dnssec.anchors,
                      domain_insecure=dnssec.insecure,
                      dnssec_trust_anchors_field=dnssec.anchors_field,
                      domain_insecure_field=dnssec.insecure_field,
                      listen_is_default=not cli.listen and "listen_addresses" not in data,
                      upstreams_are_default=upstreams.default, source=source)


@dataclass(frozen=True)
class _Private:
    addresses: tuple[str, ...]
    domains: tuple[str, ...]
    addresses_field: str
    domains_field: str


def _private(data: Mapping[str, Any], cli: StubOverrides) -> _Private:
    """``private_addresses`` and ``private_domains`` (the command line's replace the
    file's), validated as serve validates its own: one error naming the entry."""
    from dnstls.resolver.rebind import parse_domains, parse_networks

    out: list[tuple[tuple[str, ...], str]] = []
    for key, option, what in (("private_addresses", "--private-address", "networks"),
                              ("private_domains", "--private-domain", "names")):
        given: tuple[str, ...] = getattr(cli, key)
        if given:
            out.append((given, option))
            continue
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(key, f"expected a list of {what}, got {items!r}")
        out.append((tuple(items), key))
    (addresses, addresses_field), (domains, domains_field) = out
    parse_networks(addresses, addresses_field)
    parse_domains(domains, domains_field)
    if domains and not addresses:
        raise ConfigError(domains_field, "names allowed to hold private addresses, but "
                                         "private_addresses lists none")
    return _Private(addresses, domains, addresses_field, domains_field)


@dataclass(frozen=True)
class _Dnssec:
    on: bool
    anchors: tuple[str, ...]
    insecure: tuple[str, ...]
    anchors_field: str
    insecure_field: str


def _dnssec(data: Mapping[str, Any], cli: StubOverrides) -> _Dnssec:
    """``dnssec``, ``dnssec_trust_anchors`` (a file or a list of files) and
    ``domain_insecure`` (the command line's replace the file's); with validation on,
    the anchors are loaded here so that a bad file fails the start, ``--check`` and a
    reload, naming the field."""
    from dnstls.resolver.validating import parse_insecure

    on = data.get("dnssec", False)
    if not isinstance(on, bool):
        raise ConfigError("dnssec", f"expected true or false, got {on!r} (Stubby's "
                                    "GETDNS_EXTENSION_TRUE is true here)")
    on = on or cli.dnssec
    anchors_field = "--trust-anchor" if cli.trust_anchors else "dnssec_trust_anchors"
    anchors: Any = cli.trust_anchors or data.get("dnssec_trust_anchors", [])
    if isinstance(anchors, str):
        anchors = [anchors]
    if not isinstance(anchors, list | tuple) or not all(isinstance(a, str) and a
                                                        for a in anchors):
        raise ConfigError(anchors_field, f"expected a file name or a list of file names, "
                                         f"got {anchors!r}")
    insecure_field = "--domain-insecure" if cli.domain_insecure else "domain_insecure"
    insecure: Any = cli.domain_insecure or data.get("domain_insecure", [])
    if not isinstance(insecure, list | tuple) or not all(isinstance(i, str) for i in insecure):
        raise ConfigError(insecure_field, f"expected a list of names, got {insecure!r}")
    parse_insecure(insecure, insecure_field)
    if anchors and not on:
        raise ConfigError(anchors_field, "given, but dnssec is off: set dnssec = true (or "
                                         "stub --dnssec)")
    out = _Dnssec(on, tuple(anchors), tuple(insecure), anchors_field, insecure_field)
    if on:
        load_trust_anchors(out.anchors, out.anchors_field)
    return out


def load_trust_anchors(files: Sequence[str], field: str = "dnssec_trust_anchors",
                       ) -> tuple[Any, str]:
    """The trust anchors of ``files`` merged (every file loaded, as Stubby loads each
    of its ``dnssec_trust_anchors``), or serve's default (:func:`~dnstls.resolver.
    validating.load_anchors`) when there is none; and where they came from. A file that
    does not load is a ConfigError naming the field (``dnssec_trust_anchors[1]`` in a
    list of several)."""
    from dnstls.resolver.dnssec import TrustAnchors
    from dnstls.resolver.validating import load_anchors

    if not files:
        return load_anchors("")
    ds: dict[Any, list[Any]] = {}
    dnskey: dict[Any, list[Any]] = {}
    for i, path in enumerate(files):
        try:
            anchors, _source = load_anchors(path)
        except ConfigError as exc:
            raise ConfigError(field if len(files) == 1 else f"{field}[{i}]",
                              exc.message) from None
        for zone, records in anchors.ds.items():
            ds.setdefault(zone, []).extend(records)
        for zone, keys in anchors.dnskey.items():
            dnskey.setdefault(zone, []).extend(keys)
    return TrustAnchors(ds, dnskey), ", ".join(files)


@dataclass
class _Upstreams:
    items: tuple[StubUpstream, ...]
    default: bool


def _upstreams(data: Mapping[str, Any], cli: StubOverrides, g: _Globals) -> _Upstreams:
    if cli.upstreams:
        return _Upstreams(_cli_upstreams(cli, g), False)
    if cli.pins or cli.ca_file:
        raise ConfigError("--pin/--ca-file", "apply to --upstream; give at least one")
    items = data.get("upstream_recursive_servers")
    if items is None:
        return _Upstreams(tuple(_make_upstream(
            address=a, port=853, auth_name=DEFAULT_AUTH_NAME, pins=(), pin_mode="enforce",
            ca_file=None, g=g, path="default") for a in DEFAULT_UPSTREAM_ADDRESSES), True)
    if not isinstance(items, list) or not items:
        raise ConfigError("upstream_recursive_servers",
                          "expected a non-empty array of tables ([[upstream_recursive_servers]])")
    out = [_upstream_from_table(item, f"upstream_recursive_servers[{i}]", g)
           for i, item in enumerate(items)]
    _no_duplicates(out, "upstream_recursive_servers")
    return _Upstreams(tuple(out), False)


def _cli_upstreams(cli: StubOverrides, g: _Globals) -> tuple[StubUpstream, ...]:
    pins = []
    for i, pin in enumerate(cli.pins):
        try:
            pins.append(parse_pin(pin))
        except ValueError as exc:
            raise ConfigError(f"--pin[{i}]", str(exc)) from None
    ca_file = _check_ca_file(cli.ca_file, "--ca-file") if cli.ca_file else g.ca_file
    out = []
    for i, uri in enumerate(cli.upstreams):
        path = f"--upstream[{i}]"
        parsed = parse_upstream_uri(uri, path=path, strict=False)
        if parsed.transport != "tls":
            raise ConfigError(path, f"{uri!r}: the stub forwards over TLS only "
                                    "(tls://ADDR[:PORT][#NAME]); there is no cleartext upstream")
        out.append(_make_upstream(address=parsed.address, port=parsed.port,
                                  auth_name=parsed.tls_auth_name, pins=tuple(pins),
                                  pin_mode=g.pin_mode, ca_file=ca_file, g=g, path=path))
    _no_duplicates(out, "--upstream")
    return tuple(out)


def _no_duplicates(items: Sequence[StubUpstream], path: str) -> None:
    seen: dict[tuple[str, int, str | None], int] = {}
    for i, item in enumerate(items):
        key = (item.spec.address, item.spec.port, item.spec.tls_auth_name)
        if key in seen:
            raise ConfigError(f"{path}[{i}]", f"duplicate of {path}[{seen[key]}] ({item.name})")
        seen[key] = i


def load_stub_config(path: str | Path | None = None, overrides: StubOverrides | None = None,
                     ) -> StubConfig:
    """Read the TOML file (if any), apply the command line, validate."""
    data = read_toml(path) if path else {}
    return stub_config_from_data(data, overrides, source=str(path or ""))


__all__ = ["AUTH_NONE", "AUTH_REQUIRED", "DEFAULT_LISTEN", "DEFAULT_UPSTREAM_ADDRESSES",
           "PIN_MODES", "STRATEGIES", "StubConfig", "StubOverrides", "StubUpstream",
           "load_stub_config", "load_trust_anchors", "parse_listen", "stub_config_from_data"]
