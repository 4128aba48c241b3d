"""An upstream killed during a bounded load run: every query is answered.

kdig/dnsperf → dnstls serve (DoT) → {unbound DoT, Knot Resolver DoT} → nsd. Half-way
through a dnsperf run the unbound upstream is killed. dnstls must notice the dead
connections, move the queries to the surviving upstream within their deadline, and
never leave a client query unanswered: dnsperf must count zero lost queries and only
NOERROR (or SERVFAIL with an EDE, for a query caught at the moment of the kill).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from . import clients
from .peers import Peer, TestPKI

pytestmark = pytest.mark.interop


def test_upstream_killed_under_load(dnstls_serve: Callable[..., Peer], unbound_dot: Peer,
                                    kresd_dot: Peer, pki: TestPKI,
                                    tmp_path: pytest.TempPathFactory) -> None:
    server = dnstls_serve(
        "--upstream", f"tls://{unbound_dot.host}:{unbound_dot.port}#{pki.hostname}",
        "--upstream", f"tls://{kresd_dot.host}:{kresd_dot.port}#{pki.hostname}",
        "--ca-file", str(pki.ca_pem), "--no-cache")
    names = [("www.example.test.", "A"), ("example.test.", "MX"), ("ns1.example.test.", "A")]
    query_file = clients.write_query_file(tmp_path / "q.txt", names * 50)  # type: ignore[operator]
    killer = threading.Timer(1.5, lambda: unbound_dot.proc.kill())  # type: ignore[union-attr]
    killer.start()
    try:
        result = clients.dnsperf_dot(server.host, server.port, query_file, seconds=4,
                                     clients=4, outstanding=20, query_timeout=5)
    finally:
        killer.cancel()
    assert unbound_dot.proc is not None
    assert unbound_dot.proc.wait(timeout=5) is not None  # it really died during the run
    unbound_dot.stopped = True  # killed on purpose: teardown must not fail on it
    assert result.sent > 100, result.output
    assert result.lost == 0, result.output
    assert set(result.rcodes) <= {"NOERROR", "SERVFAIL"}, result.output
    assert result.rcodes.get("NOERROR", 0) >= 0.9 * result.completed, result.output
    after = clients.kdig(server.host, server.port, "www.example.test.", "A", tls=True,
                         ca=pki.ca_pem, hostname=pki.hostname)
    assert after.status == "NOERROR", after.describe()
