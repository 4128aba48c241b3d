"""NSID (RFC 5001): ``kdig +nsid`` shows the same ``;; NSID:`` line for ``dnstls serve
--nsid VALUE`` as for Unbound 1.17 with ``nsid: "VALUE"``, over UDP and DoT, for an
answer, a name error, a cached answer and a default zone (localhost.); and none without
``+nsid``. Both answer example.test. (dnstls from ``--local-zone``, unbound stubbed to
nsd)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from . import clients, peers
from .peers import LOOPBACK, Peer, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

QUESTIONS = [("www.example.test.", "A"), ("nope.example.test.", "A"),
             ("www.example.test.", "A"), ("localhost.", "A")]


def start_unbound_nsid(group: PeerGroup, pki: TestPKI, nsd: Peer, nsid: str,
                       ) -> tuple[Peer, int]:
    """unbound with ``nsid``: DoT on the peer's port, plain DNS on the returned one."""
    binary = peers.require("unbound")
    work = group.workdir("unbound-nsid")
    dot, plain = peers.free_port(), peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{dot}", extra=f"""\
    interface: {LOOPBACK}@{plain}
    tls-port: {dot}
    tls-service-key: "{pki.key_pem}"
    tls-service-pem: "{pki.cert_pem}"
    nsid: "{nsid}"
""") + f"""\
stub-zone:
    name: "{peers.ZONE_ORIGIN}"
    stub-addr: {nsd.host}@{nsd.port}
""")
    peer = group.start(Peer("unbound-nsid", [binary, "-d", "-c", str(conf)], work,
                            port=dot))
    return peer.wait_tcp(), plain


def nsid_lines(result: clients.DigResult) -> list[str]:
    assert result.status is not None, result.describe()
    return re.findall(r"^;; NSID: .*$", result.stdout, re.MULTILINE)


@pytest.mark.parametrize("nsid", ["ascii_dot-1", "646e73746c73"])
def test_kdig_nsid_line_as_against_unbound(peer_group: PeerGroup, pki: TestPKI,
                                           nsd: Peer, zone_file: Path,
                                           dnstls_serve: Callable[..., Peer],
                                           nsid: str) -> None:
    try:
        unbound, unbound_plain = start_unbound_nsid(peer_group, pki, nsd, nsid)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    plain = peers.free_port()
    ours = dnstls_serve("--nsid", nsid, "--plain", f"{LOOPBACK}:{plain}", zone=zone_file)
    servers = {"unbound": (unbound.port, unbound_plain), "dnstls": (ours.port, plain)}
    seen: dict[str, list[object]] = {}
    for who, (dot_port, plain_port) in servers.items():
        lines: list[object] = []
        for name, rtype in QUESTIONS:
            for tls, port in ((True, dot_port), (False, plain_port)):
                for asked in (True, False):
                    result = clients.kdig(
                        LOOPBACK, port, name, rtype, tls=tls,
                        ca=pki.ca_pem if tls else None,
                        hostname=pki.hostname if tls else None,
                        extra=["+nsid"] if asked else [])
                    lines.append((name, rtype, tls, asked, result.status,
                                  nsid_lines(result)))
        seen[who] = lines
    assert seen["dnstls"] == seen["unbound"]
    wanted = [line for line in seen["dnstls"] if line[3]]  # type: ignore[index]
    assert all(len(line[5]) == 1 for line in wanted), wanted  # type: ignore[index, arg-type]
