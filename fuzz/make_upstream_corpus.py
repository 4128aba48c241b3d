"""Write the seed corpus of fuzz_upstream_path.py into fuzz/corpus/upstream_path/.

Each file is one input: the client query's index in ``QUERIES``, the mode byte (see
``fuzz_upstream_path.py``: bits 0-1 the client's transport, 0x10 the exact-answer memo,
0x20 minimal responses off, 0x40 a UDP upstream, 0x80 serve-stale; the byte shifted
also picks where the stream is split and the clock step), then the upstream's
response. Deterministic (fixed IDs); rerun after changing the seeds. Files not written
here (minimized crashers) are left alone.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_upstream_path import QUERIES, UPSTREAM_ID

UDP = 0x40
TCP, TLS = 1, 2


def response(index: int, *, rcode: int = 0, answer: list[str] = (),  # type: ignore[assignment]
             authority: list[str] = (), additional: list[str] = (),  # type: ignore[assignment]
             options: list[dns.edns.Option] | None = None, flags: int = 0,
             qid: int = UPSTREAM_ID, edns: bool = True, do: bool = False,
             question: dns.message.Message | None = None) -> bytes:
    query = question or dns.message.from_wire(QUERIES[index])
    msg = dns.message.make_response(query)
    msg.id = qid
    msg.flags |= dns.flags.RA | flags
    msg.set_rcode(rcode)
    for section, texts in ((msg.answer, answer), (msg.authority, authority),
                           (msg.additional, additional)):
        for text in texts:
            name, ttl, rdclass, rdtype, *rdata = text.split(None, 4)
            section.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype,
                                               " ".join(rdata)))
    if edns:
        msg.use_edns(0, dns.flags.DO if do else 0, 1232, options=options or [])
    else:
        msg.use_edns(False)
    return msg.to_wire(max_size=65535)


SOA = "example.com. 3600 IN SOA ns1.example.com. host.example.com. 1 7200 900 1209600 300"
RRSIG = ("www.example.com. 300 IN RRSIG AAAA 13 3 300 20300101000000 20200101000000 "
         "12345 example.com. " + "A" * 86 + "==")


def seed(index: int, mode: int, wire: bytes) -> bytes:
    return bytes((index, mode)) + wire


def header(qid: int = UPSTREAM_ID, flags: int = 0x8180, qd: int = 1, an: int = 0,
           ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION0 = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"

SEEDS: dict[str, bytes] = {
    "noerror_a_udp": seed(0, UDP, response(0, answer=["www.example.com. 300 IN A 192.0.2.1"],
                                           edns=False)),
    "noerror_a_tls": seed(1, TLS | 0x14, response(1, answer=[
        "www.example.com. 300 IN A 192.0.2.1", "www.example.com. 300 IN A 192.0.2.2"])),
    "cname_chain": seed(6, TCP | 0x20, response(6, answer=[
        "alias.example.com. 600 IN CNAME www.example.com.",
        "www.example.com. 60 IN CNAME edge.example.net.",
        "edge.example.net. 20 IN A 198.51.100.7"])),
    "cname_chain_no_data": seed(6, UDP | 0x30, response(6, answer=[
        "alias.example.com. 600 IN CNAME gone.example.net."],
        authority=["example.net. 900 IN SOA ns.example.net. h.example.net. 1 2 3 4 60"])),
    "nxdomain_soa": seed(1, UDP | 0x50, response(1, rcode=dns.rcode.NXDOMAIN,
                                                 authority=[SOA])),
    "nxdomain_no_soa": seed(0, TCP, response(0, rcode=dns.rcode.NXDOMAIN, edns=False)),
    "nodata_soa_do": seed(2, TLS | 0x24, response(2, authority=[SOA], do=True)),
    "tc_udp": seed(1, UDP, response(1, flags=dns.flags.TC)),
    "tc_udp_cut_short": seed(1, UDP | 0x10, response(1, answer=[
        "www.example.com. 300 IN A 192.0.2.1"], flags=dns.flags.TC)[:40]),
    "tc_over_tcp": seed(1, TCP, response(1, flags=dns.flags.TC)),
    "big_txt_udp512": seed(8, UDP, response(8, answer=[
        f'big.example.com. 300 IN TXT "{chr(97 + i) * 200}"' for i in range(10)],
        edns=False)),
    "big_txt_padded_tls": seed(3, TLS, response(3, answer=[
        f'www.example.com. 300 IN TXT "{chr(97 + i) * 250}"' for i in range(12)])),
    "huge_txt_tcp": seed(3, TLS | 0x04, response(3, answer=[
        f'www.example.com. 300 IN TXT "{chr(97 + i % 26) * 250}"' for i in range(248)])),
    "edns_options": seed(1, TCP | 0x08, response(1, answer=[
        "www.example.com. 300 IN A 192.0.2.1"], options=[
        dns.edns.GenericOption(3, b"nsid-1"), dns.edns.GenericOption(11, b"\x00\x64"),
        dns.edns.GenericOption(10, bytes(24)), dns.edns.GenericOption(12, bytes(40)),
        dns.edns.EDEOption(dns.edns.EDECode.OTHER, "note")])),
    "keepalive_zero": seed(3, TLS, response(3, answer=['www.example.com. 300 IN TXT "x"'],
                                            options=[dns.edns.GenericOption(11, b"\0\0")])),
    "rrsig_do": seed(2, TLS | 0x80, response(2, answer=[
        "www.example.com. 300 IN AAAA 2001:db8::1", RRSIG], do=True, flags=dns.flags.AD)),
    "refused": seed(1, UDP, response(1, rcode=dns.rcode.REFUSED)),
    "servfail_ede": seed(1, TCP | 0x10, response(1, rcode=dns.rcode.SERVFAIL, options=[
        dns.edns.EDEOption(dns.edns.EDECode.DNSSEC_BOGUS, "bogus")])),
    "stale_ede": seed(1, TCP, response(1, answer=["www.example.com. 30 IN A 192.0.2.1"],
                                       options=[dns.edns.EDEOption(
                                           dns.edns.EDECode.STALE_ANSWER)])),
    "id_mismatch_udp": seed(0, UDP, response(0, qid=UPSTREAM_ID ^ 1, answer=[
        "www.example.com. 300 IN A 192.0.2.66"])),
    "id_mismatch_tcp": seed(1, TLS, response(1, qid=UPSTREAM_ID ^ 0x100, answer=[
        "www.example.com. 300 IN A 192.0.2.66"])),
    "question_mismatch": seed(0, TCP, response(0, answer=[
        "evil.example.com. 300 IN A 192.0.2.66"],
        question=dns.message.make_query("evil.example.com", "A"))),
    "qtype_mismatch": seed(0, UDP, response(0, question=dns.message.make_query(
        "www.example.com", "AAAA"))),
    "qr_clear": seed(1, UDP, response(1)[:2] + b"\x01\x00" + response(1)[4:]),
    "mixed_case_echo": seed(5, TLS | 0x20, response(5, answer=[
        "example.com. 3600 IN NS ns1.example.com.", "example.com. 3600 IN NS ns2.example.com."],
        additional=["ns1.example.com. 3600 IN A 192.0.2.53",
                    "ns2.example.com. 3600 IN AAAA 2001:db8::53"])),
    "mx_glue": seed(4, UDP | 0x10, response(4, answer=["example.com. 300 IN MX 10 mx.example.com."],
                                            additional=["mx.example.com. 300 IN A 192.0.2.25"],
                                            edns=False)),
    "soa_do_padded": seed(7, TLS, response(7, answer=[SOA], do=True)),
    "ptr": seed(9, UDP | 0x30, response(9, answer=[
        "1.2.0.192.in-addr.arpa. 86400 IN PTR www.example.com."])),
    "ttl_high_bit": seed(1, TCP, header(an=1, ar=1) + QUESTION0 + b"\xc0\x0c\x00\x01\x00\x01"
                         + b"\x80\x00\x01\x2c\x00\x04\xc0\x00\x02\x01" + OPT),
    "ttl_max": seed(0, UDP, header(an=1) + QUESTION0 + b"\xc0\x0c\x00\x01\x00\x01"
                    + b"\xff\xff\xff\xff\x00\x04\xc0\x00\x02\x01"),
    "pointer_loop": seed(0, UDP, header(an=1) + QUESTION0 + b"\xc0\x21\x00\x01\x00\x01"
                         + b"\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"),
    "forward_pointer": seed(1, TCP, header(an=1, ar=1) + QUESTION0
                            + b"\xc0\x30\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"
                            + OPT),
    "opt_in_answer": seed(1, TLS, header(an=1, ar=1) + QUESTION0 + OPT + OPT),
    "two_opt": seed(1, UDP, header(ar=2) + QUESTION0 + OPT + OPT),
    "opt_not_last": seed(1, TCP, header(ar=2) + QUESTION0 + OPT
                         + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"),
    "a_rdata_short": seed(0, TCP, header(an=1) + QUESTION0
                          + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x03\xc0\x00\x02"),
    "trailing_bytes": seed(0, UDP, response(0, edns=False) + b"\x00\x00"),
    "empty": seed(0, UDP, b""),
    "short_header": seed(1, TCP, header()[:7]),
    "header_only": seed(0, TLS, header(qd=0)),
    "extended_rcode": seed(1, TCP, header(ar=1) + QUESTION0
                           + b"\x00\x00\x29\x04\xd0\x01\x00\x00\x00\x00\x00"),
    "opcode_notify": seed(1, UDP, header(flags=0xA180) + QUESTION0 + OPT),
}


def main() -> None:
    out = Path(__file__).resolve().parent / "corpus" / "upstream_path"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (out / name).write_bytes(data)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
