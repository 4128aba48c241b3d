"""``dnstls stub --dnssec`` next to Stubby validating (``dnssec: GETDNS_EXTENSION_TRUE``)
with the same trust anchor, both upstreamed over DoT to the same non-validating
recursive front: an Unbound (module-config "iterator") forwarding every name to the nsd
that serves the signed hierarchy of tests/fakes/signed_zones.py (docs/stub.md,
"DNSSEC").

Every question of ``EXPECTED`` and ``ODD_QUESTIONS`` is asked of both, over TCP, three
ways: DO set, CD with DO (the client validates), and EDNS without DO; twice (the second
answer from our cache; Stubby keeps none). Compared: RCODE, the AD bit and the Extended
DNS Error codes. Stubby 0.3.0 (getdns) and dnstls agree on every answer but these,
measured and listed in :data:`DIFFERENCES` (the test fails if the set changes either
way); in each, ours is what Unbound 1.17.1 answers (tests/interop/
test_dnssec_serve_unbound.py):

* a bogus answer is SERVFAIL from both, with no EDE from Stubby; ours carries the
  reason's EDE (6, 7, 9, 10);
* the DS question of an unsigned delegation (``insecure.test. DS``, and
  ``unsigned.nsec3.test. DS`` under NSEC3), whose NODATA answer is proven by the
  signed parent: AD from us (secure), no AD from Stubby;
* Stubby answers SERVFAIL (with CD: without AD) to ANY (RFC 8482), to an RRSIG
  question, to the wildcard owner name itself (``*.wild.secure.test. A``) and below a
  DS naming an algorithm it does not know (253); we validate the ANY and wildcard
  answers (secure), leave RRSIG answers unchecked and treat the unknown algorithm as
  insecure (RFC 6840 §5.2): NOERROR;
* Stubby accepts a DNSKEY without the zone-key bit (``nozonekey.test.``, RFC 4034
  §2.1.1) and sets AD; we answer SERVFAIL, EDE 11 *No Zone Key Bit Set*.
"""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from fakes.signed_zones import EXPECTED, ODD_QUESTIONS, write_hierarchy

from . import peers
from .clients import raw_exchange
from .peers import PeerGroup, TestPKI
from .test_stub_interop import start_stub

pytestmark = pytest.mark.interop

MODES = {"do": (True, False), "cd": (True, True), "edns": (False, False)}
#: (qname, qtype, mode) -> (what Stubby answers, what dnstls answers): (RCODE, AD, EDEs)
Shape = tuple[str, bool, list[int]]
DIFFERENCES: dict[tuple[str, str, str], tuple[Shape, Shape]] = {}
for _name, _ede in [("www.bogus.test.", 6), ("www.expired.test.", 7),
                    ("www.nokey.test.", 9), ("www.nosig.test.", 10)]:
    for _mode in ("do", "edns"):
        DIFFERENCES[(_name, "A", _mode)] = (("SERVFAIL", False, []),
                                            ("SERVFAIL", False, [_ede]))
for _name in ("insecure.test.", "unsigned.nsec3.test."):
    for _mode in ("do", "cd"):
        DIFFERENCES[(_name, "DS", _mode)] = (("NOERROR", False, []),
                                             ("NOERROR", True, []))
# Stubby SERVFAILs what it cannot validate as it expects: ANY answers, RRSIG answers,
# the wildcard owner name itself asked for, a DS naming an algorithm it does not know
# (we: insecure, RFC 6840 §5.2); with CD it answers them without AD
_SECURE, _INSECURE = ("NOERROR", True, []), ("NOERROR", False, [])
for _question, _ours in [(("www.secure.test.", "ANY"), _SECURE),
                         (("www.nsec3.test.", "ANY"), _SECURE),
                         (("*.wild.secure.test.", "A"), _SECURE),
                         (("*.wild.nsec3.test.", "A"), _SECURE),
                         (("www.secure.test.", "RRSIG"), _INSECURE),
                         (("www.unknownalgo.test.", "A"), _INSECURE)]:
    DIFFERENCES[(*_question, "do")] = (("SERVFAIL", False, []), _ours)
    DIFFERENCES[(*_question, "edns")] = (("SERVFAIL", False, []), ("NOERROR", False, []))
    if _ours[1]:
        DIFFERENCES[(*_question, "cd")] = (_INSECURE, _SECURE)
# Stubby accepts a DNSKEY without the zone-key bit (RFC 4034 §2.1.1: not to be used)
DIFFERENCES[("www.nozonekey.test.", "A", "do")] = (_SECURE, ("SERVFAIL", False, [11]))
DIFFERENCES[("www.nozonekey.test.", "A", "cd")] = (_SECURE, _INSECURE)
DIFFERENCES[("www.nozonekey.test.", "A", "edns")] = (_INSECURE, ("SERVFAIL", False, [11]))

def query(qname: str, qtype: str, mode: str) -> bytes:
    do, cd = MODES[mode]
    message = dns.message.make_query(qname, qtype, use_edns=0, want_dnssec=do)
    if cd:
        message.flags |= dns.flags.CD
    return message.to_wire()


def shape(m: dns.message.Message) -> tuple[str, bool, list[int]]:
    return (dns.rcode.to_text(m.rcode()), bool(m.flags & dns.flags.AD),
            [int(o.code) for o in m.options if isinstance(o, dns.edns.EDEOption)])


def expected(security: str, ede: int | None, mode: str, rcode: str,
             ) -> tuple[str, bool, list[int]]:
    """What serve answers (tests/interop/test_dnssec_serve_unbound.py): ``rcode`` is the
    answer's own (NOERROR or NXDOMAIN) unless bogus and checked."""
    do, cd = MODES[mode]
    if security == "bogus":
        return ("NOERROR", False, []) if cd else ("SERVFAIL", False, [ede or 6])
    return rcode, security == "secure" and do, []


def test_dnssec_answers_as_stubby(peer_group: PeerGroup, tmp_path: peers.Path,
                                  pki: TestPKI) -> None:
    hierarchy = write_hierarchy(tmp_path / "zones")
    try:
        nsd = peers.start_nsd_zones(peer_group, hierarchy.zone_files)
        front = peers.start_unbound_dot_forwarder(peer_group, pki, upstream=nsd)
        stubby = peers.start_stubby(peer_group, upstream_host=front.host,
                                    upstream_port=front.port, ca_file=pki.ca_pem,
                                    dnssec_trust_anchors=hierarchy.root_key)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    ours = start_stub(peer_group, [front], ["--ca-file", str(pki.ca_pem), "--dnssec",
                                            "--trust-anchor", str(hierarchy.root_key)])
    differ: dict[tuple[str, str, str], tuple[Shape, Shape]] = {}
    wrong = {}
    for _round in range(2):
        for (qname, qtype), (security, ede) in sorted({**EXPECTED, **ODD_QUESTIONS}.items()):
            for mode in MODES:
                wire = query(qname, qtype, mode)
                theirs = shape(raw_exchange(wire, stubby.port, "tcp"))
                mine = shape(raw_exchange(wire, ours.port, "tcp"))
                if theirs != mine:
                    differ[(qname, qtype, mode)] = (theirs, mine)
                want = expected(security, ede, mode, mine[0] if mine[0] in (
                    "NOERROR", "NXDOMAIN") else "NOERROR")
                if mine != want:
                    wrong[f"{qname} {qtype} {mode} (round {_round + 1})"] = (want, mine)
    assert not wrong, "\n".join(f"{k}: expected {w}, dnstls {m}"
                                 for k, (w, m) in wrong.items())
    unexpected = {k: v for k, v in differ.items() if DIFFERENCES.get(k) != v}
    gone = sorted(set(DIFFERENCES) - set(differ))
    assert not unexpected and not gone, (
        "\n".join(f"{' '.join(k)}: stubby {v[0]}, dnstls {v[1]}"
                  for k, v in unexpected.items()) + f"\nno longer different: {gone}")
