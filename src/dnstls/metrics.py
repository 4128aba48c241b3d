"""Prometheus metrics, read from the components' plain counters at scrape time.

The hot path only increments ints in ``statistics()``-style counters; this collector
turns them into metric families when ``/metrics`` is fetched, so serving a query never
touches a Prometheus object. Metric names follow the ``dnstls_`` prefix.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("dnstls.metrics")

StatsSource = Callable[[], Mapping[str, Any]]
_STRUCTURED = frozenset({"handler", "listeners", "upstreams", "zone_upstreams", "udp",
                         "access_control", "local_zone", "dnstap"})


class ServiceCollector(Collector):
    """Builds metric families from a callable returning the service's statistics.

    Expected shape (missing parts are skipped)::

        {"handler": {"responses": {(transport, rcode): n}, "in_flight": n, ...},
         "access_control": {"refused": {transport: n}, "denied": {transport: n},
                            "norec_refused": {transport: n}},
         "udp": [{"received": n, "dropped": {reason: n}, "in_flight": n,
                  "coalesced": n}, ...],  # one per UDP listener: added up
         "listeners": {transport: {"accepted": n, "open": n, "closed": {reason: n},
                                   "handshakes": {version: n},
                                   "handshake_failures": {reason: n}, "resumed": n}},
         "cache": {...}, "upstreams": {name: {...}},
         "zone_upstreams": {zone: {name: {...}}},  # [[forward_zone]]: a zone label
         "local_zone": {"answers": {type: n}}}  # typed zones configured only
    """

    def __init__(self, source: StatsSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        stats = self._source()
        handler = stats.get("handler", {})
        queries = CounterMetricFamily("dnstls_queries", "Responses sent, by transport and rcode",
                                      labels=["transport", "rcode"])
        for (transport, rcode), n in sorted(handler.get("responses", {}).items()):
            queries.add_metric([transport, rcode], n)
        yield queries
        yield GaugeMetricFamily("dnstls_queries_in_flight", "Queries being resolved",
                                value=handler.get("in_flight", 0))
        rejected = CounterMetricFamily("dnstls_rejected_messages",
                                       "Client messages rejected before resolution",
                                       labels=["rcode"])
        for rcode, n in sorted(handler.get("rejected", {}).items()):
            rejected.add_metric([rcode], n)
        yield rejected
        listeners: Mapping[str, Mapping[str, Any]] = stats.get("listeners", {})
        accepted = CounterMetricFamily("dnstls_connections_accepted", "Connections accepted",
                                       labels=["transport"])
        open_ = GaugeMetricFamily("dnstls_connections_open", "Connections open",
                                  labels=["transport"])
        closed = CounterMetricFamily("dnstls_connections_closed", "Connections closed",
                                     labels=["transport", "reason"])
        hs = CounterMetricFamily("dnstls_tls_handshakes", "Completed TLS handshakes",
                                 labels=["version"])
        hs_fail = CounterMetricFamily("dnstls_tls_handshake_failures",
                                      "Failed TLS handshakes", labels=["reason"])
        resumed = CounterMetricFamily("dnstls_tls_resumed_sessions",
                                      "TLS handshakes that resumed a session")
        resumed_total = 0
        for transport, ls in sorted(listeners.items()):
            accepted.add_metric([transport], ls.get("accepted", 0))
            open_.add_metric([transport], ls.get("open", 0))
            for reason, n in sorted(ls.get("closed", {}).items()):
                closed.add_metric([transport, reason], n)
            for version, n in sorted(ls.get("handshakes", {}).items()):
                hs.add_metric([version], n)
            for reason, n in sorted(ls.get("handshake_failures", {}).items()):
                hs_fail.add_metric([reason], n)
            resumed_total += int(ls.get("resumed", 0))
        resumed.add_metric([], resumed_total)
        yield from (accepted, open_, closed, hs, hs_fail, resumed)
        acl: Mapping[str, Any] = stats.get("access_control", {})
        acl_refused = CounterMetricFamily(
            "dnstls_access_control_refused",
            "Queries answered REFUSED (EDE 18) by access control, by transport",
            labels=["transport"])
        acl_denied = CounterMetricFamily(
            "dnstls_access_control_denied",
            "Datagrams (udp) dropped and connections (tcp, tls) closed at accept by "
            "access control", labels=["transport"])
        acl_norec = CounterMetricFamily(
            "dnstls_access_control_norec_refused",
            "Queries with RD=0 from clients of allow (not allow_snoop) answered REFUSED "
            "(EDE 18) because local data does not answer them, by transport",
            labels=["transport"])
        for family, key in ((acl_refused, "refused"), (acl_denied, "denied"),
                            (acl_norec, "norec_refused")):
            for transport, n in sorted(acl.get(key, {}).items()):
                family.add_metric([transport], n)
        yield from (acl_refused, acl_denied, acl_norec)
        if "local_zone" in stats:
            zone_answers = CounterMetricFamily(
                "dnstls_local_zone_answers",
                "Queries answered (or dropped: deny over UDP) by a local-zone type "
                "(local.zone_types, local.blocklist), by type", labels=["type"])
            for kind, n in sorted(stats["local_zone"].get("answers", {}).items()):
                zone_answers.add_metric([kind], n)
            yield zone_answers
        if "dnstap" in stats:
            yield from _dnstap(stats["dnstap"])
        yield from _udp(stats.get("udp", ()))
        families: list[Metric] = []
        for name, ustats in sorted(stats.get("upstreams", {}).items()):
            families += _flat("dnstls_upstream", ustats, [("upstream", name)])
        for zone, upstreams in sorted(stats.get("zone_upstreams", {}).items()):
            for name, ustats in sorted(upstreams.items()):
                families += _flat("dnstls_upstream", ustats, [("upstream", name), ("zone", zone)])
        yield from _merged(families)
        for section, values in sorted(stats.items()):  # cache, coalesce, stub, ...
            if section not in _STRUCTURED and isinstance(values, Mapping):
                yield from _flat(f"dnstls_{section}", values, [])


def _dnstap(tap: Mapping[str, Any]) -> Iterable[Metric]:
    """The dnstap writer's counters (``[dnstap]`` on: net/dnstap.py)."""
    yield CounterMetricFamily("dnstls_dnstap_sent", "dnstap messages written",
                              value=tap.get("sent", 0))
    yield CounterMetricFamily("dnstls_dnstap_dropped",
                              "dnstap messages dropped: the queue was full (the collector "
                              "slow or gone) or the output failed",
                              value=tap.get("dropped", 0))
    yield GaugeMetricFamily("dnstls_dnstap_queued", "dnstap messages waiting to be written",
                            value=tap.get("queued", 0))
    yield GaugeMetricFamily("dnstls_dnstap_connected",
                            "1 while the dnstap socket is connected (or the file open)",
                            value=tap.get("connected", 0))
    yield CounterMetricFamily("dnstls_dnstap_connections",
                              "dnstap socket connections made (handshakes completed)",
                              value=tap.get("connections", 0))
    yield CounterMetricFamily("dnstls_dnstap_reopens",
                              "dnstap files opened anew (log rotation: SIGHUP or dnstls "
                              "control dnstap_reopen after the file was moved away)",
                              value=tap.get("reopens", 0))


def _udp(listeners: Iterable[Mapping[str, Any]]) -> Iterable[Metric]:
    """The plain-DNS UDP listeners' counters, added up over the listen addresses (as
    the TCP and TLS listeners' are, by transport)."""
    received = coalesced = in_flight = 0
    dropped: Counter[str] = Counter()
    for ls in listeners:
        received += int(ls.get("received", 0))
        coalesced += int(ls.get("coalesced", 0))
        in_flight += int(ls.get("in_flight", 0))
        dropped.update(ls.get("dropped", {}))
    yield CounterMetricFamily("dnstls_udp_datagrams_received",
                              "Datagrams received by the plain-DNS UDP listeners",
                              value=received)
    family = CounterMetricFamily(
        "dnstls_udp_datagrams_dropped",
        "Datagrams dropped unanswered, by reason: overload (the listener's limit of "
        "queries in flight reached), closing (shutdown), unanswerable (QR set or no readable "
        "header)", labels=["reason"])
    for reason in sorted({"overload", "closing", "unanswerable", *dropped}):
        family.add_metric([reason], dropped[reason])
    yield family
    yield CounterMetricFamily("dnstls_udp_coalesced",
                              "UDP queries that joined an identical query in flight "
                              "and were answered from its answer", value=coalesced)
    yield GaugeMetricFamily("dnstls_udp_in_flight",
                            "UDP queries being answered, joined ones included",
                            value=in_flight)


#: ``statistics()`` keys that only ever grow: exported as counters (``..._total``).
#: Everything else numeric (entries, bytes, in_flight, srtt, backed_off, ...) is a gauge.
COUNTER_KEYS = frozenset({
    "hits", "misses", "evictions", "stale_served", "prefetches", "prefetches_failed",
    "prefetches_dropped", "forwarded", "coalesced",
    "invalid",
    "queries", "queries_sent", "responses", "errors", "timeouts", "retries",
    "held", "latency_sum", "latency_count", "connections_opened", "connections_reused",
    "connections_closed_by_peer", "connection_errors", "handshakes", "handshakes_resumed",
    "pin_failures", "tls_auth_failures", "pin_mismatches_reported", "pin_matches_reported",
    "ignored_responses", "rejected_responses", "forged_responses", "malformed_responses",
    "truncated", "chased", "chase_failures", "removed", "validations",
    "fetches", "fetches_shared", "fetch_failures", "key_cache_hits", "key_cache_misses",
    "signatures_verified", "signature_cache_hits",
    "sockets_opened", "stray_datagrams",
    "opportunistic_connections", "connect_backoff_failures", "reloads", "reload_failures",
    "transport_queries", "transport_responses", "transport_timeouts",
    # the recursion's iterator (resolver/iterate.py)
    "resolutions", "failures", "sends", "network_errors", "protocol_errors",
    "tcp_fallbacks", "edns_fallbacks", "lame", "referrals", "minimised", "restarts",
    "primings", "priming_failures", "subresolutions", "authority", "wire_answers",
})


def _merged(families: Iterable[Metric]) -> Iterable[Metric]:
    """One family per metric name, with the samples of all: the text format allows one
    HELP and TYPE line per name (several upstreams each made a family of their own)."""
    out: dict[str, Metric] = {}
    for family in families:
        first = out.setdefault(family.name, family)
        if first is not family:
            first.samples.extend(family.samples)
    return out.values()


def _flat(prefix: str, stats: Mapping[str, Any], labels: list[tuple[str, str]],
          ) -> Iterable[Metric]:
    """Numbers become metrics named prefix_key (counters for :data:`COUNTER_KEYS`, with
    ``_total``; gauges otherwise); {label: n} dicts get a ``kind`` label."""
    names = [k for k, _ in labels]
    values = [v for _, v in labels]
    for key, value in sorted(stats.items()):
        family = CounterMetricFamily if key in COUNTER_KEYS else GaugeMetricFamily
        metric_name = f"{prefix}_{key}"
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            m = family(metric_name, f"{prefix} {key}", labels=names)
            m.add_metric(values, value)
            yield m
        elif isinstance(value, Mapping) and all(isinstance(v, int | float)
                                                for v in value.values()):
            m = family(metric_name, f"{prefix} {key}", labels=[*names, "kind"])
            for kind, n in sorted(value.items(), key=lambda kv: str(kv[0])):
                m.add_metric([*values, str(kind)], n)
            yield m


class MetricsServer:
    """The ``/metrics`` HTTP endpoint (prometheus_client's threaded server)."""

    def __init__(self, source: StatsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(source))
        self._server: Any = None
        self._thread: Any = None

    def start(self, host: str, port: int) -> tuple[str, int]:
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        addr = self._server.server_address
        return addr[0], addr[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
