"""``dnstls serve --dnssec`` next to a validating Unbound 1.17, both forwarding to the
same nsd serving the signed hierarchy of tests/fakes/signed_zones.py with the same
trust anchor (docs/serve.md, "DNSSEC validation").

What a client sees must be the same from both, for every question of ``EXPECTED`` and
four ways of asking: DO set, no EDNS, AD without DO, and CD with DO (the client
validates): RCODE, the AD and CD bits, the Extended DNS Error code of a SERVFAIL, and
the records of the answer section (TTLs aside); with DO also the record types of the
authority section (the denial proofs; which NSEC3 records prove it is nsd's choice, the
same for both). Every question is asked twice (the second answer from each cache).

Two differences are Unbound's cache, not validation, and are left out: a SERVFAIL for
bogus data carries the specific EDE (7 *Signature Expired*, 10 *RRSIGs Missing*, ...)
only the first time Unbound answers it, later answers from its cache say 6 *DNSSEC
Bogus* (ours say the specific code every time: compared on the first answer only, and
checked against ``EXPECTED`` every time); ANY is answered from whatever RRsets
Unbound's cache holds for the name, where we relay nsd's (RFC 8482) answer.
"""

from __future__ import annotations

import re

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from fakes.signed_zones import EXPECTED, write_hierarchy

from . import peers
from .clients import kdig, raw_exchange, record_texts
from .peers import LOOPBACK, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

#: name -> (use EDNS, DO, AD, CD)
MODES = {"do": (True, True, False, False), "plain": (False, False, False, False),
         "ad": (True, False, True, False), "cd": (True, True, False, True)}


def query(qname: str, qtype: str, mode: str) -> bytes:
    edns, do, ad, cd = MODES[mode]
    message = dns.message.make_query(qname, qtype, use_edns=0 if edns else None,
                                     want_dnssec=do)
    if ad:
        message.flags |= dns.flags.AD
    if cd:
        message.flags |= dns.flags.CD
    return message.to_wire()


def shape(m: dns.message.Message, mode: str) -> dict[str, object]:
    edes = [int(o.code) for o in m.options if isinstance(o, dns.edns.EDEOption)]
    out: dict[str, object] = {
        "rcode": dns.rcode.to_text(m.rcode()),
        "ad": bool(m.flags & dns.flags.AD), "cd": bool(m.flags & dns.flags.CD),
        "do": bool(m.ednsflags & dns.flags.DO), "edns": m.edns >= 0,
        "answer": record_texts(m.answer),
        # an insecure answer carries no EDE from Unbound; ours may say why (2, 27)
        "ede": edes[:1] if m.rcode() == dns.rcode.SERVFAIL else None,
    }
    if MODES[mode][1]:
        out["authority types"] = sorted({dns.rdatatype.to_text(r.rdtype) for r in m.authority})
    return out


def exchange(wire: bytes, port: int) -> dns.message.Message:
    """Over TCP: signed answers may not fit a UDP datagram, and truncation is not what
    is compared here."""
    return raw_exchange(wire, port, "tcp")


def test_dnssec_answers_as_unbound(peer_group: PeerGroup, tmp_path: peers.Path,
                                   dnstls_serve: object, pki: TestPKI) -> None:
    hierarchy = write_hierarchy(tmp_path / "zones")
    try:
        nsd = peers.start_nsd_zones(peer_group, hierarchy.zone_files)
        unbound = peers.start_unbound_validator(peer_group, anchor_file=hierarchy.root_ds,
                                                upstream=nsd)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    plain = peers.free_port()
    metrics = peers.free_port()
    dot = dnstls_serve("--plain", f"{LOOPBACK}:{plain}",  # type: ignore[operator]
                       "--metrics", f"{LOOPBACK}:{metrics}",
                 "--upstream", f"udp://{nsd.host}:{nsd.port}",
                 "--dnssec", "--trust-anchor", str(hierarchy.root_ds))
    differ = {}
    outcomes = set()
    for _round in range(2):
        for (qname, qtype), (security, ede) in sorted(EXPECTED.items()):
            if qtype == "ANY":
                continue
            for mode in MODES:
                wire = query(qname, qtype, mode)
                theirs = shape(exchange(wire, unbound.port), mode)
                ours = shape(exchange(wire, plain), mode)
                if ours["rcode"] == "SERVFAIL":
                    if ours["ede"] != ([ede] if MODES[mode][0] else []):  # EDE: in OPT
                        differ[f"{qname} {qtype} {mode} (round {_round + 1}): EDE"] = {
                            "unbound": {"expected": ede}, "dnstls": ours}
                    if (_round, mode) != (0, "do"):  # Unbound's cached bogus: EDE 6
                        theirs["ede"] = ours["ede"]
                if theirs != ours:
                    differ[f"{qname} {qtype} {mode} (round {_round + 1})"] = {
                        "unbound": theirs, "dnstls": ours}
                outcomes.add((security, mode, ours["rcode"], ours["ad"]))
    assert not differ, "\n".join(f"{k}:\n  unbound {v['unbound']}\n  dnstls  {v['dnstls']}"
                                 for k, v in differ.items())
    # the comparison covered the three outcomes, not only one of them
    assert ("secure", "do", "NOERROR", True) in outcomes
    assert ("insecure", "do", "NOERROR", False) in outcomes
    assert ("bogus", "do", "SERVFAIL", False) in outcomes
    assert ("bogus", "cd", "NOERROR", False) in outcomes
    # over DoT, with kdig: the AD bit and the signatures; bogus data is SERVFAIL + EDE 6
    good = kdig(LOOPBACK, dot.port, "www.secure.test.", tls=True, ca=pki.ca_pem,
                hostname=pki.hostname, extra=["+dnssec"])
    assert good.returncode == 0 and good.status == "NOERROR", good.describe()
    assert "ad" in good.flags and "RRSIG" in good.stdout, good.describe()
    bad = kdig(LOOPBACK, dot.port, "www.bogus.test.", tls=True, ca=pki.ca_pem,
               hostname=pki.hostname, extra=["+dnssec"])
    assert bad.status == "SERVFAIL" and "EDE: 6" in bad.stdout, bad.describe()
    # the outcomes are counted
    import urllib.request

    with urllib.request.urlopen(f"http://{LOOPBACK}:{metrics}/metrics", timeout=5) as page:
        text = page.read().decode()
    counted = {kind: float(value) for kind, value in re.findall(
        r'^dnstls_dnssec_validations_total\{kind="(\w+)"\} (\S+)$', text, re.MULTILINE)}
    assert counted.get("secure", 0) > 0 and counted.get("bogus", 0) > 0, counted
    assert counted.get("insecure", 0) > 0, counted
    assert re.search(r"^dnstls_dnssec_key_cache_entries \d", text, re.MULTILINE), text
    verified = re.search(r"^dnstls_dnssec_signatures_verified_total (\S+)$", text, re.MULTILINE)
    assert verified and float(verified.group(1)) > 0, text
    assert re.search(r"^dnstls_dnssec_signature_cache_hits_total \d", text, re.MULTILINE), text
