"""The answer cache: a sans-IO store of rendered responses, and the stage that uses it.

What is stored (and what is not)
--------------------------------
An entry is keyed by :mod:`dnstls.proto.cachekey` (name case-insensitively, QTYPE,
QCLASS, DO, CD). It is cached only if the response's question matches the query's, TC
is clear (a truncated answer is incomplete), it carries no EDE 3 "Stale Answer" or
EDE 19 "Stale NXDOMAIN Answer" (someone else's stale data must not be made fresh), and
its RCODE is one of:

* NOERROR with data (or a referral: NS in authority, no SOA): lives for the smallest
  TTL in the message, each TTL first clamped to ``[min_ttl, max_ttl]``.
* NXDOMAIN, or NOERROR without an RRset of the QTYPE (NODATA), with an SOA in the
  authority section (RFC 2308 §5; without an SOA it is not cached): every TTL is capped
  at min(SOA TTL, SOA MINIMUM) (RFC 2308 §3), itself capped at ``max_negative_ttl`` and
  ``max_ttl``; ``min_ttl`` does not lengthen negative answers.
* SERVFAIL, whether returned as a message or raised by the next stage as a
  :class:`ResolveFailure`: for ``servfail_ttl`` seconds (RFC 9520 §3.2 asks for at least
  1 s; the default is 2), so a failing name does not hammer the upstreams.

Entries are bounded by count and by wire bytes together, evicting the least recently
used; an answer that alone exceeds the byte bound is not stored. Expired entries go
when a lookup finds them, when LRU reaches them, or by :meth:`Cache.purge`.

The hot path: patching bytes
----------------------------
Every insert goes through the response's wire bytes (:meth:`Cache.insert` renders a
message once; :meth:`Cache.insert_wire` takes bytes as they came from an upstream). One
bounds-checked walk checks the question against the key, classifies the answer, finds
the SOA's MINIMUM and records the offset of every RR's TTL field. The OPT RR (it must
be the last record; OPT's TTL field holds flags, not a TTL) is cut off and kept apart
as a plain one: our payload size, the query's DO bit (RFC 3225 §3) and of the
response's options only its Extended DNS Errors (RFC 8914), as the message path relays
them (:func:`dnstls.resolver.forward.client_response`): options are hop-by-hop (RFC
6891 §6.1.1) -- padding, keepalive, COOKIE and Client Subnet belong to one transport or
one client (the listener adds its own), an NSID names the upstream's server, and Unbound
and Knot Resolver relay none of them either. A hit for a new query then
costs a copy and a few ``pack_into`` calls, no dnspython parse:

* the 2-byte ID is replaced by the query's, the RD bit is echoed (RFC 1035 §4.1.1);
* the question's owner name, always uncompressed at offset 12 and the same length as
  the query's (they have the same key), is overwritten with the query's bytes, so the
  answer echoes the query's letter case (0x20); names compressed to it follow;
* every TTL becomes max(0, stored TTL - whole seconds in cache) (RFC 1035 §3.2.1,
  RFC 2308 §5 for the SOA of a negative answer);
* the OPT is appended (ARCOUNT + 1) only if the query had EDNS (RFC 6891 §7), with any
  extra options the listener passes and optional RFC 7830 padding to a block size.

:meth:`Cache.lookup_wire` is that path for the listener; :class:`CacheStage` uses the
same bytes and parses them, so the two paths cannot disagree.

Minimal responses (``cache.minimal_responses``, on in the service)
------------------------------------------------------------------
As Unbound's ``minimal-responses: yes`` and Knot Resolver, a forwarded answer is kept
and relayed without the sections it does not need (:func:`_parse_response` cuts the
bytes, :func:`minimise` the message path's answers), so every path -- miss, hit, exact
memo, serve-stale, caching off -- serves the same cut:

* a query with DO: the positive answer below is cut the same way unless its authority
  section holds NSEC or NSEC3 records (a wildcard's proof, RFC 4035 §3.1.3.3), as
  Unbound's ``positive_answer``; every other answer keeps every section (the proofs of
  a denial live in the authority section); DO is part of the cache key, so a DO query
  never meets an entry cut for a query without it;
* NOERROR with an RRset of the QTYPE in the answer section (Unbound's
  ``positive_answer``): the answer section only, NSCOUNT and ARCOUNT 0 -- but for
  QTYPE NS, whose answer keeps the addresses of the name servers in the additional
  section, as Unbound's does;
* a referral (NOERROR without such an RRset, NS in the authority section and no SOA:
  an upstream that answered with a delegation): every section, the NS RRset and its
  glue, as Unbound relays it; it is cached for its records' TTLs like a positive answer;
* NXDOMAIN, or NOERROR without such an RRset otherwise (NODATA, a CNAME chain that
  ends without the data): the answer and authority sections (the SOA that negative
  caching needs, RFC 2308), the additional section dropped;
* other RCODEs: unchanged. The OPT RR is always the client's own, as before.

Only whole trailing sections are cut, never a record in the middle: a compression
pointer only points backwards, so the kept bytes never refer to what was cut. The
entry's TTLs (and so its lifetime, the minimum) are those of the kept records only.
Local data also keeps its answers in a :class:`Cache`, with this off: it is
authoritative data, served as written.

Serve-stale (RFC 8767), off by default
--------------------------------------
With ``serve_stale`` an expired entry is kept for ``stale_ttl`` more seconds. It is not
served while the next stage might answer: a lookup past expiry is a miss. Only when the
next stage fails (raises a SERVFAIL :class:`ResolveFailure` or returns SERVFAIL) does
:class:`CacheStage` answer from it, with every TTL set to 30 s (RFC 8767 §4) and
EDE 3 "Stale Answer" (RFC 8914 §4.4; EDE 19 "Stale NXDOMAIN Answer" for a stale
NXDOMAIN, §4.20). The failure is remembered for ``servfail_ttl`` as it would be without
a stale entry (the "failure recheck" of RFC 8767 §4): meanwhile lookups, including
:meth:`Cache.lookup_wire`, serve the stale answer directly. A SERVFAIL never replaces
an entry kept for serve-stale.

Prefetch (Unbound's ``prefetch: yes``), off by default
------------------------------------------------------
With ``prefetch`` every positive or negative entry gets, at insert, the time at which
less than a tenth of its TTL is left: ``inserted + (ttl - ttl // 10)`` in whole seconds
(Unbound's ``PREFETCH_TTL_CALC``; an entry of TTL below 10 s gets none), kept in the
entry (``refresh_at``, else equal to ``expires``), so a fresh hit costs the same one
comparison with or without prefetch. The first hit at or after it is answered from the
entry as usual (its TTLs still counting down) and calls ``on_prefetch(key)``, which
starts a background refresh (:class:`dnstls.resolver.prefetch.Prefetcher`); the entry
then asks no more (one prefetch per entry; again only if there was no room for it).
The refreshed answer replaces the entry with its full TTL; a failed refresh (an
exception, a SERVFAIL) changes nothing. SERVFAIL entries and local data are never
prefetched. An exact-repeat memo item ends at the prefetch time, so that hit takes
the full path.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from dnstls.proto import edns as _edns
from dnstls.proto.answers import EDNS_PAYLOAD, error_response
from dnstls.proto.cachekey import KEY_AD, KEY_CD, KEY_DO, CacheKey, key_from_message
from dnstls.resolver.base import Request, ResolveFailure, Resolver

log = logging.getLogger("dnstls.resolver.cache")

STALE_TTL = 30  # RFC 8767 §4: TTL of a record served stale
#: What ``Cache.on_prefetch`` returns (see "Prefetch" in the module docstring)
PREFETCH_STARTED = 1
PREFETCH_RUNNING = 0
PREFETCH_NO_ROOM = -1
_HEADER = struct.Struct("!HHHHHH")
_TTL = struct.Struct("!I")
_RR_FIXED = struct.Struct("!HHIH")
_OPTION = struct.Struct("!HH")
_MINIMAL_COUNTS = struct.Struct("!HHH")  # ANCOUNT, NSCOUNT, ARCOUNT
_STALE_EDE_CODES = frozenset({int(dns.edns.EDECode.STALE_ANSWER),
                              int(dns.edns.EDECode.STALE_NXDOMAIN_ANSWER)})
_EDE_STALE_WIRE = _OPTION.pack(int(_edns.EDE), 2) + struct.pack(
    "!H", int(dns.edns.EDECode.STALE_ANSWER))
_EDE_STALE_NXDOMAIN_WIRE = _OPTION.pack(int(_edns.EDE), 2) + struct.pack(
    "!H", int(dns.edns.EDECode.STALE_NXDOMAIN_ANSWER))
_POSITIVE, _NEGATIVE, _SERVFAIL = "positive", "negative", "servfail"
_UNCACHEABLE = "uncacheable"  # relayed once (respond_wire), never stored
_CACHEABLE_RCODES = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL})
#: Options whose data is UTF-8 text (RFC 8914 EDE after its code; RFC 8914's
#: language and the filtering options): dnspython, so the message path, refuses the
#: whole message if it is not, so the wire path does too (though it relays only EDE).
_TEXT_OPTIONS = frozenset({22, 23, 24, 25})
_OPCODE_MASK = 0x7800
_QR = 0x8000  # int masks: `flags & dns.flags.QR` builds an enum member (~1 µs)
_TC = 0x0200
_RCODE_SERVFAIL = int(dns.rcode.SERVFAIL)
_RCODE_NOERROR = int(dns.rcode.NOERROR)
_CACHEABLE_RCODE_INTS = frozenset(int(r) for r in _CACHEABLE_RCODES)
_OPT_HEADS = (b"\x00" + struct.pack("!HHI", int(dns.rdatatype.OPT), EDNS_PAYLOAD, 0),
              b"\x00" + struct.pack("!HHI", int(dns.rdatatype.OPT), EDNS_PAYLOAD, 0x8000))
_OPT_TYPE = int(dns.rdatatype.OPT)
_TSIG_TYPE = int(dns.rdatatype.TSIG)
_SOA_TYPE = int(dns.rdatatype.SOA)
_NS_TYPE = int(dns.rdatatype.NS)
_NSEC_TYPE = int(dns.rdatatype.NSEC)
_NSEC3_TYPE = int(dns.rdatatype.NSEC3)
_ANY = int(dns.rdatatype.ANY)
_EDE_CODE = int(_edns.EDE)
_MAX_TTL = 0x7FFFFFFF  # RFC 2181 §8
_MAX_POINTERS = 16  # per name: dnspython's MAX_COMPRESSION_POINTER_CHAIN
_NAME = 0  # a name, compression pointers allowed
_PLAIN_NAME = -1  # a name without compression pointers
_STRINGS = -2  # <character-string>s to the end
#: The RDATA a client's parser checks for the common types, as fields (see
#: :func:`_rdata_fits`): the RFC 1035 types (their names may be compressed, RFC 3597
#: §4), AAAA, SRV (compressed names read, as dnspython and RFC 3597 §4 do), RP, AFSDB,
#: RT, KX and DNAME (names read uncompressed, as dnspython does) and SPF. Other types
#: are relayed as sent (RFC 3597: opaque).
_RDATA_SHAPES: dict[int, tuple[int, ...]] = {
    1: (4,), 28: (16,), 33: (6, _NAME), 36: (2, _PLAIN_NAME),  # class IN only
    2: (_NAME,), 3: (_NAME,), 4: (_NAME,), 5: (_NAME,), 7: (_NAME,), 8: (_NAME,),
    9: (_NAME,), 12: (_NAME,), 39: (_PLAIN_NAME,), 6: (_NAME, _NAME, 20),
    14: (_NAME, _NAME), 17: (_NAME, _NAME), 15: (2, _NAME), 18: (2, _PLAIN_NAME),
    21: (2, _PLAIN_NAME), 16: (_STRINGS,), 99: (_STRINGS,)}
_CLASS_IN_SHAPES = frozenset({1, 28, 33, 36})
_PADDING_CODE = int(_edns.PADDING)


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    stale_served: int
    #: prefetches started (Unbound's ``num.prefetch``; see "Prefetch")
    prefetches: int = 0


@dataclass(frozen=True, slots=True)
class Hit:
    """A cache answer: the wire bytes, whether stale, and the failure to re-raise, if any."""

    wire: bytes
    stale: bool
    failure: ResolveFailure | None


class _Entry:
    """A stored answer. ``body`` holds the TTLs of age ``age`` (whole seconds since
    ``inserted``): :func:`_render` re-ages it in place when a lookup comes in a later
    second, so the hits of one second share that work (``ttls`` keeps the originals).
    The ``*_wire`` and view attributes are the body's fixed pieces, for joining."""

    __slots__ = ("age", "arcount_edns_wire", "arcount_wire", "body", "expires",
                 "failed_until", "failure", "inserted", "kind", "memo_edns", "memo_mids",
                 "memo_options", "memo_pad", "memo_padding", "memo_tail", "mid_wire",
                 "name_view", "offsets", "opt_head", "opt_rdata", "qname_len",
                 "refresh_at", "serial", "size", "ttls")

    def __init__(self, body: bytearray, offsets: tuple[int, ...], ttls: tuple[int, ...],
                 opt_head: bytes, opt_rdata: bytes, kind: str, inserted: float,
                 lifetime: float, failure: ResolveFailure | None, qname_len: int,
                 qname: bytes) -> None:
        # ``body`` is owned from here on (the parse made it; nobody else holds it).
        self.body = body
        self.age = 0
        self.offsets = offsets
        self.ttls = ttls
        self.qname_len = qname_len
        self.mid_wire = bytes(body[3:10])  # flags (2nd byte), QDCOUNT, ANCOUNT, NSCOUNT
        self.arcount_wire = bytes(body[10:12])
        self.arcount_edns_wire = (((body[10] << 8) | body[11]) + 1).to_bytes(2, "big")
        # The question name as bytes (the parse's slice of the response: the body's
        # bytes 12 to 12 + qname_len), not a view: nothing writes to an entry's
        # question name (only _aged writes to its body, TTLs after the question), and
        # bytes are not tracked by the cyclic GC (a memoryview is, ~200 bytes each): one
        # GC-tracked object less per cached answer. Nor is a view of the rest kept (a
        # view and its managed buffer: two tracked objects): _render and _memo take one
        # when they need it (a hit reuses memo_tail), so the entry is its only tracked
        # object -- each kept one is traversed by every full collection while cached.
        self.name_view = qname
        self.opt_head = opt_head
        self.opt_rdata = opt_rdata
        self.kind = kind
        self.inserted = inserted
        self.expires = inserted + lifetime
        #: When a hit asks for a prefetch (Cache docstring, "Prefetch"): ``expires``
        #: unless the cache prefetches and set it earlier at insert time, and again
        #: ``expires`` once the entry's prefetch is under way -- so a hit's one
        #: comparison ``now >= refresh_at`` covers both "expired" and "prefetch due".
        self.refresh_at = self.expires
        self.failure = failure
        self.failed_until = _NEG_INF  # a constant: no float("-inf") call per entry
        # Counted twice against max_bytes: the answer and the one rendering a fresh hit
        # keeps (memo_tail, about the answer's size less its header and name), so the
        # bound holds whatever is hit.
        self.size = 2 * (len(body) + len(opt_head) + 2 + len(opt_rdata))
        # The last fresh rendering (see lookup_wire): None until a hit, dropped on re-age.
        self.memo_tail: bytes | None = None
        self.memo_mids: tuple[bytes, bytes] = (b"", b"")
        self.memo_edns = False
        self.memo_options = b""
        self.memo_pad = 0
        self.memo_padding = b""
        # Unique over every entry of every cache (ExactMemo's saved answers name their
        # entry by key and serial: a replaced or evicted entry never matches again).
        self.serial = _next_serial()


_SERIALS = itertools.count(1)
_next_serial = _SERIALS.__next__
#: What an ExactMemo item costs besides the contents of its three byte strings (dict
#: slot, two tuples, the length prefix, floats and ints, the bytes objects' headers:
#: ~430 bytes), rounded up; counted against its byte bound.
_EXACT_OVERHEAD = 512
_EXACT_MARGIN = 1e-3
#: ExactMemo's judgement: over this many failed lookups; how many queries it then rests
#: for, doubled after each failed judgement in a row up to EXACT_REST_MAX (a cold cache
#: or a change of traffic costs a short rest; a flood of queries that never repeat,
#: ever longer ones)
EXACT_WINDOW = 1024
EXACT_REST = 4096
EXACT_REST_MAX = 262144
_MAX_MESSAGE = 65535
_INF = float("inf")
_NEG_INF = float("-inf")


class ExactMemo:
    """Saved answers for exact queries, for one listener transport (TCP or TLS): the
    query's bytes after its ID -> the answer's bytes after its ID, valid exactly while
    the cache entry's memoised rendering would give the same bytes.

    An answer from :meth:`Cache.lookup_wire` depends on the query only through the
    bytes after its ID (RD, the name's case, EDNS, padding, keepalive) and on the
    listener's transport (keepalive value, padding block: one memo per transport), and
    on the entry only through its identity and its age in whole seconds. So an item
    saved by a fresh hit (:meth:`Cache.lookup_wire` with ``memo``) names the entry by
    key and serial and the span of time in which the entry is fresh and of the age it was
    rendered at (less a millisecond at both ends, against float rounding);
    :meth:`Cache.lookup_exact` serves it only within that span while the same entry (not
    replaced, not evicted) is in the cache, and does what a fresh hit does to the cache
    (LRU order, hit count). Anything else falls back to the full path, which saves a new
    item.

    Bounded: at most ``max_items`` items and ``max_bytes`` (the query, key and answer
    bytes plus a fixed overhead per item); when a new item would pass either bound, the
    table is emptied (items of replaced or evicted entries go with it). Queries whose
    bytes differ per client or per query (COOKIE options) are not saved by the handler.
    When, over :data:`EXACT_WINDOW` lookups that found nothing, it answered fewer
    queries than that (queries that do not repeat exactly, or cache misses), the table
    is emptied and ``resting`` tells the owner to neither look up nor save for
    :data:`EXACT_REST` queries (doubled for each such window in a row, up to
    :data:`EXACT_REST_MAX`): then the memo costs next to nothing where it does not
    help.
    """

    __slots__ = ("counts", "hits", "max_bytes", "max_items", "misses", "rest", "resting",
                 "size", "table")

    def __init__(self, max_items: int = 10_000, max_bytes: int = 4 << 20) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        #: exact -> (key, serial, since, until, (length prefix, rest), answer length,
        #: RCODE)
        self.table: dict[bytes, tuple[CacheKey, int, float, float, tuple[bytes, bytes],
                                      int, int]] = {}
        self.size = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        #: answers given by :meth:`Cache.answer_exact`, by RCODE (the owner collects them)
        self.counts = [0] * 16
        # Answers given and lookups that found none, in the current window of
        # EXACT_WINDOW of the latter: see judge().
        self.misses = self.hits = self.resting = 0
        self.rest = 0  # the last rest, doubled by the next failed judgement

    def __len__(self) -> int:
        return len(self.table)

    def save(self, exact: bytes, key: CacheKey, serial: int, since: float, until: float,
             rest: bytes) -> None:
        """Keep ``rest`` (the answer after its ID) for ``exact`` while the entry
        ``key``/``serial`` is there, for ``since <= now < until``."""
        length = len(rest) + 2
        size = len(exact) + len(key) + length + _EXACT_OVERHEAD
        table = self.table
        old = table.get(exact)
        if old is not None:  # a replacement (the entry was re-aged or replaced)
            self.size -= len(exact) + len(old[0]) + old[5] + _EXACT_OVERHEAD
        elif len(table) >= self.max_items or self.size + size > self.max_bytes:
            table.clear()
            self.size = 0
        if self.size + size > self.max_bytes or length > _MAX_MESSAGE:
            # past the bound even now (or alone), or too long to frame for a stream
            # (never the case for a cached answer): not kept
            if old is not None:
                del table[exact]
            return
        # The framed answer is length + ID + rest: ``id.join((length, rest))``, one copy.
        table[exact] = (key, serial, since, until, (length.to_bytes(2, "big"), rest),
                        length, rest[1] & 0xF)
        self.size += size

    def judge(self) -> None:
        """At the end of a window: when the memo answered fewer queries than it failed
        to answer (queries that do not repeat exactly -- a client randomising the
        name's case, say -- or that the cache does not answer), empty it and tell the
        owner to leave it alone (no lookups, no saves) for a while: EXACT_REST queries,
        twice the last rest if the last window failed too, at most EXACT_REST_MAX."""
        if self.hits < self.misses:
            self.rest = self.resting = min(max(EXACT_REST, self.rest * 2), EXACT_REST_MAX)
            self.table.clear()
            self.size = 0
        else:
            self.rest = 0
        self.misses = self.hits = 0


class Cache:
    """Sans-IO answer cache; every method that depends on time takes ``now``."""

    def __init__(self, *, max_entries: int = 100_000, max_bytes: int = 64 << 20,
                 min_ttl: int = 0, max_ttl: int = 86400, max_negative_ttl: int = 3600,
                 servfail_ttl: float = 2.0, serve_stale: bool = False,
                 stale_ttl: float = 86400, minimal_responses: bool = False,
                 prefetch: bool = False) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError("need 0 <= min_ttl <= max_ttl")
        if max_negative_ttl < 0 or stale_ttl < 0:
            raise ValueError("max_negative_ttl and stale_ttl must not be negative")
        if not 1 <= servfail_ttl <= 5:
            raise ValueError("servfail_ttl must be between 1 and 5 seconds")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.servfail_ttl = servfail_ttl
        self.serve_stale = serve_stale
        self.stale_ttl = stale_ttl
        #: Keep and render forwarded answers without the sections they do not need
        #: (module docstring, "Minimal responses"). Off here (local data stores its
        #: answers in a Cache too and must be served as written); the service's caches
        #: get the configured value (``cache.minimal_responses``, on by default).
        self.minimal_responses = minimal_responses
        #: Entries get a prefetch time at insert (module docstring, "Prefetch"); a hit
        #: at or after it calls ``on_prefetch(key)`` once (set by the owner, the
        #: :class:`~dnstls.resolver.prefetch.Prefetcher`): it returns
        #: :data:`PREFETCH_STARTED`, :data:`PREFETCH_RUNNING` (one for the key is in
        #: flight already) or :data:`PREFETCH_NO_ROOM` (not started: a later hit asks
        #: again).
        self.prefetch = prefetch
        self.on_prefetch: Callable[[CacheKey], int] | None = None
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0
        #: False for :meth:`storing_nothing`: :meth:`respond_wire` then renders the
        #: validated answer straight from the parse, without an entry to throw away.
        self.stores = True
        #: True for local data's answer store: a negative answer without SOA (a
        #: transparent name's NODATA, a blocked name's NXDOMAIN or REFUSED) is kept too,
        #: for ``max_negative_ttl`` -- a forwarded one may not be (RFC 2308 §5).
        self.keeps_all = False
        self._hits = self._misses = self._evictions = self._stale_served = 0
        self._prefetches = 0
        #: The last response :meth:`check_wire` read, and its reading: taken (once) by
        #: :meth:`respond_wire` for the same bytes object, so that checking an answer
        #: in the forwarder costs no second walk.
        self._checked: bytes | None = None
        self._checked_parse: _Parsed | None = None

    @classmethod
    def storing_nothing(cls, *, minimal_responses: bool = False) -> Cache:
        """A cache that validates and renders (:meth:`respond_wire`) but keeps nothing:
        for the wire-level forwarding path when caching is switched off."""
        cache = cls(max_entries=1, max_bytes=1, minimal_responses=minimal_responses)
        cache.stores = False
        return cache

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(hits=self._hits, misses=self._misses,
                               evictions=self._evictions, entries=len(self._entries),
                               bytes=self._bytes, stale_served=self._stale_served,
                               prefetches=self._prefetches)

    # -- lookups -----------------------------------------------------------------------

    def lookup_wire(self, key: CacheKey, query_id: int, now: float, rd: bool = True,
                    qname: bytes | None = None, edns: bool = True, options: bytes = b"",
                    pad_block: int = 0, memo: ExactMemo | None = None,
                    exact: bytes = b"") -> bytes | None:
        """The listener's fast path: response bytes for a new query, or None on a miss.

        ``qname`` is the query's owner name as sent (echoed for 0x20), ``edns`` whether
        the query had an OPT RR; ``options`` are rendered EDNS options to add (e.g.
        keepalive) and ``pad_block`` pads the response to a multiple of it (RFC 7830).
        The caller still enforces its UDP size limit. A cached failure is answered
        with its SERVFAIL bytes. (Positional arguments are allowed: the listener's fast
        path calls it for every query, and keywords cost there.)

        With ``memo``, a fresh hit's answer (after its ID) is also saved there under
        ``exact``, the query's bytes after its ID (see :class:`ExactMemo`).
        """
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        if now >= entry.refresh_at:  # expired, or (rarely) a prefetch is due
            if now >= entry.expires:  # stale or gone: the general path decides and counts
                found = self._serveable(key, now)
                if found is None:
                    return None
                entry, stale = found
                return _render(entry, query_id, now, stale, rd, qname, edns, options,
                               pad_block)
            self._prefetch_due(key, entry)
        self._entries.move_to_end(key)
        self._hits += 1
        # A fresh hit, rendered here (one call less): everything after the question
        # name -- the aged records, the OPT with its options and padding -- depends only
        # on the entry's age and on (EDNS, options, block size), so it is rendered once
        # (_memo) and reused until the next re-age or a query of another shape; a hit
        # joins five pieces: the ID, the header's middle (flags with the query's RD and
        # the counts), the query's name, that tail and the PADDING option if any (one
        # object per length, shared). One rendering is kept per entry (about the size
        # of its answer). _render is the reference.
        age = int(now - entry.inserted)
        if age < 0:
            age = 0
        if age != entry.age:
            _aged(entry, age)
        tail = entry.memo_tail
        if (tail is None or entry.memo_pad != pad_block or entry.memo_edns != edns
                or entry.memo_options != options):
            tail = _memo(entry, edns, options, pad_block)
        name = (qname if qname is not None and len(qname) == entry.qname_len
                else entry.name_view)
        if memo is None:
            return b"".join(((query_id & 0xFFFF).to_bytes(2, "big"),
                             entry.memo_mids[1 if rd else 0], name, tail,
                             entry.memo_padding))
        rest = b"".join((entry.memo_mids[1 if rd else 0], name, tail, entry.memo_padding))
        # Valid while int(now - inserted) stays ``age`` and the entry is fresh, with a
        # margin at both ends of the second (float rounding): outside it, the full path.
        since = entry.inserted + age
        # (refresh_at: at most expires, and the memo must not answer past a prefetch
        # time: the hit there asks for the prefetch)
        memo.save(exact, key, entry.serial, since + _EXACT_MARGIN if age else -_INF,
                  min(entry.refresh_at, since + 1 - _EXACT_MARGIN), rest)
        return (query_id & 0xFFFF).to_bytes(2, "big") + rest

    def lookup_exact(self, memo: ExactMemo, exact: bytes, wire: bytes, now: float,
                     ) -> bytes | None:
        """The answer :meth:`lookup_wire` would give the query ``wire`` (``exact`` is
        ``wire[2:]``), from ``memo``; None (nothing counted in the cache, nothing
        changed) when it has no valid item for it: then the full path decides."""
        saved = memo.table.get(exact)
        if saved is not None:
            key, serial, since, until, framed, _, _ = saved
            # fresh and of the same age (in whole seconds), and the same entry (neither
            # evicted nor replaced)
            if since <= now < until:
                entries = self._entries
                entry = entries.get(key)
                if entry is not None and entry.serial == serial:
                    entries.move_to_end(key)
                    self._hits += 1
                    memo.hits += 1
                    return wire[:2] + framed[1]
        memo.misses += 1
        if memo.misses >= EXACT_WINDOW:
            memo.judge()
        return None

    def answer_exact(self, memo: ExactMemo, messages: list[bytes], start: int,
                     out: list[bytes], now: float) -> tuple[int, int]:
        """:meth:`lookup_exact` for ``messages[start:]`` in order, as long as it answers:
        each answer framed for a stream (RFC 7766 length prefix) and appended to ``out``,
        counted by RCODE in ``memo.counts``. Returns the index of the first message it
        did not answer (``len(messages)`` if none) and the size of the answers appended
        without their prefixes. One call per run of answers: a pipelined read of
        repeats costs no Python call per message."""
        get_saved = memo.table.get
        entries = self._entries
        get_entry = entries.get
        move_to_end = entries.move_to_end
        append = out.append
        counts = memo.counts
        size = answered = others = 0
        for wire in messages if not start else messages[start:]:
            saved = get_saved(wire[2:])
            if saved is None:
                break
            key, serial, since, until, framed, length, rcode = saved
            if not since <= now < until:
                break
            entry = get_entry(key)
            if entry is None or entry.serial != serial:
                break
            move_to_end(key)
            append(wire[:2].join(framed))  # length, this query's ID, the rest
            size += length
            answered += 1
            if rcode:  # NOERROR is counted once for the run, below
                counts[rcode] += 1
                others += 1
        counts[0] += answered - others
        self._hits += answered
        memo.hits += answered
        return start + answered, size

    def lookup(self, key: CacheKey, query_id: int, now: float, *, rd: bool = True,
               qname: bytes | None = None, edns: bool = True, options: bytes = b"",
               pad_block: int = 0) -> Hit | None:
        """Like :meth:`lookup_wire`, also saying whether stale and which failure it was."""
        found = self._serveable(key, now)
        if found is None:
            return None
        entry, stale = found
        wire = _render(entry, query_id, now, stale, rd, qname, edns, options, pad_block)
        return Hit(wire, stale, entry.failure)

    def holds(self, key: CacheKey, now: float) -> bool:
        """True if a fresh answer for ``key`` is kept (nothing counted, nothing moved)."""
        entry = self._entries.get(key)
        return entry is not None and now < entry.expires

    def _serveable(self, key: CacheKey, now: float) -> tuple[_Entry, bool] | None:
        """The entry to answer from and whether it is stale; counts hits and misses."""
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        stale = now >= entry.expires
        if not stale and now >= entry.refresh_at:
            self._prefetch_due(key, entry)
        if stale:
            if not (self.serve_stale and entry.kind != _SERVFAIL
                    and now < entry.expires + self.stale_ttl):
                self._remove(key)
                self._misses += 1
                return None
            if now >= entry.failed_until:  # kept for a failure to come, not served now
                self._misses += 1
                return None
        self._entries.move_to_end(key)
        if stale:
            self._stale_served += 1
        else:
            self._hits += 1
        return entry, stale

    def _prefetch_due(self, key: CacheKey, entry: _Entry) -> None:
        """A fresh hit at or after ``entry``'s prefetch time: ask the owner to refresh
        ``key`` in the background, once per entry (unless there was no room for it)."""
        hook = self.on_prefetch
        if hook is None:
            entry.refresh_at = entry.expires
            return
        outcome = hook(key)
        if outcome != PREFETCH_NO_ROOM:
            entry.refresh_at = entry.expires
        if outcome == PREFETCH_STARTED:
            self._prefetches += 1

    def stale_after_failure(self, key: CacheKey, query_id: int, now: float, *,
                            rd: bool = True, qname: bytes | None = None, edns: bool = True,
                            options: bytes = b"", pad_block: int = 0) -> Hit | None:
        """The next stage failed: remember that, and return the stale answer if any.

        Returns None (and changes nothing) unless serve-stale is on and an expired
        entry is within its stale window.
        """
        entry = self._entries.get(key)
        if (not self.serve_stale or entry is None or entry.kind == _SERVFAIL
                or not entry.expires <= now < entry.expires + self.stale_ttl):
            return None
        entry.failed_until = now + self.servfail_ttl
        self._entries.move_to_end(key)
        self._stale_served += 1
        return Hit(_render(entry, query_id, now, True, rd, qname, edns, options, pad_block),
                   True, None)

    # -- inserts -----------------------------------------------------------------------

    def insert(self, key: CacheKey, response: dns.message.Message, now: float) -> bool:
        """Store ``response`` under ``key`` (the query's key) if it may be cached.

        Returns True if stored. Renders the message and goes through
        :meth:`insert_wire`, so both kinds of insert judge the same bytes. Rendered up
        to the 65,535 bytes a stream can carry, not to the asking query's EDNS payload
        (dnspython's default): the entry serves every later query, and a hit too long
        for a UDP client's payload is truncated for it (local data's large RRsets were
        dropped here, so every query for them took the message path again).
        """
        try:
            wire = response.to_wire(max_size=_MAX_MESSAGE)
        except Exception as exc:  # dnspython raises many types; the answer is just not kept
            log.debug("not caching: cannot render (%s)", type(exc).__name__)
            return False
        return self.insert_wire(key, wire, now)

    def insert_wire(self, key: CacheKey, wire: bytes, now: float, *,
                    failure: ResolveFailure | None = None) -> bool:
        """Store the response ``wire`` under ``key`` if it may be cached; True if stored."""
        parsed = _parse_response(wire, key, self.minimal_responses)
        if isinstance(parsed, str):
            log.debug("not caching: %s", parsed)
            return False
        entry = self._entry(key, parsed, now=now, failure=failure)
        return entry is not None and self._store(key, entry, now=now)

    def check_wire(self, key: CacheKey, wire: bytes) -> bool:
        """True if the upstream response ``wire`` is a well-formed answer for ``key``
        (what :meth:`respond_wire` accepts): the forwarder's check of an answer's body
        (:meth:`Forwarder.start_wire`), so that a malformed one fails that attempt.
        The reading is kept for :meth:`respond_wire` of the same bytes."""
        parsed = _parse_response(wire, key, self.minimal_responses)
        if isinstance(parsed, str):
            log.debug("upstream response rejected: %s", parsed)
            return False
        self._checked = wire
        self._checked_parse = parsed
        return True

    def respond_wire(self, key: CacheKey, wire: bytes, now: float, query_id: int,
                     rd: bool = True, qname: bytes | None = None, edns: bool = True,
                     options: bytes = b"", pad_block: int = 0) -> bytes | None:
        """The forwarder's wire path: validate an upstream response for ``key``, keep it
        if it may be cached, and render it for this query (as :meth:`lookup_wire` would).

        None if ``wire`` is not a well-formed answer to the question: never relay it.
        """
        parsed: _Parsed | str
        checked = self._checked_parse
        if checked is not None and wire is self._checked:  # read by check_wire just now
            parsed = checked
            self._checked = self._checked_parse = None
        else:
            parsed = _parse_response(wire, key, self.minimal_responses)
        if isinstance(parsed, str):
            log.debug("upstream response rejected: %s", parsed)
            return None
        # Our header, not the upstream's: AA only for local zones (we are no authority
        # for what we forward; an authoritative upstream such as nsd sets it), RA set
        # (recursion is available here; nsd clears it), Z clear, CD the query's (RFC
        # 4035 §3.1.6; in the key; nsd does not copy it) -- as Unbound 1.17 answers,
        # and as the message path's client_response builds it.
        body = parsed.body
        body[2] &= 0xFB
        body[3] = (body[3] & 0x2F) | (0x90 if key[-1] & KEY_CD else 0x80)
        if not self.stores:
            # Caching off: the same classification and TTL bounds as an entry would
            # get (_make), rendered from the parse in place -- no entry built only to be
            # dropped (the stub's no-cache miss path; bench/bench_miss.py respond).
            kind, cap = self._classify(parsed)
            self._bound_ttls(parsed, kind, cap)
            return _render_parsed(parsed, len(key) - 5, _OPT_HEADS[key[-1] & KEY_DO],
                                  query_id, rd, qname, edns, options, pad_block)
        # _entry(clamp=False) without its frame; positional arguments (keywords cost
        # a name search per argument in the callee's frame set-up)
        kind, cap = self._classify(parsed)
        entry = self._make(key, parsed, kind, cap, now, None, True)
        if entry is None:
            return None
        self._store(key, entry, now)
        return _render(entry, query_id, now, False, rd, qname, edns, options, pad_block)

    def _entry(self, key: CacheKey, parsed: _Parsed, *, now: float,
               failure: ResolveFailure | None, clamp: bool = True) -> _Entry | None:
        """The entry for a parsed response; None when it may not be cached (unless
        ``clamp`` is False: then an uncacheable answer still gets a transient entry)."""
        kind, cap = self._classify(parsed)
        return self._make(key, parsed, kind=kind, cap=cap, now=now, failure=failure,
                          transient=not clamp)

    def _classify(self, parsed: _Parsed) -> tuple[str, int | None]:
        """The kind of entry ``parsed`` makes and the cap on its TTLs (RFC 2308)."""
        rcode = parsed.rcode
        if rcode == _RCODE_SERVFAIL:
            kind, cap = _SERVFAIL, None
        elif rcode == _RCODE_NOERROR and parsed.has_data:
            kind, cap = _POSITIVE, None
        elif parsed.negative_ttl is not None:
            kind = _NEGATIVE
            cap = min(parsed.negative_ttl, self.max_negative_ttl, self.max_ttl)
        elif rcode == _RCODE_NOERROR and (parsed.answers or parsed.referral):
            # a CNAME chain without SOA; a referral (an upstream that answered with a
            # delegation): its records' TTLs, as Unbound keeps and relays it
            kind, cap = _POSITIVE, None
        elif self.keeps_all:
            kind, cap = _NEGATIVE, self.max_negative_ttl
        else:
            log.debug("not caching: negative answer without SOA (RFC 2308 §5)")
            kind, cap = _UNCACHEABLE, 0
        return kind, cap

    def insert_failure(self, key: CacheKey, query: dns.message.Message,
                       failure: ResolveFailure, now: float) -> bool:
        """Remember a SERVFAIL raised by the next stage for ``servfail_ttl`` seconds.

        Like a SERVFAIL response, it does not replace an entry kept for serve-stale.
        """
        if failure.rcode != dns.rcode.SERVFAIL or len(query.question) != 1:
            return False
        response = error_response(query, failure.rcode, ede=failure.ede, text=failure.text)
        return self.insert_wire(key, response.to_wire(), now, failure=failure)

    def purge(self, now: float) -> int:
        """Drop every entry that can no longer be served; returns how many."""
        grace = self.stale_ttl if self.serve_stale else 0.0
        dead = [k for k, e in self._entries.items()
                if now >= e.expires + (0.0 if e.kind == _SERVFAIL else grace)]
        for key in dead:
            self._remove(key)
        return len(dead)

    def _make(self, key: CacheKey, parsed: _Parsed, kind: str, cap: int | None,
              now: float, failure: ResolveFailure | None, transient: bool) -> _Entry | None:
        body = parsed.body
        ttls = self._bound_ttls(parsed, kind, cap)
        if kind == _SERVFAIL:
            lifetime: float = self.servfail_ttl
        elif kind == _UNCACHEABLE:
            lifetime = 0.0
        else:
            lifetime = min(ttls) if ttls else 0.0  # min(default=) parses keywords: slower
            if not ttls and cap is not None and self.keeps_all:
                lifetime = float(cap)  # local data's record-less answer: kept
        if lifetime <= 0 and not transient:
            return None
        # offsets and TTLs as tuples: a tuple of ints leaves the cyclic GC's lists at
        # the first collection that sees it, a list is traversed by every collection
        # for as long as the entry lives (two GC-tracked objects less per entry)
        entry = _Entry(body, tuple(parsed.offsets), tuple(ttls), _OPT_HEADS[key[-1] & KEY_DO],
                       parsed.options, kind, now, lifetime, failure, len(key) - 5,
                       parsed.qname)
        if self.prefetch and kind != _SERVFAIL and kind != _UNCACHEABLE:
            # Unbound's PREFETCH_TTL_CALC: the prefetch is due once less than a tenth
            # of the original TTL is left (whole seconds; below 10 s, never while fresh)
            whole = int(lifetime)
            entry.refresh_at = now + (whole - whole // 10)
        return entry

    def _bound_ttls(self, parsed: _Parsed, kind: str, cap: int | None) -> list[int]:
        """Clamp the TTLs of ``parsed`` (values and body) to the bounds of ``kind``."""
        ttls = parsed.ttls
        if kind == _POSITIVE:
            lo, hi = self.min_ttl, self.max_ttl
        elif cap is not None:
            lo, hi = 0, cap
        else:
            lo, hi = 0, 0xFFFFFFFF
        if not ttls or (min(ttls) >= lo and max(ttls) <= hi):
            return ttls  # the usual case: nothing to rewrite (two C calls, no loop)
        for index, ttl in enumerate(ttls):
            if ttl > hi or ttl < lo:  # rare: rewrite only the TTLs the bounds change
                ttl = ttls[index] = hi if ttl > hi else lo
                _TTL.pack_into(parsed.body, parsed.offsets[index], ttl)
        return ttls

    def _store(self, key: CacheKey, entry: _Entry, now: float) -> bool:
        kind = entry.kind
        if entry.expires <= entry.inserted or kind == _UNCACHEABLE \
                or entry.size > self.max_bytes:
            return False
        old = self._entries.get(key)
        if (kind == _SERVFAIL and self.serve_stale and old is not None and old.kind != _SERVFAIL
                and now < old.expires + self.stale_ttl):
            return False  # a failure must not destroy the data serve-stale exists for
        if old is not None:  # _remove(key) inline: the lookup above found it already
            del self._entries[key]
            self._bytes -= old.size
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
            self._evictions += 1
        return True

    def discard_if(self, condition: Callable[[CacheKey], bool]) -> int:
        """Drop every entry whose key meets ``condition`` (names that became local data
        on a reload); returns how many. Exact-repeat memos check the entry, so none of
        their items outlives it."""
        doomed = [key for key in self._entries if condition(key)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    # -- removal by an operator (``dnstls control flush*``) ------------------------------
    # Not on the query path: nothing here runs unless an operator asks. Each removal goes
    # through _remove, so the byte and entry counts stay exact; ExactMemo items name
    # their entry by key and serial, so none outlives a removed entry.

    def remove_types(self, name: bytes, qtypes: tuple[int, ...], qclass: int = 1) -> int:
        """Drop the entries for ``name`` (uncompressed wire form, any case) and each of
        ``qtypes`` in ``qclass``, whatever their DO/CD/AD flags; returns how many
        (``flush`` and ``flush_type``: a few dictionary lookups, no walk)."""
        lowered = name.lower()
        entries = self._entries
        removed = 0
        for qtype in qtypes:
            stem = lowered + struct.pack("!HH", qtype, qclass)
            for flags in _KEY_FLAGS:
                key = stem + flags
                if key in entries:
                    self._remove(key)
                    removed += 1
        return removed

    def remove_under(self, zone: bytes) -> int:
        """Drop every entry whose name is ``zone`` (uncompressed wire form, any case) or
        under it, any type and class; returns how many (``flush_zone``: one walk)."""
        lowered = zone.lower()
        doomed = [key for key in self._entries if _at_or_under(key, lowered)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def remove_negative(self) -> int:
        """Drop every negative entry (NXDOMAIN, NODATA) and every cached failure
        (SERVFAIL), as Unbound's ``flush_negative``; returns how many."""
        doomed = [key for key, entry in self._entries.items()
                  if entry.kind == _NEGATIVE or entry.kind == _SERVFAIL]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def dump(self, now: float) -> list[tuple[CacheKey, str, float, bytes]]:
        """Every entry as (key, kind, seconds left before it expires -- negative once
        expired, kept for serve-stale --, the answer as a hit would render it now for a
        query without EDNS, ID 0); in LRU order, oldest first. Nothing counted or moved."""
        out: list[tuple[CacheKey, str, float, bytes]] = []
        for key, entry in self._entries.items():
            wire = _render(entry, 0, now, False, True, None, False)
            out.append((key, entry.kind, entry.expires - now, wire))
        return out

    def accounted_bytes(self) -> int:
        """The bytes counted against ``max_bytes`` recomputed from the entries (tests
        compare it with :meth:`statistics`)."""
        return sum(entry.size for entry in self._entries.values())


class CacheStage:
    """Resolver stage: answer from the cache, or ask ``next`` and remember its answer."""

    def __init__(self, next: Resolver, cache: Cache, clock: Callable[[], float]) -> None:
        self._next = next
        self._cache = cache
        self._clock = clock

    async def resolve(self, request: Request) -> dns.message.Message:
        query = request.message
        if len(query.question) != 1:
            return await self._next.resolve(request)
        key = key_from_message(query)
        rd = bool(query.flags & dns.flags.RD)
        qname = _name_wire(query)
        edns = query.edns >= 0
        hit = self._cache.lookup(key, query.id, self._clock(), rd=rd, qname=qname, edns=edns)
        if hit is not None:
            if hit.failure is not None:
                raise ResolveFailure(hit.failure.rcode, hit.failure.ede, hit.failure.text)
            return dns.message.from_wire(hit.wire)
        try:
            response = await self._next.resolve(request)
        except ResolveFailure as failure:
            if failure.rcode != dns.rcode.SERVFAIL:
                raise
            now = self._clock()
            stale = self._cache.stale_after_failure(key, query.id, now, rd=rd, qname=qname,
                                                    edns=edns)
            if stale is not None:
                return dns.message.from_wire(stale.wire)
            if not request.tags:  # a CNAME chase's step (tags): its failure may be the
                # chain's (too long), not its name's -- the client query keeps its own
                self._cache.insert_failure(key, query, failure, now)
            raise
        now = self._clock()
        if response.rcode() == dns.rcode.SERVFAIL:
            stale = self._cache.stale_after_failure(key, query.id, now, rd=rd, qname=qname,
                                                    edns=edns)
            if stale is not None:
                return dns.message.from_wire(stale.wire)
        # Kept and answered as the wire path does (Cache.respond_wire): the first answer
        # is what later hits give -- TTLs within the cache's bounds, the minimal
        # sections -- so a client never sees a TTL that the next answer contradicts.
        try:
            wire = response.to_wire(max_size=_MAX_MESSAGE)
        except Exception as exc:  # dnspython raises many types; the answer is just not kept
            log.debug("not caching: cannot render (%s)", type(exc).__name__)
        else:
            out = self._cache.respond_wire(key, wire, now, query.id, rd, qname, edns)
            if out is not None:
                return dns.message.from_wire(out)
        if self._cache.minimal_responses:
            minimise(query, response)
        return response


def answer_stage(next: Resolver, cache: Cache | None, clock: Callable[[], float], *,
                 minimal_responses: bool) -> Resolver:
    """The stage in front of a forwarder: :class:`CacheStage` with a cache (which applies
    the cache's own ``minimal_responses``), else :class:`MinimalStage` when minimal
    responses are on, else the forwarder's own answers."""
    if cache is not None:
        return CacheStage(next, cache, clock)
    if minimal_responses:
        return MinimalStage(next)
    return next


class MinimalStage:
    """Resolver stage for the message path when caching is off: the next stage's answer
    with :func:`minimise` applied (with caching on, :class:`CacheStage` does it)."""

    def __init__(self, next: Resolver) -> None:
        self._next = next

    async def resolve(self, request: Request) -> dns.message.Message:
        response = await self._next.resolve(request)
        if len(request.message.question) == 1:
            minimise(request.message, response)
        return response


def minimise(query: dns.message.Message, response: dns.message.Message) -> None:
    """Drop the sections of a forwarded ``response`` that ``query`` does not need, in
    place: the rule of :func:`_parse_response` on a parsed message (module docstring,
    "Minimal responses"). Unchanged for a query with DO and for RCODEs other than
    NOERROR and NXDOMAIN. In place is safe: coalesced requests that share ``response``
    share its cache key (DO included), so they get the same cut."""
    do = query.edns >= 0 and query.ednsflags & dns.flags.DO
    rcode = response.rcode()
    if rcode == dns.rcode.NOERROR:
        qtype = query.question[0].rdtype
        types = {int(rrset.rdtype) for rrset in response.authority}
        if any(rrset.rdtype == qtype or qtype == _ANY for rrset in response.answer):
            if qtype == _NS_TYPE or (do and (_NSEC_TYPE in types or _NSEC3_TYPE in types)):
                return  # the name servers' addresses; a wildcard's proof
            response.authority = []
        elif do or (_NS_TYPE in types and _SOA_TYPE not in types):
            return  # a referral: the delegation and its glue; with DO, the proofs
    elif rcode != dns.rcode.NXDOMAIN or do:
        return
    response.additional = []


# -- helpers ----------------------------------------------------------------------------


_KEY_FLAGS = tuple(bytes((flags,)) for flags in range((KEY_DO | KEY_CD | KEY_AD) + 1))


def _at_or_under(key: CacheKey, zone: bytes) -> bool:
    """True if the name of ``key`` is ``zone`` or under it (both lower-cased wire
    names): the name's suffix at a label boundary equals the zone."""
    end = len(key) - 5
    if end < len(zone):
        return False
    pos = 0
    start = end - len(zone)
    while pos < start:
        pos += 1 + key[pos]
    return pos == start and key[start:end] == zone


def _name_wire(query: dns.message.Message) -> bytes:
    wire = query.question[0].name.to_wire()
    assert wire is not None  # to_wire() without a file returns the bytes
    return wire


class _Parsed:
    """A response read for the cache: body without OPT (ID 0), TTL offsets and values
    (as received), facts."""

    __slots__ = ("answers", "body", "has_data", "negative_ttl", "offsets", "options", "qname",
                 "rcode", "referral", "ttls")

    def __init__(self, body: bytearray, offsets: list[int], ttls: list[int], options: bytes,
                 rcode: int, answers: int, has_data: bool, negative_ttl: int | None,
                 qname: bytes, referral: bool = False) -> None:
        self.body = body
        self.offsets = offsets
        self.ttls = ttls
        self.options = options
        self.rcode = rcode
        self.answers = answers
        self.has_data = has_data
        self.negative_ttl = negative_ttl
        self.qname = qname  # the question name as the response has it (bytes 12 on)
        # NOERROR without the data, NS in authority and no SOA: a delegation (RFC 1034
        # §4.3.2 step 3b), not a negative answer (RFC 2308 §2.2)
        self.referral = referral


def _parse_response(wire: bytes, key: CacheKey, minimal: bool = False) -> _Parsed | str:
    """Read a response to the query with ``key``; a string says why it is not cacheable.

    ``minimal`` (and no DO in ``key``): the body keeps only the sections the answer
    needs (see "Minimal responses" in the module docstring); TTLs and offsets are those
    of the kept records only.

    On the miss path once per forwarded query: int masks instead of dnspython's flag
    enums and locals instead of attribute stores took it from ~10 to ~6 µs.
    """
    end = len(wire)
    if end < 12:
        return "short message"
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if not flags & _QR or flags & _OPCODE_MASK:
        return "not a response to a query"
    if flags & _TC:
        return "truncated"
    name_len = len(key) - 5
    qend = 12 + name_len + 4
    qname = wire[12:12 + name_len]
    # the usual response has the question's bytes as asked (the key's lower case): one
    # compare; else the name case-insensitively and type and class exactly
    if qdcount != 1 or (wire[12:qend] != key[:-1] and (
            qname.lower() != key[:name_len]
            or wire[12 + name_len:qend] != key[name_len:name_len + 4])):
        return "question mismatch"
    qtype = (key[name_len] << 8) | key[name_len + 1]
    offsets: list[int] = []
    ttls: list[int] = []
    options = b""
    has_data = False
    negative_ttl: int | None = None
    ns_seen = nsec_seen = False
    total = ancount + nscount + arcount
    authority_end = ancount + nscount
    opt_start = -1
    pos = qend
    unpack = _RR_FIXED.unpack_from
    high_ttls: list[int] | None = None
    for index in range(total):
        start = pos
        if pos + 1 < end and wire[pos] == 0xC0 and wire[pos + 1] == 12:
            # an owner name that is only a pointer to the question's name (the usual
            # case; that name was compared with the key above): no call
            pos += 2
        else:
            pos = name_end(wire, pos, end)
            if pos < 0:
                return "malformed name"
        if pos + 10 > end:
            return "malformed record"
        rrtype, rrclass, ttl, rdlength = unpack(wire, pos)
        rdata = pos + 10
        pos = rdata + rdlength
        if pos > end:
            return "malformed record"
        shape = _RDATA_SHAPES.get(rrtype)
        if (shape is not None and (rrclass == 1 or rrtype not in _CLASS_IN_SHAPES)
                and not _rdata_fits(wire, shape, rdata, pos)):
            return "malformed RDATA"
        if rrtype == _OPT_TYPE:
            if index != total - 1:
                return "OPT not the last record"
            if index < authority_end:
                return "OPT outside the additional section"
            opt_start = start
            if ttl >> 24:
                return "extended RCODE"
            found = _plain_options(wire, rdata, pos)
            if isinstance(found, str):
                return found
            options = found
            continue
        if rrtype == _TSIG_TYPE:
            return "TSIG"
        if ttl > _MAX_TTL:  # RFC 2181 §8: a TTL with the high bit set is taken as 0
            ttl = 0
            if high_ttls is None:
                high_ttls = []
            high_ttls.append(rdata - 6)
        offsets.append(rdata - 6)
        ttls.append(ttl)
        if index < ancount:
            if rrtype == qtype or qtype == _ANY:
                has_data = True
        elif index < authority_end:
            if rrtype == _SOA_TYPE:
                if rdlength >= 22 and negative_ttl is None:
                    # RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM), the
                    # last field.
                    negative_ttl = min(ttl, _TTL.unpack_from(wire, pos - 4)[0])
            elif rrtype == _NS_TYPE:
                ns_seen = True
            elif rrtype in (_NSEC_TYPE, _NSEC3_TYPE):
                nsec_seen = True
    if pos != end:
        return "trailing bytes"
    rcode = flags & 0xF
    if rcode not in _CACHEABLE_RCODE_INTS:
        return f"rcode {rcode}"
    referral = (ns_seen and not has_data and negative_ttl is None
                and rcode == _RCODE_NOERROR)
    if (minimal and rcode != _RCODE_SERVFAIL
            and (nscount or arcount > (opt_start >= 0)) and not referral
            and not (has_data and qtype == _NS_TYPE)
            and (not key[-1] & KEY_DO
                 or (has_data and rcode == _RCODE_NOERROR and not nsec_seen))):
        # Keep the answer section (a positive answer: an RRset of the QTYPE, as
        # Unbound's positive_answer) or the answer and authority sections (NXDOMAIN,
        # NODATA, a referral, a CNAME chain without the data): whole trailing sections
        # only, so every compression pointer left points backwards into kept bytes.
        kept = ancount if has_data and rcode == _RCODE_NOERROR else authority_end
        if kept < total - (opt_start >= 0):
            # the end of the last kept record: its TTL offset + TTL, RDLENGTH, RDATA
            last = offsets[kept - 1] if kept else -1
            cut = last + 6 + ((wire[last + 4] << 8) | wire[last + 5]) if kept else qend
            # a bytes slice, then its copy: ~1,500 instructions fewer than through a
            # memoryview (callgrind) for the usual short answer
            body = bytearray(wire[:cut])
            _MINIMAL_COUNTS.pack_into(body, 6, ancount, kept - ancount, 0)
            del offsets[kept:]
            del ttls[kept:]
            body[0] = body[1] = 0
            if high_ttls is not None:
                _zero_ttls(body, high_ttls)
            return _Parsed(body, offsets, ttls, options, rcode, ancount, has_data,
                           negative_ttl, qname, referral)
    if opt_start < 0:
        body = bytearray(wire)
    else:
        body = bytearray(memoryview(wire)[:opt_start])
        body[10:12] = (arcount - 1).to_bytes(2, "big")
    body[0] = body[1] = 0
    if high_ttls is not None:
        _zero_ttls(body, high_ttls)
    return _Parsed(body, offsets, ttls, options, rcode, ancount, has_data, negative_ttl,
                   qname, referral)


def _utf8(wire: bytes, start: int, end: int) -> bool:
    """True if ``wire[start:end]`` is UTF-8 text (less one trailing NUL, RFC 8914 §2)."""
    if end > start and wire[end - 1] == 0:
        end -= 1
    try:
        wire[start:end].decode()
    except UnicodeDecodeError:
        return False
    return True


def _zero_ttls(body: bytearray, offsets: list[int]) -> None:
    """Write TTL 0 at each of ``offsets`` within ``body`` (TTLs read as 0, RFC 2181 §8)."""
    for off in offsets:
        if off + 4 <= len(body):
            _TTL.pack_into(body, off, 0)


def name_end(wire: bytes, pos: int, end: int, compressed: bool = True) -> int:
    """Offset just past the possibly compressed name at ``pos``, or -1 unless it is one
    a client can read: labels of up to 63 bytes, at most 255 bytes in all, read before
    ``end`` (the message's, or the RDATA's for a name in it), and at most
    :data:`_MAX_POINTERS` compression pointers (none unless ``compressed``), each
    pointing strictly before the part of the name it ends, to bytes that lie wholly
    before that part (so no loop) -- the rules of RFC 1035 §4.1.4 as dnspython (2.x)
    enforces them. A pointer is never followed past one that points forwards."""
    after = -1
    limit = end  # the bytes the name's current part may use end here
    start = pos  # where the current part began
    length = 1  # the root label
    hops = 0
    while pos < limit:
        count = wire[pos]
        if count == 0:
            return pos + 1 if after < 0 else after
        if count < 64:
            length += count + 1
            if length > 255:
                return -1
            pos += count + 1
            continue
        if count < 0xC0 or pos + 2 > limit or not compressed:
            return -1
        target = ((count & 0x3F) << 8) | wire[pos + 1]
        hops += 1
        if target >= start or hops > _MAX_POINTERS:
            return -1
        if after < 0:
            after = pos + 2
        limit = start
        pos = start = target
    return -1


def _rdata_fits(wire: bytes, shape: tuple[int, ...], pos: int, end: int) -> bool:
    """True if the RDATA ``wire[pos:end]`` is made exactly of ``shape``'s fields: a
    positive number is that many bytes, ``_NAME`` and ``_PLAIN_NAME`` a name
    (:func:`_name_end`), ``_STRINGS`` one or more <character-string>s to the end (RFC
    1035 §3.3)."""
    for field in shape:
        if field > 0:
            pos += field
        elif field > _STRINGS:
            pos = name_end(wire, pos, end, field == _NAME)
            if pos < 0:
                return False
        else:
            if pos >= end:
                return False
            while pos < end:
                pos += 1 + wire[pos]
        if pos > end:
            return False
    return pos == end


def _plain_options(wire: bytes, pos: int, end: int) -> bytes | str:
    """The Extended DNS Errors of an OPT RDATA (the only options relayed: module
    docstring); a string if the answer must not be used."""
    kept = []
    while pos < end:
        if pos + 4 > end:
            return "malformed OPT"
        code, length = _OPTION.unpack_from(wire, pos)
        nxt = pos + 4 + length
        if nxt > end:
            return "malformed OPT"
        if code == _EDE_CODE:
            if length < 2 or not _utf8(wire, pos + 6, nxt):
                return "malformed EDE"
            if ((wire[pos + 4] << 8) | wire[pos + 5]) in _STALE_EDE_CODES:
                return "stale EDE marker"
            kept.append(wire[pos:nxt])
        elif code in _TEXT_OPTIONS and not _utf8(wire, pos + 4, nxt):
            return "malformed OPT"
        pos = nxt
    return b"".join(kept)


def _name_length(wire: bytes, pos: int) -> int:
    """Length of the uncompressed name at ``pos`` (the question name of a body)."""
    start = pos
    while wire[pos]:
        pos += 1 + wire[pos]
    return pos + 1 - start


def _aged(entry: _Entry, age: int) -> None:
    """Set every TTL of ``entry.body`` to max(0, original - age) (the original if age <= 0)."""
    pack = _TTL.pack_into
    body = entry.body
    if age > 0:
        for off, ttl in zip(entry.offsets, entry.ttls, strict=True):
            pack(body, off, ttl - age if ttl > age else 0)
    else:
        for off, ttl in zip(entry.offsets, entry.ttls, strict=True):
            pack(body, off, ttl)
    entry.age = age
    entry.memo_tail = None


_PADDING_OPTIONS: dict[int, bytes] = {}


def _pad_length(unpadded: int, block: int) -> int:
    """Padding bytes that bring an answer of ``unpadded`` bytes (the PADDING option's
    header counted) to a multiple of ``block`` (RFC 8467 §4.1) -- or only to the
    65,535 bytes a stream can frame (RFC 1035 §4.2.2), when the next multiple is
    past them: padding never makes an answer too long to send."""
    padded = -(-unpadded // block) * block
    if padded > _MAX_MESSAGE:
        padded = _MAX_MESSAGE
    return padded - unpadded if padded > unpadded else 0


def _padding_option(pad: int) -> bytes:
    """The PADDING option with ``pad`` zero bytes (memoised: pad < block size)."""
    option = _PADDING_OPTIONS.get(pad)
    if option is None:
        option = _PADDING_OPTIONS[pad] = _OPTION.pack(_PADDING_CODE, pad) + bytes(pad)
    return option


def _render(entry: _Entry, query_id: int, now: float, stale: bool, rd: bool,
            qname: bytes | None, with_edns: bool, options: bytes = b"", pad_block: int = 0,
            ) -> bytes:
    """The stored answer for a new query: joined from the entry's pieces, one copy.

    ID and RD from the query; the query's name bytes (0x20 case) when the length
    matches; TTLs aged (or :data:`STALE_TTL`); the OPT appended only for an EDNS query.
    """
    body = entry.body
    rest: bytes | bytearray | memoryview
    if stale:
        copy = body[12 + entry.qname_len:]  # a bytearray: a copy to write into
        start = 12 + entry.qname_len
        for off in entry.offsets:
            _TTL.pack_into(copy, off - start, STALE_TTL)
        rest = copy
    else:
        age = int(now - entry.inserted)
        if age < 0:
            age = 0
        if age != entry.age:
            _aged(entry, age)
        rest = memoryview(body)[12 + entry.qname_len:]
    head = bytes((query_id >> 8 & 0xFF, query_id & 0xFF,
                  body[2] | 0x01 if rd else body[2] & 0xFE))
    name: bytes | memoryview = (qname if qname is not None and len(qname) == entry.qname_len
                                else entry.name_view)
    if not with_edns:
        return b"".join((head, entry.mid_wire, entry.arcount_wire, name, rest))
    rdata = entry.opt_rdata + options if options else entry.opt_rdata
    if stale:
        nxdomain = body[3] & 0xF == dns.rcode.NXDOMAIN
        rdata += _EDE_STALE_NXDOMAIN_WIRE if nxdomain else _EDE_STALE_WIRE
    if pad_block > 0:
        unpadded = len(body) + len(entry.opt_head) + 2 + len(rdata) + 4
        rdata += _padding_option(_pad_length(unpadded, pad_block))
    return b"".join((head, entry.mid_wire, entry.arcount_edns_wire, name, rest,
                     entry.opt_head, len(rdata).to_bytes(2, "big"), rdata))


def _render_parsed(parsed: _Parsed, qname_len: int, opt_head: bytes, query_id: int,
                   rd: bool, qname: bytes | None, with_edns: bool, options: bytes,
                   pad_block: int) -> bytes:
    """What :func:`_render` gives for a fresh entry made from ``parsed`` (age 0), written
    into the parse's own body (nobody else holds it) and copied once.
    ``tests/unit/resolver/test_cache.py`` compares the two for many responses."""
    body = parsed.body
    body[0] = query_id >> 8 & 0xFF
    body[1] = query_id & 0xFF
    body[2] = body[2] | 0x01 if rd else body[2] & 0xFE
    if qname is not None and len(qname) == qname_len:
        body[12:12 + qname_len] = qname
    if not with_edns:
        return bytes(body)
    rdata = parsed.options + options if options else parsed.options
    if pad_block > 0:
        unpadded = len(body) + len(opt_head) + 2 + len(rdata) + 4
        rdata += _padding_option(_pad_length(unpadded, pad_block))
    arcount = ((body[10] << 8) | body[11]) + 1
    body[10] = arcount >> 8 & 0xFF
    body[11] = arcount & 0xFF
    return b"".join((body, opt_head, len(rdata).to_bytes(2, "big"), rdata))


def _memo(entry: _Entry, with_edns: bool, options: bytes, pad_block: int) -> bytes:
    """Render and keep what follows the question name for one query shape (without the
    PADDING option: :func:`_padding_option` keeps one per length for every entry)."""
    padding = b""
    if with_edns:
        arcount = entry.arcount_edns_wire
        rdata = entry.opt_rdata + options if options else entry.opt_rdata
        if pad_block > 0:
            unpadded = len(entry.body) + len(entry.opt_head) + 2 + len(rdata) + 4
            padding = _padding_option(_pad_length(unpadded, pad_block))
        tail = b"".join((memoryview(entry.body)[12 + entry.qname_len:], entry.opt_head,
                         (len(rdata) + len(padding)).to_bytes(2, "big"), rdata))
    else:
        arcount = entry.arcount_wire
        tail = bytes(memoryview(entry.body)[12 + entry.qname_len:])
    if entry.memo_edns != with_edns or not entry.memo_mids[0]:  # not redone on re-age
        flags = entry.body[2]
        entry.memo_mids = (bytes((flags & 0xFE,)) + entry.mid_wire + arcount,
                           bytes((flags | 0x01,)) + entry.mid_wire + arcount)
    entry.memo_tail = tail
    entry.memo_padding = padding  # the last piece: shared between entries, not copied
    entry.memo_edns = with_edns
    entry.memo_options = options
    entry.memo_pad = pad_block
    return tail
