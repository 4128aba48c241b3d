"""perf profiles of one-query reads: dnstls next to the bare uvloop replay server.

Usage (as root, under the bench lock)::

    flock /tmp/dnstls-bench.lock .venv/bin/python bench/perf_conns.py \\
        [--src TREE] [--servers dnstls,floor-a,kresd,new] [--variant new=TREE]
        [--scenarios reads500,conns500]
        [--seconds 6] [--rounds 40] [--out DIR]

In a private network namespace (as bench/run.py) starts nsd, ``dnstls serve`` (from
``--src``, default this tree), ``bench/transport_floor.py``'s ``floor-a`` (uvloop
``create_server(ssl=...)`` answering every query with one precomputed answer), optionally
its ``floor-b`` (the same answers from a non-blocking ``ssl.SSLSocket`` on ``add_reader``),
its ``floor-x`` and ``floor-ossl`` (the same answers through C TLS plumbing under Python,
and from a C server on OpenSSL: ``bench/floor_engine.c``, ``bench/floor_ossl.c``)
and kresd, all pinned to core 0, and for each server and scenario:

* ``reads500`` (``readsN``: N connections): ``bench/tls_reads.py`` opens 500 TLS 1.3
  connections, then ``perf record -g`` and ``perf stat`` run around ``--rounds`` rounds
  of one query on every connection only (handshakes excluded; with N connections, as
  many reads in all as ``reads500``);
* ``conns500``: dnsperf ``-c 500 -q 500`` for ``--seconds`` (the handshakes included),
  perf around the whole run;
* ``missN``: N names no server has been asked (``nN.bench.test`` from 1,000 on; each
  server has its own cache, so all ask the same names), forwarded to nsd over UDP:
  dnsperf ``-n 1`` with 16 connections, 256 outstanding (as ``bench/run.py``'s miss),
  perf around the whole run; a second ``perf stat`` counts the system calls by name
  (:data:`SYSCALLS`) per query.

Prints, per server and scenario, µs of server CPU per query (schedstat) split by shared
object and by symbol from the perf samples, system calls and context switches per
query, the namespace's TCP counters per query (segments each way, pure and delayed
ACKs: both ends, so compare servers), and a side-by-side table by shared object.
Python 3.11 has no perf trampoline: Python code shows as the interpreter (libpython /
python3.11).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from run import (  # noqa: E402
    CLIENT_CPU,
    SERVER_CPU,
    assert_isolated,
    parse_variant_env,
    reexec_in_netns,
)


def start_floor(group: peers.PeerGroup, pki: peers.TestPKI, src: Path,
                variant: str = "a") -> peers.Peer:
    work = group.workdir(f"floor-{variant}")
    port = peers.free_port()
    argv = [sys.executable, str(BENCH / "transport_floor.py"), "serve", "--variant", variant,
            "--port", str(port), "--cert", str(pki.cert_pem), "--key", str(pki.key_pem)]
    peer = group.start(peers.Peer(f"floor-{variant}", peers._pinned(SERVER_CPU, argv), work,
                                  port=port, env={"PYTHONPATH": str(src / "src")}))
    return peer.wait_tcp(timeout=30)


#: System calls counted by name in the miss scenarios (tracepoints: cheap in counting mode).
SYSCALLS = ("read", "write", "writev", "sendto", "recvfrom", "sendmsg", "recvmsg",
            "sendmmsg", "recvmmsg", "epoll_wait", "epoll_pwait", "epoll_ctl", "socket",
            "connect", "close", "bind", "getsockname", "setsockopt", "getrandom",
            "io_uring_enter")


def perf_cmds(perf: str, pid: int, data: Path, stat: Path,
              calls: Path | None = None) -> list[list[str]]:
    extra = [] if calls is None else [
        ["taskset", "-c", CLIENT_CPU, perf, "stat", "-x,", "-o", str(calls), "-e",
         ",".join(f"syscalls:sys_enter_{c}" for c in SYSCALLS), "-p", str(pid)]]
    return [*extra,
            ["taskset", "-c", CLIENT_CPU, perf, "record", "-g", "-F", "1999", "-p", str(pid),
             "-o", str(data)],
            ["taskset", "-c", CLIENT_CPU, perf, "stat", "-x,", "-o", str(stat), "-e",
             "raw_syscalls:sys_enter,context-switches,task-clock,page-faults", "-p", str(pid)]]


def report(perf: str, data: Path, sort: str, limit: float) -> list[tuple[float, str]]:
    out = subprocess.run([perf, "report", "-i", str(data), "--no-children", "--sort", sort,
                          "--stdio", "-g", "none", "--percent-limit", str(limit)],
                         capture_output=True, text=True, timeout=600).stdout
    rows = []
    for line in out.splitlines():
        if line.strip().startswith("#") or "%" not in line:
            continue
        try:
            share = float(line.split("%")[0])
        except ValueError:
            continue
        rows.append((share, " ".join(line.split("%", 1)[1].split())))
    return rows


def net_counters() -> dict[str, int]:
    """The network namespace's TCP/IP counters (``nstat``'s sources): the server's and the
    client's packets alike, so compare servers, not absolute values."""
    counters: dict[str, int] = {}
    for source in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = Path(source).read_text().splitlines()
        for head, values in zip(lines[::2], lines[1::2], strict=True):
            prefix, *names = head.split()
            for name, value in zip(names, values.split()[1:], strict=True):
                if value.lstrip("-").isdigit():
                    counters[prefix + name] = int(value)
    return counters


def stat_rows(path: Path) -> dict[str, float]:
    rows: dict[str, float] = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            rows[fields[2]] = float(fields[0])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=BENCH.parent)
    parser.add_argument("--servers", default="dnstls,floor-a",
                        help="dnstls (from --src), floor-a, floor-b, floor-x, floor-ossl, kresd, "
                             "or a --variant name")
    parser.add_argument("--variant-env", action="append", default=[],
                        metavar="NAME:VAR=VALUE", help="an environment variable of a variant")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=TREE",
                        help="also run dnstls from another source tree")
    parser.add_argument("--scenarios", default="reads500,conns500",
                        help="reads500 (readsN), conns500, missN (e.g. miss64000)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    reexec_in_netns()
    assert_isolated()
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("bench: perf is not installed")
    out = args.out or Path(tempfile.mkdtemp(prefix="dnstls-perfconns-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dnstls-perfconns-work-"))
    group = peers.PeerGroup(work)
    src = args.src.resolve()
    scenarios = args.scenarios.split(",")
    miss_next = {}  # server -> the next name no one has asked it
    need = 1000 + sum(int(s.removeprefix("miss")) for s in scenarios if s.startswith("miss"))
    peers.A_NAMES = max(peers.A_NAMES, need)
    print(f"perf_conns: {measure.uptime()} src={src}", flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    try:
        pki = peers.make_pki(work / "pki")
        nsd = peers.start_nsd(group, cpu=CLIENT_CPU)
        hot = measure.write_text_queries(work / "hot.q",
                                         [peers.a_name(i) for i in range(1000)], "A")
        servers: dict[str, peers.Peer] = {}
        variants = {k: Path(v).resolve() for k, v in (x.split("=", 1) for x in args.variant)}
        variant_env = parse_variant_env(args.variant_env, variants, parser)
        for name in args.servers.split(","):
            if name == "dnstls":
                servers[name] = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU, src=src)
            elif name in variants:
                servers[name] = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU,
                                                   src=variants[name], name=name,
                                                   env=variant_env.get(name))
            elif name in ("floor-a", "floor-b", "floor-x", "floor-ossl"):
                servers[name] = start_floor(group, pki, src, name.removeprefix("floor-"))
            elif name == "kresd":
                servers[name] = peers.start_kresd(group, pki, nsd, cpu=SERVER_CPU)
            else:
                raise SystemExit(f"unknown server {name}")
            r = measure.run_dnsperf(port=servers[name].port, datafile=hot, cpu=CLIENT_CPU,
                                    passes=2, clients=2, outstanding=16)
            print(f"warm {name}: {r.completed} answers {r.rcodes}", flush=True)
        for turn, scenario in enumerate(scenarios):
            for name, peer in servers.items():
                # a scenario named twice (miss64000,miss64000: the cache grows) keeps both
                stem = f"{name}-{scenario}" + (f"-{turn}" if scenarios.count(scenario) > 1
                                              else "")
                data = out / f"{stem}.data"
                stat = out / f"{stem}.stat"
                calls = out / f"{stem}.calls" if scenario.startswith("miss") else None
                cmds = perf_cmds(perf, peer.pid, data, stat, calls)
                net_before = net_counters()
                if scenario.startswith("miss"):
                    count = int(scenario.removeprefix("miss"))
                    first = miss_next.get(name, 1000)
                    miss_next[name] = first + count
                    names = work / f"{name}-{scenario}.q"
                    measure.write_text_queries(
                        names, [peers.a_name(i) for i in range(first, first + count)], "A")
                    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL) for c in cmds]
                    time.sleep(0.3)
                    r = measure.run_dnsperf(port=peer.port, datafile=names, cpu=CLIENT_CPU,
                                            passes=1, seconds=60, timeout_s=10,
                                            server_pid=peer.pid)
                    for p in procs:
                        p.send_signal(2)
                    for p in procs:
                        p.wait(timeout=120)
                    per_q, done = r.cpu_us_per_query, r.completed
                    note = f"{r.qps:.0f} qps, lost {r.lost} {r.rcodes}"
                elif scenario.startswith("reads"):  # readsN: N connections
                    conns = int(scenario.removeprefix("reads"))
                    rounds = max(1, args.rounds * 500 // conns)  # as many reads as reads500
                    argv = ["taskset", "-c", CLIENT_CPU, sys.executable,
                            str(BENCH / "tls_reads.py"), "--port", str(peer.port),
                            "--ca", str(pki.ca_pem), "--server-pid", str(peer.pid),
                            "--conns", str(conns), "--rounds", str(rounds)]
                    for c in cmds:
                        argv += ["--around", " ".join(c)]
                    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    per_q, done = res["cpu_us_per_query"], res["completed"]
                    note = (f"lost {res['lost']} {res['rcodes']}; opening the connections "
                            f"(TLS 1.3 handshake + first query): "
                            f"{res['open_us_per_connection']:.0f} µs CPU each")
                else:
                    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL) for c in cmds]
                    time.sleep(0.3)
                    r = measure.run_dnsperf(port=peer.port, datafile=hot, cpu=CLIENT_CPU,
                                            seconds=args.seconds, clients=500,
                                            outstanding=500, timeout_s=10,
                                            server_pid=peer.pid)
                    for p in procs:
                        p.send_signal(2)
                    for p in procs:
                        p.wait(timeout=120)
                    per_q, done = r.cpu_us_per_query, r.completed
                    note = f"{r.qps:.0f} qps, lost {r.lost} {r.rcodes}"
                print(f"\n=== {name} {scenario}: {done} queries, {per_q:.1f} µs CPU/query, "
                      f"{note}", flush=True)
                net = {k: v - net_before.get(k, 0) for k, v in net_counters().items()}
                print("  packets and TCP events per query (both ends, this namespace):")
                for key in ("Tcp:OutSegs", "Tcp:InSegs", "TcpExt:DelayedACKs",
                            "TcpExt:TCPPureAcks", "TcpExt:TCPHPAcks", "TcpExt:TCPHPHits",
                            "TcpExt:TCPAutoCorking", "TcpExt:TCPOrigDataSent",
                            "TcpExt:TCPDelivered", "Tcp:RetransSegs"):
                    if net.get(key):
                        print(f"  {key:34} per query {net[key] / max(done, 1):8.3f}")
                        summary[scenario][f"{name}:{key}/q"] = net[key] / max(done, 1)
                st = stat_rows(stat)
                if calls is not None:
                    st.update(stat_rows(calls))
                for key, value in st.items():
                    if value:
                        print(f"  {key:34} per query {value / max(done, 1):8.3f}")
                        summary[scenario][f"{name}:{key}/q"] = value / max(done, 1)
                summary[f"{scenario}"][f"{name}:total"] = per_q
                summary[f"{scenario}"][f"{name}:syscalls/q"] = (
                    st.get("raw_syscalls:sys_enter", 0) / max(done, 1))
                for share, dso in report(perf, data, "dso", 0.3):
                    summary[scenario][f"{name}:{dso}"] = share * per_q / 100
                    print(f"  {share * per_q / 100:7.2f} µs  {share:5.1f}%  {dso}")
                print("  by symbol:")
                for share, sym in report(perf, data, "dso,sym", 0.25)[:args.top]:
                    print(f"  {share * per_q / 100:7.2f} µs  {share:5.1f}%  {sym[:110]}")
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"\nperf_conns: data in {out}; {measure.uptime()}")
    finally:
        for failure in group.stop_all():
            print(f"perf_conns: {failure}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
