"""CPU per cold resolution of ``dnstls serve`` recursing from the root, next to a
recursive Unbound 1.17 in the same run, through the loopback hierarchy of
tests/fakes/recursion_zones.py (one nsd per 127.N.M.X, port 53).

Two modes, each a list of distinct names asked once (``dnsperf -n 1``) over UDP, every
one a miss in the server's cache:

* ``many``: ``nI.many.test. A``, N names in one zone under a delegation: the referrals
  are learnt on the first query (a priming query before the clock starts), every name
  then costs one question to the zone's server;
* ``fresh``: ``www.zI.fresh.test. A``, each name in its own delegated zone: a referral
  from ``fresh.test.`` and then the answer from the new zone, two upstream questions
  per name.

The server's user+system CPU time (/proc/PID/stat) is divided by the names resolved; the
rcodes are checked by eye (all NOERROR expected). Servers run pinned to core 0, nsd and
dnsperf to core 1 (``taskset``, as bench/run.py; ``--no-pin`` to not), so the numbers do
not include the authorities' work. Bounded: N names per mode (``--names``), each run at
most ``--seconds``.

Until ``dnstls serve`` has ``[recursion]`` (the lead's integration) only Unbound's half
runs; the dnstls line then says why it was skipped.

Usage: ``flock /tmp/dnstls-bench.lock .venv/bin/python bench/bench_recursion.py
[--names 2000] [--seconds 60] [--no-pin]``. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import recursion_zones as rz
from interop import peers

SERVER_CPU, CLIENT_CPU = "0", "1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin_group(leader: int, cpu: str) -> None:
    """Pin every thread of every process in ``leader``'s process group (a peer and the
    children it forked, e.g. nsd's server process) to ``cpu``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader:  # pgrp
            subprocess.run(["taskset", "-a", "-c", "-p", cpu, entry.name],
                           capture_output=True, check=False)


def drive(peer: peers.Peer, queries: Path, seconds: float, *, port: int, pin: bool,
          ) -> tuple[float, float, int, int, str]:
    """dnsperf through ``queries`` once; the server's CPU seconds, the wall time, the
    queries completed and lost, and dnsperf's RCODE line."""
    argv = ["dnsperf", "-s", peer.host, "-p", str(port), "-d", str(queries), "-n", "1",
            "-l", str(seconds), "-c", "1", "-q", "20", "-t", "5"]
    if pin:
        argv = ["taskset", "-c", CLIENT_CPU, *argv]
    before, start = cpu_seconds(peer.pid), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=seconds + 30)
    used, wall = cpu_seconds(peer.pid) - before, time.monotonic() - start
    found = re.search(r"Queries completed:\s+(\d+)", done.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", done.stdout)
    codes = re.search(r"Response codes:\s+(.*)", done.stdout)
    if found is None:
        raise RuntimeError(f"dnsperf failed:\n{done.stdout}\n{done.stderr}")
    return (used, wall, int(found.group(1)), int(lost.group(1)) if lost else 0,
            codes.group(1) if codes else "?")


def prime(port: int) -> None:
    """Learn the root, test., many.test. and fresh.test. delegations (and meet the dead
    test. server) before the clock starts: one NXDOMAIN question in each zone."""
    import dns.exception
    import dns.message
    import dns.query

    for name in ("nothere.many.test.", "nothere.fresh.test."):
        for _ in range(3):  # Unbound drops an answer older than its discard-timeout
            try:
                dns.query.udp(dns.message.make_query(name, "A"), peers.LOOPBACK,
                              port=port, timeout=3)
                break
            except dns.exception.Timeout:
                continue


def report(name: str, used: float, wall: float, completed: int, lost: int, codes: str,
           ) -> None:
    per = used / completed * 1e6 if completed else float("nan")
    print(f"{name:26} {completed:6} resolved {lost:4} lost {completed / wall:8.0f}/s "
          f"{per:9.1f} µs CPU/resolution  [{codes}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=2000, help="names per mode")
    parser.add_argument("--seconds", type=float, default=60, help="bound per run")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args()
    pin = not args.no_pin
    with tempfile.TemporaryDirectory(prefix="recursion-bench") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        hierarchy = rz.write_hierarchy(work / "zones", many=args.names, fresh=args.names)
        files = {"many": work / "many", "fresh": work / "fresh"}
        files["many"].write_text("".join(f"n{i}.many.test A\n" for i in range(args.names)))
        files["fresh"].write_text("".join(f"www.z{i}.fresh.test A\n"
                                          for i in range(args.names)))
        pki = peers.make_pki(work / "pki")
        with peers.peer_group_at(work / "peers") as group:
            authorities = peers.start_authorities(group, rz.servers_of(hierarchy))
            print(f"hierarchy ({len(authorities)} nsd, {2 * args.names + 8} zones) up in "
                  f"{time.monotonic() - started:.1f}s; base {hierarchy.base}0/24",
                  flush=True)
            if pin:
                for nsd in authorities:
                    pin_group(nsd.pid, CLIENT_CPU)
            unbound = peers.start_unbound_recursive(group, root_hints=hierarchy.root_hints)
            servers: list[tuple[str, peers.Peer, int]] = [("unbound", unbound, unbound.port)]
            config = work / "recursion.toml"
            config.write_text(f"""\
[recursion]
enabled = true
root_hints = "{hierarchy.root_hints}"
qname_minimisation = true
do_not_query_localhost = false
do_ip6 = false

[local]
nodefault = ["test."]
""")
            plain = peers.free_port()
            try:
                dnstls = peers.start_dnstls_serve(
                    group, pki, ["--plain", f"{peers.LOOPBACK}:{plain}", "--config",
                                 str(config)])
                servers.insert(0, ("dnstls", dnstls, plain))
            except peers.PeerError as exc:
                lines = [line for line in str(exc).splitlines() if "error" in line.lower()]
                print(f"dnstls: skipped, serve would not start ({'; '.join(lines[:2])})",
                      flush=True)
            for name, server, port in servers:
                if pin:
                    pin_group(server.pid, SERVER_CPU)
                prime(port)
                for mode, queries in files.items():
                    report(f"{name} {mode}", *drive(server, queries, args.seconds,
                                                    port=port, pin=pin))


if __name__ == "__main__":
    main()
