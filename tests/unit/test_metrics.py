"""The metrics collector: statistics() shapes become Prometheus families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dnstls.metrics import ServiceCollector


def _text(stats: dict[str, object]) -> str:
    registry = CollectorRegistry()
    registry.register(ServiceCollector(lambda: stats))
    return generate_latest(registry).decode()


def test_udp_listeners_are_added_up() -> None:
    text = _text({"udp": [
        {"received": 10, "dropped": {"overload": 2}, "in_flight": 1, "coalesced": 3},
        {"received": 5, "dropped": {"unanswerable": 1, "overload": 1}, "in_flight": 2,
         "coalesced": 0},
    ]})
    assert "dnstls_udp_datagrams_received_total 15.0" in text
    assert 'dnstls_udp_datagrams_dropped_total{reason="overload"} 3.0' in text
    assert 'dnstls_udp_datagrams_dropped_total{reason="unanswerable"} 1.0' in text
    assert 'dnstls_udp_datagrams_dropped_total{reason="closing"} 0.0' in text
    assert "dnstls_udp_coalesced_total 3.0" in text
    assert "dnstls_udp_in_flight 3.0" in text


def test_no_udp_listener_exports_zeros() -> None:
    text = _text({})
    assert "dnstls_udp_datagrams_received_total 0.0" in text
    assert "dnstls_udp_in_flight 0.0" in text


def test_upstreams_and_zone_upstreams_share_one_family_per_name() -> None:
    """One HELP/TYPE per metric name (the text format allows no second TYPE line), the
    default upstreams as before, a forward zone's with a zone label."""
    text = _text({
        "upstreams": {"udp://192.0.2.1:53": {"queries": 1, "responses": {"NOERROR": 1}},
                      "udp://192.0.2.2:53": {"queries": 2, "responses": {}}},
        "zone_upstreams": {"corp.example.": {"udp://192.0.2.1:53": {"queries": 3}},
                           "home.arpa.": {"udp://192.0.2.1:53": {"queries": 4}}},
    })
    type_lines = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(type_lines) == len(set(type_lines))
    assert text.count("# TYPE dnstls_upstream_queries_total counter") == 1
    for sample in ('dnstls_upstream_queries_total{upstream="udp://192.0.2.1:53"} 1.0',
                   'dnstls_upstream_queries_total{upstream="udp://192.0.2.2:53"} 2.0',
                   'dnstls_upstream_queries_total{upstream="udp://192.0.2.1:53",'
                   'zone="corp.example."} 3.0',
                   'dnstls_upstream_queries_total{upstream="udp://192.0.2.1:53",'
                   'zone="home.arpa."} 4.0',
                   'dnstls_upstream_responses_total{kind="NOERROR",'
                   'upstream="udp://192.0.2.1:53"} 1.0'):
        assert sample in text


def test_local_zone_answers_by_type() -> None:
    text = _text({"local_zone": {"answers": {"always_nxdomain": 5, "deny": 2}}})
    assert 'dnstls_local_zone_answers_total{type="always_nxdomain"} 5.0' in text
    assert 'dnstls_local_zone_answers_total{type="deny"} 2.0' in text
    assert "dnstls_local_zone_answers" not in _text({})  # none configured: no family
