"""CPU per query of ``dnstls serve`` forwarding with DNSSEC validation off and on, end to
end (bench/bench_dnssec.py measures the validator alone).

nsd serves the signed hierarchy of tests/fakes/signed_zones.py; ``dnstls serve
--upstream udp://NSD`` forwards to it with ``--no-cache`` (every query forwarded: the
miss path; with validation on, every answer validated, the keys from the validator's
own cache after the first queries) and with the cache (hits). dnsperf asks a mix of
secure (NSEC and NSEC3 zones, a wildcard), insecure and negative questions over UDP;
the server process's user+system CPU time is divided by the queries answered, and the
rcodes are checked (a bogus answer here would be a bug). A validating Unbound 1.17 in
front of the same nsd is run the same way (cache on: Unbound cannot switch its off) as
the reference for the hits. Last, misses on both sides: 100,000 distinct names under the
two wildcards (``qN.wild.secure.test``, NSEC; ``qN.wild.nsec3.test``, NSEC3), each a new
name to both caches, each answer a signature and a wildcard proof to check.

Usage: ``flock /tmp/dnstls-bench.lock .venv/bin/python bench/bench_dnssec_serve.py
[--seconds 8]``. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.signed_zones import write_hierarchy
from interop import peers

QUESTIONS = ["www.secure.test A", "www.secure.test AAAA", "www.nsec3.test A",
             "x.wild.secure.test A", "nothere.secure.test A", "nothere.nsec3.test A",
             "www.secure.test MX", "www.insecure.test A", "cname-out.secure.test A",
             "www.ed25519.test A"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(peer: peers.Peer, queries: Path, seconds: float, *, port: int = 0,
          ) -> tuple[float, int, str]:
    """dnsperf against ``peer`` (at ``port`` when given); its CPU seconds, the queries
    answered and dnsperf's RCODE line."""
    before = cpu_seconds(peer.pid)
    done = subprocess.run(["dnsperf", "-s", peer.host, "-p", str(port or peer.port), "-d",
                           str(queries), "-l", str(seconds), "-c", "4", "-q", "64"],
                          capture_output=True, text=True, check=False)
    used = cpu_seconds(peer.pid) - before
    completed = int(re.search(r"Queries completed:\s+(\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    codes = re.search(r"Response codes:\s+(.*)", done.stdout)
    return used, completed, codes.group(1) if codes else "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dnssec-bench") as tmp:
        work = Path(tmp)
        hierarchy = write_hierarchy(work / "zones")
        queries = work / "queries"
        queries.write_text("".join(f"{q}\n" for q in QUESTIONS))
        fresh = work / "fresh"
        fresh.write_text("".join(f"q{i}.wild.{zone}.test A\n" for i in range(50_000)
                                 for zone in ("secure", "nsec3")))
        pki = peers.make_pki(work / "pki")
        with peers.peer_group_at(work / "peers") as group:
            # no response rate limiting (nsd's default drops most of a bench's queries)
            nsd = peers.start_nsd_zones(group, hierarchy.zone_files,
                                        server_extra="    rrl-ratelimit: 0\n")
            unbound = peers.start_unbound_validator(group, anchor_file=hierarchy.root_ds,
                                                    upstream=nsd)
            variants = {
                "forward, no cache": ["--no-cache"],
                "validate, no cache": ["--no-cache", "--dnssec"],
                "forward, cache": [],
                "validate, cache": ["--dnssec"],
            }
            for name, extra in variants.items():
                plain = peers.free_port()
                argv = ["--plain", f"{peers.LOOPBACK}:{plain}", "--upstream",
                        f"udp://{nsd.host}:{nsd.port}", *extra]
                if "--dnssec" in extra:
                    argv += ["--trust-anchor", str(hierarchy.root_ds)]
                server = peers.start_dnstls_serve(group, pki, argv)
                report(f"dnstls {name}", *drive(server, queries, args.seconds, port=plain),
                       args.seconds)
                if name == "validate, cache":
                    report("dnstls validate, fresh names",
                           *drive(server, fresh, args.seconds, port=plain), args.seconds)
                server.stop()
            report("unbound validate, cache", *drive(unbound, queries, args.seconds),
                   args.seconds)
            report("unbound validate, fresh names", *drive(unbound, fresh, args.seconds),
                   args.seconds)


def report(name: str, used: float, completed: int, codes: str, seconds: float) -> None:
    print(f"{name:31} {completed / seconds:8.0f} qps {used / completed * 1e6:8.1f} µs "
          f"CPU/query  [{codes}]", flush=True)


if __name__ == "__main__":
    main()
