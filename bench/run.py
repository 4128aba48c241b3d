"""DoT resolver benchmark: dnstls serve vs Knot Resolver 5 and Unbound, side by side.

Usage::

    .venv/bin/python bench/run.py [--quick] [--scenarios hot,padded,...] [--reps N]
                                  [--servers kresd,unbound,dnstls] [--variant NAME=SRC_TREE]

What it does (docs/performance.md explains every scenario and how to read the table):

1. Re-executes itself in a private network namespace (``unshare -n``, loopback up), so
   no packet can leave the machine whatever the configs say.
2. Generates a CA and a server certificate, a zone ``bench.test.`` (100k A names, more
   when ``miss`` needs them, and 1k names with ~2 KB TXT sets) served by nsd over UDP
   on loopback, and starts kresd,
   Unbound and ``dnstls serve`` as DoT resolvers forwarding that zone to nsd.
   Servers run under ``taskset -c 0``; nsd, dnsperf and the Python TLS clients under
   ``taskset -c 1``.
3. Warms every cache with the query files, then runs each scenario, interleaving the
   servers (A, B, C, A, B, C, ...) so background load hits all of them alike. Every run
   is bounded in queries and time; every run is checked for lost queries and RCODEs.
4. Prints the tables (medians over the repetitions, with the ratios dnstls/kresd and
   dnstls/unbound) and writes ``results.json`` and ``results.md`` to ``--out``.

Server CPU is the sum over all threads of the server's process tree (schedstat), so it
includes uvloop's threads and worker processes. Absolute numbers depend on what else
the machine runs; the ratios of one run are what to compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import measure  # noqa: E402
import peers  # noqa: E402

NETNS_ENV = "DNSTLS_BENCH_NETNS"
#: nN names below this are the hot set; `miss` asks the names from here on.
MISS_FIRST = 1000
SCENARIOS = ["hot", "padded", "txt", "conns500", "miss", "fixed10k", "handshake", "idle"]
SERVER_CPU, CLIENT_CPU = "0", "1"
PEERS = ("kresd", "unbound")


# --------------------------------------------------------------------------- namespace


def reexec_in_netns() -> None:
    """Run this script again inside a new network namespace with only loopback up."""
    if os.environ.get(NETNS_ENV) == "1":
        return
    if shutil.which("unshare") is None:
        raise SystemExit("bench: unshare (util-linux) is needed for the private netns")
    env = {**os.environ, NETNS_ENV: "1"}
    argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            sys.executable, *sys.argv]
    os.execvpe("unshare", argv, env)


def assert_isolated() -> None:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip() for line in links.splitlines() if ":" in line]
    if names != ["lo"]:
        raise SystemExit(f"bench: expected only loopback in the namespace, found {names}")


# --------------------------------------------------------------------------- settings


class Settings:
    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.seconds = args.seconds or (3.0 if quick else 8.0)
        self.reps = args.reps or (1 if quick else 2)
        # Names per repetition of `miss`: long enough that a repetition lasts several
        # seconds (start and finish of a dnsperf run are noise), every one a miss.
        self.miss_names = args.miss_names or (2000 if quick else 64000)
        # ... asked in this many dnsperf runs per server, the servers taking turns
        self.miss_chunks = args.miss_chunks or (1 if quick else 4)
        self.handshakes = 300 if quick else 1000
        self.idle = args.idle or (2000 if quick else 10000)
        self.fixed_rate = 10000
        self.pin = not args.no_pin

    @property
    def server_cpu(self) -> str | None:
        return SERVER_CPU if self.pin else None

    @property
    def client_cpu(self) -> str | None:
        return CLIENT_CPU if self.pin else None


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, settings: Settings, work: Path, servers: peers.Servers,
                 pki: peers.TestPKI) -> None:
        self.s = settings
        self.work = work
        self.servers = servers
        self.pki = pki
        self.names = list(servers.resolvers)
        self.results: dict[str, Any] = {}
        self.files: dict[str, Path] = {}

    # -- files and warm-up -----------------------------------------------------------
    def make_files(self) -> None:
        w = self.work
        hot = [peers.a_name(i) for i in range(1000)]
        self.files["a"] = measure.write_text_queries(w / "a1000.txt", hot, "A")
        self.files["txt"] = measure.write_text_queries(
            w / "txt1000.txt", [peers.txt_name(i) for i in range(1000)], "TXT")
        self.files["padded"] = measure.write_binary_queries(
            w / "padded1000.bin", [measure.padded_query(n) for n in hot])

    def warm(self) -> None:
        """Ask every hot name until a pass is all NOERROR (at most three passes): a miss
        that failed upstream (e.g. a TC answer retried over TCP) is cached as SERVFAIL
        for a moment by some resolvers."""
        for name, peer in self.servers.resolvers.items():
            for key in ("a", "txt", "padded"):
                attempt = 0
                for attempt in range(1, 4):  # noqa: B007  (reported below)
                    r = measure.run_dnsperf(port=peer.port, datafile=self.files[key],
                                            cpu=self.s.client_cpu, passes=1, clients=2,
                                            outstanding=16, binary=key == "padded",
                                            timeout_s=10)
                    if r.ok:
                        break
                    time.sleep(2.0)
                status = "ok" if r.ok else f"NOT OK {r.rcodes} lost={r.lost} {r.error}"
                print(f"  warm {name:10} {key:7} {r.completed:5} answers, pass {attempt}: "
                      f"{status}", flush=True)

    # -- runs --------------------------------------------------------------------------
    def interleaved(self, scenario: str, run: Callable[[str, peers.Peer, int], Any]) -> None:
        per: dict[str, list[Any]] = {n: [] for n in self.names}
        for rep in range(self.s.reps):
            for name in self.names:
                peer = self.servers.resolvers[name]
                if peer.proc is not None and peer.proc.poll() is not None:
                    per[name].append({"error": "server exited", "ok": False})
                    continue
                result = run(name, peer, rep)
                per[name].append(result)
                print(f"  {scenario:9} {name:10} rep {rep}: {brief(result)}", flush=True)
        self.results[scenario] = {"load_after": measure.loadavg(), "runs": per}

    def perf(self, scenario: str, **kw: Any) -> None:
        def run(name: str, peer: peers.Peer, rep: int) -> dict[str, Any]:
            out = self.work / f"{scenario}-{name}-{rep}.out"
            r = measure.run_dnsperf(port=peer.port, cpu=self.s.client_cpu,
                                    server_pid=peer.pid, out=out, **kw)
            return r.as_dict()

        self.interleaved(scenario, run)

    def scenario_hot(self) -> None:
        self.perf("hot", datafile=self.files["a"], seconds=self.s.seconds)

    def scenario_padded(self) -> None:
        self.perf("padded", datafile=self.files["padded"], seconds=self.s.seconds,
                  binary=True)

    def scenario_txt(self) -> None:
        self.perf("txt", datafile=self.files["txt"], seconds=self.s.seconds)

    def scenario_conns500(self) -> None:
        self.perf("conns500", datafile=self.files["a"], seconds=self.s.seconds, clients=500,
                  outstanding=500, timeout_s=10)

    def scenario_fixed10k(self) -> None:
        self.perf("fixed10k", datafile=self.files["a"], seconds=self.s.seconds,
                  rate=self.s.fixed_rate, verbose=True)

    def scenario_miss(self) -> None:
        """Every query a name its server has never been asked: repetition ``rep`` asks
        names ``MISS_FIRST + rep * count`` onwards. Each server has its own cache, so
        the servers ask the same names; ``main`` makes the zone large enough.

        A repetition is ``miss_chunks`` dnsperf runs per server, the servers taking
        turns chunk by chunk (kresd, dnstls, new, kresd, dnstls, new, ...): the
        machine's other load, which changes from one second to the next, then falls on
        every server alike; the chunks' CPU and answers are added up per server."""
        count = self.s.miss_names
        chunks = max(1, min(self.s.miss_chunks, count))
        bounds = [count * i // chunks for i in range(chunks + 1)]
        per: dict[str, list[Any]] = {n: [] for n in self.names}
        for rep in range(self.s.reps):
            first = MISS_FIRST + rep * count
            if first + count > peers.A_NAMES:
                for name in self.names:
                    per[name].append({"error": "out of unique names", "ok": False})
                continue
            parts: dict[str, list[dict[str, Any]]] = {n: [] for n in self.names}
            for chunk in range(chunks):
                lo, hi = first + bounds[chunk], first + bounds[chunk + 1]
                path = measure.write_text_queries(
                    self.work / f"miss-{rep}-{chunk}.txt",
                    [peers.a_name(i) for i in range(lo, hi)], "A")
                for name in self.names:
                    peer = self.servers.resolvers[name]
                    if peer.proc is not None and peer.proc.poll() is not None:
                        parts[name].append({"error": "server exited", "ok": False})
                        continue
                    r = measure.run_dnsperf(port=peer.port, datafile=path,
                                            cpu=self.s.client_cpu, passes=1, seconds=60,
                                            server_pid=peer.pid, timeout_s=10)
                    parts[name].append(r.as_dict())
            for name in self.names:
                result = combined(parts[name])
                per[name].append(result)
                print(f"  {'miss':9} {name:10} rep {rep}: {brief(result)} "
                      f"(chunks µs/q: {', '.join(_chunk_cpu(p) for p in parts[name])})",
                      flush=True)
        self.results["miss"] = {"load_after": measure.loadavg(), "runs": per}

    def scenario_handshake(self) -> None:
        modes = [("1.3", False), ("1.3", True), ("1.2", False), ("1.2", True)]
        out: dict[str, dict[str, Any]] = {}
        for version, resume in modes:
            label = f"tls{version}{'-resumed' if resume else '-full'}"

            def run(name: str, peer: peers.Peer, rep: int, version: str = version,
                    resume: bool = resume) -> dict[str, Any]:
                argv = [sys.executable, str(BENCH / "tlsload.py"), "handshakes",
                        "--port", str(peer.port), "--ca", str(self.pki.ca_pem),
                        "--version", version, "-n", str(self.s.handshakes),
                        "--threads", "4", "--seconds", "30"]
                if resume:
                    argv.append("--resume")
                if self.s.client_cpu is not None:
                    argv = ["taskset", "-c", self.s.client_cpu, *argv]
                cpu0 = measure.cpu_seconds(peer.pid)
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                cpu = measure.cpu_seconds(peer.pid) - cpu0
                try:
                    data = json.loads(proc.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    return {"error": proc.stderr[-300:], "ok": False}
                n = data["connections"]
                st = data["stats"]
                data["cpu_s"] = cpu
                data["cpu_us_per_connection"] = cpu * 1e6 / n if n else float("nan")
                data["resumed_fraction"] = st.get("resumed", 0) / n if n else 0.0
                data["ok"] = n == self.s.handshakes and set(st) <= {
                    "ok", "rcode_0", "resumed", "full"}
                return data

            self.interleaved(label, run)
            out[label] = self.results.pop(label)
        self.results["handshake"] = out

    def scenario_idle(self) -> None:
        def run(name: str, peer: peers.Peer, rep: int) -> dict[str, Any]:
            argv = [sys.executable, str(BENCH / "tlsload.py"), "idle", "--port",
                    str(peer.port), "--ca", str(self.pki.ca_pem), "-n", str(self.s.idle)]
            if self.s.client_cpu is not None:
                argv = ["taskset", "-c", self.s.client_cpu, *argv]
            before = measure.rss_bytes(peer.pid)
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                line = proc.stdout.readline().split(" ", 3)
                if not line or line[0] != "ready":
                    proc.kill()
                    return {"error": (proc.stderr.read() if proc.stderr else "")[-300:],
                            "ok": False}
                opened, seconds = int(line[1]), float(line[2])
                time.sleep(1.0)
                after = measure.rss_bytes(peer.pid)
                proc.stdin.write("check\n")
                proc.stdin.flush()
                final = json.loads(proc.stdout.readline())
                proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            return {"opened": opened, "open_seconds": seconds, "rss_before_mb": before / 2**20,
                    "rss_after_mb": after / 2**20,
                    "kb_per_connection": (after - before) / 1024 / opened if opened else 0,
                    "answered_after": final["answered_after"], "errors": final["errors"],
                    "ok": opened == self.s.idle and final["answered_after"] == opened}

        reps, self.s.reps = self.s.reps, 1
        try:
            self.interleaved("idle", run)
        finally:
            self.s.reps = reps


def combined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from dnsperf runs of one server (sums; sizes weighted by answers)."""
    errors = [str(p["error"]) for p in parts if p.get("error")]
    done = [p for p in parts if "completed" in p]
    completed = sum(p["completed"] for p in done)
    runtime = sum(p["runtime"] for p in done)
    cpu_s = sum(p["cpu_s"] for p in done)
    rcodes: dict[str, int] = {}
    for p in done:
        for rcode, n in p["rcodes"].items():
            rcodes[rcode] = rcodes.get(rcode, 0) + n
    out: dict[str, Any] = dict(done[0]) if done else {}
    out.update(
        sent=sum(p["sent"] for p in done), completed=completed,
        lost=sum(p["lost"] for p in done), rcodes=rcodes, runtime=runtime,
        qps=completed / runtime if runtime else 0.0, cpu_s=cpu_s,
        cpu_us_per_query=cpu_s * 1e6 / completed if completed else float("nan"),
        response_size=(sum(p["response_size"] * p["completed"] for p in done) / completed
                       if completed else 0.0),
        reconnections=sum(p["reconnections"] for p in done), error="; ".join(errors),
        chunks=len(parts), chunk_cpu_us_per_query=[p.get("cpu_us_per_query") for p in parts])
    out["ok"] = (not errors and out["lost"] == 0 and completed > 0
                 and set(rcodes) == {"NOERROR"})
    return out


def _chunk_cpu(part: dict[str, Any]) -> str:
    value = part.get("cpu_us_per_query")
    return "error" if part.get("error") or value is None else f"{value:.1f}"


def brief(result: dict[str, Any]) -> str:
    if result.get("error"):
        return f"ERROR {result['error']}"
    if "qps" in result:
        extra = f" p99 {result['p99_ms']:.2f} ms" if result.get("p99_ms") is not None else ""
        return (f"{result['qps']:9.0f} qps {result['cpu_us_per_query']:7.1f} µs/q "
                f"lost {result['lost']} {result['rcodes']} resp {result['response_size']:.0f}B"
                f"{extra} {'ok' if result['ok'] else 'NOT OK'}")
    if "kb_per_connection" in result:
        return (f"{result['opened']} open, {result['kb_per_connection']:.1f} KB/conn, "
                f"{result['answered_after']} answered after")
    if "cpu_us_per_connection" in result:
        return (f"{result['per_second']:7.0f} conn/s {result['cpu_us_per_connection']:7.0f} "
                f"µs/conn resumed {result['resumed_fraction']:.0%} {result['stats']}")
    return str(result)


# --------------------------------------------------------------------------- report


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None and not r.get("error")]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def report(results: dict[str, Any], names: list[str], meta: dict[str, Any]) -> str:
    lines = [f"# dnstls bench {meta['date']}", "",
             f"load before: `{meta['uptime_before']}`  ",
             f"load after: `{meta.get('uptime_after', '')}`  ",
             f"machine: {meta.get('machine', '?')}  ",
             f"versions: {meta['versions']}  ", f"settings: {meta['settings']}", ""]
    perf = [s for s in ("hot", "padded", "txt", "conns500", "miss", "fixed10k")
            if s in results]
    if perf:
        lines += ["| scenario | server | qps | µs CPU/query | p50 ms | p99 ms | avg ms | lost "
                  "| rcodes | resp B | ok |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for scen in perf:
            for name in names:
                runs = results[scen]["runs"].get(name, [])
                rc: dict[str, int] = {}
                for r in runs:
                    for k, v in (r.get("rcodes") or {}).items():
                        rc[k] = rc.get(k, 0) + v
                lost = sum(r.get("lost", 0) for r in runs)
                ok = all(r.get("ok") for r in runs) and bool(runs)
                lines.append(
                    f"| {scen} | {name} | {_fmt(_median(runs, 'qps'))} | "
                    f"{_fmt(_median(runs, 'cpu_us_per_query'), '.1f')} | "
                    f"{_fmt(_median(runs, 'p50_ms'), '.2f')} | "
                    f"{_fmt(_median(runs, 'p99_ms'), '.2f')} | "
                    f"{_fmt(_median(runs, 'latency_avg_ms'), '.2f')} | {lost} | "
                    f"{' '.join(f'{k}:{v}' for k, v in rc.items())} | "
                    f"{_fmt(_median(runs, 'response_size'))} | {'yes' if ok else 'NO'} |")
        lines += ["", "Ratios (dnstls / peer; medians): qps ratio > 1 is better for dnstls, "
                  "CPU and p99 ratios < 1 are better.", "",
                  "| scenario | peer | qps ratio | CPU/query ratio | p99 ratio |",
                  "|---|---|---:|---:|---:|"]
        for scen in perf:
            runs = results[scen]["runs"]
            for subject in [n for n in names if n not in PEERS]:
                for peer in PEERS:
                    if peer not in runs or subject not in runs:
                        continue
                    a, b = runs[subject], runs[peer]
                    label = peer if subject == "dnstls" else f"{peer} ({subject})"
                    lines.append(
                        f"| {scen} | {label} | {_ratio(_median(a, 'qps'), _median(b, 'qps'))} | "
                        f"{_ratio(_median(a, 'cpu_us_per_query'), _median(b, 'cpu_us_per_query'))}"
                        f" | {_ratio(_median(a, 'p99_ms'), _median(b, 'p99_ms'))} |")
    if "handshake" in results:
        hs = results["handshake"]
        lines += ["", "| TLS connections (handshake + 1 query) | server | conn/s "
                  "| server µs CPU/conn | resumed | ok |", "|---|---|---:|---:|---:|---|"]
        for mode, data in hs.items():
            for name in names:
                runs = data["runs"].get(name, [])
                lines.append(f"| {mode} | {name} | {_fmt(_median(runs, 'per_second'))} | "
                             f"{_fmt(_median(runs, 'cpu_us_per_connection'))} | "
                             f"{_fmt(_median(runs, 'resumed_fraction'), '.0%')} | "
                             f"{'yes' if runs and all(r.get('ok') for r in runs) else 'NO'} |")
        lines += ["", "| TLS ratio | server | resumed/full CPU | dnstls/kresd CPU "
                  "| dnstls/unbound CPU |", "|---|---|---:|---:|---:|"]
        for version in ("1.3", "1.2"):
            full, res = hs.get(f"tls{version}-full"), hs.get(f"tls{version}-resumed")
            if not full or not res:
                continue
            for name in names:
                f = _median(full["runs"].get(name, []), "cpu_us_per_connection")
                r = _median(res["runs"].get(name, []), "cpu_us_per_connection")
                row = f"| TLS {version} | {name} | {_ratio(r, f)} |"
                if name not in PEERS:
                    for peer in PEERS:
                        pf = _median(full["runs"].get(peer, []), "cpu_us_per_connection")
                        row += f" full {_ratio(f, pf)} |"
                else:
                    row += " | |"
                lines.append(row)
    if "idle" in results:
        lines += ["", "| idle connections | server | opened | RSS before MB | RSS after MB "
                  "| KB/connection | answered after | ok |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        runs = results["idle"]["runs"]
        for name in names:
            for r in runs.get(name, []):
                if r.get("error"):
                    lines.append(f"| idle | {name} | ERROR {r['error'][:60]} | | | | | NO |")
                    continue
                lines.append(f"| idle | {name} | {r['opened']} | {r['rss_before_mb']:.1f} | "
                             f"{r['rss_after_mb']:.1f} | {r['kb_per_connection']:.1f} | "
                             f"{r['answered_after']} | {'yes' if r['ok'] else 'NO'} |")
        per = {n: _median(runs.get(n, []), "kb_per_connection") for n in names}
        for subject in [n for n in names if n not in PEERS]:
            for peer in PEERS:
                if peer in per:
                    lines.append(f"\nRSS per idle connection {subject}/{peer}: "
                                 f"{_ratio(per[subject], per[peer])}")
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    def first(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"

    import ssl

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "-"
    return {"python": platform.python_version(), "uvloop": uv, "openssl": ssl.OPENSSL_VERSION,
            "kresd": first(["kresd", "--version"]), "unbound": first(["unbound", "-V"]),
            "nsd": first(["nsd", "-v"]), "dnsperf": first(["dnsperf", "-h"]) and
            next((ln for ln in subprocess.run(["dnsperf", "-H"], capture_output=True,
                                              text=True).stdout.splitlines()
                  if ln.startswith("Version")), "?"),
            "kernel": platform.release(), "cpus": str(os.cpu_count())}


def parse_variant_env(items: list[str], variants: Mapping[str, object],
                      parser: argparse.ArgumentParser) -> dict[str, dict[str, str]]:
    """``--variant-env NAME:VAR=VALUE`` options: each variant's extra environment."""
    env: dict[str, dict[str, str]] = {}
    for item in items:
        name, _, assignment = item.partition(":")
        var, eq, value = assignment.partition("=")
        if name not in variants or not var or not eq:
            parser.error(f"--variant-env {item!r}: want NAME:VAR=VALUE for a --variant NAME")
        env.setdefault(name, {})[var] = value
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 2 minutes)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--servers", default="kresd,unbound,dnstls",
                        help="comma-separated: kresd, unbound, dnstls, dnstls-wN (N workers), "
                             "or a --variant name")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=TREE",
                        help="also run dnstls from another source tree (A/B of a change)")
    parser.add_argument("--variant-env", action="append", default=[], metavar="NAME:VAR=VALUE",
                        help="set VAR in variant NAME's environment (e.g. "
                             "jem:LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2, "
                             "pure:DNSTLS_PURE_PYTHON=1 with a .so-free tree)")
    parser.add_argument("--reps", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--idle", type=int, default=0, help="idle connections (default 10000)")
    parser.add_argument("--miss-names", type=int, default=0,
                        help="names per repetition of miss (default 64000, --quick 2000)")
    parser.add_argument("--miss-chunks", type=int, default=0,
                        help="dnsperf runs per server and repetition of miss, the servers "
                             "taking turns (default 4, --quick 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default: a new /tmp/dnstls-bench-*)")
    parser.add_argument("--keep", action="store_true", help="keep server logs and configs")
    args = parser.parse_args()
    reexec_in_netns()
    assert_isolated()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 2 * 10000 + 1000 and not args.quick:
        print(f"warning: RLIMIT_NOFILE hard limit {hard} may be too low for 10k connections")
    settings = Settings(args)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    variants = {}
    for item in args.variant:
        name, _, tree = item.partition("=")
        variants[name] = Path(tree).resolve()
    variant_env = parse_variant_env(args.variant_env, variants, parser)
    names = [n for n in args.servers.split(",") if n]
    if "miss" in scenarios:  # a zone with a fresh name for every query of every repetition
        peers.A_NAMES = max(peers.A_NAMES, MISS_FIRST + settings.reps * settings.miss_names)
    out = args.out or Path(tempfile.mkdtemp(prefix="dnstls-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dnstls-bench-work-"))
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "uptime_before": measure.uptime(), "machine": measure.machine(),
        "versions": versions(),
        "settings": {"seconds": settings.seconds, "reps": settings.reps,
                     "miss_names": settings.miss_names,
                     "miss_chunks": settings.miss_chunks, "handshakes": settings.handshakes,
                     "idle": settings.idle, "pinned": settings.pin, "servers": names,
                     "variants": {k: str(v) for k, v in variants.items()},
                     "variant_env": variant_env,
                     "scenarios": scenarios}}
    print(f"bench: {meta['uptime_before']}", flush=True)
    print(f"bench: {meta['machine']}", flush=True)
    group = peers.PeerGroup(work)
    started = time.monotonic()
    try:
        pki = peers.make_pki(work / "pki")
        servers = peers.start_all(group, pki, server_cpu=settings.server_cpu,
                                  aux_cpu=settings.client_cpu, names=names, variants=variants,
                                  variant_env=variant_env)
        print(f"bench: servers up in {time.monotonic() - started:.1f}s: "
              + ", ".join(f"{n}:{p.port}" for n, p in servers.resolvers.items()), flush=True)
        bench = Bench(settings, work, servers, pki)
        bench.make_files()
        bench.warm()
        for scenario in scenarios:
            t0 = time.monotonic()
            getattr(bench, f"scenario_{scenario}")()
            print(f"bench: {scenario} done in {time.monotonic() - t0:.0f}s", flush=True)
        meta["uptime_after"] = measure.uptime()
        meta["elapsed_s"] = round(time.monotonic() - started)
        text = report(bench.results, names, meta)
        (out / "results.json").write_text(json.dumps({"meta": meta, "results": bench.results},
                                                     indent=1, default=str))
        (out / "results.md").write_text(text)
        print("\n" + text)
        print(f"bench: results in {out} ({meta['elapsed_s']}s)")
    finally:
        failures = group.stop_all()
        for failure in failures:
            print(f"bench: {failure}", file=sys.stderr)
        if args.keep:
            print(f"bench: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
