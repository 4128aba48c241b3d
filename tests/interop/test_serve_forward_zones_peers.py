"""``[[forward_zone]]`` with real peers: kdig → dnstls (DoT) → the zone's upstream or the
default one, each a real server on loopback.

Two nsd: the default upstream serves the usual example.test. zone; the other serves a
copy in which ``www.sub`` exists (10.0.0.1) -- only the forward zone ``sub.example.test.``
can get that answer. Then unbound over DoT as a forward zone's upstream for a name under
the default zone ``test.``, with no ``local.nodefault``: forwarded all the same, while
the rest of ``test.`` is still answered here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from . import clients, peers
from .peers import ZONE_DATA, ZONE_TEXT, Peer, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

SUB_TEXT = ZONE_TEXT + "www.sub IN A   10.0.0.1\n"


def kdig(server: Peer, pki: TestPKI, name: str, rdtype: str = "A") -> clients.DigResult:
    return clients.kdig(server.host, server.port, name, rdtype, tls=True, ca=pki.ca_pem,
                        hostname=pki.hostname)


def test_zone_to_its_nsd_the_rest_to_the_default(dnstls_serve: Callable[..., Peer],
                                                 nsd: Peer, peer_group: PeerGroup,
                                                 pki: TestPKI, tmp_path: Path) -> None:
    sub = peers.start_nsd(peer_group, zone_text=SUB_TEXT)
    config = tmp_path / "zones.toml"
    config.write_text('[local]\nnodefault = ["test."]\n'
                      '[[forward_zone]]\nname = "Sub.Example.Test"\n'
                      f'[[forward_zone.upstream]]\nuri = "udp://{sub.host}:{sub.port}"\n')
    server = dnstls_serve("--upstream", f"tcp://{nsd.host}:{nsd.port}",
                          "--config", str(config))
    for name in ("www.sub.example.test.", "WWW.SUB.example.TEST."):
        result = kdig(server, pki, name)
        assert result.status == "NOERROR", result.describe()
        assert result.rdata("A") == ["10.0.0.1"], result.describe()
    for (name, rtype), data in ZONE_DATA.items():  # from the default upstream
        result = kdig(server, pki, name, rtype)
        assert result.status == "NOERROR", result.describe()
        assert sorted(result.rdata(rtype)) == sorted(data), result.describe()
    # the default upstream does not have the name: it was never asked for it above
    result = clients.kdig(nsd.host, nsd.port, "www.sub.example.test.", "A")
    assert result.status == "NXDOMAIN", result.describe()


def test_zone_under_a_default_zone_over_dot(dnstls_serve: Callable[..., Peer],
                                            unbound_dot: Peer, nsd: Peer, pki: TestPKI,
                                            tmp_path: Path) -> None:
    config = tmp_path / "zones.toml"
    config.write_text('[[forward_zone]]\nname = "example.test."\n'
                      '[[forward_zone.upstream]]\n'
                      f'uri = "tls://{unbound_dot.host}:{unbound_dot.port}#{pki.hostname}"\n'
                      f'ca_file = "{pki.ca_pem}"\n')
    # the default upstream is nsd (no zone but example.test.): never asked here
    server = dnstls_serve("--upstream", f"udp://{nsd.host}:{nsd.port}",
                          "--config", str(config))
    for (name, rtype), data in ZONE_DATA.items():
        result = kdig(server, pki, name, rtype)
        assert result.status == "NOERROR", result.describe()
        assert sorted(result.rdata(rtype)) == sorted(data), result.describe()
        assert "aa" not in result.flags, result.describe()
    # the rest of the default zone test. is still answered here
    result = kdig(server, pki, "other.test.")
    assert result.status == "NXDOMAIN", result.describe()
    assert "aa" in result.flags, result.describe()
    assert ("forward zone example.test.: forwarded instead of answered here; the rest of "
            "the default zone test. still is") in server.log_text()
