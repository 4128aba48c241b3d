"""Profile ``dnstls serve`` on the cached DoT path (or the miss path) under dnsperf load.

Usage::

    .venv/bin/python bench/profile.py [--seconds 10] [--src TREE] [--cprofile] [--out DIR]
                                      [--scenario hot|padded|miss|conns500]
                                      [--rate 1000] [--no-native] [--perf]

In a private network namespace (as bench/run.py), starts nsd and one ``dnstls serve``
pinned to core 0, warms its cache, and drives it with dnsperf (16 DoT connections, 256
outstanding) on core 1 while ``py-spy record --native -r 1000 --format raw`` samples it.
Prints the functions with the largest self and inclusive share, also as µs of server
CPU per query (share * CPU seconds / queries answered). With ``--cprofile`` a second
run executes the server under cProfile (much slower: the ratios between functions are
what it is for) and prints the top functions by own time per query.

With ``--perf``, ``perf record -g`` samples the server instead of py-spy (it does not
stop the process, so syscall and kernel costs are not inflated; Python frames show only
as the interpreter) and ``perf stat`` counts its system calls and context switches:
the C/kernel view of the same load, as µs per query by shared object and symbol.

``--src TREE`` runs dnstls from another source tree (its ``src/`` first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import measure  # noqa: E402
import peers  # noqa: E402
import pyspy_top  # noqa: E402
from run import CLIENT_CPU, SERVER_CPU, assert_isolated, reexec_in_netns  # noqa: E402


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench: py-spy is not installed in the venv")
    return found


def load(scenario: str, peer: peers.Peer, work: Path, seconds: float) -> measure.PerfResult:
    if scenario == "miss":
        names = [peers.a_name(i) for i in range(50_000, peers.A_NAMES)]
        path = measure.write_text_queries(work / "miss.txt", names, "A")
        return measure.run_dnsperf(port=peer.port, datafile=path, cpu=CLIENT_CPU,
                                   seconds=seconds, passes=1, server_pid=peer.pid)
    if scenario == "conns500":  # one query per read per connection (as bench/run.py)
        return measure.run_dnsperf(port=peer.port, datafile=work / "hot.q", cpu=CLIENT_CPU,
                                   seconds=seconds, clients=500, outstanding=500,
                                   timeout_s=10, server_pid=peer.pid)
    return measure.run_dnsperf(port=peer.port, datafile=work / f"{scenario}.q",
                               cpu=CLIENT_CPU, seconds=seconds, server_pid=peer.pid,
                               binary=scenario == "padded")


def prepare(work: Path) -> None:
    hot = [peers.a_name(i) for i in range(1000)]
    measure.write_text_queries(work / "hot.q", hot, "A")
    measure.write_binary_queries(work / "padded.q", [measure.padded_query(n) for n in hot])


def warm(peer: peers.Peer, work: Path) -> None:
    for name in ("hot", "padded"):
        r = measure.run_dnsperf(port=peer.port, datafile=work / f"{name}.q", cpu=CLIENT_CPU,
                                passes=1, clients=2, outstanding=16, binary=name == "padded")
        print(f"warm {name}: {r.completed} answers {r.rcodes}", flush=True)


def perf_profile(args: argparse.Namespace, peer: peers.Peer, work: Path, out: Path) -> None:
    """``perf record -g`` and ``perf stat`` (system calls, context switches) on the
    server while ``load`` runs; prints shares as µs of server CPU per query."""
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("bench: perf is not installed")
    data = out / f"perf-{args.scenario}.data"
    seconds = str(int(args.seconds) + 1)
    rec = subprocess.Popen([perf, "record", "-g", "-F", "999", "-p", str(peer.pid),
                            "-o", str(data), "--", "sleep", seconds],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stat = subprocess.Popen([perf, "stat", "-x,", "-e",
                             "raw_syscalls:sys_enter,context-switches,task-clock",
                             "-p", str(peer.pid), "--", "sleep", seconds],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    result = load(args.scenario, peer, work, args.seconds)
    _, rec_err = rec.communicate(timeout=args.seconds + 60)
    _, stat_err = stat.communicate(timeout=args.seconds + 60)
    n = max(result.completed, 1)
    print(f"\nperf ({args.scenario}): {result.completed} queries, {result.qps:.0f} qps, "
          f"{result.cpu_us_per_query:.1f} µs CPU/query, lost {result.lost}, {result.rcodes}")
    for line in stat_err.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            print(f"  {fields[2]:28} {float(fields[0]):14.0f}  per query (load window "
                  f"~{args.seconds:.0f}+1.5 s) {float(fields[0]) / n:8.2f}")
    per_q = result.cpu_us_per_query
    for sort in ("dso", "dso,sym"):
        report = subprocess.run([perf, "report", "-i", str(data), "--no-children",
                                 "--sort", sort, "--stdio", "-g", "none",
                                 "--percent-limit", "0.7"],
                                capture_output=True, text=True, timeout=300)
        print(f"\nself share by {sort} (µs/query at {per_q:.1f} µs CPU/query):")
        for line in report.stdout.splitlines():
            if line.strip().startswith("#") or "%" not in line:
                continue
            share = float(line.split("%")[0])
            print(f"  {share * per_q / 100:7.1f} µs  {line.strip()[:110]}")
    if rec.returncode != 0:
        print(f"perf record: {rec_err.decode()[-400:]}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--src", type=Path, default=None)
    parser.add_argument("--scenario", choices=["hot", "padded", "miss", "conns500"], default="hot")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--rate", type=int, default=1000,
                        help="py-spy samples per second (each stops the process: the miss "
                             "path runs at ~100 qps under 1000 native samples a second)")
    parser.add_argument("--no-native", action="store_true",
                        help="Python frames only (uvloop's native symbols are unreliable)")
    parser.add_argument("--nonblocking", action="store_true",
                        help="py-spy --nonblocking: never stop the server (less exact "
                             "stacks, no inflated syscalls; implies --no-native)")
    parser.add_argument("--perf", action="store_true",
                        help="perf record/stat instead of py-spy (C and kernel view)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    reexec_in_netns()
    assert_isolated()
    out = args.out or Path(tempfile.mkdtemp(prefix="dnstls-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dnstls-profile-work-"))
    group = peers.PeerGroup(work)
    src = args.src.resolve() if args.src else None
    print(f"profile: {measure.uptime()}", flush=True)
    try:
        pki = peers.make_pki(work / "pki")
        nsd = peers.start_nsd(group, cpu=CLIENT_CPU)
        prepare(work)
        # 1. py-spy on the ordinary server
        dnstls = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU, src=src)
        warm(dnstls, work)
        if args.perf:
            perf_profile(args, dnstls, work, out)
            return 0
        raw = out / f"pyspy-{args.scenario}.txt"
        native = (["--nonblocking"] if args.nonblocking
                  else [] if args.no_native else ["--native"])
        spy = subprocess.Popen([py_spy(), "record", "--pid", str(dnstls.pid), *native,
                                "-r", str(args.rate), "--format", "raw", "-o", str(raw),
                                "-d", str(int(args.seconds) + 2)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        result = load(args.scenario, dnstls, work, args.seconds)
        _, spy_err = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed ({spy.returncode}): {spy_err.decode()[-800:]}")
        print(f"\npy-spy ({args.scenario}): {result.completed} queries, {result.qps:.0f} qps, "
              f"{result.cpu_us_per_query:.1f} µs CPU/query, lost {result.lost}, "
              f"{result.rcodes}")
        print(pyspy_top.report(raw, top=args.top, per=result.completed,
                               seconds=result.cpu_s))
        dnstls.stop()
        if args.cprofile:
            stats = out / f"cprofile-{args.scenario}.prof"
            prof = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU, src=src,
                                      name="dnstls-cprofile",
                                      wrap=["-m", "cProfile", "-o", str(stats)])
            warm(prof, work)
            # Only the loaded part should count: reset is impossible from outside, so
            # the warm-up is included; it is small next to the load.
            result = load(args.scenario, prof, work, args.seconds)
            prof.stop()
            print(f"\ncProfile ({args.scenario}): {result.completed} queries, "
                  f"{result.qps:.0f} qps under the profiler")
            if stats.exists():
                ps = pstats.Stats(str(stats), stream=sys.stdout)
                ps.sort_stats("tottime").print_stats(args.top)
        print(f"profile: raw data in {out}")
    finally:
        for failure in group.stop_all():
            print(f"profile: {failure}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
