"""Local data: authoritative answers from zone files, and RFC 9462 DDR records.

Zones are RFC 1035 master files read with dnspython's zone reader. A query whose name
falls in a loaded zone is answered authoritatively here (AA set) and never forwarded:

* the name exists with the type: the RRset (following in-zone CNAMEs, at most 8);
* the name exists without the type, or is an empty non-terminal: NODATA with the SOA;
* a delegation (NS below the apex) on the way down: a referral (no AA);
* the name does not exist: a matching wildcard (RFC 4592) if any, else NXDOMAIN with
  the SOA. The negative TTL is min(SOA TTL, SOA MINIMUM) (RFC 2308 §3).

Discovery of Designated Resolvers (RFC 9462 §4): queries for ``_dns.resolver.arpa``
type SVCB are answered with this service's DoT endpoint (``alpn=dot``, its port) under
the name in its certificate, so clients that start from an IP address can upgrade.
Every other name under ``resolver.arpa`` is answered NXDOMAIN (or NODATA for the DDR
name itself), never forwarded (RFC 9462 §8).

Default zones (:mod:`dnstls.resolver.default_zones`: localhost, the loopback and private
reverse zones, onion, test, invalid, home.arpa...) are handed in as zones like any
other, by the service. ``forwarded`` names forward zones (``[[forward_zone]]``) under a
default zone: their names are passed on (to the forwarder) instead of answered here,
while the rest of the default zone still is. With ``refuse_other_classes`` (set with
them) a question of any class but IN is answered REFUSED (EDE 21 Not Supported) here,
never forwarded -- but QCLASS ANY, which the handler asks as IN before it gets here
(:meth:`covers_key` sends it to the message path, where that is done).

Local data lines (``[local] data``, ``--local-data``: Unbound's ``local-data``): one
resource record in master-file syntax each (``"nas.home.arpa. A 192.168.1.10"``; TTL
3600 and class IN when not given). A record whose name falls in a loaded zone (a zone
file or a default zone such as ``home.arpa``) is added to that zone and answered with
it. Any other record makes its owner name a *transparent* name, as Unbound's
local-data without a local-zone: a query for exactly that name is answered here (AA;
the RRset, the CNAME when the type is missing and there is one, else NODATA without
SOA), and names below it and all other names are resolved as usual.

Local answers depend on the question only (name, type, class; the key's DO and CD bits
keep their own entries), so each is built with dnspython once and then kept as wire
bytes in :attr:`LocalData.answers`, a :class:`~dnstls.resolver.cache.Cache` read with a
frozen clock: its TTLs never count down (an authoritative answer always carries the
zone's TTLs, as Unbound's local-data does) and nothing expires. The listeners' fast path
(:meth:`LocalData.lookup_wire`) serves repeats from there like cache hits -- ID, question
case, padding and keepalive patched in -- instead of parsing and rendering with dnspython
every time (~600 µs a query). The store is bounded (LRU) so a flood of random names under
a local zone cannot grow it; it keeps answers without SOA too (``Cache.keeps_all``: they
never change), but not REFUSED ones or TTL 0 answers, which are simply built again on
the next query.

Typed zones (``[local] zone_types``, blocklists: Unbound's local-zone types, see
:mod:`dnstls.resolver.zonetypes` for what each answers) join the zones in the one
longest-name lookup; local data under a typed zone stays out of the zones around it and
is that typed zone's. Only when typed zones exist do :meth:`LocalData.covers_key` and
:meth:`LocalData.lookup_wire` become their typed variants (one dict walk over the
name's labels; a count per type): without them the listeners' fast path runs the same
code as before. ``deny`` over UDP raises :class:`~dnstls.errors.QueryDropped`, which
the handler turns into no answer.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone
import dns.zonefile

from dnstls.errors import ConfigError, QueryDropped
from dnstls.proto.answers import error_response, make_response
from dnstls.proto.cachekey import CacheKey, key_from_message
from dnstls.resolver.base import Request, Resolver
from dnstls.resolver.cache import Cache
from dnstls.resolver.default_zones import enclosing

T = TypeVar("T")

RESOLVER_ARPA = dns.name.from_text("resolver.arpa.")
DDR_NAME = dns.name.from_text("_dns.resolver.arpa.")
MAX_CNAME_CHAIN = 8
# The answer store reads a frozen clock: entries are "inserted" at 0 and never age.
_FROZEN = 0.0
_NO_EXPIRY = 0x7FFFFFFF
NULL_TTL = 3600  # always_null's A 0.0.0.0 / AAAA :: (Unbound 1.17, measured)
# covers_key's verdicts for a typed zone or a zone (see LocalData._covers_typed)
_LOCAL, _PASS, _TRANSPARENT, _TYPETRANSPARENT = 0, 1, 2, 3
# In LocalData._walk besides the types: a zone's origin, a forwarded name
_ZONE, _FORWARDED = "(zone)", "(forwarded)"
_VERDICTS = {_FORWARDED: _PASS, "always_transparent": _PASS, "transparent": _TRANSPARENT,
             "nodefault": _TRANSPARENT, "typetransparent": _TYPETRANSPARENT}
_NULL_A = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, "0.0.0.0")
_NULL_AAAA = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.AAAA, "::")


def load_zone(path: str | Path, *, field: str = "local_zone") -> dns.zone.Zone:
    """Read a master file; raise ConfigError naming the file on any problem."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(field, f"cannot read zone file {path}: {exc.strerror}") from None
    try:
        zone = dns.zone.from_text(text, origin=None, relativize=False, filename=str(path))
    except dns.zone.UnknownOrigin:
        raise ConfigError(field, f"zone file {path} has no $ORIGIN") from None
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(field, f"zone file {path}: {exc}") from None
    return zone


#: Types no local-data line may give (meta and pseudo types).
_NOT_DATA = frozenset({dns.rdatatype.ANY, dns.rdatatype.OPT, dns.rdatatype.AXFR,
                       dns.rdatatype.IXFR, dns.rdatatype.TSIG, dns.rdatatype.TKEY,
                       dns.rdatatype.MAILA, dns.rdatatype.MAILB})
LOCAL_DATA_TTL = 3600  # Unbound's default for local-data without a TTL


def parse_local_data(entries: Iterable[object], *, field: str = "local.data",
                     ) -> list[dns.rrset.RRset]:
    """One RRset per ``[local] data`` line; ConfigError naming the first bad line
    (``local.data[2]: ...``). Lines for the same name and type are merged."""
    merged: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    for i, text in enumerate(entries):
        where = f"{field}[{i}]"
        if not isinstance(text, str):
            raise ConfigError(where, f"expected a record as a string like "
                              f"\"nas.home.arpa. A 192.168.1.10\", got {text!r}")
        if "\n" in text or "\r" in text:
            raise ConfigError(where, f"{text!r}: one record per line")
        try:
            rrsets = _read_rrsets(text)
        except (dns.exception.DNSException, ValueError) as exc:
            message = str(exc).removeprefix("<input>:1: ")
            raise ConfigError(where, f"{text!r}: {message}") from None
        if len(rrsets) != 1:
            raise ConfigError(where, f"{text!r}: expected one record, like "
                              "\"nas.home.arpa. A 192.168.1.10\"")
        rrset = rrsets[0]
        if rrset.rdclass != dns.rdataclass.IN:
            raise ConfigError(where, f"{text!r}: only class IN is served")
        if rrset.rdtype in _NOT_DATA:
            raise ConfigError(where, f"{text!r}: {dns.rdatatype.to_text(rrset.rdtype)} "
                              "is not a record type for data")
        if rrset.name == dns.name.root or rrset.name.is_wild():
            raise ConfigError(where, f"{text!r}: the root and wildcard names need a zone "
                              "file (local.zones)")
        key = (rrset.name, rrset.rdtype)
        if key in merged:
            merged[key].union_update(rrset)  # type: ignore[no-untyped-call]
            merged[key].ttl = min(merged[key].ttl, rrset.ttl)
            continue
        kinds = {t for n, t in merged if n == rrset.name} | {rrset.rdtype}
        if dns.rdatatype.CNAME in kinds and len(kinds) > 1:
            raise ConfigError(where, f"{text!r}: {rrset.name} has a CNAME and other "
                              "data (RFC 1034 §3.6.2)")
        merged[key] = rrset
    return list(merged.values())


def _read_rrsets(text: str) -> list[dns.rrset.RRset]:
    """One local-data line's RRsets (names relative to the root). dnspython's reader
    takes an SOA at the origin only; an SOA line (a typed zone's, for its negative
    answers, as Unbound's ``local-data: "ads.example. SOA ..."``) is read at the root
    and then given its owner."""
    def read(line: str) -> list[dns.rrset.RRset]:
        return dns.zonefile.read_rrsets(
            line, rdclass=None, default_ttl=LOCAL_DATA_TTL,
            default_rdclass=dns.rdataclass.IN, origin=dns.name.root, relativize=False)

    try:
        return read(text)
    except ValueError as exc:
        owner, _, rest = text.strip().partition(" ")
        if "non-origin SOA" not in str(exc) or not rest:
            raise
    rrsets = read("@ " + rest)
    name = dns.name.from_text(owner)
    renamed = []
    for rrset in rrsets:
        copy_ = dns.rrset.RRset(name, rrset.rdclass, rrset.rdtype)
        copy_.update(rrset)  # type: ignore[no-untyped-call]
        renamed.append(copy_)
    return renamed


def _nearest(name: dns.name.Name, origins: Mapping[dns.name.Name, T]) -> T | None:
    """As :func:`enclosing`, but the longest name *present* in ``origins`` decides, even
    with None (a forward zone carved out of a default zone: no local zone there)."""
    while True:
        if name in origins:
            return origins[name]
        if len(name.labels) <= 1:
            return None
        name = name.parent()


def place_local_data(zones: list[dns.zone.Zone], rrsets: Iterable[dns.rrset.RRset],
                     forwarded: Iterable[dns.name.Name] = (),
                     ) -> dict[dns.name.Name, dict[int, dns.rrset.RRset]]:
    """Add each RRset to the loaded zone it falls in (the longest origin; replacing
    the zone's RRset of that name and type), and return the others by owner name: the
    transparent names :class:`LocalData` answers (also those under a ``forwarded``
    name carved out of the zone they are in: see :class:`LocalData`).

    A zone that gets records is replaced in ``zones`` by a copy first: default zones
    are shared by the whole process (``default_zones.build_zone``), and a record added
    to one must not outlive this configuration (a reload, another service)."""
    by_origin: dict[dns.name.Name, dns.zone.Zone | None] = {}
    for zone in zones:
        assert zone.origin is not None
        by_origin.setdefault(zone.origin, zone)  # the first one wins, as LocalData's
    for name in forwarded:
        by_origin.setdefault(name, None)
    transparent: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
    owned: set[int] = set()  # the copies made here
    for rrset in rrsets:
        found = _nearest(rrset.name, by_origin)
        if found is None:
            transparent.setdefault(rrset.name, {})[rrset.rdtype] = rrset
            continue
        if id(found) not in owned:
            mine = copy.deepcopy(found)
            owned.add(id(mine))
            zones[next(i for i, zone in enumerate(zones) if zone is found)] = mine
            assert mine.origin is not None
            by_origin[mine.origin] = found = mine
        node = found.find_node(rrset.name, create=True)
        if rrset.rdtype == dns.rdatatype.CNAME:
            node.rdatasets.clear()  # a CNAME stands alone (RFC 1034 §3.6.2)
        else:
            node.delete_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        rdataset = node.find_rdataset(dns.rdataclass.IN, rrset.rdtype, create=True)
        rdataset.clear()  # type: ignore[no-untyped-call]
        rdataset.update(rrset)  # type: ignore[no-untyped-call]
    return transparent


class _Zone:
    """A loaded zone with the lookups local answers need."""

    def __init__(self, zone: dns.zone.Zone) -> None:
        assert zone.origin is not None
        self.origin: dns.name.Name = zone.origin
        self.zone = zone
        soa = zone.get_rrset(self.origin, dns.rdatatype.SOA)
        if soa is None:
            raise ValueError(f"zone {self.origin} has no SOA")
        self.soa = soa
        self.negative_ttl = min(soa.ttl, soa[0].minimum)
        # Every existing name and its ancestors within the zone: names that are only
        # ancestors are empty non-terminals (NODATA, not NXDOMAIN).
        self.names: set[dns.name.Name] = set()
        for name in zone.nodes:
            assert isinstance(name, dns.name.Name)
            while name.is_subdomain(self.origin):
                self.names.add(name)
                if name == self.origin:
                    break
                name = name.parent()

    def negative_soa(self) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(self.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.update(self.soa)  # type: ignore[no-untyped-call]
        rrset.ttl = self.negative_ttl
        return rrset

    def delegation(self, qname: dns.name.Name) -> dns.rrset.RRset | None:
        """The NS RRset of a zone cut between the apex (exclusive) and qname (inclusive)."""
        name = qname
        cuts = []
        while name != self.origin:
            cuts.append(name)
            name = name.parent()
        for name in reversed(cuts):
            ns = self.zone.get_rrset(name, dns.rdatatype.NS)
            if ns is not None:
                return ns
        return None

    def wildcard(self, qname: dns.name.Name) -> dns.name.Name | None:
        """The wildcard that would synthesize qname (RFC 4592 §3.3.1), if it exists."""
        encloser = qname.parent()
        while encloser.is_subdomain(self.origin):
            if encloser in self.names:
                candidate = dns.name.Name(("*", *encloser.labels))
                return candidate if candidate in self.names else None
            encloser = encloser.parent()
        return None


class LocalData:
    """Resolver stage answering from local zones and DDR; passes everything else on."""

    def __init__(self, next_stage: Resolver, *, zones: Iterable[dns.zone.Zone] = (),
                 ddr: Sequence[dns.rdata.Rdata] = (), max_answers: int = 10_000,
                 refuse_other_classes: bool = False,
                 transparent: dict[dns.name.Name, dict[int, dns.rrset.RRset]] | None = None,
                 forwarded: Iterable[dns.name.Name] = (),
                 typed: Mapping[bytes, str] | None = None) -> None:
        self._next = next_stage
        #: Local data outside every zone, by owner name (:func:`place_local_data`):
        #: exactly these names are answered here; ``_exact`` holds their wire forms.
        self._transparent = dict(transparent or {})
        self._exact = frozenset((n.to_wire() or b"").lower() for n in self._transparent)
        self._zones = sorted((_Zone(z) for z in zones), key=lambda z: -len(z.origin.labels))
        self._by_origin: dict[dns.name.Name, _Zone | None] = {
            z.origin: z for z in reversed(self._zones)}  # first one wins
        #: Typed zones (blocklists, zone_types): their type by lower-cased wire name
        #: (no dns.name.Name per entry: 100,000 of them cost ~40 MB more).
        self._typed: Mapping[bytes, str] = typed or {}
        #: The ancestors of local data's names below a typed zone (its empty
        #: non-terminals: a static zone answers NODATA there, as Unbound's)
        self._ents: set[dns.name.Name] = set()
        if self._typed:
            for owner in self._transparent:
                parent = owner
                while len(parent.labels) > 1 and _wire(parent) not in self._typed:
                    parent = parent.parent()
                    self._ents.add(parent)
        #: Answers by typed-zone type, for the metrics (the fast path's hits included)
        self.zone_answers: Counter[str] = Counter()
        #: The key and type of the last question covers_key found blocked: the handler
        #: asks lookup_wire about that key next (a hit there is counted by that type)
        self._last_key = b""
        self._last_kind = ""
        self._forwarded = frozenset(forwarded)
        for name in self._forwarded:  # a zone of its own: "no zone here"
            self._by_origin.setdefault(name, None)
        self._forwarded_wire = frozenset((n.to_wire() or b"").lower() for n in self._forwarded)
        self.refuse_other_classes = refuse_other_classes
        self._ddr = list(ddr)
        self._suffix_cache: frozenset[bytes] | None = None
        self._suffix_tuple: tuple[bytes, ...] = ()
        self.answers = Cache(max_entries=max_answers, max_bytes=max_answers * 1024,
                             max_ttl=_NO_EXPIRY, max_negative_ttl=_NO_EXPIRY)
        self.answers.keeps_all = True  # NODATA/NXDOMAIN/REFUSED without SOA too
        self._walk: dict[bytes, str] = {}
        self._data_types: dict[bytes, frozenset[int]] = {}
        if self._typed:
            self._setup_typed()

    def _setup_typed(self) -> None:
        """With typed zones, :meth:`covers_key` and :meth:`lookup_wire` are their typed
        variants (instance attributes): without any, the hot path runs exactly the code
        it ran before typed zones existed."""
        # every name that decides, the longest first found: typed zones, then (a zone
        # file or default zone of the same name wins; the service refuses that) zones,
        # then names forwarded out of a default zone (a typed one of the name wins)
        walk = dict(self._typed)
        for zone in self._zones:
            walk[_wire(zone.origin)] = _ZONE
        walk.setdefault(_wire(RESOLVER_ARPA), _ZONE)
        for name in self._forwarded:
            walk.setdefault(_wire(name), _FORWARDED)
        self._walk = walk
        self._data_types = {_wire(n): frozenset(d) for n, d in self._transparent.items()}
        self.covers_key = self._covers_typed  # type: ignore[method-assign]
        self.lookup_wire = self._lookup_counting  # type: ignore[method-assign]

    def _lookup_counting(self, key: CacheKey, query_id: int, rd: bool = True,
                         qname: bytes | None = None, edns: bool = True,
                         options: bytes = b"", pad_block: int = 0) -> bytes | None:
        out = self.answers.lookup_wire(key, query_id, _FROZEN, rd, qname, edns, options,
                                       pad_block)
        if out is not None and key == self._last_key:
            self.zone_answers[self._last_kind] += 1
        return out

    def _covers_typed(self, key: bytes) -> bool:
        """:meth:`covers_key` with typed zones: one walk up the name's labels, the
        longest zone, typed zone or forwarded name deciding (as :meth:`resolve`)."""
        if key[-3] or key[-2] != 1:  # qclass != IN
            return self.refuse_other_classes
        name = key[:-5]
        walk = self._walk
        pos = 0
        end = len(name)
        while pos < end:
            kind = walk.get(name[pos:])
            if kind is not None:
                verdict = _VERDICTS.get(kind, _LOCAL)
                if verdict == _PASS:
                    return False
                if verdict != _LOCAL:
                    types = self._data_types.get(name)
                    if types is None:
                        return False
                    qtype = key[-5] << 8 | key[-4]
                    if verdict == _TYPETRANSPARENT and (
                            qtype == dns.rdatatype.ANY
                            or (qtype not in types and dns.rdatatype.CNAME not in types)):
                        return False
                if kind != _ZONE:
                    self._last_key = key
                    self._last_kind = kind
                return True
            pos += 1 + name[pos]
        return name in self._exact

    @property
    def typed_zones(self) -> int:
        """How many typed zones (zone_types, blocklist names) are configured."""
        return len(self._typed)

    def lookup_wire(self, key: CacheKey, query_id: int, rd: bool = True,
                    qname: bytes | None = None, edns: bool = True, options: bytes = b"",
                    pad_block: int = 0) -> bytes | None:
        """A local answer already built for ``key``, rendered for this query (as
        :meth:`Cache.lookup_wire`); None if not built yet: take the message path, which
        builds and keeps it. Only for names :meth:`covers_wire` says are local."""
        return self.answers.lookup_wire(key, query_id, _FROZEN, rd, qname, edns, options,
                                        pad_block)

    @property
    def transparent_names(self) -> int:
        """How many names local data answers outside every zone."""
        return len(self._transparent)

    @property
    def origins(self) -> list[dns.name.Name]:
        return [z.origin for z in self._zones]

    # -- listings for ``dnstls control`` (not on the query path) -------------------------

    def zone_list(self) -> list[tuple[str, str]]:
        """(name, type) of every local zone, as Unbound's ``list_local_zones``: zone
        files and default zones are ``static`` (names without data answer NXDOMAIN),
        names of local data outside every zone ``transparent`` (the zone Unbound makes
        for them), typed zones their type; names forwarded out of a default zone are
        not listed (no zone of their own)."""
        out = [(zone.origin.to_text(), "static") for zone in self._zones]
        out += [(name.to_text(), "transparent") for name in self._transparent]
        out += [(dns.name.from_wire(wire, 0)[0].to_text(), kind)
                for wire, kind in self._typed.items()]
        return out

    def record_lines(self) -> list[str]:
        """Every record of local data, one a line (owner, TTL, class, type, RDATA, tab
        separated): the zones' (zone files and default zones), then local data outside
        them, then the RFC 9462 discovery records."""
        out: list[str] = []
        for zone in self._zones:
            for owner, rdataset in zone.zone.iterate_rdatasets():
                absolute = owner.derelativize(zone.origin)
                out += _record_lines(absolute, rdataset)
        for owner, by_type in self._transparent.items():
            for rrset in by_type.values():
                out += _record_lines(owner, rrset)
        for rdata in self._ddr:
            out.append(f"{DDR_NAME}\t300\tIN\tSVCB\t{rdata.to_text()}")
        return out

    def decides(self, name: dns.name.Name) -> str | None:
        """What answers ``name`` here (``dnstls control lookup``): a phrase naming the
        local zone, typed zone or local data; None when it is passed on."""
        if self._typed:
            typed = self._typed_zone(name)
            if typed is not None:
                origin, kind = typed
                if kind not in ("transparent", "always_transparent", "typetransparent",
                                "nodefault"):
                    return f"local zone {origin} ({kind})"
        zone = self._find(name)
        if zone is not None:
            return f"local zone {zone.origin} (static)"
        if name in self._transparent:
            return f"local data for {name} (transparent)"
        if name.is_subdomain(RESOLVER_ARPA):
            return f"the discovery zone {RESOLVER_ARPA} (RFC 9462)"
        return None

    def covers_key(self, key: bytes) -> bool:
        """True if the query with cache key ``key`` is answered here (as :meth:`resolve`
        decides): a question of a class other than IN when they are refused (else such
        a question is passed on, whatever its name), or a name :meth:`covers_wire`
        covers."""
        if key[-3] or key[-2] != 1:  # qclass != IN
            # QCLASS ANY: the handler's message path asks it as IN (never the wire paths)
            return self.refuse_other_classes or (key[-2] == 255 and not key[-3])
        return self.covers_wire(key[:-5])

    def covers_wire(self, name: bytes) -> bool:
        """True if the lower-cased wire-form ``name`` is answered here (in a local zone
        or under resolver.arpa), so the wire-level forwarding path must not take it.

        Once per forwarded query: a name under a local origin ends with the wire form of
        the origin's last two labels (``in-addr.arpa``, ``onion``, ``example.com``: a
        few endings for the many default zones), so one ``bytes.endswith`` (C) rules out
        almost every name; only one that ends so is walked label by label (the ending
        may sit inside a label)."""
        if name in self._exact:
            return True
        suffixes = self._suffix_cache
        if suffixes is None:
            suffixes = self._suffixes
        if not name.endswith(self._suffix_tuple):
            return False
        pos = 0
        forwarded = self._forwarded_wire
        while pos < len(name):
            if name[pos:] in suffixes:
                return True
            if forwarded and name[pos:] in forwarded:
                return False
            pos += 1 + name[pos]
        return False

    @property
    def _suffixes(self) -> frozenset[bytes]:
        if self._suffix_cache is None:
            names = [z.origin for z in self._zones] + [RESOLVER_ARPA]
            self._suffix_cache = frozenset((n.to_wire() or b"").lower() for n in names)
            # the endings the shortcut checks: each origin's last two labels
            self._suffix_tuple = tuple({
                (dns.name.Name(n.labels[-3:]).to_wire() or b"").lower() for n in names})
        return self._suffix_cache

    def _typed_zone(self, qname: dns.name.Name) -> tuple[dns.name.Name, str] | None:
        """The typed zone (its name, its type) that decides for ``qname``, or None when
        a zone, a forwarded name or nothing does."""
        name = _wire(qname)
        walk = self._walk
        pos = index = 0
        end = len(name)
        while pos < end:
            kind = walk.get(name[pos:])
            if kind is not None:
                if kind in (_ZONE, _FORWARDED):
                    return None
                return dns.name.Name(qname.labels[index:]), kind
            pos += 1 + name[pos]
            index += 1
        return None

    def _find(self, qname: dns.name.Name) -> _Zone | None:
        if not self._forwarded:
            return enclosing(qname, self._by_origin)  # the longest origin at or above qname
        return _nearest(qname, self._by_origin)  # a forwarded name: None

    async def resolve(self, request: Request) -> dns.message.Message:
        query = request.message
        question = query.question[0]
        qname = question.name
        if question.rdclass == dns.rdataclass.IN:
            typed = self._typed_zone(qname) if self._typed else None
            if typed is not None:
                origin, kind = typed
                response = self._answer_typed(origin, kind, query,
                                              request.transport.is_stream)
                if response is None:
                    return await self._next.resolve(request)
                self.zone_answers[kind] += 1
                if kind in ("deny", "always_deny") and response.rcode():
                    return response  # REFUSED over a stream only: not kept
                return self._remember(query, response)
            zone = self._find(qname)
            if zone is not None:
                return self._remember(query, self._answer(zone, query))
            data = self._transparent.get(qname)
            if data is not None:
                return self._remember(query, self._answer_data(data, query))
            if qname.is_subdomain(RESOLVER_ARPA):
                return self._remember(query, self._answer_ddr(query))
        elif self.refuse_other_classes:
            return self._remember(query, error_response(
                query, dns.rcode.REFUSED, ede=dns.edns.EDECode.NOT_SUPPORTED,
                text=f"class {dns.rdataclass.to_text(question.rdclass)} is not served"))
        return await self._next.resolve(request)

    def _remember(self, query: dns.message.Message,
                  response: dns.message.Message) -> dns.message.Message:
        if len(query.question) == 1:
            self.answers.insert(key_from_message(query), response, _FROZEN)
        return response

    def _answer_ddr(self, query: dns.message.Message) -> dns.message.Message:
        response = make_response(query)
        question = query.question[0]
        if question.name != DDR_NAME:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.SVCB and self._ddr:
            rrset = response.find_rrset(response.answer, DDR_NAME, dns.rdataclass.IN,
                                        dns.rdatatype.SVCB, create=True)
            for rdata in self._ddr:
                rrset.add(rdata, ttl=300)
        return response

    def _answer_data(self, data: dict[int, dns.rrset.RRset],
                     query: dns.message.Message) -> dns.message.Message:
        """A transparent name's answer, as Unbound's: its RRsets of the type (all of
        them for ANY), else its CNAME, else NODATA (no SOA: there is no zone)."""
        response = make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        for rrset in _chosen(data, question.rdtype):
            response.answer.append(_rrset(question.name, rrset))
        return response

    def _answer_typed(self, origin: dns.name.Name, kind: str, query: dns.message.Message,
                      stream: bool) -> dns.message.Message | None:
        """The answer of typed zone ``origin`` of type ``kind`` to ``query``
        (:mod:`dnstls.resolver.zonetypes`); None: resolve it as usual. Raises
        QueryDropped for ``deny`` over UDP."""
        if kind == "always_transparent":
            return None
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        data: dict[int, dns.rrset.RRset] | None = None
        if not kind.startswith("always_") or kind == "always_null":
            data = self._transparent.get(origin if kind == "redirect" else qname)
            if data is not None:
                # ANY: Unbound's local-zone types find no RRset of "type ANY" (measured:
                # NODATA, REFUSED... as for a missing type); transparent names outside
                # typed zones answer ANY with their records (_answer_data)
                chosen = _chosen(data, qtype) if qtype != dns.rdatatype.ANY else []
                if chosen:
                    response = make_response(query)
                    response.flags |= dns.flags.AA
                    for rrset in chosen:
                        response.answer.append(_rrset(qname, rrset))
                    return response
        if kind == "typetransparent" or (kind in ("transparent", "nodefault")
                                         and data is None):
            return None
        if kind in ("deny", "always_deny"):
            if not stream:
                self.zone_answers[kind] += 1
                raise QueryDropped(kind)
            refused = error_response(query, dns.rcode.REFUSED, ede=dns.edns.EDECode.BLOCKED,
                                     text=f"blocked ({kind})")
            refused.flags |= dns.flags.AA  # as refuse's
            return refused
        response = make_response(query)
        response.flags |= dns.flags.AA
        if kind in ("refuse", "always_refuse"):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if kind == "always_null":
            null = {dns.rdatatype.A: _NULL_A, dns.rdatatype.AAAA: _NULL_AAAA}.get(qtype)
            if null is not None:
                rrset = dns.rrset.RRset(qname, dns.rdataclass.IN, qtype)
                rrset.add(null, ttl=NULL_TTL)
                response.answer.append(rrset)
            return response
        if kind == "always_nxdomain" or (kind == "static" and data is None
                                         and qname not in self._ents):
            response.set_rcode(dns.rcode.NXDOMAIN)
        soa = self._transparent.get(origin, {}).get(dns.rdatatype.SOA)
        if soa is not None:  # local data's SOA at the zone name: its negative TTL
            negative = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.SOA)
            negative.update(soa)  # type: ignore[no-untyped-call]
            negative.ttl = min(soa.ttl, soa[0].minimum)
            response.authority.append(negative)
        return response

    def _answer(self, zone: _Zone, query: dns.message.Message) -> dns.message.Message:
        response = make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        for _ in range(MAX_CNAME_CHAIN + 1):
            cut = zone.delegation(qname)
            if cut is not None:
                response.flags &= ~dns.flags.AA
                response.authority.append(cut)
                return response
            owner = qname
            if qname not in zone.names:
                wildcard = zone.wildcard(qname)
                if wildcard is None:
                    if not response.answer:
                        response.set_rcode(dns.rcode.NXDOMAIN)
                    response.authority.append(zone.negative_soa())
                    return response
                owner = wildcard
            node = zone.zone.get_node(owner)
            if node is None:  # empty non-terminal
                response.authority.append(zone.negative_soa())
                return response
            if qtype == dns.rdatatype.ANY:
                for rdataset in node.rdatasets:
                    response.answer.append(_rrset(qname, rdataset))
                return response
            rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
            if rdataset is not None:
                response.answer.append(_rrset(qname, rdataset))
                return response
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                response.authority.append(zone.negative_soa())
                return response
            response.answer.append(_rrset(qname, cname))
            target = cname[0].target
            if not target.is_subdomain(zone.origin):
                return response
            qname = target
        return response


def _wire(name: dns.name.Name) -> bytes:
    """``name`` in lower-cased wire form (as cache keys hold it)."""
    return (name.to_wire() or b"").lower()


def _chosen(data: dict[int, dns.rrset.RRset], qtype: int) -> list[dns.rrset.RRset]:
    """Local data's RRsets for ``qtype``: all of them for ANY, else the type's, else the
    CNAME, else none (local_data_answer in Unbound's localzone.c)."""
    if qtype == dns.rdatatype.ANY:
        return list(data.values())
    found = data.get(qtype) or data.get(dns.rdatatype.CNAME)
    return [found] if found is not None else []


def _rrset(owner: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(owner, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)  # type: ignore[no-untyped-call]
    return rrset


def ddr_records(auth_name: str, port: int) -> list[dns.rdata.Rdata]:
    """The SVCB record of RFC 9462 §4 for a DoT endpoint (``alpn=dot``, ``port``)."""
    target = dns.name.from_text(auth_name)
    text = f"1 {target.to_text()} alpn=dot" + ("" if port == 853 else f" port={port}")
    return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SVCB, text)]


def _record_lines(owner: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> list[str]:
    kind = dns.rdatatype.to_text(rdataset.rdtype)
    klass = dns.rdataclass.to_text(rdataset.rdclass)
    return [f"{owner}\t{rdataset.ttl}\t{klass}\t{kind}\t{rdata.to_text()}"
            for rdata in rdataset]
