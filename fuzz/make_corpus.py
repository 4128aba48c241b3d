"""Write the seed corpus of fuzz_query_path.py into fuzz/corpus/query_path/.

Each file is one input: a byte choosing where the stream is split, then a stream of
length-prefixed messages. Deterministic (fixed IDs); rerun after changing the seeds.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message

KEEPALIVE = dns.edns.GenericOption(11, b"")


def q(name: str, rdtype: str = "A", rdclass: str = "IN", **kw: object) -> bytes:
    msg = dns.message.make_query(name, rdtype, rdclass, **kw)  # type: ignore[arg-type]
    msg.id = 0x1234
    return msg.to_wire()


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def header(qid: int = 0x4321, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


def add_records(wire: bytes, *records: bytes) -> bytes:
    ar = struct.unpack_from("!H", wire, 10)[0]
    return wire[:10] + struct.pack("!H", ar + len(records)) + wire[12:] + b"".join(records)


SEEDS: dict[str, bytes] = {
    "www_a": framed(q("www.example.test")),
    "www_aaaa_padded_keepalive": framed(q("www.example.test", "AAAA", use_edns=0, pad=128,
                                          options=[KEEPALIVE])),
    "alias_cname": framed(q("alias.example.test")),
    "cname_loop": framed(q("loop1.example.test")),
    "cname_out_of_zone": framed(q("out.example.test")),
    "wildcard_txt": framed(q("x.wild.example.test", "TXT")),
    "empty_non_terminal": framed(q("b.c.ent.example.test")),
    "delegation": framed(q("host.sub.example.test")),
    "big_txt_512": framed(q("big.example.test", "TXT")),
    "big_txt_1232_do": framed(q("big.example.test", "TXT", use_edns=0, payload=1232,
                                want_dnssec=True)),
    "any": framed(q("www.example.test", "ANY")),
    "chaos_class": framed(q("version.bind", "TXT", "CH")),
    "ddr_svcb": framed(q("_dns.resolver.arpa", "SVCB")),
    "nxdomain": framed(q("nope.example.test")),
    "outside_refused": framed(q("example.com")),
    "cookie": framed(q("www.example.test", use_edns=0,
                       options=[dns.edns.GenericOption(10, bytes(8))])),
    "two_pipelined": framed(q("www.example.test"), q("big.example.test", "TXT")),
    "qdcount0": framed(header(qd=0)),
    "qdcount2": framed(header(qd=2) + QUESTION + QUESTION),
    "compression_loop": framed(header() + b"\xc0\x0c\x00\x01\x00\x01"),
    "forward_pointer": framed(header() + b"\xc0\x20\x00\x01\x00\x01" + bytes(20) + b"\x00"),
    "label_64": framed(header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"),
    "name_over_255": framed(header() + (b"\x3f" + b"n" * 63) * 5 + b"\x00\x00\x01\x00\x01"),
    "two_opt": framed(header(ar=2) + QUESTION + OPT + OPT),
    "edns_version_1": framed(header(ar=1) + QUESTION + OPT[:5] + b"\x00\x01" + OPT[7:]),
    "qr_set": framed(header(flags=0x8100) + QUESTION),
    "notify": framed(header(flags=0x2000) + QUESTION),
    "axfr": framed(header() + QUESTION[:-4] + b"\x00\xfc\x00\x01"),
    "short_header": framed(header()[:7]),
    "zero_length_after_query": framed(q("www.example.test")) + b"\x00\x00",
    "declared_longer": struct.pack("!H", 512) + q("www.example.test"),
    "declared_shorter": struct.pack("!H", 12) + q("www.example.test"),
    # found by the property tests: malformed non-OPT additional records (fast path
    # used to accept them while the slow path answers FORMERR)
    "additional_forward_pointer": framed(add_records(
        q("a."), b"\xc0\xff" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4))),
    "additional_bad_uri_rdata": framed(add_records(
        q("a."), b"\x00" + struct.pack("!HHIH", 256, 1, 60, 0))),
    "additional_short_a_rdata": framed(add_records(
        q("a."), b"\x00" + struct.pack("!HHIH", 1, 1, 60, 3) + bytes(3))),
    # other opcodes: NOTIMP with our OPT (an UPDATE's zone echoed only if it is one SOA:
    # its answer to an A "zone" did not parse as an UPDATE)
    "update_a_zone": framed(header(flags=0x2800) + QUESTION),
    "update_soa_padded": framed(bytes([0x12, 0x34, 0x28, 0x00]) + q(
        "example.test", "SOA", use_edns=0, pad=128, options=[KEEPALIVE])[4:]),
    "notify_edns_v1": framed(header(flags=0x2000, ar=1) + QUESTION + OPT[:5] + b"\x00\x01"
                             + OPT[7:]),
    "dso_keepalive": framed(header(flags=0x3000, qd=0) + struct.pack("!HHII", 1, 8, 1, 1)),
}


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus" / "query_path"
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, stream) in enumerate(sorted(SEEDS.items())):
        (out / name).write_bytes(bytes([(i * 37) % 256]) + stream)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
