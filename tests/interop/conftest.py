"""Fixtures that run real DNS peers on loopback (see ``peers.py`` for the rules)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from . import peers
from .peers import Peer, PeerError, PeerGroup, TestPKI


@pytest.fixture
def peer_group(tmp_path: Path) -> Iterator[PeerGroup]:
    """The peers of one test; stopped at teardown, failing the test if any died early."""
    with peers.peer_group_at(tmp_path / "peers") as group:
        yield group


def _started(start: Callable[[], Peer]) -> Peer:
    try:
        return start()
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    """A fresh CA and a server certificate for dns.test / 127.0.0.1 / ::1 (+ pins)."""
    return peers.make_pki(tmp_path / "pki")


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    """The example.test. zone as a file (with $ORIGIN), for ``--local-zone``."""
    return peers.write_zone(tmp_path / "zones")


@pytest.fixture
def nsd(peer_group: PeerGroup) -> Peer:
    """nsd, authoritative for example.test. on a free UDP+TCP port."""
    return _started(lambda: peers.start_nsd(peer_group))


@pytest.fixture
def unbound_dot(peer_group: PeerGroup, pki: TestPKI, nsd: Peer) -> Peer:
    """unbound serving DoT, stubbing example.test. to nsd."""
    return _started(lambda: peers.start_unbound_dot(peer_group, pki, nsd))


@pytest.fixture
def kresd_dot(peer_group: PeerGroup, pki: TestPKI, nsd: Peer) -> Peer:
    """Knot Resolver serving DoT, stubbing example.test. to nsd."""
    return _started(lambda: peers.start_kresd_dot(peer_group, pki, nsd))


@pytest.fixture
def dnsdist_dot(peer_group: PeerGroup, pki: TestPKI, nsd: Peer) -> Peer:
    """dnsdist with a DoT frontend and nsd as its backend."""
    return _started(lambda: peers.start_dnsdist_dot(peer_group, pki, nsd))


@pytest.fixture
def stubby(peer_group: PeerGroup) -> Callable[..., Peer]:
    """Factory: ``stubby(upstream=peer, pins=[...], auth_name=..., ca_file=...)``."""

    def start(upstream: Peer, **options: object) -> Peer:
        return _started(lambda: peers.start_stubby(
            peer_group, upstream_host=upstream.host, upstream_port=upstream.port,
            **options))  # type: ignore[arg-type]

    return start


@pytest.fixture
def unbound_tls_forwarder(peer_group: PeerGroup, pki: TestPKI) -> Callable[[Peer], Peer]:
    """Factory: a plain-DNS unbound that forwards example.test. over TLS to a peer."""

    def start(upstream: Peer) -> Peer:
        return _started(lambda: peers.start_unbound_tls_forwarder(
            peer_group, pki, upstream_host=upstream.host, upstream_port=upstream.port))

    return start


@pytest.fixture
def dnstls_serve(peer_group: PeerGroup, pki: TestPKI) -> Callable[..., Peer]:
    """Factory: ``dnstls_serve(*args, zone=path)`` runs ``dnstls serve`` with our
    certificate, a state dir in tmp_path and a free DoT port (unless ``args`` give
    ``--listen``/``--cert``/``--state-dir``), ``--no-upstream`` unless ``args`` give an
    ``--upstream``, and waits until the DoT port accepts TCP."""

    def start(*args: str, zone: Path | None = None) -> Peer:
        argv: Sequence[str] = args
        return _started(lambda: peers.start_dnstls_serve(peer_group, pki, argv, zone=zone))

    return start
