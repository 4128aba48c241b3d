"""Stubby vs ``dnstls stub`` under the same dnsperf UDP load, on loopback only.

Usage::

    .venv/bin/python bench/stub_vs_stubby.py [--seconds 10] [--clients 2] [--outstanding 50]
                                             [--upstream unbound|serve] [--reps 1]
                                             [--variant NAME=TREE ...]

Hold the shared benchmark lock on a shared machine:
``flock /tmp/dnstls-bench.lock .venv/bin/python bench/stub_vs_stubby.py --seconds 8``.

Starts one DoT upstream -- Unbound serving DoT with example.test. stubbed to nsd
(default), or ``dnstls serve --local-zone`` -- then, in turn and alone on the machine:

1. Stubby (strict: name checked against the per-run CA, TLS only, no cache of its own);
2. ``dnstls stub --no-cache`` (the like-for-like comparison);
3. ``dnstls stub`` with its cache (what a user gets by default);

each with the same upstream, the same fixed query file (names of the test zone: A, AAAA,
TXT, MX, CNAME and NXDOMAIN) and the same bounded dnsperf run over UDP. Prints queries
per second, **the stub's CPU per answered query** (µs, user + system, summed over every
thread of its process tree from ``/proc/PID/task/*/schedstat`` around the dnsperf run,
as ``bench/run.py`` does) and the upstream's, average/min/max latency, lost queries,
and the ratios dnstls/Stubby. CPU per query is the figure to compare on a shared
machine: qps depends on what the rest of the machine leaves.

``--pyspy DIR`` samples the ``dnstls stub --no-cache`` run with ``py-spy record --format
raw`` (``--rate``, default 200 a second; ``--native`` adds C frames) and prints the
functions by self and inclusive share as µs of stub CPU per query (bench/pyspy_top.py);
``--cprofile DIR`` runs it once more under cProfile and prints the top functions by own
time. Both skip Stubby and the cached stub unless asked otherwise.

``--unique N`` asks N distinct names (NXDOMAIN) in turn instead of the 8 fixed queries,
so identical queries are rarely in flight at once and every stub forwards nearly every
query (with the fixed queries, dnstls sends one upstream query for identical ones in
flight; Stubby sends each).

``--tree TREE`` runs the ``dnstls stub`` rows (and the profiled stub) from another
source tree. ``--variant NAME=TREE`` adds ``dnstls stub --no-cache`` run from another source tree
(``PYTHONPATH=TREE/src``), e.g. to compare a branch with main in one run. With
``--reps N`` the stubs are run in turn N times (interleaved) and every run is printed.

Every ``dnstls stub`` runs with ``--metrics`` on a loopback port (the counters are kept
either way; the endpoint is only read after a run): when a run's rcodes include anything
but NOERROR and NXDOMAIN, the stub's non-zero ``dnstls_`` counters other than the
per-rcode ones are printed under the table, so a rare SERVFAIL says where it came from
(upstream timeouts, connection failures, drops, ...).

Everything listens on 127.0.0.1 on free ports; nothing else is contacted (every stub has
the loopback upstream as its only upstream). The peers come from the interop harness
(``tests/interop/peers.py``) and are stopped at the end. This is not a test: no
pass/fail on timing, just numbers.
"""

from __future__ import annotations

import argparse
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import measure  # bench/measure.py: CPU of a process tree from /proc, as bench/run.py uses
import pyspy_top

from interop import peers

QUERIES = [("www.example.test", "A"), ("www.example.test", "AAAA"),
           ("txt.example.test", "TXT"), ("example.test", "MX"), ("alias.example.test", "A"),
           ("mail.example.test", "A"), ("nope.example.test", "A"), ("example.test", "SOA")]


@dataclass
class Run:
    label: str
    sent: int
    completed: int
    lost: int
    qps: float
    avg_ms: float
    min_ms: float
    max_ms: float
    rcodes: str
    cpu_s: float = 0.0  # the stub's process tree, during the run
    upstream_cpu_s: float = 0.0
    diagnosis: list[str] = field(default_factory=list)  # counters, when rcodes were unusual

    @property
    def unusual(self) -> bool:
        """True if some answer had an rcode other than NOERROR or NXDOMAIN."""
        counts = re.findall(r"(\w+) (\d+)", self.rcodes)
        return any(name not in ("NOERROR", "NXDOMAIN") and int(n) for name, n in counts)

    @property
    def mix(self) -> dict[str, float]:
        """The share of each rcode, in per cent."""
        return {name: float(share) for name, share in
                re.findall(r"(\w+) \d+ \(([\d.]+)%\)", self.rcodes)}

    def us_per_query(self, cpu: float) -> float:
        return cpu * 1e6 / self.completed if self.completed else float("nan")

    @property
    def cpu_us(self) -> float:
        return self.us_per_query(self.cpu_s)

    @property
    def upstream_cpu_us(self) -> float:
        return self.us_per_query(self.upstream_cpu_s)


_NUM = r"([\d.]+)"


def dnsperf(label: str, port: int, query_file: Path, *, seconds: float, clients: int,
            outstanding: int, pid: int | None = None, upstream_pid: int | None = None) -> Run:
    binary = peers.which("dnsperf")
    if binary is None:
        sys.exit("dnsperf is not installed (run scripts/setup)")
    argv = [binary, "-s", peers.LOOPBACK, "-p", str(port), "-d", str(query_file),
            "-l", str(seconds), "-c", str(clients), "-q", str(outstanding), "-t", "3"]
    cpu0 = measure.cpu_seconds(pid) if pid else 0.0
    up0 = measure.cpu_seconds(upstream_pid) if upstream_pid else 0.0
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          check=False, stdin=subprocess.DEVNULL)
    cpu = measure.cpu_seconds(pid) - cpu0 if pid else 0.0
    up_cpu = measure.cpu_seconds(upstream_pid) - up0 if upstream_pid else 0.0
    out = done.stdout + done.stderr

    def grab(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, out)
        return match.group(1) if match else default

    latency = re.search(rf"Average Latency \(s\):\s+{_NUM} \(min {_NUM}, max {_NUM}\)", out)
    avg, lo, hi = (float(x) * 1000 for x in latency.groups()) if latency else (0.0, 0.0, 0.0)
    return Run(label, int(grab(r"Queries sent:\s+(\d+)")),
               int(grab(r"Queries completed:\s+(\d+)")), int(grab(r"Queries lost:\s+(\d+)")),
               float(grab(rf"Queries per second:\s+{_NUM}")), avg, lo, hi,
               grab(r"Response codes:\s+(.*)", "?").strip(), cpu, up_cpu)


def stub_counters(stub: peers.Peer) -> list[str]:
    """The stub's non-zero ``dnstls_`` counters and gauges, per-rcode ones left out."""
    port = stub.info.get("metrics_port")
    if not port:
        return []
    try:
        with urllib.request.urlopen(f"http://{peers.LOOPBACK}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as exc:
        return [f"(metrics not readable: {exc})"]
    lines = []
    for line in text.splitlines():
        if (not line.startswith("dnstls_") or line.startswith("dnstls_queries_total")
                or "_created" in line.split("{")[0]):
            continue
        name, _, value = line.rpartition(" ")
        if float(value) != 0:
            lines.append(f"{name} {float(value):g}")
    return lines


def start_dnstls_stub(group: peers.PeerGroup, pki: peers.TestPKI, upstream: peers.Peer,
                      extra: list[str], tree: str | None = None,
                      wrap: list[str] | None = None) -> peers.Peer:
    port = peers.free_port()
    metrics_port = peers.free_port()
    command = [sys.executable, *wrap, "-m", "dnstls"] if wrap else peers.dnstls_command()
    argv = [*command, "stub", "--listen", f"{peers.LOOPBACK}:{port}",
            "--upstream", f"tls://{upstream.host}:{upstream.port}#{pki.hostname}",
            "--ca-file", str(pki.ca_pem), "--metrics", f"{peers.LOOPBACK}:{metrics_port}",
            *extra]
    # The bench's names are under test. (bench.test.), a default zone answered NXDOMAIN
    # locally: forward it, as the upstream unbound does (local-zone "test." nodefault);
    # trees from before default zones do not know the setting
    source = Path(tree).resolve() if tree is not None else Path(__file__).resolve().parents[1]
    if (source / "src" / "dnstls" / "resolver" / "default_zones.py").exists():
        config = group.workdir("dnstls-stub") / "stub.toml"
        config.write_text('[local]\nnodefault = ["test."]\n')
        argv += ["--config", str(config)]
    env = {"PYTHONUNBUFFERED": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(Path(tree).resolve() / "src")
    peer = group.start(peers.Peer("dnstls-stub", argv, group.workdir("dnstls-stub"),
                                  port=port, env=env, info={"metrics_port": metrics_port}))
    return peer.wait_ready(lambda: peers.udp_dns_answers(peers.LOOPBACK, port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="dnsperf -l (default 10)")
    parser.add_argument("--clients", type=int, default=2, help="dnsperf -c (default 2)")
    parser.add_argument("--outstanding", type=int, default=50,
                        help="dnsperf -q (default 50)")
    parser.add_argument("--upstream", choices=("unbound", "serve"), default="unbound")
    parser.add_argument("--reps", type=int, default=1, help="rounds of all stubs (default 1)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=TREE",
                        help="also run `dnstls stub --no-cache` from TREE/src")
    parser.add_argument("--unique", type=int, default=0, metavar="N",
                        help="query N distinct names (NXDOMAIN) instead of the 8 fixed "
                             "queries: identical queries are then rarely in flight together")
    parser.add_argument("--no-stubby", action="store_true", help="skip Stubby")
    parser.add_argument("--no-cache-only", action="store_true",
                        help="skip `dnstls stub` with its cache")
    parser.add_argument("--pyspy", type=Path, metavar="DIR",
                        help="py-spy the no-cache stub's run; raw profile into DIR")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples a second")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--cprofile", type=Path, metavar="DIR",
                        help="run the no-cache stub under cProfile too; stats into DIR")
    parser.add_argument("--top", type=int, default=30, help="rows of profile output")
    parser.add_argument("--tree", metavar="TREE",
                        help="run the `dnstls stub` rows (and the profiled one) from "
                             "TREE/src instead of the installed dnstls")
    args = parser.parse_args(argv)
    if args.pyspy or args.cprofile:
        args.no_stubby = args.no_cache_only = True
    variants = [tuple(v.split("=", 1)) for v in args.variant]
    if any(len(v) != 2 for v in variants):
        parser.error("--variant takes NAME=TREE")

    with tempfile.TemporaryDirectory(prefix="stub-bench-") as tmp_text:
        tmp = Path(tmp_text)
        group = peers.PeerGroup(tmp / "peers")
        group.directory.mkdir()
        pki = peers.make_pki(tmp / "pki")
        query_file = tmp / "queries.txt"
        queries = ([(f"u{i}.example.test", "A") for i in range(args.unique)] if args.unique
                   else QUERIES)
        query_file.write_text("".join(f"{n} {t}\n" for n, t in queries))
        runs: list[Run] = []
        profiles: list[str] = []
        try:
            if args.upstream == "unbound":
                nsd = peers.start_nsd(group)
                upstream = peers.start_unbound_dot(group, pki, nsd)
                what = f"unbound DoT ({upstream.host}:{upstream.port}) -> nsd"
            else:
                zone = peers.write_zone(tmp / "zones")
                upstream = peers.start_dnstls_serve(group, pki, [], zone=zone)
                what = f"dnstls serve --local-zone ({upstream.host}:{upstream.port})"
            perf = {"seconds": args.seconds, "clients": args.clients,
                    "outstanding": args.outstanding}

            stubs: list[tuple[str, list[str], str | None]] = [
                ("dnstls stub --no-cache", ["--no-cache"], args.tree)]
            stubs += [(f"{name} --no-cache", ["--no-cache"], tree) for name, tree in variants]
            if not args.no_cache_only:
                stubs.append(("dnstls stub (cache)", [], args.tree))
            for _rep in range(args.reps):
                if not args.no_stubby:
                    stubby = peers.start_stubby(group, upstream_host=upstream.host,
                                                upstream_port=upstream.port,
                                                ca_file=pki.ca_pem)
                    dnsperf("warm-up", stubby.port, query_file, **{**perf, "seconds": 1})
                    runs.append(dnsperf("stubby", stubby.port, query_file, **perf,
                                        pid=stubby.pid, upstream_pid=upstream.pid))
                    stubby.stop()
                for label, extra, tree in stubs:
                    stub = start_dnstls_stub(group, pki, upstream, extra, tree)
                    dnsperf("warm-up", stub.port, query_file, **{**perf, "seconds": 1})
                    spy = None
                    if args.pyspy and tree == args.tree and "--no-cache" in extra:
                        args.pyspy.mkdir(parents=True, exist_ok=True)
                        raw = args.pyspy / "pyspy-stub.txt"
                        spy = subprocess.Popen(
                            [shutil.which("py-spy") or str(Path(sys.executable).with_name(
                                "py-spy")), "record", "--pid", str(stub.pid),
                             *(["--native"] if args.native else []), "-r", str(args.rate),
                             "--format", "raw", "-o", str(raw),
                             "-d", str(int(args.seconds) + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                        time.sleep(0.5)
                    runs.append(dnsperf(label, stub.port, query_file, **perf, pid=stub.pid,
                                        upstream_pid=upstream.pid))
                    if runs[-1].unusual:
                        runs[-1].diagnosis = stub_counters(stub)
                    if spy is not None:
                        spy.communicate(timeout=args.seconds + 60)
                        profiles.append(pyspy_top.report(
                            raw, top=args.top, per=runs[-1].completed,
                            seconds=runs[-1].cpu_s))
                    stub.stop()
            if args.cprofile:
                args.cprofile.mkdir(parents=True, exist_ok=True)
                stats = args.cprofile / "cprofile-stub.prof"
                stub = start_dnstls_stub(group, pki, upstream, ["--no-cache"], args.tree,
                                         wrap=["-m", "cProfile", "-o", str(stats)])
                dnsperf("warm-up", stub.port, query_file, **{**perf, "seconds": 1})
                runs.append(dnsperf("(under cProfile)", stub.port, query_file, **perf,
                                    pid=stub.pid, upstream_pid=upstream.pid))
                stub.stop()
                if stats.exists():
                    pstats.Stats(str(stats), stream=sys.stdout).sort_stats(
                        "tottime").print_stats(args.top)
        finally:
            failures = group.stop_all()
            for failure in failures:
                print(failure, file=sys.stderr)

    print(f"upstream: {what}; dnsperf UDP -l {args.seconds:g} -c {args.clients} "
          f"-q {args.outstanding}, "
          f"{f'{args.unique} distinct names' if args.unique else f'{len(QUERIES)} fixed queries'}"
          "; load average "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at the end; "
          f"{measure.machine()}")
    print(f"{'':26} {'qps':>9} {'µs CPU/q':>9} {'upstr µs/q':>10} {'avg ms':>8} "
          f"{'min ms':>8} {'max ms':>8} {'lost':>6}  rcodes")
    for run in runs:
        print(f"{run.label:26} {run.qps:9.0f} {run.cpu_us:9.1f} {run.upstream_cpu_us:10.1f} "
              f"{run.avg_ms:8.2f} {run.min_ms:8.2f} {run.max_ms:8.2f} {run.lost:6d}  "
              f"{run.rcodes}")
    for run in runs:
        if run.diagnosis:
            print(f"{run.label}: unusual rcodes ({run.rcodes}); the stub's counters:")
            for line in run.diagnosis:
                print(f"    {line}")
    for profile in profiles:
        print(profile)
    # Every server was sent the same queries: their answers' rcode mix must agree, or a
    # ratio compares different work (a stub answering locally is not forwarding).
    status = 0
    reference = next((run for run in runs if run.label == "stubby"), None)
    for run in runs:
        if reference is not None and run is not reference and any(
                abs(share - reference.mix.get(name, 0.0)) > 1.0
                for name, share in {**reference.mix, **run.mix}.items()
                if name in run.mix or name in reference.mix):
            print(f"bench: ERROR: {run.label}'s rcodes ({run.rcodes}) differ from stubby's "
                  f"({reference.rcodes}): not the same work", file=sys.stderr)
            status = 1
    bases = [run for run in runs if run.label == "stubby"]
    if bases:
        base_qps = sorted(r.qps for r in bases)[len(bases) // 2]
        base_cpu = sorted(r.cpu_us for r in bases)[len(bases) // 2]
        for label in dict.fromkeys(r.label for r in runs if r.label != "stubby"):
            mine = [r for r in runs if r.label == label]
            qps = sorted(r.qps for r in mine)[len(mine) // 2]
            cpu = sorted(r.cpu_us for r in mine)[len(mine) // 2]
            print(f"ratio {label} / stubby (medians): qps x{qps / base_qps:.2f}, "
                  f"CPU per query x{cpu / base_cpu:.2f}" if base_qps and base_cpu else
                  f"ratio {label} / stubby: n/a")
    return status


if __name__ == "__main__":
    sys.exit(main())
