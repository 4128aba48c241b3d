"""A DNS hierarchy on loopback for recursive resolvers: root, TLD and zones on several
authoritative servers, each on port 53 of its own loopback address (root hints carry no
port), with the cases an iterator must get right.

:func:`pick_base` chooses a random ``127.N.M.`` (N in 100..250) whose port 53 is free,
so two test sessions on one machine never share servers (all of 127/8 is loopback on
Linux). :func:`write_hierarchy` writes the zone files and the root hints
(``root.hints``, named.root format) for that base; ``tests/interop/peers.py``
``start_authorities`` runs one nsd per server address, and :class:`PoisonServer` (an
in-process responder, UDP and TCP) serves the one zone that lies.

Servers (``B`` is the base, e.g. ``127.173.9.``):

======  ===============================  ============================================
``B1``  nsd ``a.root-servers.test.``     ``.``
``B2``  nsd ``b.root-servers.test.``     ``.``
``B3``  nsd ``ns1.test.``                ``test.``
``B4``  nothing (``ns2.test.``)          a dead address: every query times out
``B5``  nsd ``ns.example.test.``         ``example.test.`` (in-bailiwick glue)
``B6``  nsd ``ns.other.example.test.``   ``other.test.`` (glueless: its NS name is in
                                         example.test.), ``deleg.ent.example.test.``;
                                         REFUSED for ``lame.test.``
``B7``  nsd ``ns1.lame.test.``           ``lame.test.`` (``ns2.lame.test.`` is B6: lame),
                                         ``slow.test.`` (as ``ns2.slow.test.``)
``B8``  :class:`BlackHole`               ``ns1.slow.test.``: takes UDP and TCP, never
                                         answers (a real timeout; B4 refuses at once)
``B9``  :class:`PoisonServer`            ``poison.test.``, its answers carrying
                                         out-of-bailiwick records (see below)
``B10`` nsd (bench only)                 ``many.test.`` (``n0`` .. ``nK`` A) and the
                                         zones ``zI.fresh.test.``
``B11`` nsd (bench only)                 ``fresh.test.`` (delegates every ``zI``)
======  ===============================  ============================================

Scenarios (:data:`EXPECTED` holds each question's answer): NXDOMAIN and NODATA,
a wildcard, empty non-terminals (``ent.example.test.``, ``b.ent.example.test.``) and a
delegation below one (``deleg.ent.example.test.``: qname minimisation walks through the
ENT), CNAME inside a zone, across zones (into the glueless ``other.test.``) and to a
name that does not exist, a DNAME (``dname.example.test.`` -> ``other.test.``), a
TXT RRset of ~2 KB (``big.example.test.``: truncated over UDP at 1232 bytes, so the
iterator must retry over TCP), the lame delegation, the dead ``test.`` server (on
loopback nothing listening means an ICMP port unreachable at once, which Unbound ignores
and waits for its timeout), a server that never answers (``slow.test.``), and a
glueless NS loop (``loopa.test.`` served by ``ns.loopb.test.`` and the other way
round, no glue anywhere: SERVFAIL). ``poison.test.``'s server adds to every answer an
A record for ``www.example.test.`` (answer and additional sections), ``test.`` and
``example.test.`` NS records naming itself (authority) and A records making itself
``ns.example.test.`` and ``ns1.test.`` (additional); a resolver that believed any of it
would then get :data:`POISON_ADDRESS` for ``www.example.test.`` (the responder answers
those names with it), which must never happen (:data:`POISON_CHECKS`).

The signed hierarchy of signed_zones.py serves the DNSSEC cases through recursion:
``signed_zones.write_hierarchy(directory, address=B20)`` on one nsd at ``B20`` and
:func:`write_root_hints` naming ``ns.test.`` at that address.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import socketserver
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

TTL = 300
#: ``www.example.test.`` as the poisoning server would have it.
POISON_ADDRESS = "192.0.2.66"
#: Eight 250-character TXT strings: ~2 KB, more than a 1232-byte UDP answer holds.
BIG_TXT = [f"{i:02d}-" + chr(ord("a") + i) * 247 for i in range(8)]

#: Host numbers (the last octet) of the servers.
ROOT_A, ROOT_B, TEST_A, TEST_DEAD, EXAMPLE, OTHER, LAME, HOLE, POISON = 1, 2, 3, 4, 5, 6, 7, 8, 9
BENCH_LEAF, BENCH_PARENT, SIGNED = 10, 11, 20

Answer = dict[tuple[str, str], list[str]]  # (owner, type) -> sorted rdata texts

#: What a recursive resolver answers, per (qname, qtype): (RCODE, answer RRsets as
#: (owner, type) -> rdata texts). Unbound 1.17.1 agrees on every one
#: (tests/interop/test_recursion_unbound.py).
EXPECTED: dict[tuple[str, str], tuple[str, Answer]] = {
    (".", "NS"): ("NOERROR", {(".", "NS"): ["a.root-servers.test.", "b.root-servers.test."]}),
    ("test.", "NS"): ("NOERROR", {("test.", "NS"): ["ns1.test.", "ns2.test."]}),
    ("nothere.", "A"): ("NXDOMAIN", {}),
    ("nothere.test.", "A"): ("NXDOMAIN", {}),
    ("www.example.test.", "A"): ("NOERROR", {("www.example.test.", "A"): ["192.0.2.1"]}),
    ("www.example.test.", "AAAA"): ("NOERROR",
                                    {("www.example.test.", "AAAA"): ["2001:db8::1"]}),
    ("www.example.test.", "TXT"): ("NOERROR",
                                   {("www.example.test.", "TXT"): ['"example"']}),
    ("www.example.test.", "MX"): ("NOERROR", {}),  # NODATA
    ("nothere.example.test.", "A"): ("NXDOMAIN", {}),
    ("x.wild.example.test.", "A"): ("NOERROR", {("x.wild.example.test.", "A"): ["192.0.2.7"]}),
    ("ent.example.test.", "A"): ("NOERROR", {}),  # empty non-terminals: NODATA
    ("b.ent.example.test.", "A"): ("NOERROR", {}),
    ("a.b.ent.example.test.", "A"): ("NOERROR",
                                     {("a.b.ent.example.test.", "A"): ["192.0.2.9"]}),
    ("www.deleg.ent.example.test.", "A"): (
        "NOERROR", {("www.deleg.ent.example.test.", "A"): ["192.0.2.5"]}),
    ("cname-in.example.test.", "A"): ("NOERROR", {
        ("cname-in.example.test.", "CNAME"): ["www.example.test."],
        ("www.example.test.", "A"): ["192.0.2.1"]}),
    ("cname-out.example.test.", "A"): ("NOERROR", {
        ("cname-out.example.test.", "CNAME"): ["www.other.test."],
        ("www.other.test.", "A"): ["192.0.2.2"]}),
    ("cname-nx.example.test.", "A"): ("NXDOMAIN", {
        ("cname-nx.example.test.", "CNAME"): ["nothere.other.test."]}),
    ("www.dname.example.test.", "A"): ("NOERROR", {
        ("dname.example.test.", "DNAME"): ["other.test."],
        ("www.dname.example.test.", "CNAME"): ["www.other.test."],
        ("www.other.test.", "A"): ["192.0.2.2"]}),
    ("big.example.test.", "TXT"): ("NOERROR", {
        ("big.example.test.", "TXT"): sorted(f'"{s}"' for s in BIG_TXT)}),
    ("www.other.test.", "A"): ("NOERROR", {("www.other.test.", "A"): ["192.0.2.2"]}),
    ("nothere.other.test.", "A"): ("NXDOMAIN", {}),
    ("www.lame.test.", "A"): ("NOERROR", {("www.lame.test.", "A"): ["192.0.2.3"]}),
    ("www.slow.test.", "A"): ("NOERROR", {("www.slow.test.", "A"): ["192.0.2.6"]}),
    ("www.loopa.test.", "A"): ("SERVFAIL", {}),
    ("www.loopb.test.", "A"): ("SERVFAIL", {}),
    ("www.poison.test.", "A"): ("NOERROR", {("www.poison.test.", "A"): ["192.0.2.4"]}),
}

#: Asked in this order after ``www.poison.test. A`` (whose answer carries the poison):
#: each must get its true answer.
POISON_CHECKS: list[tuple[str, str]] = [
    ("www.poison.test.", "A"), ("www.example.test.", "A"), ("www.example.test.", "A"),
    ("ns.example.test.", "A"), ("ns1.test.", "A"), ("www.deleg.ent.example.test.", "A"),
    ("cname-in.example.test.", "A")]
EXPECTED_POISON_CHECKS: dict[tuple[str, str], tuple[str, Answer]] = {
    **EXPECTED,
    ("ns.example.test.", "A"): ("NOERROR", {("ns.example.test.", "A"): ["B5"]}),
    ("ns1.test.", "A"): ("NOERROR", {("ns1.test.", "A"): ["B3"]}),
}

#: The questions that fail (SERVFAIL) only after every server was tried.
LOOP_QUESTIONS = [("www.loopa.test.", "A"), ("www.loopb.test.", "A")]


def expected(question: tuple[str, str], base: str) -> tuple[str, Answer]:
    """The expected answer of ``question`` with ``B<n>`` spelt out for ``base``."""
    rcode, answer = EXPECTED_POISON_CHECKS[question]
    return rcode, {key: sorted(base + v[1:] if v.startswith("B") else v for v in values)
                   for key, values in answer.items()}


def answer_of(message: dns.message.Message) -> Answer:
    """A message's answer section as :data:`EXPECTED` spells it."""
    out: Answer = {}
    for rrset in message.answer:
        key = (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype))
        out.setdefault(key, []).extend(r.to_text() for r in rrset)
    return {key: sorted(values) for key, values in out.items()}


# --------------------------------------------------------------------------- addresses

def port53_free(address: str) -> bool:
    """True if UDP and TCP port 53 of ``address`` can be bound right now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((address, 53))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


def pick_base(*, tries: int = 40, rng: random.Random | None = None) -> str:
    """A random ``127.N.M.`` (N in 100..250) whose servers' port 53 is free."""
    rng = rng or random.SystemRandom()
    hosts = (ROOT_A, ROOT_B, TEST_A, TEST_DEAD, EXAMPLE, OTHER, LAME, HOLE, POISON,
             BENCH_LEAF, BENCH_PARENT, SIGNED)
    for _ in range(tries):
        base = f"127.{rng.randint(100, 250)}.{rng.randint(0, 255)}."
        if all(port53_free(f"{base}{host}") for host in hosts):
            return base
    raise RuntimeError(f"no 127.N.M.0/24 with port 53 free after {tries} tries")


# --------------------------------------------------------------------------- zones

def _soa(ns: str, origin: str) -> str:
    return f"@ {TTL} IN SOA {ns} hostmaster.{origin} 1 3600 600 86400 {TTL}"


def _zone(origin: str, lines: Sequence[str]) -> str:
    return f"$ORIGIN {origin}\n$TTL {TTL}\n" + "\n".join(lines) + "\n"


@dataclass
class Hierarchy:
    """What :func:`write_hierarchy` wrote: zone files per server address, the hints."""

    directory: Path
    base: str
    root_hints: Path
    #: server address -> {origin: zone file}, one nsd each
    servers: dict[str, dict[str, Path]] = field(default_factory=dict)
    poison: str = ""  # the PoisonServer's address
    hole: str = ""    # the BlackHole's address
    dead: str = ""    # an address named as a server, where nothing listens
    many: int = 0     # names n0..n<many-1>.many.test. (bench)
    fresh: int = 0    # zones z0..z<fresh-1>.fresh.test., each with www A (bench)

    def address(self, host: int) -> str:
        return f"{self.base}{host}"


def write_root_hints(path: Path, servers: Sequence[tuple[str, str]]) -> Path:
    """A root hints file (named.root format) naming ``servers``: (name, IPv4 address)."""
    lines = [f".                        3600000      NS    {name}" for name, _ in servers]
    lines += [f"{name:24} 3600000      A     {address}" for name, address in servers]
    path.write_text("; root hints for the loopback test hierarchy\n" + "\n".join(lines)
                    + "\n")
    return path


def _zone_texts(base: str, *, many: int, fresh: int) -> dict[int, dict[str, str]]:
    """host -> {origin: zone text}."""
    b = base
    root = _zone(".", [
        f"@ {TTL} IN SOA a.root-servers.test. hostmaster.test. 1 3600 600 86400 {TTL}",
        "@ NS a.root-servers.test.", "@ NS b.root-servers.test.",
        "test. NS ns1.test.", "test. NS ns2.test.",
        f"ns1.test. A {b}{TEST_A}", f"ns2.test. A {b}{TEST_DEAD}",
        f"a.root-servers.test. A {b}{ROOT_A}", f"b.root-servers.test. A {b}{ROOT_B}",
    ])
    test_lines = [
        _soa("ns1.test.", "test."), "@ NS ns1.test.", "@ NS ns2.test.",
        f"ns1 A {b}{TEST_A}", f"ns2 A {b}{TEST_DEAD}",
        f"a.root-servers A {b}{ROOT_A}", f"b.root-servers A {b}{ROOT_B}",
        "example NS ns.example.test.", f"ns.example A {b}{EXAMPLE}",
        "other NS ns.other.example.test.",  # glueless: resolve the NS name first
        "lame NS ns1.lame.test.", "lame NS ns2.lame.test.",
        f"ns1.lame A {b}{LAME}", f"ns2.lame A {b}{OTHER}",  # B6 refuses lame.test.
        "loopa NS ns.loopb.test.", "loopb NS ns.loopa.test.",  # a glueless loop
        "slow NS ns1.slow.test.", "slow NS ns2.slow.test.",
        f"ns1.slow A {b}{HOLE}", f"ns2.slow A {b}{LAME}",  # B8 never answers
        "poison NS ns.poison.test.", f"ns.poison A {b}{POISON}",
    ]
    if many:
        test_lines += ["many NS ns.many.test.", f"ns.many A {b}{BENCH_LEAF}"]
    if fresh:
        test_lines += ["fresh NS ns.fresh.test.", f"ns.fresh A {b}{BENCH_PARENT}"]
    example = _zone("example.test.", [
        _soa("ns.example.test.", "example.test."), "@ NS ns.example.test.",
        f"ns A {b}{EXAMPLE}", f"ns.other A {b}{OTHER}",
        "www A 192.0.2.1", "www AAAA 2001:db8::1", 'www TXT "example"',
        "*.wild A 192.0.2.7", "a.b.ent A 192.0.2.9",
        "deleg.ent NS ns.other.example.test.",
        "cname-in CNAME www", "cname-out CNAME www.other.test.",
        "cname-nx CNAME nothere.other.test.", "dname DNAME other.test.",
        *(f'big TXT "{s}"' for s in BIG_TXT),
    ])
    other = _zone("other.test.", [
        _soa("ns.other.example.test.", "other.test."), "@ NS ns.other.example.test.",
        "www A 192.0.2.2"])
    deleg = _zone("deleg.ent.example.test.", [
        _soa("ns.other.example.test.", "deleg.ent.example.test."),
        "@ NS ns.other.example.test.", "www A 192.0.2.5"])
    lame = _zone("lame.test.", [
        _soa("ns1.lame.test.", "lame.test."), "@ NS ns1.lame.test.", "@ NS ns2.lame.test.",
        f"ns1 A {b}{LAME}", f"ns2 A {b}{OTHER}", "www A 192.0.2.3"])
    slow = _zone("slow.test.", [
        _soa("ns1.slow.test.", "slow.test."), "@ NS ns1.slow.test.", "@ NS ns2.slow.test.",
        f"ns1 A {b}{HOLE}", f"ns2 A {b}{LAME}", "www A 192.0.2.6"])
    servers: dict[int, dict[str, str]] = {
        ROOT_A: {".": root}, ROOT_B: {".": root}, TEST_A: {"test.": _zone("test.", test_lines)},
        EXAMPLE: {"example.test.": example},
        OTHER: {"other.test.": other, "deleg.ent.example.test.": deleg},
        LAME: {"lame.test.": lame, "slow.test.": slow},
    }
    if many:
        servers[BENCH_LEAF] = {"many.test.": _zone("many.test.", [
            _soa("ns.many.test.", "many.test."), "@ NS ns.many.test.",
            f"ns A {b}{BENCH_LEAF}", *(f"n{i} A 192.0.2.{i % 250 + 1}" for i in range(many))])}
    if fresh:
        leaf = servers.setdefault(BENCH_LEAF, {})
        parent = [_soa("ns.fresh.test.", "fresh.test."), "@ NS ns.fresh.test.",
                  f"ns A {b}{BENCH_PARENT}"]
        for i in range(fresh):
            origin = f"z{i}.fresh.test."
            parent += [f"z{i} NS ns.z{i}.fresh.test.", f"ns.z{i} A {b}{BENCH_LEAF}"]
            leaf[origin] = _zone(origin, [_soa(f"ns.{origin}", origin), f"@ NS ns.{origin}",
                                          f"ns A {b}{BENCH_LEAF}", "www A 192.0.2.200"])
        servers[BENCH_PARENT] = {"fresh.test.": _zone("fresh.test.", parent)}
    return servers


def write_hierarchy(directory: Path, base: str | None = None, *, many: int = 0,
                    fresh: int = 0) -> Hierarchy:
    """Write the zone files (one directory per server) and ``root.hints`` into
    ``directory`` (created) for servers at ``base`` (default: :func:`pick_base`);
    ``many``/``fresh``: the bench's zones (none by default)."""
    base = base or pick_base()
    directory.mkdir(parents=True, exist_ok=True)
    hints = write_root_hints(directory / "root.hints", [
        ("a.root-servers.test.", f"{base}{ROOT_A}"), ("b.root-servers.test.", f"{base}{ROOT_B}")])
    hierarchy = Hierarchy(directory, base, hints, poison=f"{base}{POISON}",
                          hole=f"{base}{HOLE}",
                          dead=f"{base}{TEST_DEAD}", many=many, fresh=fresh)
    for host, zones in _zone_texts(base, many=many, fresh=fresh).items():
        address = f"{base}{host}"
        server_dir = directory / address
        server_dir.mkdir(exist_ok=True)
        files = {}
        for origin, text in zones.items():
            path = server_dir / (f"{origin}zone" if origin != "." else "root.zone")
            path.write_text(text)
            files[origin] = path
        hierarchy.servers[address] = files
    return hierarchy


# --------------------------------------------------------------------------- poison

class PoisonServer:
    """An authoritative server for ``poison.test.`` (UDP and TCP, port 53 of
    ``address``, in threads of this process) that adds out-of-bailiwick records to
    every answer: see the module docstring. It answers the names it poisons with
    :data:`POISON_ADDRESS` too, so a resolver that believed it would show it."""

    ORIGIN = dns.name.from_text("poison.test.")

    def __init__(self, address: str, base: str, *, port: int = 53) -> None:
        self.address = address
        self.port = port
        self.base = base
        self.zone = dns.zone.from_text(_zone("poison.test.", [
            _soa("ns.poison.test.", "poison.test."), "@ NS ns.poison.test.",
            f"ns A {address}", "www A 192.0.2.4"]), "poison.test.", relativize=False)
        self.victims = {dns.name.from_text(n) for n in (
            "www.example.test.", "ns.example.test.", "ns1.test.")}
        self.queries = 0
        self.victim_queries = 0  # questions for a poisoned name: someone believed it
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def _poison(self, response: dns.message.Message) -> None:
        a = dns.rdatatype.A

        def rrset(name: str, rdtype: int, *texts: str) -> dns.rrset.RRset:
            return dns.rrset.from_text(name, TTL, "IN", rdtype, *texts)

        response.answer.append(rrset("www.example.test.", a, POISON_ADDRESS))
        response.authority += [rrset("test.", dns.rdatatype.NS, "ns.poison.test."),
                               rrset("example.test.", dns.rdatatype.NS, "ns.poison.test.")]
        response.additional += [rrset("ns.poison.test.", a, self.address),
                                rrset("www.example.test.", a, POISON_ADDRESS),
                                rrset("ns.example.test.", a, self.address),
                                rrset("ns1.test.", a, self.address)]

    def respond(self, wire: bytes) -> bytes | None:
        """The answer to the query ``wire`` (None: not a query, ignored)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        self.queries += 1
        response = dns.message.make_response(query)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        if name in self.victims:
            self.victim_queries += 1
            response.flags |= dns.flags.AA
            if rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(name, TTL, "IN", "A",
                                                           POISON_ADDRESS))
            return response.to_wire()
        if not name.is_subdomain(self.ORIGIN):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        node = self.zone.get_node(name)
        rds = node.get_rdataset(dns.rdataclass.IN, rdtype) if node is not None else None
        if rds is not None:
            found = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
            found.update(rds)
            response.answer.append(found)
        else:
            exists = any(n.is_subdomain(name) for n in self.zone.nodes)
            if not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
            soa = dns.rrset.RRset(self.ORIGIN, dns.rdataclass.IN, dns.rdatatype.SOA)
            soa.update(self.zone.nodes[self.ORIGIN].get_rdataset(
                dns.rdataclass.IN, dns.rdatatype.SOA))
            response.authority.append(soa)
        self._poison(response)
        return response.to_wire()

    def start(self) -> PoisonServer:
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                answer = outer.respond(data)
                if answer is not None:
                    sock.sendto(answer, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(5)
                for _ in range(100):  # bounded: queries per connection
                    try:
                        head = sock.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            return
                        data = sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
                    except OSError:
                        return
                    answer = outer.respond(data)
                    if answer is None:
                        return
                    sock.sendall(len(answer).to_bytes(2, "big") + answer)

        class UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
            daemon_threads = True

        class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._servers = [UdpServer((self.address, self.port), Udp),
                         TcpServer((self.address, self.port), Tcp)]
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={
                "poll_interval": 0.1}, name=f"poison-{self.address}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []


class BlackHole:
    """UDP and TCP port 53 of ``address`` bound (TCP listening, its backlog completing
    handshakes) and never read: every query to it times out."""

    def __init__(self, address: str, *, port: int = 53) -> None:
        self.address, self.port = address, port
        self._sockets: list[socket.socket] = []

    def start(self) -> BlackHole:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sockets = [udp, tcp]
        for sock in self._sockets:
            sock.bind((self.address, self.port))
        tcp.listen(64)
        return self

    def stop(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []


@contextlib.contextmanager
def responders(hierarchy: Hierarchy) -> Iterator[PoisonServer]:
    """The hierarchy's in-process servers, running until the block ends: the
    :class:`PoisonServer` (yielded) and the :class:`BlackHole`."""
    hole = BlackHole(hierarchy.hole).start()
    try:
        server = PoisonServer(hierarchy.poison, hierarchy.base).start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        hole.stop()


def servers_of(hierarchy: Hierarchy) -> Mapping[str, Mapping[str, Path]]:
    """Server address -> zones, parents first (the order to start them in)."""
    return dict(sorted(hierarchy.servers.items(),
                       key=lambda item: int(item[0].rsplit(".", 1)[1])))
