"""dnstap against the real tools: ``dnstap-read`` (BIND) reads the file ``dnstls serve``
writes (``[dnstap] file``), and its YAML (``-y``) says what we sent; Unbound 1.17 with
the same dnstap messages switched on, asked the same queries over UDP, TCP and DoT
(forwarding example.test. to nsd), logs the same message types, socket protocols and
questions as we do -- compared as shapes (type, protocol, question), not addresses or
times. Unbound logs to a Unix socket only: the tests' Frame Streams collector
(tests/fakes/dnstap_collector.py) takes its messages and writes them to a file that
dnstap-read reads in turn."""

from __future__ import annotations

import collections
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.dnstap_collector import ThreadCollector, decode, read_file, write_file

from . import clients, peers
from .peers import LOOPBACK, Peer, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

#: (name, type, transport) asked of both servers, in order: a forwarded name twice
#: (the second from the cache), a name error, over each transport
QUERIES = [(name, "A", transport) for transport in ("udp", "tcp", "dot")
           for name in (f"www.{peers.ZONE_ORIGIN}", f"www.{peers.ZONE_ORIGIN}",
                        f"nope-{transport}.{peers.ZONE_ORIGIN}")]


@pytest.fixture
def tap_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dt") as tmp:  # AF_UNIX: a short path
        yield Path(tmp)


def start_unbound_dnstap(group: PeerGroup, pki: TestPKI, nsd: Peer, socket_path: Path,
                         ) -> tuple[Peer, int]:
    binary = peers.require("unbound")
    work = group.workdir("unbound-dnstap")
    dot, plain = peers.free_port(), peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{dot}", extra=f"""\
    interface: {LOOPBACK}@{plain}
    tls-port: {dot}
    tls-service-key: "{pki.key_pem}"
    tls-service-pem: "{pki.cert_pem}"
""") + f"""\
forward-zone:
    name: "{peers.ZONE_ORIGIN}"
    forward-addr: {nsd.host}@{nsd.port}
dnstap:
    dnstap-enable: yes
    dnstap-bidirectional: yes
    dnstap-socket-path: "{socket_path}"
    dnstap-send-identity: yes
    dnstap-send-version: yes
    dnstap-identity: "unbound-test"
    dnstap-log-client-query-messages: yes
    dnstap-log-client-response-messages: yes
    dnstap-log-forwarder-query-messages: yes
    dnstap-log-forwarder-response-messages: yes
""")
    peer = group.start(Peer("unbound-dnstap", [binary, "-d", "-c", str(conf)], work,
                            port=dot))
    return peer.wait_tcp(), plain


def ask_all(pki: TestPKI, dot_port: int, plain_port: int) -> None:
    for name, rtype, transport in QUERIES:
        tls = transport == "dot"
        result = clients.kdig(LOOPBACK, dot_port if tls else plain_port, name, rtype,
                              tls=tls, tcp=transport == "tcp",
                              ca=pki.ca_pem if tls else None,
                              hostname=pki.hostname if tls else None)
        assert result.status in ("NOERROR", "NXDOMAIN"), result.describe()


def dnstap_read(path: Path, *args: str) -> str:
    done = subprocess.run([peers.require("dnstap-read"), *args, str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def yaml_documents(text: str) -> list[dict[str, str]]:
    """dnstap-read -y's documents, flattened: ``key: value`` lines at any depth (the
    first of each key wins: the message's own before its data's), the first question
    as ``question`` (no YAML library needed for this simple output)."""
    documents = []
    for chunk in text.split("\n---"):
        doc: dict[str, str] = {}
        lines = chunk.splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped == "QUESTION_SECTION:" and i + 1 < len(lines):
                doc.setdefault("question", lines[i + 1].strip().lstrip("- "))
            key, sep, value = stripped.partition(": ")
            if sep and not key.startswith((";", "-")):
                if key == "type" and line.startswith("  "):
                    key = "message_type"  # the message's (the top level's is MESSAGE)
                doc.setdefault(key, value.strip('"'))
        if doc:
            documents.append(doc)
    return documents


def shapes(frames: list[bytes]) -> collections.Counter[tuple[Any, ...]]:
    """(message type, socket family, socket protocol, question) of each message."""
    import dns.message

    out: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for frame in frames:
        m = decode(frame)
        wire = m.get("query_message") or m.get("response_message")
        question = dns.message.from_wire(wire).question[0].to_text() if wire else None
        out[(m["message_type"], m.get("socket_family"), m.get("socket_protocol"),
             question)] += 1
    return out


def test_same_dnstap_messages_as_unbound(peer_group: PeerGroup, pki: TestPKI, nsd: Peer,
                                         dnstls_serve: Callable[..., Peer],
                                         tap_dir: Path) -> None:
    collector = ThreadCollector(tap_dir / "unbound.sock")
    try:
        try:
            unbound, unbound_plain = start_unbound_dnstap(peer_group, pki, nsd,
                                                          tap_dir / "unbound.sock")
        except peers.PeerError as exc:
            pytest.fail(str(exc), pytrace=False)
        ask_all(pki, unbound.port, unbound_plain)
        # 9 client queries and responses, 6 forwarded exchanges (2 names x 3 + ...)
        unbound_frames = collector.wait_frames(2 * len(QUERIES) + 2 * 4)
        unbound.stop()
    finally:
        collector.close()

    ours_file = tap_dir / "dnstls.fstrm"
    config = tap_dir / "dnstap.toml"
    config.write_text(f"""\
[local]
nodefault = ["test."]
[dnstap]
enabled = true
file = "{ours_file}"
identity = "dnstls-test"
log_client_query = true
log_client_response = true
log_forwarder_query = true
log_forwarder_response = true
""")
    plain = peers.free_port()
    ours = dnstls_serve("--upstream", f"udp://{nsd.host}:{nsd.port}", "--config",
                        str(config), "--plain", f"{LOOPBACK}:{plain}")
    ask_all(pki, ours.port, plain)
    ours.stop()  # SIGTERM: the file is flushed and ends with STOP

    ours_frames = read_file(ours_file)
    ours = shapes(ours_frames)
    assert sum(ours.values()) == 2 * len(QUERIES) + 2 * 4
    # DoT: socket_protocol DOT (3) in ours, as dnstap.proto has it (and dnsdist writes
    # it); Unbound 1.17.1 writes TCP (2) for its DoT clients. The rest is the same.
    dot = {shape: n for shape, n in ours.items() if shape[2] == 3}
    assert sum(dot.values()) == 2 * 3  # the DoT client queries and responses
    assert all(shape[0].startswith("CLIENT") for shape in dot)
    as_unbound = collections.Counter({(t, f, 2 if p == 3 else p, q): 0
                                      for (t, f, p, q) in ours})
    for (t, f, p, q), n in ours.items():
        as_unbound[(t, f, 2 if p == 3 else p, q)] += n
    assert as_unbound == shapes(unbound_frames)

    # dnstap-read reads both files and prints the same lines but for addresses and times
    unbound_file = tap_dir / "unbound.fstrm"
    write_file(unbound_file, unbound_frames)

    def lines(path: Path) -> collections.Counter[str]:
        """dnstap-read's lines without times, addresses and sizes: "CQ UDP name/IN/A"
        (BIND 9.18's dnstap-read prints UDP for any protocol but TCP: our DoT too)."""
        out: collections.Counter[str] = collections.Counter()
        for line in dnstap_read(path).splitlines():
            words = line.split()
            out[" ".join([words[2], words[6], words[8]])] += 1
        return out

    ours_lines = lines(ours_file)
    unbound_lines = lines(unbound_file)
    assert sum(ours_lines.values()) == len(ours_frames)
    for kind in ("CQ", "CR"):  # the DoT client messages: TCP in Unbound's, "UDP" in ours
        for name in ("www", "nope-dot"):
            n = 2 if name == "www" else 1
            key = f"{name}.{peers.ZONE_ORIGIN}"[:-1] + "/IN/A"
            unbound_lines[f"{kind} TCP {key}"] -= n
            unbound_lines[f"{kind} UDP {key}"] += n
    assert +ours_lines == +unbound_lines


def test_dnstap_read_yaml_says_what_we_sent(dnstls_serve: Callable[..., Peer],
                                            pki: TestPKI, nsd: Peer, tap_dir: Path) -> None:
    ours_file = tap_dir / "dnstls.fstrm"
    config = tap_dir / "dnstap.toml"
    config.write_text(f"""\
[local]
nodefault = ["test."]
[dnstap]
enabled = true
file = "{ours_file}"
identity = "dnstls-test"
version = "dnstls 9.9"
log_client_query = true
log_client_response = true
""")
    plain = peers.free_port()
    ours = dnstls_serve("--upstream", f"udp://{nsd.host}:{nsd.port}", "--config",
                        str(config), "--plain", f"{LOOPBACK}:{plain}")
    ask_all(pki, ours.port, plain)
    ours.stop()
    frames = [decode(f) for f in read_file(ours_file)]
    documents = yaml_documents(dnstap_read(ours_file, "-y"))
    assert len(documents) == len(frames) == 2 * len(QUERIES)
    for doc, sent in zip(documents, frames, strict=True):
        message = doc
        assert doc["identity"] == "dnstls-test" and doc["version"] == "dnstls 9.9"
        assert message["type"] == "MESSAGE"
        assert message["message_type"] == sent["message_type"]
        assert message["socket_family"] == "INET"
        assert message["query_address"] == LOOPBACK
        assert message["response_address"] == LOOPBACK
        assert message["query_port"] == str(sent["query_port"])
        assert message["response_port"] == str(sent["response_port"])
        wire = sent.get("query_message") or sent.get("response_message")
        assert message["message_size"] == f"{len(wire)}b"
        assert message["id"] == str(int.from_bytes(wire[:2], "big"))
        assert message["question"].startswith(("'www.", "'nope-"))
        # BIND 9.18's dnstap-read knows UDP and TCP only: it shows DoT (3) as UDP
        assert message["socket_protocol"] == ("TCP" if sent["socket_protocol"] == 2
                                              else "UDP")


def test_log_rotation_every_file_is_read_by_dnstap_read(
        dnstls_serve: Callable[..., Peer], pki: TestPKI, nsd: Peer, tap_dir: Path) -> None:
    """logrotate's way: the file moved away, then SIGHUP (or ``dnstls control
    dnstap_reopen``); dnstap-read reads the rotated file and the new one, each with
    its own queries (the reopen ends the first with STOP, starts the next with START)."""
    import os
    import signal
    import time

    ours_file = tap_dir / "dnstls.fstrm"
    control = str(tap_dir / "ctl.sock")
    config = tap_dir / "dnstap.toml"
    config.write_text(f"""\
[local]
nodefault = ["test."]
[dnstap]
enabled = true
file = "{ours_file}"
log_client_query = true
""")
    plain = peers.free_port()
    ours = dnstls_serve("--upstream", f"udp://{nsd.host}:{nsd.port}", "--config",
                        str(config), "--plain", f"{LOOPBACK}:{plain}", "--control", control)

    def ask(label: str) -> None:
        result = clients.kdig(LOOPBACK, plain, f"{label}.{peers.ZONE_ORIGIN}", "A")
        assert result.status in ("NOERROR", "NXDOMAIN"), result.describe()

    def questions(path: Path) -> list[str]:
        return [line.split()[8] for line in dnstap_read(path).splitlines()]

    def wait_for_file(path: Path) -> None:
        for _ in range(200):  # the reopen happens in the background: bounded wait
            if path.exists() and path.stat().st_size > 0:
                return
            ours.check_alive()
            time.sleep(0.05)
        pytest.fail(f"{path} was not opened again")

    ask("first")
    ours_file.rename(tap_dir / "dnstls.fstrm.1")
    os.kill(ours.pid, signal.SIGHUP)
    wait_for_file(ours_file)
    ask("second")
    ours_file.rename(tap_dir / "dnstls.fstrm.2")
    done = subprocess.run([*peers.dnstls_command(), "control", "-s", control,
                           "dnstap_reopen"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
    ask("third")
    ours.stop()  # SIGTERM: the file is flushed and ends with STOP
    zone = peers.ZONE_ORIGIN[:-1]
    assert questions(tap_dir / "dnstls.fstrm.1") == [f"first.{zone}/IN/A"]
    assert questions(tap_dir / "dnstls.fstrm.2") == [f"second.{zone}/IN/A"]
    assert questions(ours_file) == [f"third.{zone}/IN/A"]
