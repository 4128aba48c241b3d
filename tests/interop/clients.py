"""Bounded wrappers around real DNS clients: kdig, dig, getdns_query, dnsperf -m dot.

Each call runs one subprocess with a timeout (a hang fails the test with what the client
printed) and returns a parsed result: :class:`DigResult` (RCODE, flags, sections, EDNS
lines, response size), :class:`GetdnsResult` (the JSON response dict) and
:class:`DnsperfResult` (queries sent/completed/lost, RCODE counts, QPS).
:func:`udp_burst` is our own bounded UDP client for bursts of simultaneous queries.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from .peers import LOOPBACK, require

#: Default bound for one client command, in seconds.
CLIENT_TIMEOUT = 20.0


def run_client(argv: Sequence[str], *, timeout: float = CLIENT_TIMEOUT,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client command, bounded; a timeout fails the test with what it printed."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"{' '.join(argv)} did not finish in {timeout}s\n{out}\n{err}")


_STATUS = re.compile(r"->>HEADER<<- opcode: \w+[;,] status: (\w+)")
_RECEIVED = re.compile(r"^;; (?:Received|MSG SIZE\s+rcvd:) (\d+)", re.MULTILINE)


@dataclass
class DigResult:
    """A kdig or dig run: exit status, output, and the parsed response."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.status is not None

    @property
    def status(self) -> str | None:
        """RCODE of the (last) response, e.g. ``NOERROR``; None if none was received."""
        found = _STATUS.findall(self.stdout)
        return found[-1] if found else None

    def section(self, title: str) -> list[str]:
        """Lines of a section (``ANSWER``, ``AUTHORITY``, ``EDNS``/``OPT``...)."""
        lines = self.stdout.splitlines()
        out: list[str] = []
        inside = False
        for line in lines:
            if line.startswith(";; ") and line.rstrip().endswith(("SECTION:", "PSEUDOSECTION:")):
                inside = title.upper() in line
                continue
            if inside:
                if not line.strip():
                    inside = False
                    continue
                out.append(line)
        return out

    def records(self, rtype: str | None = None) -> list[tuple[str, str, str]]:
        """(owner, type, rdata) of the answer section, optionally of one type."""
        result = []
        for line in self.section("ANSWER"):
            parts = line.split(None, 4)
            if len(parts) == 5 and parts[2] in ("IN", "CH"):
                owner, _ttl, _cls, typ, rdata = parts
                if rtype is None or typ == rtype:
                    result.append((owner, typ, rdata.strip()))
        return result

    def rdata(self, rtype: str) -> list[str]:
        return [r for _o, _t, r in self.records(rtype)]

    @property
    def flags(self) -> set[str]:
        """Header flags of the (last) response, e.g. ``{"qr", "aa", "rd"}``."""
        found = re.findall(r"^;; [Ff]lags: ([a-z ]*)[;]", self.stdout, re.MULTILINE)
        return set(found[-1].split()) if found else set()

    @property
    def received_bytes(self) -> int | None:
        found = _RECEIVED.findall(self.stdout)
        return int(found[-1]) if found else None

    @property
    def edns_lines(self) -> list[str]:
        return self.section("PSEUDOSECTION")

    def describe(self) -> str:
        return (f"command: {' '.join(self.argv)}\nexit status {self.returncode}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def _tls_flags(tls: bool, ca: Path | None, hostname: str | None) -> list[str]:
    """``+tls``, ``+tls-ca=FILE`` and ``+tls-hostname=NAME``, spelt alike by kdig and dig."""
    flags = ["+tls"] if tls else []
    if ca is not None:
        flags.append(f"+tls-ca={ca}")
    if hostname is not None:
        flags.append(f"+tls-hostname={hostname}")
    return flags


def kdig(server: str, port: int, name: str, rdtype: str = "A", *, tls: bool = False,
         ca: Path | None = None, hostname: str | None = None, pin: str | None = None,
         padding: bool | int = False, keepalive: bool = False, tcp: bool = False,
         extra: Iterable[str] = (), timeout: float = CLIENT_TIMEOUT) -> DigResult:
    """Run kdig once (``+time=3 +retry=1``). ``keepalive`` sends an empty
    edns-tcp-keepalive option (code 11): kdig 3.2 has no ``+keepalive`` flag."""
    argv = [require("kdig"), f"@{server}", "-p", str(port), name, rdtype,
            "+time=3", "+retry=1"]
    argv += _tls_flags(tls, ca, hostname)
    if pin is not None:
        argv.append(f"+tls-pin={pin}")
    if padding is True:
        argv.append("+padding")
    elif padding:
        argv.append(f"+padding={padding}")
    if keepalive:
        argv.append("+ednsopt=11:")
    if tcp:
        argv.append("+tcp")
    argv += list(extra)
    done = run_client(argv, timeout=timeout)
    return DigResult(argv, done.returncode, done.stdout, done.stderr)


def dig(server: str, port: int, name: str, rdtype: str = "A", *, tls: bool = False,
        ca: Path | None = None, hostname: str | None = None, keepalive: bool = False,
        padding: int | None = None, tcp: bool = False, extra: Iterable[str] = (),
        timeout: float = CLIENT_TIMEOUT) -> DigResult:
    """Run BIND's dig once (``+time=3 +tries=2``)."""
    argv = [require("dig"), f"@{server}", "-p", str(port), name, rdtype, "+time=3",
            "+tries=2"]
    argv += _tls_flags(tls, ca, hostname)
    if keepalive:
        argv.append("+keepalive")
    if padding is not None:
        argv.append(f"+padding={padding}")
    if tcp:
        argv.append("+tcp")
    argv += list(extra)
    done = run_client(argv, timeout=timeout)
    return DigResult(argv, done.returncode, done.stdout, done.stderr)


@dataclass
class GetdnsResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    response: dict[str, Any] | None

    @property
    def good(self) -> bool:
        """getdns status 900 (GETDNS_RESPSTATUS_GOOD)."""
        return self.response is not None and self.response.get("status") == 900

    @property
    def addresses(self) -> list[str]:
        if self.response is None:
            return []
        return [a["address_data"] for a in self.response.get("just_address_answers", [])]

    def rcodes(self) -> list[int]:
        if self.response is None:
            return []
        return [r["header"]["rcode"] for r in self.response.get("replies_tree", [])]

    def describe(self) -> str:
        return (f"command: {' '.join(self.argv)}\nexit status {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[:4000]}\n--- stderr ---\n{self.stderr}")


def getdns_query(server: str, port: int, name: str, rdtype: str = "A", *,
                 auth_name: str | None = None, ca: Path | None = None,
                 pins: Sequence[str] = (), strict: bool = True, padding: int | None = None,
                 timeout_ms: int = 3000, timeout: float = CLIENT_TIMEOUT) -> GetdnsResult:
    """getdns_query in stub mode over TLS only (``-s -L``), strict by default (``-m``)."""
    upstream = f"@{server}#{port}" + (f"~{auth_name}" if auth_name else "")
    argv = [require("getdns_query"), "-s", "-L", "-t", str(timeout_ms), "-j"]
    argv.append("-m" if strict else "-n")
    for pin in pins:
        argv += ["-K", f'pin-sha256="{pin}"']
    if padding is not None:
        argv += ["-P", str(padding)]
    if ca is not None:
        argv.append(json.dumps({"tls_ca_file": str(ca)}))
    argv += [upstream, name, rdtype]
    done = run_client(argv, timeout=timeout)
    response = None
    text = done.stdout.strip()
    if text.startswith("{"):
        with contextlib.suppress(json.JSONDecodeError):
            response = json.loads(text)
    return GetdnsResult(argv, done.returncode, done.stdout, done.stderr, response)


@dataclass(frozen=True)
class DnsperfResult:
    """The summary of one dnsperf run."""

    returncode: int
    sent: int
    completed: int
    lost: int
    rcodes: dict[str, int]
    qps: float
    output: str


_PERF_COUNT = re.compile(r"^\s*Queries (sent|completed|lost):\s+(\d+)", re.MULTILINE)
_PERF_RCODES = re.compile(r"^\s*Response codes:\s+(.*)$", re.MULTILINE)
_PERF_QPS = re.compile(r"^\s*Queries per second:\s+([\d.]+)", re.MULTILINE)


def parse_dnsperf(output: str, returncode: int = 0) -> DnsperfResult:
    counts = {key: int(value) for key, value in _PERF_COUNT.findall(output)}
    missing = {"sent", "completed", "lost"} - counts.keys()
    if missing:
        raise ValueError(f"dnsperf output has no 'Queries {sorted(missing)}' lines:\n{output}")
    rcodes: dict[str, int] = {}
    match = _PERF_RCODES.search(output)
    if match:
        for name, number in re.findall(r"([A-Z]+) (\d+)", match.group(1)):
            rcodes[name] = int(number)
    qps = _PERF_QPS.search(output)
    return DnsperfResult(returncode, counts["sent"], counts["completed"], counts["lost"],
                         rcodes, float(qps.group(1)) if qps else 0.0, output)


def write_query_file(path: Path, queries: Iterable[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{name} {rtype}\n" for name, rtype in queries))
    return path


def dnsperf_dot(server: str, port: int, query_file: Path, *, seconds: float = 2,
                clients: int = 2, outstanding: int = 20, max_runs: int | None = None,
                query_timeout: float = 3) -> DnsperfResult:
    """A bounded ``dnsperf -m dot`` run (time limit ``seconds``, optional ``-n`` runs)."""
    argv = [require("dnsperf"), "-s", server, "-p", str(port), "-m", "dot",
            "-d", str(query_file), "-l", str(seconds), "-c", str(clients),
            "-q", str(outstanding), "-t", str(query_timeout)]
    if max_runs is not None:
        argv += ["-n", str(max_runs)]
    done = run_client(argv, timeout=seconds + query_timeout + 20)
    output = done.stdout + done.stderr
    try:
        return parse_dnsperf(output, done.returncode)
    except ValueError:
        pytest.fail(f"{' '.join(argv)} printed no summary (exit {done.returncode}):\n{output}")


@dataclass
class BurstResult:
    sent: int
    answered: int
    missing: int
    rcodes: dict[str, int]

    def describe(self) -> str:
        return (f"sent {self.sent}, answered {self.answered}, missing {self.missing}, "
                f"rcodes {self.rcodes}")


def udp_burst(server: str, port: int, names: Sequence[str], *, bursts: int, size: int,
              timeout: float = 2.0) -> BurstResult:
    """Send ``bursts`` bursts of ``size`` A queries at once over UDP (cycling ``names``)
    and wait up to ``timeout`` seconds for each burst's answers; bounded in count and
    time. Answers are matched by ID; duplicates and strays are ignored."""
    sent = answered = 0
    rcodes: dict[str, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((server, port))
        for burst in range(bursts):
            waiting: set[int] = set()
            for i in range(size):
                qid = (burst * size + i + 1) & 0xFFFF
                waiting.add(qid)
                sock.send(dns.message.make_query(names[i % len(names)], "A", id=qid).to_wire())
                sent += 1
            deadline = time.monotonic() + timeout
            while waiting and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except (TimeoutError, ConnectionRefusedError):
                    break
                try:
                    response = dns.message.from_wire(data)
                except Exception:
                    continue
                if response.id in waiting:
                    waiting.discard(response.id)
                    answered += 1
                    text = dns.rcode.to_text(response.rcode())
                    rcodes[text] = rcodes.get(text, 0) + 1
    return BurstResult(sent, answered, sent - answered, rcodes)


def raw_exchange(wire: bytes, port: int, transport: str = "udp", *,
                 host: str = LOOPBACK) -> dns.message.Message:
    """Send the query bytes ``wire`` as they are over plain ``udp`` or ``tcp`` and read
    the one answer (5 s bound): for comparing servers on messages no client would send."""
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(wire, (host, port))
            data = sock.recv(65535)
    else:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(len(wire).to_bytes(2, "big") + wire)
            head = sock.recv(2, socket.MSG_WAITALL)
            data = sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
    return dns.message.from_wire(data)


def record_texts(section: list[dns.rrset.RRset]) -> set[str]:
    """Each record of ``section`` as text without its TTL (two caches age differently)."""
    return {f"{rrset.name} {dns.rdataclass.to_text(rrset.rdclass)} "
            f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
            for rrset in section for rdata in rrset}
