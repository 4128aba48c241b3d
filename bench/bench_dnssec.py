"""Microseconds per DNSSEC validation (resolver/dnssec.py), cold and warm keys.

Usage: ``.venv/bin/python bench/bench_dnssec.py [--rounds 200]``

Signs the test hierarchy of tests/fakes/signed_zones.py, serves it with one nsd on
loopback (tests/interop/peers.py ``start_nsd_zones``) and validates responses fetched
from it beforehand, with a Fetch that asks nsd over UDP (dns.asyncquery):

* ``cold``: a new Validator each time -- the whole chain of trust from the root anchor
  (DNSKEY ., DS+DNSKEY test., DS+DNSKEY <zone>: five UDP round trips to nsd and their
  signature checks) plus the answer;
* ``warm``: one Validator, keys cached -- only the answer's own signatures (and proofs),
  each checked again (its cache of verified signatures emptied before each round);
* ``repeat``: the same, the signatures remembered as well (the same answer or proofs
  again: only the signed data is built and looked up).

This is not a test; it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dnstls.resolver.dnssec import TrustAnchors, Validator
from fakes.signed_zones import write_hierarchy
from interop import peers

QUESTIONS = [("www.secure.test.", "A"), ("nothere.secure.test.", "A"),
             ("x.wild.nsec3.test.", "A"), ("nothere.nsec3.test.", "A"),
             ("www.ed25519.test.", "A"), ("www.insecure.test.", "A")]


async def run(server: peers.Peer, anchors: TrustAnchors, rounds: int) -> None:
    async def fetch(name: dns.name.Name, rdtype: int) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags |= dns.flags.CD
        return await dns.asyncquery.udp(query, server.host, port=server.port, timeout=3)

    print(f"{'question':30} {'verdict':9} {'cold µs':>9} {'warm µs':>9} {'repeat µs':>9}")
    for qname, qtype in QUESTIONS:
        response = await fetch(dns.name.from_text(qname), dns.rdatatype.from_text(qtype))
        start = time.perf_counter()
        for _ in range(rounds):
            verdict = await Validator(anchors, fetch).validate(response)
        cold = (time.perf_counter() - start) / rounds * 1e6
        validator = Validator(anchors, fetch)
        await validator.validate(response)
        start = time.perf_counter()
        for _ in range(rounds * 10):
            validator._signatures.clear()  # every signature checked again
            await validator.validate(response)
        warm = (time.perf_counter() - start) / (rounds * 10) * 1e6
        start = time.perf_counter()
        for _ in range(rounds * 10):
            await validator.validate(response)
        repeat = (time.perf_counter() - start) / (rounds * 10) * 1e6
        print(f"{qname + ' ' + qtype:30} {verdict.security.value:9} {cold:9.0f} {warm:9.0f} "
              f"{repeat:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hierarchy = write_hierarchy(Path(tmp) / "zones")
        with peers.peer_group_at(Path(tmp) / "peers") as group:
            nsd = peers.start_nsd_zones(group, hierarchy.zone_files)
            asyncio.run(run(nsd, TrustAnchors.from_file(hierarchy.root_ds), args.rounds))


if __name__ == "__main__":
    main()
