"""``dnstls control``: the commands of the control channel, and its wire protocol.

What it is
----------
The operator's channel into a running ``dnstls serve``, as ``unbound-control`` is
Unbound's: flush names from the cache, reload, read the counters, list what is
configured. It is a Unix domain socket (``[server] control = PATH``, off by default, as
Unbound's ``control-enable: no``), mode 0600 and owned by the service's user: whoever
can open it is the operator, so there are no keys or certificates (Unbound's TLS
control port 8953 is not offered; see docs/serve.md, "Control").

The protocol (version 1)
------------------------
One request per connection, as Unbound's: the client sends one line, ASCII, at most
:data:`MAX_REQUEST` bytes with its newline::

    DNSTLSCTL1 <command> [<argument> ...]\\n

-- the version word first (Unbound's is ``UBCT1``), so a later version can change
anything after it --, the words separated by single spaces. The server answers with
text lines (UTF-8, each ending in a newline) and closes the connection. An answer whose
first line starts with ``error`` is a failure (``dnstls control`` then exits 1, as
unbound-control does); anything else is success. A request with another version word
gets ``error unsupported protocol version 'X' (this server speaks DNSTLSCTL1)``.

This module is sans-IO: :func:`parse_request` reads a request line, :class:`Commands`
turns a parsed request into answer lines by calling into the running
:class:`~dnstls.service.Service`, and the formatters (:func:`format_stats`, ...) are
plain functions of plain data. The socket side is :mod:`dnstls.net.control`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

if TYPE_CHECKING:
    from dnstls.service import Service

log = logging.getLogger("dnstls.control")

PROTOCOL = "DNSTLSCTL1"
#: The longest request line, newline included.
MAX_REQUEST = 4096
#: The socket path ``dnstls control`` uses without ``-s`` or ``-c``.
DEFAULT_CONTROL_PATH = "/run/dnstls/control.sock"
#: The types ``flush NAME`` removes: Unbound's list (unbound-control(8)), which other
#: types ``flush_type`` or ``flush_zone`` remove.
FLUSH_TYPES = ("A", "AAAA", "NS", "SOA", "CNAME", "DNAME", "MX", "PTR", "SRV", "NAPTR",
               "SVCB", "HTTPS")
_FLUSH_TYPE_CODES = tuple(int(dns.rdatatype.from_text(t)) for t in FLUSH_TYPES)
#: The RCODEs ``stats_noreset`` always lists (Unbound's extended statistics do).
_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMPL", "REFUSED")
#: dnspython's RCODE names that Unbound spells otherwise
_UNBOUND_RCODE_NAMES = {"NOTIMP": "NOTIMPL"}
_KEY_FLAG_NAMES = ((0x01, "do"), (0x02, "cd"), (0x04, "ad"))
#: How long ``dnstap_reopen`` waits for the writer (the frames queued before it are
#: written to the old file first)
DNSTAP_REOPEN_TIMEOUT = 5.0


@dataclass(frozen=True)
class Request:
    command: str
    args: tuple[str, ...]


def encode_request(command: str, args: Sequence[str] = ()) -> bytes:
    """The request line for ``command`` and ``args`` (the client's side)."""
    return " ".join((PROTOCOL, command, *args)).encode() + b"\n"


def parse_request(line: bytes) -> Request | str:
    """The request in ``line`` (newline included or not), or the error line to answer."""
    if len(line) > MAX_REQUEST:
        return f"error request longer than {MAX_REQUEST} bytes"
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return "error request is not ASCII text"
    words = text.rstrip("\r\n").split()
    if not words:
        return "error empty request"
    if words[0] != PROTOCOL:
        return (f"error unsupported protocol version '{words[0]}' "
                f"(this server speaks {PROTOCOL})")
    if len(words) < 2:
        return "error no command given"
    return Request(words[1], tuple(words[2:]))


def encode_answer(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def is_error(answer: str) -> bool:
    """True if the answer text reports a failure (its first line starts with "error")."""
    return answer.startswith("error")


# --------------------------------------------------------------------------- formatting


def format_status(*, version: str, build: str, workers: int, uptime: float,
                  pid: int) -> list[str]:
    """``status``: Unbound's lines where they mean the same (``version:``,
    ``uptime: N seconds``, ``... (pid N) is running...``), ``workers:`` for Unbound's
    ``threads:`` (processes here), ``build:`` for the compiled or pure-Python core."""
    return [f"version: {version}", f"build: {build}", f"workers: {workers}",
            f"uptime: {int(uptime)} seconds", f"dnstls (pid {pid}) is running..."]


def format_stats(stats: Mapping[str, Any], *, now: float, uptime: float) -> list[str]:
    """``stats_noreset``: Unbound-style ``key=value`` lines from the service's
    statistics (the counters behind the Prometheus metrics; docs/serve.md lists the
    keys). Counters never reset."""
    handler = stats.get("handler", {})
    responses: Mapping[tuple[str, str], int] = handler.get("responses", {})
    by_transport: dict[str, int] = {}
    by_rcode: dict[str, int] = dict.fromkeys(_RCODES, 0)
    for (transport, name), n in responses.items():
        rcode = _UNBOUND_RCODE_NAMES.get(name, name)
        by_transport[transport] = by_transport.get(transport, 0) + n
        by_rcode[rcode] = by_rcode.get(rcode, 0) + n
    cache = stats.get("cache", {})
    acl = stats.get("access_control", {})
    unwanted = sum(sum(acl.get(kind, {}).values())
                   for kind in ("refused", "denied", "norec_refused"))
    wire = stats.get("wire", {})
    coalesced = int(wire.get("coalesced", 0)) + sum(
        int(u.get("coalesced", 0)) for u in stats.get("udp", ()))
    lines = [
        f"total.num.queries={sum(by_transport.values())}",
        f"total.num.cachehits={cache.get('hits', 0)}",
        f"total.num.cachemiss={cache.get('misses', 0)}",
        f"total.num.expired={cache.get('stale_served', 0)}",
        f"total.num.prefetch={cache.get('prefetches', 0)}",
        f"total.num.coalesced={coalesced}",
        f"total.requestlist.current.all={handler.get('in_flight', 0)}",
        f"time.now={now:.6f}",
        f"time.up={uptime:.6f}",
        f"time.elapsed={uptime:.6f}",
        f"num.query.udp={by_transport.get('udp', 0)}",
        # Unbound's num.query.tcp counts TLS queries too (they came over TCP)
        f"num.query.tcp={by_transport.get('tcp', 0) + by_transport.get('tls', 0)}",
        f"num.query.tls={by_transport.get('tls', 0)}",
    ]
    lines += [f"num.answer.rcode.{rcode}={n}" for rcode, n in by_rcode.items()]
    rejected = handler.get("rejected", {})
    lines += [
        f"num.query.rejected={sum(rejected.values())}",
        f"unwanted.queries={unwanted}",
        f"msg.cache.count={cache.get('entries', 0)}",
        f"mem.cache.message={cache.get('bytes', 0)}",
        f"cache.evictions={cache.get('evictions', 0)}",
    ]
    return lines


def format_forwards(routes: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """``list_forwards``: ``ZONE IN forward UPSTREAM ...`` as Unbound's, with the
    upstreams' URIs (they say the transport and TLS name) where Unbound has addresses."""
    return [" ".join((zone, "IN", "forward", *uris)) for zone, uris in routes
            if uris]  # "." without upstreams: recursion, not a forward


def key_text(key: bytes) -> str:
    """A cache key as ``name CLASS TYPE`` and its flags (do, cd, ad)."""
    name = dns.name.from_wire(key, 0)[0]
    qtype = int.from_bytes(key[-5:-3], "big")
    qclass = int.from_bytes(key[-3:-1], "big")
    flags = [word for bit, word in _KEY_FLAG_NAMES if key[-1] & bit]
    return " ".join([name.to_text(),
                     dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(qclass)),
                     dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype)), *flags])


def format_dump(entries: Sequence[tuple[bytes, str, float, bytes]]) -> list[str]:
    """``dump_cache``: zone-file-like text, not Unbound's own format: per entry one
    comment line (the question, its DO/CD/AD flags, its kind and the seconds it has
    left) and its records with the TTLs a hit gets now."""
    lines = [f";; dnstls cache: {len(entries)} entries, least recently used first"]
    for key, kind, left, wire in entries:
        when = (f"{int(left)} s left" if left > 0
                else f"expired {int(-left)} s ago, kept for serve-stale")
        try:
            message = dns.message.from_wire(wire)
        except dns.exception.DNSException:  # pragma: no cover - the cache checked it
            lines.append(f";; {key_text(key)}: {kind}, {when} (unreadable)")
            continue
        rcode = dns.rcode.to_text(message.rcode())
        lines.append(f";; {key_text(key)}: {kind} {rcode}, {when}")
        for section in (message.answer, message.authority, message.additional):
            for rrset in section:
                lines += rrset.to_text().splitlines()
    lines.append(";; end")
    return lines


# --------------------------------------------------------------------------- workers
#
# With ``serve --workers N`` the supervisor owns the control socket and relays each
# request to every worker over a socketpair made at fork (dnstls.control_relay); each
# worker runs it on its own cache and answers; these functions join the answers. Frames
# on that channel, both ways: sequence number and length (4 bytes each), then the
# request line or the answer text (a late answer to an earlier request is recognised by
# its number and dropped).

FRAME = struct.Struct("!II")
#: Commands whose answer is the same from every worker: the first worker's is used.
_SAME_EVERYWHERE = frozenset({"list_forwards", "list_stubs", "list_local_zones", "list_local_data",
                              "lookup"})
_REMOVED = re.compile(r"^ok removed 0 rrsets, (\d+) messages and 0 key entries$")


def frame(seq: int, payload: bytes) -> bytes:
    return FRAME.pack(seq, len(payload)) + payload


def join_answers(command: str, answers: Sequence[tuple[int, str]], *, now: float,
                 uptime: float) -> list[str]:
    """One answer from the workers' (``(worker index, answer text)``, every worker's, in
    index order): an error if any worker's is (the first, naming the worker when only
    some failed); counts of flush_zone and flush_negative added; stats_noreset summed
    (time.* the supervisor's own, and each worker's own query and cache counts as
    ``workerN.*``, as Unbound's ``threadN.*``); dump_cache joined; else the first."""
    errors = [(index, text) for index, text in answers if is_error(text)]
    if errors:
        index, text = errors[0]
        first = text.splitlines()[0]
        if len(errors) == len(answers):
            return [first]
        return [f"{first} (worker {index}; {len(answers) - len(errors)} of "
                f"{len(answers)} workers did it)"]
    lines = [text.splitlines() for _, text in answers]
    if command in ("flush_zone", "flush_negative"):
        total = 0
        for answer in lines:
            match = _REMOVED.match(answer[0]) if answer else None
            if match is None:
                return [f"error unexpected answer from a worker: {answer[:1]}"]
            total += int(match.group(1))
        return [_removed(total)]
    if command == "stats_noreset":
        return _join_stats(answers, now=now, uptime=uptime)
    if command == "dump_cache":
        out = []
        for (index, _), answer in zip(answers, lines, strict=True):
            out.append(f";; worker {index}")
            out += answer
        return out
    return lines[0] if lines else []


def _join_stats(answers: Sequence[tuple[int, str]], *, now: float,
                uptime: float) -> list[str]:
    totals: dict[str, float] = {}
    per_worker: list[str] = []
    for index, text in answers:
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.startswith("time."):
                continue
            number = float(value) if "." in value else int(value)
            totals[key] = totals.get(key, 0) + number
            if key.startswith("total."):
                per_worker.append(f"worker{index}.{key[6:]}={value}")
    out = per_worker
    for key, total in totals.items():
        if key == "num.query.udp":  # after total.*: where one process puts time.*
            out += [f"time.now={now:.6f}", f"time.up={uptime:.6f}",
                    f"time.elapsed={uptime:.6f}"]
        out.append(f"{key}={total}")
    return out


# --------------------------------------------------------------------------- commands


class Commands:
    """Runs one request against a running service and returns the answer lines."""

    def __init__(self, service: Service, *, workers: int = 1,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.workers = workers
        self._clock = clock
        self._wall_clock = wall_clock
        self.started = clock()
        self._table: dict[str, Callable[[tuple[str, ...]],
                                        list[str] | Awaitable[list[str]]]] = {
            "status": self.status,
            "stop": self.stop,
            "reload": self.reload,
            "flush": self.flush,
            "flush_type": self.flush_type,
            "flush_zone": self.flush_zone,
            "flush_negative": self.flush_negative,
            "stats": self.stats,
            "stats_noreset": self.stats_noreset,
            "list_forwards": self.list_forwards,
            "list_stubs": self.list_stubs,
            "list_local_zones": self.list_local_zones,
            "list_local_data": self.list_local_data,
            "lookup": self.lookup,
            "dump_cache": self.dump_cache,
            "dnstap_reopen": self.dnstap_reopen,
        }

    @property
    def names(self) -> list[str]:
        return list(self._table)

    async def run(self, request: Request) -> list[str]:
        command = self._table.get(request.command)
        if command is None:
            return [f"error unknown command '{request.command}'"]
        log.info("control: %s", " ".join((request.command, *request.args)))
        try:
            answer = command(request.args)
            return await answer if inspect.isawaitable(answer) else answer
        except Exception as exc:  # one command's bug must not take the channel down
            log.exception("control: %s failed", request.command)
            return [f"error {request.command} failed: {exc}"]

    # -- the commands ------------------------------------------------------------------

    def status(self, args: tuple[str, ...]) -> list[str]:
        from dnstls import __version__
        from dnstls.compiled import core_status

        return format_status(version=__version__, build=core_status(),
                             workers=self.workers, uptime=self._clock() - self.started,
                             pid=os.getpid())

    def stop(self, args: tuple[str, ...]) -> list[str]:
        self.service.stop()
        return ["ok"]

    def reload(self, args: tuple[str, ...]) -> list[str]:
        if self.service.reload():
            return ["ok"]
        return [f"error {self.service.reload_error or 'reload failed; see the log'}"]

    def flush(self, args: tuple[str, ...]) -> list[str]:
        name = _name_arg(args)
        if isinstance(name, str):
            return [name]
        self._remove_types(name, _FLUSH_TYPE_CODES)
        return ["ok"]

    def flush_type(self, args: tuple[str, ...]) -> list[str]:
        name = _name_arg(args)
        if isinstance(name, str):
            return [name]
        if len(args) < 2:
            return [f"error could not find next argument after {args[0]}"]
        try:
            rdtype = dns.rdatatype.from_text(args[1])
        except dns.exception.DNSException:
            return [f"error unknown type '{args[1]}'"]
        self._remove_types(name, (int(rdtype),))
        return ["ok"]

    def flush_zone(self, args: tuple[str, ...]) -> list[str]:
        name = _name_arg(args)
        if isinstance(name, str):
            return [name]
        wire = name.to_wire()
        assert wire is not None
        return [_removed(sum(cache.remove_under(wire) for cache in self._caches()))]

    def flush_negative(self, args: tuple[str, ...]) -> list[str]:
        return [_removed(sum(cache.remove_negative() for cache in self._caches()))]

    def stats(self, args: tuple[str, ...]) -> list[str]:
        return ["error stats resets the counters, and dnstls never resets them (they are "
                "the Prometheus metrics' counters): use stats_noreset"]

    def stats_noreset(self, args: tuple[str, ...]) -> list[str]:
        return format_stats(self.service.statistics(), now=self._wall_clock(),
                            uptime=self._clock() - self.started)

    def list_forwards(self, args: tuple[str, ...]) -> list[str]:
        return format_forwards(self.service.forward_routes())

    def list_stubs(self, args: tuple[str, ...]) -> list[str]:
        """Unbound's ``list_stubs``: ``ZONE IN stub prime|noprime SERVER ...``, the root
        hints and each stub zone (nothing when the service forwards)."""
        return [" ".join((zone, "IN", "stub", kind, *servers))
                for zone, kind, servers in self.service.stub_routes()]

    def list_local_zones(self, args: tuple[str, ...]) -> list[str]:
        local = self.service.local_data()
        return [] if local is None else [f"{n} {kind}" for n, kind in local.zone_list()]

    def list_local_data(self, args: tuple[str, ...]) -> list[str]:
        local = self.service.local_data()
        return [] if local is None else local.record_lines()

    def lookup(self, args: tuple[str, ...]) -> list[str]:
        name = _name_arg(args)
        if isinstance(name, str):
            return [name]
        local = self.service.local_data()
        decided = local.decides(name) if local is not None else None
        if decided is not None:
            return [f"{name} is answered here, from {decided}"]
        routes = self.service.forward_routes()
        stub = max((route for route in self.service.stub_routes()
                    if name.is_subdomain(dns.name.from_text(route[0]))),
                   key=lambda route: len(dns.name.from_text(route[0])), default=None)
        forward = max((route for route in routes if route[1]
                       and name.is_subdomain(dns.name.from_text(route[0]))),
                      key=lambda route: len(dns.name.from_text(route[0])), default=None)
        if stub is not None and (forward is None or len(dns.name.from_text(stub[0]))
                                 > len(dns.name.from_text(forward[0]))):
            where = "the root servers" if stub[0] == "." else f"stub zone {stub[0]}"
            return [f"The following name servers are used for lookup of {name}",
                    f"resolved by recursion, from {where}:", *stub[2]]
        if not routes:
            return [f"{name} is not answered here and forwarding is off "
                    "(forward.enabled = false): REFUSED"]
        zone, uris = max(((z, u) for z, u in routes
                          if name.is_subdomain(dns.name.from_text(z))),
                         key=lambda route: len(dns.name.from_text(route[0])))
        where = "the default upstreams" if zone == "." else f"forward zone {zone}"
        return [f"The following upstreams are used for lookup of {name}",
                f"forwarding request ({where}):", *uris]

    def dump_cache(self, args: tuple[str, ...]) -> list[str]:
        now = self.service.clock()
        entries = [item for cache in self._caches() for item in cache.dump(now)]
        return format_dump(entries)

    async def dnstap_reopen(self, args: tuple[str, ...]) -> list[str]:
        """BIND's ``rndc dnstap -reopen``: the dnstap file closed once what is queued is
        written, and opened anew (log rotation; net/dnstap.py). ``ok`` once the new file
        is open, else the error (naming ``dnstap.file``)."""
        tap = self.service.dnstap
        if tap is None:
            return ["error dnstap is not enabled (no [dnstap] file to reopen)"]
        if not tap.file:
            return [f"error dnstap writes to a socket ({tap.socket_path}): there is no "
                    "file to reopen"]
        try:
            error = await asyncio.wait_for(asyncio.shield(tap.reopen()),
                                           DNSTAP_REOPEN_TIMEOUT)
        except TimeoutError:
            return [f"error the dnstap file is still being reopened after "
                    f"{DNSTAP_REOPEN_TIMEOUT:g} s; see the log"]
        return [f"error {error}"] if error else ["ok"]

    # -- helpers -----------------------------------------------------------------------

    def _caches(self) -> list[Any]:
        cache = self.service.answer_cache()
        return [] if cache is None else [cache]

    def _remove_types(self, name: dns.name.Name, types: tuple[int, ...]) -> int:
        wire = name.to_wire()
        assert wire is not None
        return sum(cache.remove_types(wire, types) for cache in self._caches())


def _name_arg(args: tuple[str, ...]) -> dns.name.Name | str:
    """The domain name in ``args[0]``, or the error line (Unbound's wording)."""
    if not args:
        return "error: this option requires a domain name"
    try:
        return dns.name.from_text(args[0])
    except dns.exception.DNSException as exc:
        return f"error cannot parse name {args[0]}: {exc}"


def _removed(messages: int) -> str:
    """Unbound's answer to flush_zone and flush_negative: dnstls keeps whole messages,
    no RRsets or DNSSEC keys apart, so those two counts are 0."""
    return f"ok removed 0 rrsets, {messages} messages and 0 key entries"
