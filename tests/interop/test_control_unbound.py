"""``dnstls control`` next to ``unbound-control`` (Unbound 1.17, ``control-interface`` a
Unix socket, ``control-use-cert: no``): the commands they share print the same words
and exit with the same status where the meaning is the same; the ``stats_noreset`` keys
dnstls prints are Unbound's (with ``extended-statistics``) but for the few documented as
its own. Both forward example.test. (and dnstls ".") to nsd."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from . import clients, peers
from .peers import LOOPBACK, Peer, PeerGroup

pytestmark = pytest.mark.interop

#: Keys of dnstls's stats_noreset that Unbound does not print (docs/serve.md, "Control")
DNSTLS_ONLY = {"total.num.coalesced", "num.query.udp", "num.query.rejected",
               "cache.evictions"}


@pytest.fixture
def sockets() -> Iterator[str]:
    """A short directory for the control sockets (tmp_path can be too long for one)."""
    directory = tempfile.mkdtemp(prefix="dnstls-ctli-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start_unbound_control(group: PeerGroup, nsd: Peer, path: str) -> tuple[Peer, str]:
    """unbound on plain DNS with a control socket at ``path``; returns its config file."""
    binary = peers.require("unbound")
    work = group.workdir("unbound-control")
    port = peers.free_port()
    conf = work / "unbound.conf"
    base = peers._unbound_base(work, interface=f"{LOOPBACK}@{port}", extra=f"""\
    port: {port}
    extended-statistics: yes
""").replace("    control-enable: no", f"""\
    control-enable: yes
    control-interface: {path}
    control-use-cert: no""")
    conf.write_text(base + f"""\
forward-zone:
    name: "."
    forward-addr: {nsd.host}@{nsd.port}
forward-zone:
    name: "{peers.ZONE_ORIGIN}"
    forward-addr: {nsd.host}@{nsd.port}
""")
    peer = group.start(Peer("unbound-control", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    peer.wait_ready(lambda: os.path.exists(path)
                    and peers.udp_dns_answers(LOOPBACK, port, f"www.{peers.ZONE_ORIGIN}"))
    return peer, str(conf)


def _run(argv: list[str]) -> tuple[str, int]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return result.stdout, result.returncode


@pytest.fixture
def both(peer_group: PeerGroup, nsd: Peer, dnstls_serve: Callable[..., Peer],
         sockets: str) -> tuple[Callable[..., tuple[str, int]], Callable[..., tuple[str, int]],
                                Peer, Peer]:
    """(unbound-control, dnstls control): each runs one command against its server."""
    control = peers.require("unbound-control")
    ours = os.path.join(sockets, "dnstls.sock")
    try:
        unbound, conf = start_unbound_control(peer_group, nsd, os.path.join(sockets,
                                                                            "ub.sock"))
        plain = peers.free_port()
        dnstls = dnstls_serve("--plain", f"{LOOPBACK}:{plain}", "--control", ours,
                              "--upstream", f"udp://{nsd.host}:{nsd.port}",
                              "--forward-zone",
                              f"{peers.ZONE_ORIGIN}=udp://{nsd.host}:{nsd.port}")
        dnstls.info["plain"] = plain
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)

    def unbound_control(*args: str) -> tuple[str, int]:
        return _run([control, "-c", conf, *args])

    def dnstls_control(*args: str) -> tuple[str, int]:
        return _run([*peers.dnstls_command(), "control", "-s", ours, *args])

    return unbound_control, dnstls_control, unbound, dnstls


@pytest.mark.parametrize("argv", [
    ["bogus"], ["flush_all"], ["flush"], ["flush_type", "www.example.test."],
    ["flush", "www.example.test."], ["flush_type", "www.example.test.", "AAAA"],
])
def test_same_words_and_status(both, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    unbound_control, dnstls_control, _, _ = both
    assert dnstls_control(*argv) == unbound_control(*argv)


def test_flush_zone_and_negative_answer_in_unbounds_words(both) -> None:  # type: ignore[no-untyped-def]
    unbound_control, dnstls_control, unbound, dnstls = both
    for peer, port in ((unbound, unbound.port), (dnstls, dnstls.info["plain"])):
        for name in ("www.example.test.", "nope.example.test."):
            result = clients.kdig(LOOPBACK, port, name)
            assert result.status in ("NOERROR", "NXDOMAIN"), (peer.name, result.describe())
    removed = re.compile(r"^ok removed \d+ rrsets, \d+ messages and \d+ key entries\n$")
    for argv in (["flush_negative"], ["flush_zone", "example.test."], ["flush_zone", "."]):
        for run in (unbound_control, dnstls_control):
            out, status = run(*argv)
            assert removed.match(out) and status == 0, (argv, out)
    assert dnstls_control("flush_zone", "example.test.")[0] == (
        "ok removed 0 rrsets, 0 messages and 0 key entries\n")


def test_bad_name(both) -> None:  # type: ignore[no-untyped-def]
    unbound_control, dnstls_control, _, _ = both
    ours, theirs = dnstls_control("flush", "bad..name"), unbound_control("flush", "bad..name")
    assert ours[1] == theirs[1] == 1
    assert ours[0].startswith("error cannot parse name bad..name")
    assert theirs[0].startswith("error cannot parse name bad..name")


def test_status_and_stats_keys(both) -> None:  # type: ignore[no-untyped-def]
    unbound_control, dnstls_control, unbound, dnstls = both
    for run, name in ((unbound_control, "unbound"), (dnstls_control, "dnstls")):
        out, status = run("status")
        lines = out.splitlines()
        assert status == 0 and lines[0].startswith("version: "), out
        assert re.fullmatch(r"uptime: \d+ seconds", next(
            line for line in lines if line.startswith("uptime:"))), out
        assert re.fullmatch(rf"{name} \(pid \d+\) is running\.\.\.", lines[-1]), out

    def stats(run: Callable[..., tuple[str, int]]) -> dict[str, str]:
        return dict(line.split("=", 1) for line in run("stats_noreset")[0].splitlines())

    # the same query, a miss then a hit, changes the shared counters alike (unbound's
    # readiness probe asked it something already: compare what changed)
    before = [stats(unbound_control), stats(dnstls_control)]
    for port in (unbound.port, dnstls.info["plain"]):
        for _ in range(2):
            assert clients.kdig(LOOPBACK, port, "www.example.test.").status == "NOERROR"
    theirs, ours = stats(unbound_control), stats(dnstls_control)
    assert set(ours) - set(theirs) == DNSTLS_ONLY
    for key, change in (("total.num.queries", 2), ("num.answer.rcode.NOERROR", 2),
                        ("total.num.cachemiss", 1), ("total.num.cachehits", 1)):
        assert [int(theirs[key]) - int(before[0][key]),
                int(ours[key]) - int(before[1][key])] == [change, change], key


def test_list_forwards_lines(both) -> None:  # type: ignore[no-untyped-def]
    unbound_control, dnstls_control, _, _ = both
    heads = [sorted(" ".join(line.split()[:3]) for line in run("list_forwards")[0].splitlines())
             for run in (unbound_control, dnstls_control)]
    assert heads[0] == heads[1] == [". IN forward", "example.test. IN forward"]


def test_status_when_stopped(sockets: str) -> None:
    """A socket file nothing listens on: both say the server is stopped, status 3."""
    control = peers.require("unbound-control")
    path = os.path.join(sockets, "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    theirs = _run([control, "-s", path, "status"])
    ours = _run([*peers.dnstls_command(), "control", "-s", path, "status"])
    assert theirs == ("unbound is stopped\n", 3)
    assert ours == ("dnstls is stopped\n", 3)
