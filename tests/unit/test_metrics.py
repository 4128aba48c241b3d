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
