"""A signed DNS hierarchy generated at test time, for the DNSSEC validator's tests.

:func:`write_hierarchy` signs a small tree of zones with fresh keys (``cryptography``
through dnspython's ``dns.dnssec.sign``) and writes one zone file per zone plus the root
trust anchor (``root.key``: the root KSK as a DNSKEY line, ``root.ds``: its DS), in
Unbound's trust-anchor-file format. One nsd can serve every file at once
(``tests/interop/peers.py`` ``start_nsd_zones``): it answers each question from the
deepest zone it has and DS questions from the parent side, which is what a validating
resolver sees through a recursive upstream.

dnspython 2.9 cannot sign with NSEC3 (``sign_zone(nsec3=...)`` raises), so this module
builds the NSEC and NSEC3 chains itself (RFC 4034 §4, RFC 5155 §7.1: empty non-terminals
get an NSEC3 with an empty bitmap; opt-out skips unsigned delegations) and signs each
authoritative RRset with ``dns.dnssec.sign``.

The zones (see :data:`EXPECTED` for what a validator should say about each question):

=====================  ==============================================================
``.``                  RSASHA256 KSK, NSEC; delegates ``test.`` with DS
``test.``              ECDSAP256SHA256 CSK, NSEC; delegates every zone below
``secure.test.``       ECDSAP256SHA256 KSK + ZSK, NSEC; ``www`` A/AAAA/TXT, a wildcard
                       ``*.wild``, ``cname-out`` CNAME into nsec3.test., ``cname-nx``
                       CNAME to a name that does not exist, ``dname`` DNAME nsec3.test.,
                       ``sub`` (an empty non-terminal above ``a.sub``)
``nsec3.test.``        ECDSAP256SHA256 CSK, NSEC3 (SHA-1, 0 iterations, no salt); ``www``,
                       a wildcard ``*.wild``, ``unsigned`` an unsigned delegation (its
                       NSEC3 lists NS only)
``optout.test.``       ECDSAP256SHA256 CSK, NSEC3 opt-out; ``unsigned`` an unsigned
                       delegation (no DS, no NSEC3 of its own)
``insecure.test.``     unsigned, delegated without DS
``bogus.test.``        signed, the RRSIG of ``www`` A corrupted
``expired.test.``      signed, every RRSIG expired 10 days ago
``nokey.test.``        signed, but the DS in ``test.`` matches no key of its DNSKEY set
``nosig.test.``        signed, but ``www`` A served without an RRSIG
``ed25519.test.``      ED25519 CSK, NSEC
``unsupported.test.``  signed, but the DS in ``test.`` has only an unknown digest type
``unknownalgo.test.``  signed, but the DS in ``test.`` names algorithm 253 (PRIVATEDNS)
``nozonekey.test.``    signed with a key whose DNSKEY lacks the zone-key bit (flags 1)
``badnsec3.test.``     NSEC3 with 200 iterations (RFC 9276: above 150 is insecure)
=====================  ==============================================================
"""

from __future__ import annotations

import base64
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rrset
import dns.zone

with warnings.catch_warnings():  # dnspython's DSA module warns on import (cryptography)
    warnings.simplefilter("ignore")
    import dns.dnssec
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

Algorithm = dns.dnssec.Algorithm
ADDRESS = "127.0.0.1"
TTL = 300
KEY_TTL = 3600
DAY = 86400
#: The signing time unit tests use (inception T0 - 1 day, expiration T0 + 30 days).
T0 = 1_800_000_000.0


@dataclass
class Key:
    private: object
    dnskey: dns.rdata.Rdata

    @property
    def is_sep(self) -> bool:
        return bool(self.dnskey.flags & 1)  # type: ignore[attr-defined]


@dataclass
class ZoneSpec:
    """One zone: its own records (zone-file lines relative to the origin) and how it is
    signed. ``algorithm`` None: unsigned. ``split``: a KSK and a ZSK instead of one CSK."""

    origin: str
    lines: list[str]
    algorithm: Algorithm | None = Algorithm.ECDSAP256SHA256
    split: bool = False
    nsec3: bool = False
    iterations: int = 0
    optout: bool = False
    ds_digest: int | None = 2  # None: no DS at the parent; other than 1/2/4: bogus digest type
    ds_algorithm: int | None = None  # the DS's algorithm field, if not the key's
    key_flags: int = 257  # of the single key (CSK); 1: SEP without the zone-key bit
    expired: bool = False
    keys: list[Key] = field(default_factory=list)


def _zone_specs(address: str = ADDRESS) -> list[ZoneSpec]:
    def apex(origin: str) -> list[str]:
        return [f"@ {TTL} IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300",
                f"@ {TTL} IN NS ns.{origin}", f"ns.{origin} {TTL} IN A {address}"]

    def simple(origin: str, **kwargs: object) -> ZoneSpec:
        return ZoneSpec(origin, [*apex(origin), f"www {TTL} IN A 192.0.2.1",
                                 f'www {TTL} IN TXT "{origin}"'], **kwargs)  # type: ignore[arg-type]

    return [
        ZoneSpec(".", apex("test."), algorithm=Algorithm.RSASHA256),
        ZoneSpec("test.", apex("test.")),
        ZoneSpec("secure.test.", [
            *apex("secure.test."),
            f"www {TTL} IN A 192.0.2.1", f"www {TTL} IN AAAA 2001:db8::1",
            f'www {TTL} IN TXT "secure"',
            f"*.wild {TTL} IN A 192.0.2.7", f'*.wild {TTL} IN TXT "wildcard"',
            f"cname-out {TTL} IN CNAME www.nsec3.test.",
            f"cname-nx {TTL} IN CNAME nothere.nsec3.test.",
            f"cname-in {TTL} IN CNAME www",
            f"dname {TTL} IN DNAME nsec3.test.",
            f"a.sub {TTL} IN A 192.0.2.9",
        ], split=True),
        ZoneSpec("nsec3.test.", [
            *apex("nsec3.test."), f"www {TTL} IN A 192.0.2.3",
            f'www {TTL} IN TXT "nsec3"', f"*.wild {TTL} IN A 192.0.2.8",
            f"a.sub {TTL} IN A 192.0.2.10",
        ], nsec3=True),
        ZoneSpec("unsigned.nsec3.test.", [*apex("unsigned.nsec3.test."),
                                          f"www {TTL} IN A 192.0.2.11"],
                 algorithm=None, ds_digest=None),
        ZoneSpec("optout.test.", [
            *apex("optout.test."), f"www {TTL} IN A 192.0.2.4",
            f"unsigned {TTL} IN NS ns.unsigned.optout.test.",
            f"ns.unsigned {TTL} IN A {address}",
        ], nsec3=True, optout=True),
        ZoneSpec("unsigned.optout.test.", [*apex("unsigned.optout.test."),
                                           f"www {TTL} IN A 192.0.2.5"],
                 algorithm=None, ds_digest=None),
        simple("insecure.test.", algorithm=None, ds_digest=None),
        simple("bogus.test."),
        simple("expired.test.", expired=True),
        simple("nokey.test."),
        simple("nosig.test."),
        simple("ed25519.test.", algorithm=Algorithm.ED25519),
        simple("unsupported.test.", ds_digest=200),
        simple("unknownalgo.test.", ds_algorithm=253),
        simple("nozonekey.test.", key_flags=1),
        simple("badnsec3.test.", nsec3=True, iterations=200),
    ]


#: What a validator should answer, per (qname, qtype): (security, EDE code or None).
#: Unbound 1.17.1 validating through the same nsd agrees on every one
#: (tests/interop/test_dnssec_unbound.py); it sends no EDE with INSECURE answers.
EXPECTED: dict[tuple[str, str], tuple[str, int | None]] = {
    (".", "DNSKEY"): ("secure", None),
    (".", "SOA"): ("secure", None),
    ("test.", "DS"): ("secure", None),
    ("test.", "DNSKEY"): ("secure", None),
    ("nothere.", "A"): ("secure", None),          # NXDOMAIN from the root, NSEC
    ("www.secure.test.", "A"): ("secure", None),
    ("www.secure.test.", "AAAA"): ("secure", None),
    ("www.secure.test.", "MX"): ("secure", None),  # NODATA, NSEC
    ("nothere.secure.test.", "A"): ("secure", None),  # NXDOMAIN, NSEC
    ("sub.secure.test.", "A"): ("secure", None),   # NODATA at an empty non-terminal
    ("x.wild.secure.test.", "A"): ("secure", None),  # wildcard expansion
    ("x.wild.secure.test.", "MX"): ("secure", None),  # wildcard NODATA
    ("cname-out.secure.test.", "A"): ("secure", None),  # CNAME into nsec3.test.
    ("cname-nx.secure.test.", "A"): ("secure", None),  # CNAME to NXDOMAIN (NSEC3)
    ("cname-in.secure.test.", "A"): ("secure", None),
    ("www.dname.secure.test.", "A"): ("secure", None),  # DNAME + synthesized CNAME
    ("secure.test.", "DS"): ("secure", None),
    ("secure.test.", "DNSKEY"): ("secure", None),
    ("www.nsec3.test.", "A"): ("secure", None),
    ("www.nsec3.test.", "MX"): ("secure", None),  # NODATA, NSEC3 matching
    ("nothere.nsec3.test.", "A"): ("secure", None),  # NXDOMAIN, NSEC3 closest encloser
    ("sub.nsec3.test.", "A"): ("secure", None),  # NODATA at an ENT (NSEC3)
    ("x.wild.nsec3.test.", "A"): ("secure", None),  # NSEC3 wildcard expansion
    ("x.wild.nsec3.test.", "MX"): ("secure", None),  # NSEC3 wildcard NODATA
    ("www.unsigned.nsec3.test.", "A"): ("insecure", None),  # NSEC3: NS, no DS
    ("unsigned.nsec3.test.", "DS"): ("secure", None),
    ("www.optout.test.", "A"): ("secure", None),
    ("www.unsigned.optout.test.", "A"): ("insecure", None),  # under opt-out
    ("unsigned.optout.test.", "DS"): ("insecure", None),  # opt-out covers it
    ("nothere.optout.test.", "A"): ("insecure", None),  # NXDOMAIN in an opt-out span
    ("www.optout.test.", "MX"): ("secure", None),
    ("nothere.test.", "A"): ("secure", None),
    ("test.", "NS"): ("secure", None),
    ("www.secure.test.", "ANY"): ("secure", None),
    ("www.insecure.test.", "A"): ("insecure", None),
    ("nothere.insecure.test.", "A"): ("insecure", None),
    ("insecure.test.", "DS"): ("secure", None),  # NODATA proof of no DS is secure
    ("www.bogus.test.", "A"): ("bogus", 6),
    ("www.expired.test.", "A"): ("bogus", 7),
    ("www.nokey.test.", "A"): ("bogus", 9),
    ("www.nosig.test.", "A"): ("bogus", 10),
    ("www.nosig.test.", "TXT"): ("secure", None),
    ("www.ed25519.test.", "A"): ("secure", None),
    ("nothere.ed25519.test.", "A"): ("secure", None),
    ("www.unsupported.test.", "A"): ("insecure", 2),  # EDE 2 Unsupported DS Digest Type
    ("www.unknownalgo.test.", "A"): ("insecure", 1),  # EDE 1: DS algorithm 253
    ("www.nozonekey.test.", "A"): ("bogus", 11),  # the key the DS matches: no zone bit
    ("www.badnsec3.test.", "A"): ("secure", None),
    ("nothere.badnsec3.test.", "A"): ("insecure", 27),  # 200 iterations: RFC 9276
}


#: More questions, of odd types or shapes, with our verdicts; Unbound 1.17.1 agrees
#: except where :data:`UNBOUND_DIFFERS` says (tests/interop/test_dnssec_unbound.py).
ODD_QUESTIONS: dict[tuple[str, str], tuple[str, int | None]] = {
    ("www.secure.test.", "RRSIG"): ("insecure", None),  # RRSIG answers: not validated
    ("www.secure.test.", "NSEC"): ("secure", None),
    ("secure.test.", "NSEC3PARAM"): ("secure", None),
    ("nsec3.test.", "NSEC3PARAM"): ("secure", None),
    ("*.wild.secure.test.", "A"): ("secure", None),  # the wildcard itself
    ("*.wild.nsec3.test.", "A"): ("secure", None),
    ("wild.secure.test.", "A"): ("secure", None),   # an empty non-terminal
    ("a.b.wild.secure.test.", "A"): ("secure", None),  # wildcard two labels down
    ("www.secure.test.", "CNAME"): ("secure", None),  # NODATA
    ("cname-in.secure.test.", "CNAME"): ("secure", None),
    ("dname.secure.test.", "DNAME"): ("secure", None),
    ("www.dname.secure.test.", "CNAME"): ("secure", None),  # the synthesized CNAME
    ("www.nsec3.test.", "ANY"): ("secure", None),
    ("nothere.secure.test.", "DS"): ("secure", None),
    ("www.secure.test.", "DS"): ("secure", None),
    ("ns.secure.test.", "A"): ("secure", None),
    ("secure.test.", "NS"): ("secure", None),
    ("www.insecure.test.", "DS"): ("insecure", None),
    ("nothere.unsigned.optout.test.", "A"): ("insecure", None),
    ("x.y.nothere.nsec3.test.", "TXT"): ("secure", None),
}

#: Where Unbound 1.17.1 answers otherwise, and why we do not follow it.
UNBOUND_DIFFERS: dict[tuple[str, str], tuple[tuple[str, int | None], str]] = {
    ("www.dname.secure.test.", "CNAME"): (
        ("bogus", 9), "Unbound SERVFAILs a CNAME question answered by a signed DNAME and "
        "its (unsigned, matching) synthesized CNAME; RFC 6672 §5.3.3 makes it secure"),
}


@dataclass
class Hierarchy:
    """The files written: zone files by origin, the root trust anchor both ways."""

    directory: Path
    zone_files: dict[str, Path]
    root_key: Path  # ". IN DNSKEY 257 ..." (Unbound's trust-anchor-file, as root.key)
    root_ds: Path   # ". IN DS ..." (as /usr/share/dns/root.ds)
    now: float


def _make_key(algorithm: Algorithm, flags: int) -> Key:
    private: object
    if algorithm == Algorithm.RSASHA256:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == Algorithm.ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == Algorithm.ECDSAP256SHA256:
        private = ec.generate_private_key(ec.SECP256R1())
    else:  # pragma: no cover - not used
        raise ValueError(algorithm)
    public = private.public_key()  # type: ignore[attr-defined]
    return Key(private, dns.dnssec.make_dnskey(public, algorithm, flags=flags))


def _parse(spec: ZoneSpec) -> dns.zone.Zone:
    text = f"$ORIGIN {spec.origin}\n" + "\n".join(spec.lines) + "\n"
    return dns.zone.from_text(text, spec.origin, relativize=False, check_origin=True)


def _cuts(zone: dns.zone.Zone) -> set[dns.name.Name]:
    origin = zone.origin
    assert origin is not None
    return {name for name, node in zone.nodes.items()
            if name != origin and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS)}


def _authoritative(zone: dns.zone.Zone) -> list[dns.name.Name]:
    """Names with data the zone is authoritative for (delegation points included, glue
    and anything else below a cut excluded), in canonical order."""
    cuts = _cuts(zone)
    names = [name for name in zone.nodes
             if not any(name != cut and name.is_subdomain(cut) for cut in cuts)]
    return sorted(names)


def _nsec_chain(zone: dns.zone.Zone) -> None:
    names = _authoritative(zone)
    for i, name in enumerate(names):
        node = zone.nodes[name]
        types = {rds.rdtype for rds in node} | {dns.rdatatype.NSEC, dns.rdatatype.RRSIG}
        nxt = names[(i + 1) % len(names)]
        rdata = dns.rdtypes.ANY.NSEC.NSEC(
            dns.rdataclass.IN, dns.rdatatype.NSEC, nxt,
            dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted(types)).windows)
        node.replace_rdataset(dns.rdataset.from_rdata(TTL, rdata))


def nsec3_owner(name: dns.name.Name, origin: dns.name.Name, iterations: int) -> dns.name.Name:
    label = dns.dnssec.nsec3_hash(name, None, iterations, 1)
    return dns.name.Name((label.lower().encode(), *origin.labels))


def _nsec3_chain(zone: dns.zone.Zone, spec: ZoneSpec) -> None:
    origin = zone.origin
    assert origin is not None
    cuts = _cuts(zone)
    insecure_cuts = {cut for cut in cuts
                     if not zone.nodes[cut].get_rdataset(dns.rdataclass.IN, dns.rdatatype.DS)}
    names: dict[dns.name.Name, set[int]] = {}
    for name in _authoritative(zone):
        if spec.optout and name in insecure_cuts:
            continue
        node = zone.nodes[name]
        types = {rds.rdtype for rds in node}
        if name not in insecure_cuts:
            types.add(dns.rdatatype.RRSIG)
        names[name] = types
        parent = name
        while parent != origin:  # empty non-terminals
            parent = parent.parent()
            names.setdefault(parent, set())
    names[origin].add(dns.rdatatype.NSEC3PARAM)
    hashed = sorted((base64.b32hexdecode(
        dns.dnssec.nsec3_hash(name, None, spec.iterations, 1).upper()), name)
        for name in names)
    for i, (digest, name) in enumerate(hashed):
        nxt = hashed[(i + 1) % len(hashed)][0]
        rdata = dns.rdtypes.ANY.NSEC3.NSEC3(
            dns.rdataclass.IN, dns.rdatatype.NSEC3, 1, 1 if spec.optout else 0,
            spec.iterations, b"", nxt,
            dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted(names[name])).windows)
        owner = dns.name.Name((base64.b32hexencode(digest).lower(), *origin.labels))
        zone.find_node(owner, create=True).replace_rdataset(
            dns.rdataset.from_rdata(TTL, rdata))
    param = dns.rdata.from_text("IN", "NSEC3PARAM", f"1 0 {spec.iterations} -")
    zone.nodes[origin].replace_rdataset(dns.rdataset.from_rdata(TTL, param))


def _sign(zone: dns.zone.Zone, spec: ZoneSpec, now: float) -> None:
    origin = zone.origin
    assert origin is not None
    cuts = _cuts(zone)
    if spec.expired:
        inception, expiration = now - 40 * DAY, now - 10 * DAY
    else:
        inception, expiration = now - DAY, now + 30 * DAY
    ksks = [key for key in spec.keys if key.is_sep]
    zsks = [key for key in spec.keys if not key.is_sep] or ksks
    signed: list[tuple[dns.name.Name, dns.rdataset.Rdataset]] = []
    for name, node in zone.nodes.items():
        below_cut = any(name != cut and name.is_subdomain(cut) for cut in cuts)
        for rds in node:
            if below_cut or (name in cuts and rds.rdtype not in (
                    dns.rdatatype.DS, dns.rdatatype.NSEC, dns.rdatatype.NSEC3)):
                continue
            signed.append((name, rds))
    for name, rds in signed:
        signers = ksks if rds.rdtype == dns.rdatatype.DNSKEY else zsks
        sigs = [dns.dnssec.sign((name, rds), key.private, origin, key.dnskey,  # type: ignore[arg-type]
                                inception=inception, expiration=expiration)
                for key in signers]
        zone.nodes[name].replace_rdataset(dns.rdataset.from_rdata_list(rds.ttl, sigs))


def _corrupt(zone: dns.zone.Zone, owner: str, covered: dns.rdatatype.RdataType) -> None:
    node = zone.nodes[dns.name.from_text(owner)]
    rrsigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, covered)
    assert rrsigs is not None
    bad = [sig.replace(signature=bytes([sig.signature[0] ^ 0xFF]) + sig.signature[1:])
           for sig in rrsigs]
    node.replace_rdataset(dns.rdataset.from_rdata_list(rrsigs.ttl, bad))


def build_hierarchy(now: float | None = None, *, address: str = ADDRESS,
                    ) -> tuple[dict[str, dns.zone.Zone], list[ZoneSpec]]:
    """Every zone of the hierarchy, signed (and broken where meant to be); every name
    server ``ns.<zone>`` (and the root's, ``ns.test.``) at ``address``."""
    now = time.time() if now is None else now
    specs = _zone_specs(address)
    zones = {spec.origin: _parse(spec) for spec in specs}
    for spec in specs:
        if spec.algorithm is None:
            continue
        if spec.split:
            spec.keys = [_make_key(spec.algorithm, 257), _make_key(spec.algorithm, 256)]
        else:
            spec.keys = [_make_key(spec.algorithm, spec.key_flags)]
        apex = zones[spec.origin].nodes[dns.name.from_text(spec.origin)]
        apex.replace_rdataset(dns.rdataset.from_rdata_list(
            KEY_TTL, [key.dnskey for key in spec.keys]))
    # DS records and delegations in each parent
    for spec in specs[1:]:
        child = dns.name.from_text(spec.origin)
        parent_origin = max((o for o in zones if child != dns.name.from_text(o)
                             and child.is_subdomain(dns.name.from_text(o))),
                            key=lambda o: len(dns.name.from_text(o)))
        parent = zones[parent_origin]
        node = parent.find_node(child, create=True)
        node.replace_rdataset(dns.rdataset.from_text("IN", "NS", TTL, f"ns.{spec.origin}"))
        parent.find_node(dns.name.from_text(f"ns.{spec.origin}"), create=True).replace_rdataset(
            dns.rdataset.from_text("IN", "A", TTL, address))
        if spec.ds_digest is None:
            continue
        if spec.origin == "nokey.test.":
            other = _make_key(Algorithm.ECDSAP256SHA256, 257)
            ds = [dns.dnssec.make_ds(child, other.dnskey, 2)]
        elif spec.ds_algorithm is not None:
            ds = [dns.dnssec.make_ds(child, spec.keys[0].dnskey, 2).replace(
                algorithm=spec.ds_algorithm)]
        elif spec.ds_digest in (1, 2, 4):
            ds = [dns.dnssec.make_ds(child, key.dnskey, spec.ds_digest)
                  for key in spec.keys if key.is_sep]
        else:
            real = dns.dnssec.make_ds(child, spec.keys[0].dnskey, 2)
            ds = [real.replace(digest_type=spec.ds_digest)]
        node.replace_rdataset(dns.rdataset.from_rdata_list(TTL, ds))
    for spec in specs:
        zone = zones[spec.origin]
        if spec.algorithm is None:
            continue
        if spec.nsec3:
            _nsec3_chain(zone, spec)
        else:
            _nsec_chain(zone)
        _sign(zone, spec, now)
    _corrupt(zones["bogus.test."], "www.bogus.test.", dns.rdatatype.A)
    zones["nosig.test."].nodes[dns.name.from_text("www.nosig.test.")].delete_rdataset(
        dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A)
    return zones, specs


def _zone_text(zone: dns.zone.Zone) -> str:
    lines = []
    for name in sorted(zone.nodes):
        for rds in zone.nodes[name]:
            lines.append(rds.to_text(name))
    return "\n".join(lines) + "\n"


def write_hierarchy(directory: Path, *, now: float | None = None,
                    address: str = ADDRESS) -> Hierarchy:
    """Sign the hierarchy and write it into ``directory`` (created): ``<origin>zone``
    files (``root.zone`` for ``.``), ``root.key`` and ``root.ds``; the glue of every
    delegation (and the root's name server ``ns.test.``) says ``address``: one server
    there, on port 53, serves the whole tree to a recursive resolver whose root hints
    name it (tests/fakes/recursion_zones.py ``write_root_hints``)."""
    now = time.time() if now is None else now
    directory.mkdir(parents=True, exist_ok=True)
    zones, specs = build_hierarchy(now, address=address)
    files = {}
    for origin, zone in zones.items():
        path = directory / (f"{origin}zone" if origin != "." else "root.zone")
        path.write_text(_zone_text(zone))
        files[origin] = path
    root_spec = specs[0]
    ksk = next(key for key in root_spec.keys if key.is_sep)
    root_key = directory / "root.key"
    root_key.write_text(f". {KEY_TTL} IN DNSKEY {ksk.dnskey.to_text()}\n")
    root_ds = directory / "root.ds"
    ds = dns.dnssec.make_ds(dns.name.root, ksk.dnskey, 2)
    root_ds.write_text(f". IN DS {ds.to_text()}\n")
    return Hierarchy(directory, files, root_key, root_ds, now)


def origins() -> Iterable[str]:
    """The zones' origins, parents before children."""
    return [spec.origin for spec in _zone_specs()]


def answer(zones: dict[str, dns.zone.Zone], name: dns.name.Name | str,
           rdtype: int | str) -> dns.message.Message:
    """An authoritative DO=1 answer from in-memory ``zones`` (build_hierarchy), for unit
    tests that need no server: the RRset at ``name`` with its RRSIGs from the deepest
    zone holding the name (the parent for DS), NOERROR and an empty answer (with the
    zone's signed SOA) when there is none. It knows no wildcards, NSEC proofs or
    referrals: negative answers are nsd's job (tests/integration/test_dnssec_nsd.py)."""
    name = dns.name.from_text(name) if isinstance(name, str) else name
    rdtype = dns.rdatatype.RdataType.make(rdtype)
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    response = dns.message.make_response(query)
    holder = name.parent() if rdtype == dns.rdatatype.DS and name != dns.name.root else name
    origin = max((dns.name.from_text(o) for o in zones
                  if holder.is_subdomain(dns.name.from_text(o))), key=len)
    zone = zones[origin.to_text()]
    node = zone.get_node(name)
    rds = node.get_rdataset(dns.rdataclass.IN, rdtype) if node is not None else None
    if rds is not None:
        response.find_rrset(response.answer, name, dns.rdataclass.IN, rdtype,
                            create=True).update(rds)
        sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
        if sigs is not None:
            response.find_rrset(response.answer, name, dns.rdataclass.IN,
                                dns.rdatatype.RRSIG, rdtype, create=True).update(sigs)
        return response
    apex = zone.nodes[origin]
    for rdt, covers in ((dns.rdatatype.SOA, dns.rdatatype.NONE),
                        (dns.rdatatype.RRSIG, dns.rdatatype.SOA)):
        found = apex.get_rdataset(dns.rdataclass.IN, rdt, covers)
        if found is not None:
            response.find_rrset(response.authority, origin, dns.rdataclass.IN, rdt, covers,
                                create=True).update(found)
    return response
