"""Stubby vs ``dnstls stub`` under the same dnsperf UDP load, on loopback only.

Usage::

    .venv/bin/python bench/stub_vs_stubby.py [--seconds 10] [--clients 2] [--outstanding 50]
                                             [--upstream unbound|serve]

Starts one DoT upstream -- Unbound serving DoT with example.test. stubbed to nsd
(default), or ``dnstls serve --local-zone`` -- then, in turn and alone on the machine:

1. Stubby (strict: name checked against the per-run CA, TLS only, no cache of its own);
2. ``dnstls stub --no-cache`` (the like-for-like comparison);
3. ``dnstls stub`` with its cache (what a user gets by default);

each with the same upstream, the same fixed query file (names of the test zone: A, AAAA,
TXT, MX, CNAME and NXDOMAIN) and the same bounded dnsperf run over UDP. Prints queries
per second, average/min/max latency, lost queries, and the ratio dnstls/Stubby.

Everything listens on 127.0.0.1 on free ports; nothing else is contacted (every stub has
the loopback upstream as its only upstream). The peers come from the interop harness
(``tests/interop/peers.py``) and are stopped at the end. This is not a test: no
pass/fail on timing, just numbers.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

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


_NUM = r"([\d.]+)"


def dnsperf(label: str, port: int, query_file: Path, *, seconds: float, clients: int,
            outstanding: int) -> Run:
    binary = peers.which("dnsperf")
    if binary is None:
        sys.exit("dnsperf is not installed (run scripts/setup)")
    argv = [binary, "-s", peers.LOOPBACK, "-p", str(port), "-d", str(query_file),
            "-l", str(seconds), "-c", str(clients), "-q", str(outstanding), "-t", "3"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          check=False, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr

    def grab(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, out)
        return match.group(1) if match else default

    latency = re.search(rf"Average Latency \(s\):\s+{_NUM} \(min {_NUM}, max {_NUM}\)", out)
    avg, lo, hi = (float(x) * 1000 for x in latency.groups()) if latency else (0.0, 0.0, 0.0)
    return Run(label, int(grab(r"Queries sent:\s+(\d+)")),
               int(grab(r"Queries completed:\s+(\d+)")), int(grab(r"Queries lost:\s+(\d+)")),
               float(grab(rf"Queries per second:\s+{_NUM}")), avg, lo, hi,
               grab(r"Response codes:\s+(.*)", "?").strip())


def start_dnstls_stub(group: peers.PeerGroup, pki: peers.TestPKI, upstream: peers.Peer,
                      extra: list[str]) -> peers.Peer:
    port = peers.free_port()
    argv = [*peers.dnstls_command(), "stub", "--listen", f"{peers.LOOPBACK}:{port}",
            "--upstream", f"tls://{upstream.host}:{upstream.port}#{pki.hostname}",
            "--ca-file", str(pki.ca_pem), *extra]
    peer = group.start(peers.Peer("dnstls-stub", argv, group.workdir("dnstls-stub"),
                                  port=port, env={"PYTHONUNBUFFERED": "1"}))
    return peer.wait_ready(lambda: peers.udp_dns_answers(peers.LOOPBACK, port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="dnsperf -l (default 10)")
    parser.add_argument("--clients", type=int, default=2, help="dnsperf -c (default 2)")
    parser.add_argument("--outstanding", type=int, default=50,
                        help="dnsperf -q (default 50)")
    parser.add_argument("--upstream", choices=("unbound", "serve"), default="unbound")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="stub-bench-") as tmp_text:
        tmp = Path(tmp_text)
        group = peers.PeerGroup(tmp / "peers")
        group.directory.mkdir()
        pki = peers.make_pki(tmp / "pki")
        query_file = tmp / "queries.txt"
        query_file.write_text("".join(f"{n} {t}\n" for n, t in QUERIES))
        runs: list[Run] = []
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

            stubby = peers.start_stubby(group, upstream_host=upstream.host,
                                        upstream_port=upstream.port, ca_file=pki.ca_pem)
            dnsperf("warm-up", stubby.port, query_file, **{**perf, "seconds": 1})
            runs.append(dnsperf("stubby", stubby.port, query_file, **perf))
            stubby.stop()
            for label, extra in (("dnstls stub --no-cache", ["--no-cache"]),
                                 ("dnstls stub (cache)", [])):
                stub = start_dnstls_stub(group, pki, upstream, extra)
                dnsperf("warm-up", stub.port, query_file, **{**perf, "seconds": 1})
                runs.append(dnsperf(label, stub.port, query_file, **perf))
                stub.stop()
        finally:
            failures = group.stop_all()
            for failure in failures:
                print(failure, file=sys.stderr)

    print(f"upstream: {what}; dnsperf UDP -l {args.seconds:g} -c {args.clients} "
          f"-q {args.outstanding}, {len(QUERIES)} fixed queries")
    print(f"{'':24} {'qps':>9} {'avg ms':>8} {'min ms':>8} {'max ms':>8} {'lost':>6}  rcodes")
    for run in runs:
        print(f"{run.label:24} {run.qps:9.0f} {run.avg_ms:8.2f} {run.min_ms:8.2f} "
              f"{run.max_ms:8.2f} {run.lost:6d}  {run.rcodes}")
    base = runs[0]
    for run in runs[1:]:
        if base.qps:
            print(f"ratio {run.label} / stubby: qps x{run.qps / base.qps:.2f}, "
                  f"avg latency x{run.avg_ms / base.avg_ms if base.avg_ms else 0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
