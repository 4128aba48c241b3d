"""Profile new TLS connections (handshake + one query + close) on dnstls and kresd alike.

Usage::

    flock /tmp/dnstls-bench.lock .venv/bin/python bench/profile_hs.py
        [--servers kresd,dnstls] [--variant NAME=TREE] [--modes 1.3,1.3r,1.2,1.2r]
        [-n 600] [--top 30] [--probe-only]

In a private network namespace (as bench/run.py): nsd, then each server pinned to core
0; the bench's handshake client (``bench/tlsload.py handshakes``, 4 threads) on core 1.
For each server and mode:

1. what the server negotiates with that client (``openssl s_client`` with Python's
   default client groups and suites, and one resumption with the session it got): the
   protocol, cipher suite, key-exchange group, signature, ticket count and lifetime,
   and whether it resumes;
2. ``perf record -g`` on the server while the client runs; server CPU per connection
   (schedstat, as bench/run.py) and perf's self shares turned into µs per connection,
   by group (kernel, OpenSSL/GnuTLS+nettle, Python, uvloop, libc, ...) and by symbol.

Compare like with like: the kernel's share covers TCP set-up and tear-down and the
syscalls; the crypto library's share is the handshake; the rest is the server's own code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import measure  # noqa: E402
import peers  # noqa: E402
from run import CLIENT_CPU, SERVER_CPU, assert_isolated, reexec_in_netns  # noqa: E402

MODES = {"1.3": ("1.3", False), "1.3r": ("1.3", True), "1.2": ("1.2", False),
         "1.2r": ("1.2", True)}

#: Groups of shared objects, by substring of the DSO name (first match wins).
GROUPS = [
    ("kernel", ("[kernel", "[unknown]")),
    ("libcrypto", ("libcrypto",)),
    ("libssl", ("libssl",)),
    ("gnutls", ("libgnutls",)),
    ("nettle", ("libnettle", "libhogweed", "libgmp")),
    ("uvloop", ("loop.cpython", "uvloop")),
    ("libuv", ("libuv",)),
    ("_ssl", ("_ssl.cpython",)),
    ("python", ("python3", "libpython")),
    ("libc", ("libc.so", "libc-", "ld-linux", "libm.so", "libpthread")),
    ("kres", ("kresd", "libkres", "libknot", "libdnssec", "libzscanner", "libluajit",
              "liblmdb")),
]


def group_of(dso: str) -> str:
    for name, keys in GROUPS:
        if any(k in dso for k in keys):
            return name
    return "other:" + dso


def probe(port: int, ca: Path, version: str) -> str:
    """What the server negotiates with a client like tlsload's (s_client view)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return "openssl not installed"
    flag = "-tls1_3" if version == "1.3" else "-tls1_2"
    with tempfile.TemporaryDirectory() as tmp:
        sess = Path(tmp) / "sess.pem"
        lines = []
        for resume in (False, True):
            argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", flag,
                    "-CAfile", str(ca), "-alpn", "dot", "-groups",
                    "X25519:P-256:X448:P-521:P-384", "-no_ign_eof"]
            argv += ["-sess_in", str(sess)] if resume else ["-sess_out", str(sess)]
            proc = subprocess.run(argv, input=b"", capture_output=True, timeout=20)
            text = proc.stdout.decode(errors="replace")
            got = {}
            for key, pattern in (
                    ("proto", r"^\s*Protocol\s*:\s*(\S+)"),
                    ("cipher", r"^\s*Cipher\s*:\s*(\S+)"),
                    ("tmpkey", r"Server Temp Key: (.+)"),
                    ("peer-sig", r"Peer signature type: (.+)"),
                    ("peer-digest", r"Peer signing digest: (.+)"),
                    ("reused", r"^(New|Reused), "),
                    ("lifetime", r"TLS session ticket lifetime hint: (.+)"),
                    ("session-id-len", r"Session-ID: (\S*)"),
                    ("alpn", r"ALPN protocol: (\S+)")):
                found = re.findall(pattern, text, re.M)
                if found:
                    got[key] = found[-1] if key != "session-id-len" else str(len(found[-1]) // 2)
            got["tickets"] = str(text.count("TLS session ticket:"))
            lines.append(("resume " if resume else "full   ") + ", ".join(
                f"{k}={v}" for k, v in got.items()))
    lines.append(py_probe(port, ca, version))
    return "\n    ".join(lines)


def py_probe(port: int, ca: Path, version: str) -> str:
    """tlsload's own client: one query on a new connection, then one on a resumed one."""
    import socket
    import struct

    import tlsload
    ctx = tlsload.context(str(ca), version)
    session = None
    out = []
    for i in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, session=session) as s:
            s.sendall(tlsload.query(i))
            (length,) = struct.unpack("!H", tlsload.recv_exact(s, 2))
            tlsload.recv_exact(s, length)
            time.sleep(0.05)
            s.setblocking(False)
            with contextlib.suppress(ssl.SSLWantReadError, BlockingIOError):
                s.recv(1)  # let late TLS 1.3 tickets in
            session = s.session
            out.append(f"{s.version()} {s.cipher()[0]} reused={s.session_reused} "
                       f"ticket={session.has_ticket if session else None} "
                       f"hint={session.ticket_lifetime_hint if session else None} "
                       f"id_len={len(session.id) if session else None}")
    return "python: " + " | ".join(out)


def profile(name: str, peer: peers.Peer, ca: Path, version: str, resume: bool, n: int,
            out: Path, top: int, syscalls: bool = False) -> None:
    perf = shutil.which("perf")
    label = f"{name} TLS {version} {'resumed' if resume else 'full'}"
    data = out / f"perf-{name}-{version}{'r' if resume else ''}.data"
    argv = [sys.executable, str(BENCH / "tlsload.py"), "handshakes", "--port",
            str(peer.port), "--ca", str(ca), "--version", version, "-n", str(n),
            "--threads", "4", "--seconds", "60"]
    if resume:
        argv.append("--resume")
    argv = ["taskset", "-c", CLIENT_CPU, *argv]
    pids = ",".join(str(p) for p in measure.tree(peer.pid))
    rec = stat = None
    if perf is not None:
        if syscalls:  # perf trace -s: system calls by name (instead of sampling)
            rec = subprocess.Popen([perf, "trace", "-s", "-p", pids, "-o",
                                    str(data) + ".trace"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        else:
            rec = subprocess.Popen([perf, "record", "-F", "1999", "-p", pids, "-o",
                                    str(data)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stat = subprocess.Popen([perf, "stat", "-x,", "-e", "task-clock,page-faults,"
                                 "context-switches,raw_syscalls:sys_enter", "-p", pids],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
    cpu0 = measure.cpu_seconds(peer.pid)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    cpu = measure.cpu_seconds(peer.pid) - cpu0
    stat_err = b""
    if rec is not None and stat is not None:
        rec.send_signal(2)
        rec.communicate(timeout=60)
        stat.send_signal(2)
        _, stat_err = stat.communicate(timeout=60)
    import json
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    conns = max(result["connections"], 1)
    per = cpu * 1e6 / conns
    print(f"\n== {label}: {conns} connections, {result['per_second']:.0f}/s, "
          f"{per:.0f} µs server CPU per connection, {result['stats']}", flush=True)
    for line in stat_err.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            print(f"  {fields[2]:28} per connection {float(fields[0]) / conns:10.2f}")
    if rec is None:
        return
    if syscalls:
        text = Path(str(data) + ".trace").read_text(errors="replace")
        print("  system calls per connection:")
        for line in text.splitlines():
            m = re.match(r"\s+(\w+)\s+(\d+)\s+\d+\s+([\d.]+)", line)
            if m and int(m.group(2)) >= conns // 10:
                print(f"    {m.group(1):20} {int(m.group(2)) / conns:6.2f}  "
                      f"({float(m.group(3)) * 1000 / int(m.group(2)):.1f} µs each, traced)")
        return
    report = subprocess.run([perf, "report", "-i", str(data), "--no-children", "--sort",
                             "dso,sym", "--stdio", "--percent-limit", "0"],
                            capture_output=True, text=True, timeout=300)
    groups: dict[str, float] = defaultdict(float)
    rows = []
    for line in report.stdout.splitlines():
        if line.startswith("#") or "%" not in line:
            continue
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        share, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        groups[group_of(dso)] += share
        rows.append((share, dso, sym))
    print("  by group (µs per connection):")
    for g, share in sorted(groups.items(), key=lambda kv: -kv[1]):
        if share >= 0.3:
            print(f"    {share * per / 100:7.1f} µs {share:5.1f} %  {g}")
    print(f"  top {top} symbols:")
    for share, dso, sym in rows[:top]:
        print(f"    {share * per / 100:7.1f} µs {share:5.1f} %  {dso[:28]:28} {sym[:70]}")


def run_cprofile(args: argparse.Namespace, group: peers.PeerGroup, pki: peers.TestPKI,
                 out: Path) -> None:
    import pstats
    nsd = peers.start_nsd(group, cpu=CLIENT_CPU)
    stats = out / "cprofile-hs.prof"
    peer = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU, src=args.cprofile.resolve(),
                              name="dnstls-cprofile", wrap=["-m", "cProfile", "-o", str(stats)])
    mode = args.modes.split(",")[0]
    version, resume = MODES[mode]
    argv = ["taskset", "-c", CLIENT_CPU, sys.executable, str(BENCH / "tlsload.py"),
            "handshakes", "--port", str(peer.port), "--ca", str(pki.ca_pem), "--version",
            version, "-n", str(args.n), "--threads", "4", "--seconds", "120"]
    if resume:
        argv.append("--resume")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=200)
    print(proc.stdout.strip().splitlines()[-1])
    peer.stop()
    ps = pstats.Stats(str(stats), stream=sys.stdout)
    ps.sort_stats("tottime").print_stats(args.top)
    ps.sort_stats("cumulative").print_stats(args.top)


def run_pyspy(args: argparse.Namespace, group: peers.PeerGroup, pki: peers.TestPKI,
              out: Path) -> None:
    import pyspy_top
    nsd = peers.start_nsd(group, cpu=CLIENT_CPU)
    peer = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU, src=args.pyspy.resolve())
    version, resume = MODES[args.modes.split(",")[0]]

    def client(n: int) -> dict[str, object]:
        argv = ["taskset", "-c", CLIENT_CPU, sys.executable, str(BENCH / "tlsload.py"),
                "handshakes", "--port", str(peer.port), "--ca", str(pki.ca_pem),
                "--version", version, "-n", str(n), "--threads", "4", "--seconds", "120"]
        if resume:
            argv.append("--resume")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=200)
        import json
        result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    client(1000)  # warm the cache
    raw = out / "pyspy-hs.txt"
    spy_bin = str(Path(sys.executable).with_name("py-spy"))
    spy = subprocess.Popen([spy_bin, "record", "--pid", str(peer.pid), "--native", "-r",
                            "500", "--format", "raw", "-o", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    cpu0 = measure.cpu_seconds(peer.pid)
    result = client(args.n)
    cpu = measure.cpu_seconds(peer.pid) - cpu0
    spy.send_signal(2)
    spy.communicate(timeout=60)
    n = int(str(result["connections"]))
    print(f"{result}; {cpu * 1e6 / n:.0f} µs CPU per connection (under py-spy)")
    print(pyspy_top.report(raw, top=args.top, per=n, seconds=cpu))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="kresd,dnstls")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--modes", default="1.3,1.3r,1.2,1.2r")
    parser.add_argument("-n", type=int, default=600)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--probe-only", action="store_true")
    parser.add_argument("--syscalls", action="store_true",
                        help="perf trace -s (system calls by name) instead of perf record")
    parser.add_argument("--cprofile", metavar="TREE", type=Path, default=None,
                        help="instead: dnstls from TREE under cProfile, TLS 1.3 full "
                             "connections (-n), top functions by own time per connection")
    parser.add_argument("--pyspy", metavar="TREE", type=Path, default=None,
                        help="instead: py-spy --native on dnstls from TREE, first mode of "
                             "--modes, top functions as µs per connection")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    reexec_in_netns()
    assert_isolated()
    out = args.out or Path(tempfile.mkdtemp(prefix="dnstls-profile-hs-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dnstls-profile-hs-work-"))
    group = peers.PeerGroup(work)
    variants = {k: Path(v).resolve() for k, v in (x.split("=", 1) for x in args.variant)}
    print(f"profile_hs: {measure.uptime()}", flush=True)
    try:
        pki = peers.make_pki(work / "pki")
        if args.cprofile is not None:
            run_cprofile(args, group, pki, out)
            return 0
        if args.pyspy is not None:
            run_pyspy(args, group, pki, out)
            return 0
        servers = peers.start_all(group, pki, server_cpu=SERVER_CPU, aux_cpu=CLIENT_CPU,
                                  names=args.servers.split(","), variants=variants)
        for name, peer in servers.resolvers.items():
            for version in ("1.3", "1.2"):
                print(f"{name} TLS {version}:\n    {probe(peer.port, pki.ca_pem, version)}",
                      flush=True)
        if args.probe_only:
            return 0
        for peer in servers.resolvers.values():  # warm the cache (1000 names)
            subprocess.run([sys.executable, str(BENCH / "tlsload.py"), "handshakes",
                            "--port", str(peer.port), "--ca", str(pki.ca_pem), "--version",
                            "1.3", "-n", "1000", "--threads", "4", "--seconds", "60",
                            "--resume"], capture_output=True, timeout=120)
        for mode in args.modes.split(","):
            version, resume = MODES[mode]
            for name, peer in servers.resolvers.items():
                profile(name, peer, pki.ca_pem, version, resume, args.n, out, args.top,
                        args.syscalls)
        print(f"profile_hs: perf data in {out}; {measure.uptime()}")
    finally:
        for failure in group.stop_all():
            print(f"profile_hs: {failure}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
