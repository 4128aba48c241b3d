"""``dnstls serve``: wiring, lifecycle, signals, reload.

Start-up builds everything from a validated :class:`~dnstls.config.Config` and binds
every socket before reporting ready; any failure there is fatal and names the field.

Shutdown (SIGTERM or the first SIGINT) runs in named steps, as hypercorn/uvicorn do:
stop accepting; stop reading but answer every query already received, within
``server.shutdown_grace`` seconds; abort what is left and log how many; exit 0. A second
SIGINT exits at once.

Reload (SIGHUP, and a poll of the certificate files' mtimes): new TLS handshakes get
the new certificate; open connections are untouched. A reload that fails keeps the
running certificate and logs why. Given ``reload_config`` (``dnstls serve``), SIGHUP
also reads the configuration again and applies local data (zone files read again,
``[local] data``; cached answers for names that became local are dropped) and access
control, and reopens a ``[dnstap] file`` that was moved away (log rotation,
:mod:`dnstls.net.dnstap`); other changed settings are logged as waiting for a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name

from dnstls import certs
from dnstls.compiled import version_line
from dnstls.config import (
    DEFAULT_DNS_PORT,
    DEFAULT_DOT_PORT,
    Config,
    ForwardConfig,
    LocalConfig,
    ServerConfig,
    access_control,
    default_state_dir,
    format_hostport,
    metrics_url,
    parse_hostport,
)
from dnstls.errors import ConfigError
from dnstls.metrics import MetricsServer
from dnstls.net import dnstap as dnstap_mod
from dnstls.net import loop as loop_mod
from dnstls.net.dnstap import DnstapWriter, endpoint, tap_forwarders, tap_resolver
from dnstls.net.handler import QueryHandler
from dnstls.net.server import StreamListener
from dnstls.net.tls import CertPair, ServerTLS
from dnstls.net.udp import UdpListener
from dnstls.proto.acl import AccessControl
from dnstls.proto.admission import Admission, AdmissionLimits
from dnstls.proto.answers import Transport
from dnstls.proto.pins import spki_pin
from dnstls.proto.stream import CloseReason, StreamLimits
from dnstls.resolver.base import Refuse, Resolver
from dnstls.resolver.cache import Cache
from dnstls.resolver.default_zones import DEFAULT_ZONES, default_zones, parse_nodefault
from dnstls.resolver.local import (
    LocalData,
    ddr_records,
    load_zone,
    parse_local_data,
    place_local_data,
)
from dnstls.resolver.wire import WireForwarder
from dnstls.resolver.zonetypes import (
    BLOCKING,
    ZONE_TYPES,
    by_wire,
    check_type,
    parse_zone_types,
    read_blocklist,
    typed_above,
)

log = logging.getLogger("dnstls.service")

DEFAULT_LISTEN = ServerConfig().listen


def _changed(old: Any, new: Any, *, applied: set[str], prefix: str = "") -> list[str]:
    """The settings (``section.name``) whose values differ between two configurations,
    but those in ``applied`` (sections or settings a reload applies)."""
    out = []
    for item in dataclasses.fields(new):
        name = prefix + item.name
        before, after = getattr(old, item.name), getattr(new, item.name)
        if name in applied or before == after:
            continue
        if dataclasses.is_dataclass(after) and not prefix:
            out += _changed(before, after, applied=applied, prefix=f"{name}.")
        else:
            out.append(name)
    return out


def stream_limits(server: ServerConfig) -> StreamLimits:
    return StreamLimits(idle_timeout=server.idle_timeout,
                        message_timeout=server.message_timeout,
                        write_timeout=server.write_timeout,
                        max_in_flight=server.max_in_flight,
                        max_queries=server.max_queries_per_connection,
                        max_pending_output=max(1024, server.max_pending_output))


@dataclass
class Endpoints:
    """Where the service actually listens (ports resolved when 0 was asked)."""

    tls: list[tuple[str, int]] = field(default_factory=list)
    plain: list[tuple[str, int]] = field(default_factory=list)
    metrics: tuple[str, int] | None = None


class Service:
    """The running DoT service. ``await start()``, then ``await run_until_stopped()``."""

    def __init__(self, config: Config, *,
                 upstream_factory: Callable[[Resolver], tuple[Resolver, Any]] | None = None,
                 reuse_port: bool = False, ticket_key: bytes | None = None,
                 acl_field: str = "server.access_control",
                 reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        #: SIGHUP reads the configuration again with this (``dnstls serve --config``
        #: and its command line) and applies local data and access control; the
        #: result it gave last is the baseline other changes are compared with.
        self._load_config = reload_config
        self._baseline = reload_config() if reload_config is not None else config
        self._terminal: Resolver = Refuse()
        self._local_print = ""
        #: Access control for every listener (proto/acl.py); ``acl_field`` is what the
        #: operator calls the setting (the stub's is ``access_control``).
        self.acl_field = acl_field
        self.acl: AccessControl = access_control(config.server.access_control, acl_field)
        self.endpoints = Endpoints()
        self.tls: ServerTLS | None = None
        self.handler: QueryHandler | None = None
        self.listeners: list[StreamListener] = []
        self.udp: list[UdpListener] = []
        self.metrics: MetricsServer | None = None
        self.dnstap: DnstapWriter | None = None
        self.pin = ""
        self._upstream_factory = upstream_factory
        self._closers: list[Any] = []
        self._stats_sources: dict[str, Callable[[], Mapping[str, Any]]] = {}
        self._reload_hooks: list[Callable[[], bool]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sigint_count = 0
        self.reuse_port = reuse_port  # SO_REUSEPORT on every listener (serve --workers)
        self.ticket_key = ticket_key  # the workers' shared session ticket key
        #: Why the last reload failed ("" when it did not): ``dnstls control reload``
        self.reload_error = ""
        self.control: Any = None  # the ControlServer, with server.control

    # -- start-up ----------------------------------------------------------------------
    def _certificates(self) -> list[CertPair]:
        config = self.config
        if config.tls.certificates:
            return [CertPair(Path(c.cert), Path(c.key), field=f"tls.certificates[{i}]")
                    for i, c in enumerate(config.tls.certificates)]
        state_dir = Path(config.server.state_dir) if config.server.state_dir \
            else default_state_dir()
        addresses = [parse_hostport(a, DEFAULT_DOT_PORT, field="server.listen")[0]
                     for a in config.server.listen]
        names = [socket.gethostname(), "localhost"]
        try:
            cert, key, created = certs.ensure_self_signed(state_dir, names, addresses)
        except OSError as exc:
            raise ConfigError("server.state_dir",
                              f"cannot create certificate in {state_dir}: {exc.strerror}"
                              ) from None
        if created:
            log.warning("no certificate configured: generated a self-signed one in %s",
                        state_dir)
        return [CertPair(cert, key, field="server.state_dir")]

    def _pipeline(self) -> LocalData:
        terminal: Resolver = Refuse()
        if self._upstream_factory is not None:
            terminal, closer = self._upstream_factory(terminal)
            if closer is not None:
                self._closers.append(closer)
        self._terminal = terminal
        local, self._local_print = self._local_data(self.config.local)
        return local

    def _local_data(self, local: LocalConfig) -> tuple[LocalData, str]:
        """Local data for ``local`` (zone files read now) in front of the running
        upstream stages, and a fingerprint of its content (a reload compares them)."""
        zones = [load_zone(path, field=f"local.zones[{i}]")
                 for i, path in enumerate(local.zones)]
        configured = [z.origin for z in zones if z.origin is not None]
        typed = typed_zones(local, configured)
        # only the typed names above a forward zone, a default zone or a record of local
        # data matter to these steps (a blocklist's 100,000 are not made Name objects)
        forward_names = [dns.name.from_text(z.name) for z in self.config.forward.zones]
        nodefault, forwarded = forward_zone_overrides(
            self.config.forward, local, configured,
            {n: typed[(n.to_wire() or b"").lower()] for n in typed_above(forward_names, typed)})
        rrsets = parse_local_data(local.data)
        if local.default_zones:
            # a configured zone (or typed zone) of the same origin replaces a default zone
            replaced = [n for n in DEFAULT_ZONES if (n.to_wire() or b"").lower() in typed]
            zones += default_zones(nodefault=parse_nodefault(local.nodefault) | nodefault,
                                   configured=[*configured, *replaced])
        # local data under a typed zone is that zone's (place_local_data leaves it out
        # of the zones around, as under a forwarded name)
        transparent = place_local_data(
            zones, rrsets, [*forwarded, *typed_above((r.name for r in rrsets), typed)])
        ddr = []
        listen = self.config.server.listen
        if local.ddr and self.tls is not None and listen:
            names = certs.certificate_names(self.tls.leaf)
            name = local.ddr_name or (names[0] if names else "")
            if name:
                port = parse_hostport(listen[0], DEFAULT_DOT_PORT,
                                      field="server.listen[0]")[1]
                ddr = ddr_records(name, port)
        digest = hashlib.sha256(repr((local.default_zones, sorted(map(str, ddr)))).encode())
        for zone in zones:
            digest.update(zone.to_text().encode())
        for owner in sorted(transparent):
            for rrset in transparent[owner].values():
                digest.update(rrset.to_text().encode())
        for wire, kind in sorted(typed.items()):
            digest.update(wire + kind.encode())
        return (LocalData(self._terminal, zones=zones, ddr=ddr,
                          refuse_other_classes=local.default_zones, transparent=transparent,
                          forwarded=forwarded, typed=typed),
                digest.hexdigest())

    def add_stats_source(self, name: str, source: Callable[[], Mapping[str, Any]]) -> None:
        self._stats_sources[name] = source

    async def start(self, *, tune_gc: bool = False) -> Endpoints:
        config = self.config
        server = config.server
        if server.listen:
            # one process: a session cache (tls.session_cache, 0: tickets); workers:
            # tickets with their shared key
            self.tls = ServerTLS(self._certificates(), ticket_key=self.ticket_key,
                                 session_cache=0 if self.ticket_key
                                 else config.tls.session_cache)
            self.pin = spki_pin(self.tls.leaf)
        pipeline = self._pipeline()
        self.dnstap = self._dnstap()
        # "is not None": an empty Cache is falsy (it has __len__)
        loop = asyncio.get_running_loop()
        cache = next((c.cache for c in self._closers
                      if getattr(c, "cache", None) is not None), None)
        wire = None
        forwarder = next((c.forwarder for c in self._closers
                          if getattr(c, "forwarder", None) is not None), None)
        chase = next((c.chase for c in self._closers
                      if getattr(c, "chase", None) is not None), None)
        if chase is not None:  # CNAME targets are asked of the whole pipeline
            chase.front = pipeline
        tap = self.dnstap
        if tap is not None and forwarder is not None and (tap.log_forwarder_query
                                                          or tap.log_forwarder_response):
            tap_forwarders(forwarder, tap)
        iterator = next((c.iterator for c in self._closers
                         if getattr(c, "iterator", None) is not None), None)
        if tap is not None and iterator is not None and (tap.log_resolver_query
                                                         or tap.log_resolver_response):
            tap_resolver(iterator, tap)
        # dnstap: cache hits and local data stay on the fast path (the listeners log
        # them); what is forwarded takes the message path (no wire-level forwarding),
        # where the listeners know the client and the upstreams log their exchanges;
        # no exact-repeat memo (it answers runs of queries without the listener seeing
        # each one)
        # DNSSEC validation: every forwarded answer is checked on the message path
        # (resolver/validating.py); the validated answers the cache keeps are still
        # served from the fast path
        # Recursion: the iterator answers on the wire path too (Iterator.resolve_wire,
        # resolver/iterate.py "The wire path"); with validation or dnstap as forwarding
        validating = any(getattr(c, "validating", None) is not None for c in self._closers)
        if (forwarder is not None and hasattr(forwarder, "resolve_wire") and tap is None
                and not validating):
            wire = WireForwarder(forwarder, cache if cache is not None else Cache.storing_nothing(
                                     minimal_responses=config.cache.minimal_responses),
                                 loop.time,
                                 is_local=pipeline.covers_key)
            wire.chase = chase
            wire.rebind = next((c.rebind for c in self._closers
                                if getattr(c, "rebind", None) is not None), None)
        self.handler = QueryHandler(pipeline, query_timeout=server.query_timeout,
                                    keepalive=server.idle_timeout,
                                    log_queries=server.log_queries, cache=cache,
                                    clock=loop.time, wire=wire, local=pipeline,
                                    nsid=server.nsid_bytes, exact_memo=tap is None)
        admission = Admission(AdmissionLimits(server.max_connections,
                                              server.max_connections_per_client))
        limits = stream_limits(server)
        try:
            if server.listen:
                assert self.tls is not None
                dot = StreamListener(self.handler, transport=Transport.TLS, tls=self.tls,
                                     limits=limits, admission=admission,
                                     handshake_timeout=server.handshake_timeout,
                                     acl=self.acl)
                dot.tap = self._client_tap()
                self.listeners.append(dot)
                for i, text in enumerate(server.listen):
                    bound = await self._bind(dot, text, DEFAULT_DOT_PORT, f"server.listen[{i}]")
                    if bound:
                        self.endpoints.tls.append(bound)
                if not self.endpoints.tls:
                    raise ConfigError("server.listen", "no listen address could be bound")
            if server.plain:
                tcp = StreamListener(self.handler, transport=Transport.TCP, tls=None,
                                     limits=limits, admission=admission, acl=self.acl)
                tcp.tap = self._client_tap()
                self.listeners.append(tcp)
                for i, text in enumerate(server.plain):
                    fld = f"server.plain[{i}]"
                    host, port = parse_hostport(text, DEFAULT_DNS_PORT, field=fld)
                    bound = await self._guard(self._bind_plain(tcp, host, port), text, fld)
                    self.endpoints.plain.append(bound)
            if server.control:
                await self._start_control(server.control)
            if server.metrics:
                host, port = parse_hostport(server.metrics, 9153, field="server.metrics")
                self.metrics = MetricsServer(self.statistics)
                try:
                    self.endpoints.metrics = self.metrics.start(host, port)
                except OSError as exc:
                    raise bind_config_error(exc, server.metrics, "server.metrics") from None
            if self.dnstap is not None:
                self.dnstap.start()
        except BaseException:
            await self.aclose()
            raise
        if self.tls is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch_certs()))
        if tune_gc:
            loop_mod.tune_gc_for_serving()
        return self.endpoints

    async def _start_control(self, path: str) -> None:
        """The control socket of ``dnstls control`` (net/control.py, control.py)."""
        from dnstls.control import Commands
        from dnstls.net.control import ControlServer

        commands = Commands(self, clock=asyncio.get_running_loop().time)
        self.control = ControlServer(path, commands.run)
        await self.control.start()

    # -- what the control commands read and act on ---------------------------------------
    def answer_cache(self) -> Cache | None:
        """The cache of forwarded answers, or None when caching is off."""
        cache = self.handler.cache if self.handler is not None else None
        return cache if isinstance(cache, Cache) else None

    def local_data(self) -> LocalData | None:
        local = self.handler.local if self.handler is not None else None
        return local if isinstance(local, LocalData) else None

    def forward_routes(self) -> list[tuple[str, list[str]]]:
        """(zone, upstream URIs) the forwarder uses: "." (the default upstreams; none
        with recursion: names are resolved from the root) first, then each forward zone;
        empty when forwarding is off."""
        for closer in self._closers:
            routes = getattr(closer, "routes", None)
            if routes is not None:
                return list(routes)
        return []

    def stub_routes(self) -> list[tuple[str, str, list[str]]]:
        """(zone, "prime" or "noprime", servers) where the recursion starts: "." and
        each stub zone; empty without recursion."""
        for closer in self._closers:
            stubs = getattr(closer, "stubs", None)
            if stubs is not None:
                return list(stubs)
        return []

    def clock(self) -> float:
        """The time the cache is kept in (the event loop's)."""
        return asyncio.get_running_loop().time()

    async def _bind_plain(self, tcp: StreamListener, host: str, port: int,
                          ) -> tuple[str, int]:
        """UDP and TCP on one port; with port 0, retry until both get the same one."""
        assert self.handler is not None
        for _attempt in range(20):
            udp, (uhost, uport) = await UdpListener.listen(self.handler, host, port,
                                                           reuse_port=self.reuse_port,
                                                           acl=self.acl)
            try:
                await tcp.listen(host, uport, reuse_port=self.reuse_port)
            except OSError as exc:
                udp.close()
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue  # the OS gave UDP a port whose TCP twin is taken
                raise
            udp.tap = self._client_tap()
            if udp.tap is not None and udp.transport is not None:
                udp.local = endpoint(udp.transport.get_extra_info("sockname"))
            self.udp.append(udp)
            return uhost, uport
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    def _dnstap(self) -> DnstapWriter | None:
        """The dnstap writer ``[dnstap]`` asks for (its file opened: a start-up error
        names ``dnstap.file``), None when it is off or logs nothing."""
        cfg = self.config.dnstap
        if not cfg.enabled:
            return None
        if not cfg.any_message:
            log.warning("dnstap is enabled but logs no message: switch on "
                        "dnstap.log_client_query, log_client_response, "
                        "log_forwarder_query, log_forwarder_response, "
                        "log_resolver_query or log_resolver_response")
            return None
        writer = DnstapWriter(socket_path=cfg.socket_path, file=cfg.file,
                              identity=cfg.identity_text, version=cfg.version_text,
                              client_query=cfg.log_client_query,
                              client_response=cfg.log_client_response,
                              forwarder_query=cfg.log_forwarder_query,
                              forwarder_response=cfg.log_forwarder_response,
                              resolver_query=cfg.log_resolver_query,
                              resolver_response=cfg.log_resolver_response,
                              max_queue=dnstap_mod.MAX_QUEUE)
        writer.open()
        log.info("dnstap: logging %s to %s", ", ".join(
            name for name, on in (("client queries", cfg.log_client_query),
                                  ("client responses", cfg.log_client_response),
                                  ("forwarder queries", cfg.log_forwarder_query),
                                  ("forwarder responses", cfg.log_forwarder_response),
                                  ("resolver queries", cfg.log_resolver_query),
                                  ("resolver responses", cfg.log_resolver_response))
            if on), f"socket {cfg.socket_path}" if cfg.socket_path else f"file {cfg.file}")
        return writer

    def _client_tap(self) -> DnstapWriter | None:
        """The writer for the listeners: only when client messages are logged."""
        tap = self.dnstap
        if tap is not None and (tap.log_client_query or tap.log_client_response):
            return tap
        return None

    async def _guard(self, coro: Any, text: str, fld: str) -> Any:
        try:
            return await coro
        except OSError as exc:
            raise bind_config_error(exc, text, fld) from None

    async def _bind(self, listener: StreamListener, text: str, default_port: int,
                    fld: str) -> tuple[str, int] | None:
        host, port = parse_hostport(text, default_port, field=fld)
        try:
            return await listener.listen(host, port, reuse_port=self.reuse_port)
        except OSError as exc:
            if (exc.errno == errno.EADDRNOTAVAIL and self.config.server.listen == DEFAULT_LISTEN
                    and ":" in host):
                log.warning("IPv6 loopback is not available; not listening on %s", text)
                return None
            return await self._guard(_raise(exc), text, fld)  # type: ignore[no-any-return]

    # -- running -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            log.warning("second interrupt: exiting at once")
            os._exit(130)
        self.stop()

    def stop(self) -> None:
        self._stop.set()

    def add_reload_hook(self, hook: Callable[[], bool]) -> None:
        """Also run ``hook`` on every reload (SIGHUP); it returns False when it failed
        and kept what was running (e.g. ``dnstls stub`` re-reading its upstreams)."""
        self._reload_hooks.append(hook)

    def reload(self) -> bool:
        ok = True
        self.reload_error = ""
        if self.tls is not None:
            ok = self.tls.reload()
            if ok:
                self.pin = spki_pin(self.tls.leaf)
                log.info("serving certificate pin is now %s", self.pin)
            else:
                self.reload_error = self.tls.last_error
        if self._load_config is not None and self.handler is not None:
            ok = self._reload_config(self._load_config) and ok
        if self.dnstap is not None and self.dnstap.file:
            # log rotation, as BIND's rndc dnstap -reopen: the writer finishes the old
            # file and opens the path anew in the background (a failure is logged,
            # naming dnstap.file; the answers never wait for it)
            self.dnstap.reopen()
        for hook in self._reload_hooks:
            try:
                ok = hook() and ok
            except Exception:
                log.exception("reload hook failed; the running configuration stays")
                ok = False
        if not ok and not self.reload_error:
            self.reload_error = "reload failed; see the log"
        return ok

    def _reload_config(self, load: Callable[[], Config]) -> bool:
        """SIGHUP's second half: read the configuration again and apply what can change
        while running -- local data (zone files read again) and access control; other
        changes are logged as waiting for a restart. Any error keeps what runs."""
        try:
            new = load()
            apply_local = self.prepare_local(new.local)
            acl = access_control(new.server.access_control, self.acl_field)
        except ConfigError as exc:
            log.error("reload: %s; the running configuration stays", exc)
            self.reload_error = self.reload_error or f"{exc}; the running configuration stays"
            return False
        apply_local()
        if new.server.access_control != self.config.server.access_control:
            # the counters go on (metrics are counters: they must not drop to 0)
            acl.refused.update(self.acl.refused)
            acl.denied.update(self.acl.denied)
            acl.norec_refused.update(self.acl.norec_refused)
            self.acl = acl
            for listener in self.listeners:
                listener.acl = acl
            for udp in self.udp:
                udp.acl = acl
            log.info("reload: access control now has %d rules (connections already "
                     "open keep the verdict they got)", len(new.server.access_control))
        applied = {"local", "source", "server.access_control"}
        if self._reload_private_addresses(new.forward):
            applied |= {"forward.private_addresses", "forward.private_domains"}
        baseline, self._baseline = self._baseline, new
        waiting = _changed(baseline, new, applied=applied)
        if waiting:
            log.warning("reload: %s changed; restart dnstls to apply %s",
                        ", ".join(waiting), "them" if len(waiting) > 1 else "it")
        self.config = dataclasses.replace(
            self.config, server=dataclasses.replace(self.config.server,
                                                    access_control=new.server.access_control))
        return True

    def _reload_private_addresses(self, forward: ForwardConfig) -> bool:
        """Apply ``forward``'s private addresses and domains to the running rebinding
        filter (``[forward] private_*``; the forward zones' names stay as they run) and
        drop the cached answers, which were filtered with the old ones. False when there
        is no filter to change: none was configured at start (switching it on waits
        for a restart, as the wire path was built without it)."""
        old = self._baseline.forward
        if (old.private_addresses, old.private_domains) == (forward.private_addresses,
                                                            forward.private_domains):
            return True
        rebind = next((c.rebind for c in self._closers
                       if getattr(c, "rebind", None) is not None), None)
        if rebind is None:
            return False
        from dnstls.wiring import private_addresses

        running = dataclasses.replace(forward, zones=self.config.forward.zones)
        fresh = private_addresses(running, self.config.recursion.stub_zones)
        if fresh is None:  # all removed: the filter stays in place and removes nothing
            from dnstls.resolver.rebind import PrivateAddresses

            fresh = PrivateAddresses([], ())
        rebind.adopt(fresh)
        cache = self.answer_cache()
        dropped = cache.discard_if(lambda _key: True) if cache is not None else 0
        log.info("reload: private addresses now %s; %d cached answers dropped",
                 ", ".join(forward.private_addresses) or "none", dropped)
        return True

    def prepare_local(self, local: LocalConfig) -> Callable[[], None]:
        """Read the local data of ``local`` now (zone files, blocklists: a ConfigError
        naming the field when one does not load) and return what puts it in service, so
        that a reload checks everything before it changes anything. Applying it changes
        nothing when the content is the same as what runs."""
        data, fingerprint = self._local_data(local)

        def apply() -> None:
            if fingerprint != self._local_print:
                self._replace_local(data)
                self._local_print = fingerprint
            self.config = dataclasses.replace(self.config, local=local)

        return apply

    def _replace_local(self, local: LocalData) -> None:
        """Answer from ``local`` from now on; cached answers for names it now answers
        are dropped (they came from an upstream before)."""
        assert self.handler is not None
        wire = self.handler.wire
        if isinstance(wire, WireForwarder):
            wire.is_local = local.covers_key
        old = self.handler.local
        if isinstance(old, LocalData):  # counters go on over a reload
            local.zone_answers.update(old.zone_answers)
        for closer in self._closers:
            if getattr(closer, "chase", None) is not None:
                closer.chase.front = local
        self.handler.replace_local(local, local)
        cache = self.handler.cache
        dropped = (cache.discard_if(local.covers_key) if isinstance(cache, Cache) else 0)
        log.info("reload: local data changed: %d zones, %d names of local data, "
                 "%d typed zones%s",
                 len(local.origins), local.transparent_names, local.typed_zones,
                 f"; {dropped} cached answers for names now local dropped" if dropped
                 else "")

    async def _watch_certs(self) -> None:
        interval = self.config.server.reload_check_interval
        while True:
            await asyncio.sleep(interval)
            if self.tls is not None and self.tls.files_changed():
                log.info("certificate files changed on disk: reloading")
                self.reload()

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> int:
        """Graceful stop in named steps; returns how many queries were cut off."""
        grace = self.config.server.shutdown_grace
        log.info("shutting down: no new connections, answering queries in flight "
                 "(up to %.1f s)", grace)
        for listener in self.listeners:
            listener.stop_accepting()
        results = await asyncio.gather(*(ln.drain(grace) for ln in self.listeners),
                                       *(u.drain(grace) for u in self.udp))
        cut = sum(results)
        if cut:
            log.warning("shutdown: %d connections/queries cut off after %.1f s", cut, grace)
        await self.aclose()
        log.info("stopped")
        return cut

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for listener in self.listeners:
            listener.stop_accepting()
            for conn in list(listener.connections):
                conn.close(CloseReason.SHUTDOWN, abort=True)
        for udp in self.udp:
            udp.close()
        if self.control is not None:
            await self.control.aclose()
            self.control = None
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.dnstap is not None:  # after the listeners: their last answers go too
            await self.dnstap.aclose()
        for closer in self._closers:
            with contextlib.suppress(Exception):
                await closer.aclose()
        self._closers.clear()

    def statistics(self) -> dict[str, Any]:
        listeners = {ln.transport.value: ln.statistics() for ln in self.listeners}
        stats: dict[str, Any] = {
            "handler": self.handler.statistics() if self.handler else {},
            "wire": self.handler.wire.statistics() if self.handler and self.handler.wire
            else {},
            "listeners": listeners,
            "udp": [u.statistics() for u in self.udp],
            "access_control": self.acl.statistics(),
        }
        local = self.handler.local if self.handler else None
        if isinstance(local, LocalData) and local.typed_zones:
            stats["local_zone"] = {"answers": dict(local.zone_answers)}
        for closer in self._closers:
            if hasattr(closer, "statistics"):
                stats.update(closer.statistics())
        for name, source in self._stats_sources.items():
            stats[name] = source()
        if self.dnstap is not None:
            stats["dnstap"] = self.dnstap.statistics()
        if self.tls is not None and self.tls.session_cache:
            stats["tls_session_cache"] = self.tls.session_cache_statistics()
        return stats

    def banner(self, *, metrics: bool = True) -> list[str]:
        """What an operator needs to query the service: addresses, pin, a kdig line
        (``metrics=False``: without the metrics URL, which ``--workers`` lists apart)."""
        lines = [version_line()]  # which build runs: see compiled.py
        for host, port in self.endpoints.tls:
            lines.append(f"DNS over TLS on {format_hostport(host, port)}")
        for host, port in self.endpoints.plain:
            lines.append(f"plain DNS (UDP+TCP) on {format_hostport(host, port)}")
        if self.endpoints.metrics and metrics:
            lines.append(f"metrics on {metrics_url(self.endpoints.metrics)}")
        if self.pin and self.endpoints.tls:
            host, port = self.endpoints.tls[0]
            lines.append(f"certificate SPKI pin (sha256): {self.pin}")
            port_opt = "" if port == DEFAULT_DOT_PORT else f" -p {port}"
            lines.append(f"try: kdig @{host}{port_opt} +tls-pin={self.pin} example.com")
        line = access_control_line(self.acl, [*self.endpoints.tls, *self.endpoints.plain],
                                   self.acl_field)
        if line:
            lines.append(line)
        return lines


def typed_zones(local: LocalConfig, configured: Sequence[dns.name.Name],
                ) -> dict[bytes, str]:
    """The typed zones of ``local`` (dnstls.resolver.zonetypes) by lower-cased wire
    name: the blocklists' names (files read now) then ``zone_types``, a later one
    replacing an earlier one of the same name. A ConfigError for one with the name of a
    zone file."""
    typed: dict[bytes, str] = {}
    for i, item in enumerate(local.blocklist):
        kind = check_type(item.type, f"local.blocklist[{i}].type")
        typed.update(dict.fromkeys(
            read_blocklist(item.file, field=f"local.blocklist[{i}].file"), kind))
    typed.update(by_wire(parse_zone_types(local.zone_types)))
    clash = next((name for name in configured
                  if (name.to_wire() or b"").lower() in typed), None)
    if clash is not None:
        raise ConfigError("local.zone_types", f"{clash} is a zone file's origin "
                          "(local.zones) and has a local-zone type: keep one of them")
    return typed


def forward_zone_overrides(forward: ForwardConfig, local: LocalConfig,
                           configured: list[dns.name.Name],
                           typed: Mapping[dns.name.Name, str] | None = None,
                           ) -> tuple[frozenset[dns.name.Name], frozenset[dns.name.Name]]:
    """How ``[[forward_zone]]`` meets local data: (default zones not served because a
    forward zone has their name, forward zones under a default zone carved out of it).

    A forward zone at or under a default zone (home.arpa., 168.192.in-addr.arpa.) is
    forwarded, not answered NXDOMAIN here: automatic, where Unbound needs an explicit
    ``local-zone: NAME nodefault`` for it (a known trap). A forward zone under a
    *default* zone is carved out of it: the rest of that zone is still answered here,
    never sent to the default upstreams. A configured local zone (``local.zones``)
    wins over forwarding for every name under it; a forward zone there is logged."""
    if not forward.enabled or not forward.zones:
        return frozenset(), frozenset()
    # "local" (a zone file), "default", or a typed zone's type (above a forward zone)
    local_origins = {name: "local" for name in configured}
    local_origins.update(typed or {})
    if local.default_zones:
        skipped = parse_nodefault(local.nodefault)
        for origin in DEFAULT_ZONES - skipped:
            local_origins.setdefault(origin, "default")
    nodefault: set[dns.name.Name] = set()
    forwarded: set[dns.name.Name] = set()
    for zone in forward.zones:
        name = dns.name.from_text(zone.name)
        found, kind = None, None
        walk = name
        while True:
            kind = local_origins.get(walk)
            if kind is not None:
                found = walk
                break
            if len(walk.labels) <= 1:
                break
            walk = walk.parent()
        if found is None or kind is None:
            continue
        if kind == "local":
            log.warning("forward zone %s is at or under the local zone %s (local.zones): "
                        "its names are answered locally, not forwarded", zone.name,
                        found.to_text())
            continue
        if kind in ZONE_TYPES:  # a transparent type forwards the names it has no data for
            if kind in BLOCKING:
                log.warning("forward zone %s is at or under %s %s (local.zone_types): its "
                            "names are answered locally, not forwarded", zone.name,
                            found.to_text(), kind)
            continue
        if found == name:
            nodefault.add(name)
        else:
            forwarded.add(name)
        if found == name:
            log.info("forward zone %s: forwarded instead of answered here as a default "
                     "zone (as with local.nodefault)", zone.name)
        else:
            log.info("forward zone %s: forwarded instead of answered here; the rest of "
                     "the default zone %s still is", zone.name, found.to_text())
    return frozenset(nodefault), frozenset(forwarded)


def access_control_line(acl: AccessControl, endpoints: list[tuple[str, int]], field: str,
                        ) -> str | None:
    """The start-up line saying what access control allows, when a listen address is
    not loopback (an operator who put the service on a public address sees why remote
    clients get REFUSED); None when every listener is on loopback."""
    if all(ipaddress.ip_address(host.partition("%")[0]).is_loopback
           for host, _port in endpoints):
        return None
    return f"access control: {acl.describe()} ({field})"


async def _raise(exc: BaseException) -> None:
    raise exc


def bind_config_error(exc: OSError, text: str, fld: str) -> ConfigError:
    """The start-up error for a failed bind of ``text`` (setting ``fld``): in use,
    permission (ports below 1024), or the system's reason -- from the errno, since
    asyncio's and uvloop's TCP bind put a sentence of their own in ``strerror``."""
    code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
    if code == errno.EADDRINUSE:
        return ConfigError(fld, f"address {text} is already in use")
    if code == errno.EACCES:
        return ConfigError(fld, f"permission denied binding {text} "
                           "(ports below 1024 need root or CAP_NET_BIND_SERVICE)")
    return ConfigError(fld, f"cannot listen on {text}: "
                       f"{os.strerror(code) if code is not None else exc}")


__all__ = ["DEFAULT_DNS_PORT", "Endpoints", "Service"]
