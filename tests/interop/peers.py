"""Real DNS peers on loopback for the interop tests.

The harness runs Debian's DNS software as subprocesses with configs generated into a
test's ``tmp_path``, on ports chosen at run time, and tears them down afterwards:

* servers: ``nsd`` (authoritative for :data:`ZONE_ORIGIN`), ``unbound`` (DoT server
  that stubs the zone to nsd, or a plain forwarder that forwards it over TLS),
  ``kresd`` (Knot Resolver 5, DoT) and ``dnsdist`` (DoT frontend, nsd backend);
* a stub: ``stubby`` in strict mode (RFC 8310 §5) in front of a DoT server;
* ``dnstls serve`` itself, started the same way (:func:`start_dnstls_serve`).

Clients (kdig, dig, getdns_query, dnsperf) are wrapped in ``clients.py``.

Lifecycle rules (see :class:`Peer`): every process gets its own session (process group)
and a log file that holds its stdout and stderr. Readiness is polled with a bounded
deadline, failing at once if the process exits. Teardown sends SIGTERM, then SIGKILL to
the process group after a grace period; a peer that died *before* teardown fails the test
with the tail of its log.

Missing binaries: :func:`require` skips the test, except under CI (``CI=true``), where a
missing peer is a broken setup and fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
TLS_NAME = "dns.test"
ZONE_ORIGIN = "example.test."

#: Readiness and shutdown bounds, in seconds.
READY_TIMEOUT = 15.0
STOP_GRACE = 5.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------- binaries

_SBIN_PATH = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])


def which(name: str) -> str | None:
    """Find a binary on PATH or in the sbin directories (daemons live there)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SBIN_PATH)


def require(name: str) -> str:
    """Path of a peer binary; skip the test if it is missing, but fail under CI."""
    path = which(name)
    if path is None:
        message = f"peer binary {name!r} is not installed (run scripts/setup)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


# --------------------------------------------------------------------------- ports

def free_port(host: str = LOOPBACK, *, tries: int = 50) -> int:
    """A port that is free for both TCP and UDP on ``host`` right now.

    The OS picks a TCP port (bind to port 0), then the same number must bind for UDP.
    There is an unavoidable window until the peer binds it; peers are configured not to
    share ports (no SO_REUSEPORT) so a lost race shows up as a startup failure.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(tries):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for TCP and UDP on {host} after {tries} tries")


def tcp_accepts(host: str, port: int, *, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def udp_dns_answers(host: str, port: int, name: str = ZONE_ORIGIN, *,
                    timeout: float = 0.5) -> bool:
    """True if a DNS server answers (any RCODE) a SOA query over UDP."""
    query = _make_query(name, 6)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query, (host, port))
            data = sock.recv(65535)
        except OSError:
            return False
    return len(data) >= 12 and data[:2] == query[:2] and bool(data[2] & 0x80)


def _make_query(name: str, rdtype: int) -> bytes:
    """A minimal DNS query (no dependency on dnspython, which may not be installed)."""
    qid = os.urandom(2)
    labels = [label for label in name.rstrip(".").split(".") if label]
    qname = b"".join(bytes([len(lab)]) + lab.encode("ascii") for lab in labels) + b"\0"
    header = qid + b"\x01\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + qname + rdtype.to_bytes(2, "big") + b"\x00\x01"


# --------------------------------------------------------------------------- certificates

@dataclass(frozen=True)
class TestPKI:
    """A per-run CA and a server certificate for ``dns.test``, 127.0.0.1 and ::1."""

    __test__ = False  # not a test class, despite the name

    directory: Path
    ca_pem: Path
    cert_pem: Path   # leaf (+ intermediates, if any): the chain a server presents
    key_pem: Path
    pin: str         # SPKI pin of the leaf
    ca_pin: str      # SPKI pin of the CA
    hostname: str = TLS_NAME

    @property
    def wrong_pin(self) -> str:
        """A well-formed pin that matches nothing in the chain."""
        raw = bytearray(base64.b64decode(self.pin))
        raw[0] ^= 0xFF
        return base64.b64encode(bytes(raw)).decode("ascii")


def make_pki(directory: Path, *, hostname: str = TLS_NAME) -> TestPKI:
    import trustme
    from cryptography import x509

    from dnstls.proto.pins import spki_pin

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(hostname, "127.0.0.1", "::1")
    ca_pem, cert_pem, key_pem = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf.private_key_pem.write_to_path(str(key_pem))
    key_pem.chmod(0o600)
    cert_pem.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf_cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    return TestPKI(directory, ca_pem, cert_pem, key_pem, pin=spki_pin(leaf_cert),
                   ca_pin=spki_pin(ca_cert), hostname=hostname)


# --------------------------------------------------------------------------- test zone

#: Eight 250-character TXT strings: a ~2 KB RRset that does not fit a 1232-byte UDP answer.
BIG_TXT = [f"{i:02d}-" + chr(ord("a") + i) * 247 for i in range(8)]

#: What the test zone holds, for assertions: (owner, type) -> rdata as kdig/dig print it.
ZONE_DATA: dict[tuple[str, str], list[str]] = {
    ("www.example.test.", "A"): ["192.0.2.1"],
    ("www.example.test.", "AAAA"): ["2001:db8::1"],
    ("txt.example.test.", "TXT"): ['"hello dnstls"'],
    ("alias.example.test.", "CNAME"): ["www.example.test."],
    ("example.test.", "MX"): ["10 mail.example.test."],
    ("mail.example.test.", "A"): ["192.0.2.25"],
    ("big.example.test.", "TXT"): [f'"{s}"' for s in BIG_TXT],
}

ZONE_TEXT = "\n".join([
    f"$ORIGIN {ZONE_ORIGIN}",
    "$TTL 300",
    "@      IN SOA ns1 hostmaster 2024010101 3600 600 86400 300",
    "@      IN NS  ns1",
    "@      IN MX  10 mail",
    "ns1    IN A   127.0.0.1",
    "www    IN A   192.0.2.1",
    "www    IN AAAA 2001:db8::1",
    "mail   IN A   192.0.2.25",
    'txt    IN TXT "hello dnstls"',
    "alias  IN CNAME www",
    *(f'big    IN TXT "{s}"' for s in BIG_TXT),
    "",
])


def write_zone(directory: Path, name: str = "example.test.zone") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(ZONE_TEXT)
    return path


# --------------------------------------------------------------------------- processes

class PeerError(Exception):
    """A peer failed to start, or died before it was stopped."""


@dataclass
class Peer:
    """One peer process: its command, its log, and the address clients use."""

    name: str
    argv: list[str]
    cwd: Path
    host: str = LOOPBACK
    port: int = 0
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    stopped: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Peer:
        self.log_path = self.cwd / f"{self.name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                env=None if self.env is None else {**os.environ, **self.env})
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self, limit: int = 6000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe_failure(self, what: str) -> str:
        code = None if self.proc is None else self.proc.returncode
        return (f"{self.name} {what} (exit status {code})\ncommand: {' '.join(self.argv)}\n"
                f"--- {self.name} log ---\n{self.log_text()}")

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise PeerError(self.describe_failure("exited early"))

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float = READY_TIMEOUT,
                   interval: float = 0.05) -> Peer:
        """Poll ``probe`` until it is true; fail fast if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.check_alive()
            except PeerError:
                self.stop(check=False)  # reported here, not again at teardown
                raise
            if probe():
                return self
            if time.monotonic() >= deadline:
                self.stop(check=False)
                raise PeerError(self.describe_failure(f"not ready after {timeout:.0f}s"))
            time.sleep(interval)

    def wait_tcp(self, *, timeout: float = READY_TIMEOUT) -> Peer:
        return self.wait_ready(lambda: tcp_accepts(self.host, self.port), timeout=timeout)

    def stop(self, *, check: bool = True) -> None:
        """Terminate, then kill the process group; raise PeerError if it had died early."""
        if self.proc is None or self.stopped:
            return
        self.stopped = True
        proc = self.proc
        died_early = proc.poll() is not None
        if not died_early:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_GRACE)
        # Children that outlived the leader (nsd forks server processes) share its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if died_early and check:
            raise PeerError(self.describe_failure("died before teardown"))


class PeerGroup:
    """The peers one test started; :meth:`stop_all` stops them in reverse order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.peers: list[Peer] = []

    def workdir(self, name: str) -> Path:
        path = self.directory / name
        suffix = 1
        while path.exists():
            suffix += 1
            path = self.directory / f"{name}-{suffix}"
        path.mkdir(parents=True)
        return path

    def start(self, peer: Peer) -> Peer:
        self.peers.append(peer)
        return peer.start()

    def stop_all(self) -> list[str]:
        failures = []
        for peer in reversed(self.peers):
            try:
                peer.stop()
            except PeerError as exc:
                failures.append(str(exc))
        return failures


@contextlib.contextmanager
def peer_group_at(directory: Path) -> Iterator[PeerGroup]:
    """A PeerGroup in ``directory`` (made here), its peers stopped on leaving. A peer
    that would not start (a PeerError inside) or one that died early fails the test."""
    group = PeerGroup(directory)
    group.directory.mkdir()
    try:
        yield group
    except PeerError as exc:
        failures = [str(exc), *group.stop_all()]
    except BaseException:
        group.stop_all()
        raise
    else:
        failures = group.stop_all()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


# --------------------------------------------------------------------------- servers

def start_nsd(group: PeerGroup, *, zone_text: str = ZONE_TEXT, origin: str = ZONE_ORIGIN,
              extra: str = "", server_extra: str = "") -> Peer:
    """nsd, authoritative for ``origin`` (example.test.) with ``zone_text``, over UDP and
    TCP on a free port; ``extra``: more nsd.conf clauses (``key:`` for TSIG: nsd answers
    a query signed with a key it knows with a signed answer; lines indented by four
    spaces first belong to the zone above, ``provide-xfr: ...``); ``server_extra``:
    more lines of the ``server:`` clause (``tls-port: ...``)."""
    work = group.workdir("nsd")
    (work / "example.test.zone").write_text(zone_text)
    return _start_nsd(group, work, {origin: "example.test.zone"}, extra=extra,
                      server_extra=server_extra)


def start_nsd_zones(group: PeerGroup, zones: Mapping[str, Path], *,
                    server_extra: str = "", address: str = LOOPBACK,
                    port: int | None = None) -> Peer:
    """One nsd authoritative for every zone of ``zones`` (origin -> zone file), e.g. a
    whole signed hierarchy (tests/fakes/signed_zones.py): it answers each question from
    the deepest zone it has, and DS questions from the parent side, as the servers a
    recursive resolver walks would. The first origin is the readiness probe's.
    ``address``/``port``: where it listens (default: a free port on 127.0.0.1)."""
    work = group.workdir("nsd")
    return _start_nsd(group, work, {origin: str(path) for origin, path in zones.items()},
                      server_extra=server_extra, address=address, port=port)


def start_authorities(group: PeerGroup, servers: Mapping[str, Mapping[str, Path]]) -> list[Peer]:
    """One nsd per address of ``servers`` (address -> {origin: zone file}), each on port
    53 of its address without response rate limiting: the authoritative servers of a
    hierarchy a recursive resolver walks from its root hints, which carry no port
    (tests/fakes/recursion_zones.py)."""
    return [start_nsd_zones(group, zones, address=address, port=53,
                            server_extra="    rrl-ratelimit: 0\n")
            for address, zones in servers.items()]


def _start_nsd(group: PeerGroup, work: Path, zones: Mapping[str, str], *, extra: str = "",
               server_extra: str = "", address: str = LOOPBACK,
               port: int | None = None) -> Peer:
    """nsd with its config in ``work``, serving ``zones`` (origin -> zone file name,
    relative to ``work`` or absolute), answering UDP and TCP on ``address`` at ``port``
    (default: a free port)."""
    binary = require("nsd")
    port = free_port(address) if port is None else port
    zone_clauses = "".join(f"""\
zone:
    name: "{origin}"
    zonefile: "{path}"
""" for origin, path in zones.items())
    conf = work / "nsd.conf"
    conf.write_text(f"""\
server:
    ip-address: {address}@{port}
    port: {port}
    do-ip6: no
    reuseport: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{work}"
    pidfile: "{work}/nsd.pid"
    database: ""
    zonelistfile: "{work}/zone.list"
    xfrdfile: "{work}/xfrd.state"
    xfrdir: "{work}"
    hide-version: yes
    verbosity: 1
{server_extra}remote-control:
    control-enable: no
{zone_clauses}{extra}""")
    peer = group.start(Peer("nsd", [binary, "-d", "-c", str(conf)], work, host=address,
                            port=port))
    return peer.wait_ready(lambda: udp_dns_answers(address, port, next(iter(zones))))


def _unbound_base(work: Path, *, interface: str, extra: str = "", access: str = "allow",
                  modules: str = "iterator", insecure: str = "test.",
                  qname_minimisation: bool = False) -> str:
    """An unbound.conf's server and remote-control sections for our interop peers;
    ``access``: the action for 127.0.0.0/8, ``extra``: more server lines, ``modules``:
    the module-config, ``insecure``: the domain-insecure zone (empty: none)."""
    return f"""\
server:
    interface: {interface}
    so-reuseport: no
    do-ip6: no
    num-threads: 1
    username: ""
    chroot: ""
    directory: "{work}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    access-control: 127.0.0.0/8 {access}
    do-not-query-localhost: no
    module-config: "{modules}"
    local-zone: "test." nodefault
{f'    domain-insecure: "{insecure}"' if insecure else ""}
    qname-minimisation: {"yes" if qname_minimisation else "no"}
    harden-referral-path: no
    edns-tcp-keepalive: yes
    edns-tcp-keepalive-timeout: 20000
{extra}
remote-control:
    control-enable: no
"""


def _dot_lines(pki: TestPKI, port: int) -> str:
    """unbound.conf server lines: DoT on ``port`` with the test certificate."""
    return f"""\
    tls-port: {port}
    tls-service-key: "{pki.key_pem}"
    tls-service-pem: "{pki.cert_pem}"
"""


def _forward_all(upstream: Peer) -> str:
    """An unbound.conf clause forwarding every name (``"."``) to ``upstream``."""
    return f"""\
forward-zone:
    name: "."
    forward-addr: {upstream.host}@{upstream.port}
"""


def _run_unbound(group: PeerGroup, name: str, conf_text: str, work: Path, port: int,
                 ) -> Peer:
    binary = require("unbound")
    conf = work / "unbound.conf"
    conf.write_text(conf_text)
    peer = group.start(Peer(name, [binary, "-d", "-c", str(conf)], work, port=port))
    return peer.wait_tcp()


def start_unbound_dot(group: PeerGroup, pki: TestPKI, nsd: Peer) -> Peer:
    """unbound serving DoT on a free port, with example.test. stubbed to ``nsd``."""
    require("unbound")
    work = group.workdir("unbound-dot")
    port = free_port()
    return _run_unbound(group, "unbound-dot", _unbound_base(
        work, interface=f"{LOOPBACK}@{port}", extra=_dot_lines(pki, port)) + f"""\
stub-zone:
    name: "{ZONE_ORIGIN}"
    stub-addr: {nsd.host}@{nsd.port}
""", work, port)


def start_unbound_dot_forwarder(group: PeerGroup, pki: TestPKI, *, upstream: Peer) -> Peer:
    """unbound serving DoT on a free port as a recursive front that does NOT validate
    (module-config "iterator", no domain-insecure), forwarding every name to
    ``upstream`` -- e.g. the nsd serving a signed hierarchy (:func:`start_nsd_zones`):
    the upstream of validating stubs, which relays signatures to DO queries."""
    require("unbound")
    work = group.workdir("unbound-dot-fwd")
    port = free_port()
    return _run_unbound(group, "unbound-dot-fwd", _unbound_base(
        work, interface=f"{LOOPBACK}@{port}", extra=_dot_lines(pki, port), insecure="")
        + _forward_all(upstream), work, port)


def start_unbound_tls_forwarder(group: PeerGroup, pki: TestPKI, *, upstream_host: str,
                                upstream_port: int, auth_name: str = TLS_NAME) -> Peer:
    """unbound answering plain DNS on a free port, forwarding example.test. over TLS
    (``forward-tls-upstream: yes``, certificate checked against ``pki.ca_pem``)."""
    binary = require("unbound")
    work = group.workdir("unbound-fwd")
    port = free_port()
    conf = work / "unbound.conf"
    conf.write_text(_unbound_base(work, interface=f"{LOOPBACK}@{port}", extra=f"""\
    port: {port}
    tls-cert-bundle: "{pki.ca_pem}"
""") + f"""\
forward-zone:
    name: "{ZONE_ORIGIN}"
    forward-tls-upstream: yes
    forward-addr: {upstream_host}@{upstream_port}#{auth_name}
""")
    peer = group.start(Peer("unbound-fwd", [binary, "-d", "-c", str(conf)], work, port=port))
    return peer.wait_tcp()


def start_unbound_validator(group: PeerGroup, *, anchor_file: Path, upstream: Peer) -> Peer:
    """unbound validating DNSSEC (module-config "validator iterator", ``anchor_file`` as
    its trust-anchor-file, EDE on, val-log-level 2), answering plain DNS on a free port
    and forwarding everything (``forward-zone: "."``) to ``upstream`` -- e.g. an nsd
    serving a whole signed hierarchy (:func:`start_nsd_zones`)."""
    require("unbound")
    work = group.workdir("unbound-val")
    port = free_port()
    return _run_unbound(group, "unbound-val", _unbound_base(
        work, interface=f"{LOOPBACK}@{port}", extra=f"""\
    port: {port}
    trust-anchor-file: "{anchor_file}"
    ede: yes
    val-log-level: 2
    aggressive-nsec: no
""", modules="validator iterator", insecure="") + _forward_all(upstream), work, port)


def start_unbound_recursive(group: PeerGroup, *, root_hints: Path,
                            anchor_file: Path | None = None,
                            stub_zones: Sequence[tuple[str, Sequence[str]]] = ()) -> Peer:
    """unbound as a full recursive resolver (iterating from ``root_hints``, which name
    authoritative servers on port 53 of loopback addresses: do-not-query-localhost no),
    with qname minimisation (relaxed, its default) and EDE on, answering plain DNS on a
    free port; with ``anchor_file`` (trust-anchor-file) it validates ("validator
    iterator", val-log-level 2, no aggressive NSEC), else "iterator" only;
    ``stub_zones``: (name, addresses) as stub-zone clauses."""
    require("unbound")
    work = group.workdir("unbound-rec")
    port = free_port()
    extra = f"""\
    port: {port}
    root-hints: "{root_hints}"
    ede: yes
"""
    if anchor_file is not None:
        extra += f"""\
    trust-anchor-file: "{anchor_file}"
    val-log-level: 2
    aggressive-nsec: no
"""
    conf = _unbound_base(work, interface=f"{LOOPBACK}@{port}", extra=extra, insecure="",
                         modules="iterator" if anchor_file is None else "validator iterator",
                         qname_minimisation=True)
    for name, addresses in stub_zones:
        conf += f'stub-zone:\n    name: "{name}"\n'
        conf += "".join(f"    stub-addr: {address}\n" for address in addresses)
    return _run_unbound(group, "unbound-rec", conf, work, port)


def start_kresd_dot(group: PeerGroup, pki: TestPKI, nsd: Peer) -> Peer:
    """Knot Resolver 5 serving DoT on a free port, with example.test. stubbed to ``nsd``."""
    binary = require("kresd")
    work = group.workdir("kresd")
    port = free_port()
    (work / "config").write_text(f"""\
-- generated for the interop tests
net.listen('{LOOPBACK}', {port}, {{ kind = 'tls' }})
net.tls('{pki.cert_pem}', '{pki.key_pem}')
modules.unload('ta_update')
modules.unload('detect_time_skew')
modules.unload('priming')
trust_anchors.remove('.')
cache.size = 10 * MB
policy.add(policy.suffix(policy.STUB({{'{nsd.host}@{nsd.port}'}}),
                         {{todname('{ZONE_ORIGIN}')}}))
""")
    peer = group.start(Peer("kresd", [binary, "-n", "-c", "config", str(work)], work,
                            port=port))
    return peer.wait_tcp()


def start_dnsdist_dot(group: PeerGroup, pki: TestPKI, nsd: Peer) -> Peer:
    """dnsdist with a DoT frontend (``addTLSLocal``) on a free port and nsd as backend."""
    binary = require("dnsdist")
    work = group.workdir("dnsdist")
    port = free_port()
    plain = free_port()
    conf = work / "dnsdist.conf"
    conf.write_text(f"""\
-- generated for the interop tests
setSecurityPollSuffix("")
setLocal("{LOOPBACK}:{plain}")
addTLSLocal("{LOOPBACK}:{port}", "{pki.cert_pem}", "{pki.key_pem}", {{ provider = "openssl" }})
newServer({{ address = "{nsd.host}:{nsd.port}", healthCheckMode = "up" }})
setACL({{"127.0.0.0/8", "::1/128"}})
""")
    peer = group.start(Peer("dnsdist", [binary, "--supervised", "--disable-syslog", "-C",
                                        str(conf)], work, port=port, info={"plain": plain}))
    return peer.wait_tcp()


def start_stubby(group: PeerGroup, *, upstream_host: str, upstream_port: int,
                 pins: Sequence[str] = (), auth_name: str | None = TLS_NAME,
                 ca_file: Path | None = None, padding_blocksize: int = 128,
                 dnssec_trust_anchors: Path | None = None) -> Peer:
    """Stubby in strict mode (TLS only, authentication required) on a free port.

    Authentication uses ``auth_name`` (checked against ``ca_file``) and/or the SPKI
    ``pins``; clients query it over plain UDP/TCP at ``peer.port``. With
    ``dnssec_trust_anchors`` it validates DNSSEC (``dnssec: GETDNS_EXTENSION_TRUE``)
    from that file.
    """
    binary = require("stubby")
    work = group.workdir("stubby")
    port = free_port()
    lines = [
        "resolution_type: GETDNS_RESOLUTION_STUB",
        "dns_transport_list:",
        "  - GETDNS_TRANSPORT_TLS",
        "tls_authentication: GETDNS_AUTHENTICATION_REQUIRED",
        f"tls_query_padding_blocksize: {padding_blocksize}",
        "edns_client_subnet_private: 1",
        "round_robin_upstreams: 0",
        "idle_timeout: 10000",
        "timeout: 3000",
        f'appdata_dir: "{work}"',
        "listen_addresses:",
        f"  - {LOOPBACK}@{port}",
    ]
    if ca_file is not None:
        lines.append(f'tls_ca_file: "{ca_file}"')
    if dnssec_trust_anchors is not None:
        lines += ["dnssec: GETDNS_EXTENSION_TRUE",
                  f'dnssec_trust_anchors: "{dnssec_trust_anchors}"']
    lines += ["upstream_recursive_servers:",
              f"  - address_data: {upstream_host}",
              f"    tls_port: {upstream_port}"]
    if auth_name is not None:
        lines.append(f'    tls_auth_name: "{auth_name}"')
    if pins:
        lines.append("    tls_pubkey_pinset:")
        for pin in pins:
            # Unquoted: Stubby reads a quoted value as a string, not as base64 data.
            lines += ['      - digest: "sha256"', f"        value: {pin}"]
    conf = work / "stubby.yml"
    conf.write_text("\n".join(lines) + "\n")
    peer = group.start(Peer("stubby", [binary, "-C", str(conf), "-l"], work, port=port))
    return peer.wait_tcp()


# --------------------------------------------------------------------------- dnstls serve

def dnstls_command() -> list[str]:
    """How to run our CLI: the console script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("dnstls")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dnstls"]


def forward_test_config(directory: Path) -> Path:
    """A TOML file (serve's and the stub's) that forwards the default zone ``test.``,
    where the peers' zone :data:`ZONE_ORIGIN` lives, instead of answering it NXDOMAIN."""
    path = directory / "forward-test.toml"
    path.write_text('[local]\nnodefault = ["test."]\n')
    return path


def start_dnstls_serve(group: PeerGroup, pki: TestPKI, args: Sequence[str], *,
                       zone: Path | None = None) -> Peer:
    """Run ``dnstls serve`` with our certificate, a state dir and a free DoT port unless
    ``args`` name them, and ``--no-upstream`` unless ``args`` give upstreams (tests never
    reach a public resolver), else a config forwarding ``test.`` (unless ``args`` give
    one: :func:`forward_test_config`); wait until the DoT port accepts TCP."""
    work = group.workdir("dnstls")
    args = list(args)
    port = 0
    if "--listen" in args:
        listen = args[args.index("--listen") + 1]
        port = int(listen.rsplit(":", 1)[1])
    else:
        port = free_port()
        args += ["--listen", f"{LOOPBACK}:{port}"]
    if "--cert" not in args:
        args += ["--cert", str(pki.cert_pem), "--key", str(pki.key_pem)]
    if "--state-dir" not in args:
        state = work / "state"
        state.mkdir()
        args += ["--state-dir", str(state)]
    if zone is not None:
        args += ["--local-zone", str(zone)]
    if "--upstream" not in args and "--no-upstream" not in args and "--config" not in args:
        # Without upstreams the server would forward to a public resolver: never in tests.
        args.append("--no-upstream")
    elif "--upstream" in args and "--config" not in args:
        # The peers serve example.test., under the default zone test. (answered NXDOMAIN
        # locally): forward it, as the unbound peers do with local-zone "test." nodefault.
        args += ["--config", str(forward_test_config(work))]
    argv = [*dnstls_command(), "serve", *args]
    peer = group.start(Peer("dnstls", argv, work, port=port,
                            env={"PYTHONUNBUFFERED": "1"}))
    # ready when the start-up banner is out: the DoT port accepts as soon as it is
    # bound, while the --plain ports (bound after it) may not yet
    return peer.wait_ready(lambda: "try: kdig" in peer.log_text(limit=1 << 20))
