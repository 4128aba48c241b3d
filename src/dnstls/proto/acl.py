"""Access control: which client addresses are answered, refused or ignored.

Rules are Unbound's ``access-control`` lines, ``"NETBLOCK ACTION"``:
``"192.168.0.0/16 allow"``, ``"10.1.2.3 refuse"`` (a bare address is a /32 or /128),
``"2001:db8::/32 deny"``. The actions:

* ``allow`` -- queries are answered as usual; but a query with RD=0 (recursion not
  desired) gets local data only (local zones, default zones, the refusal of other
  classes) and REFUSED with EDE 18 for anything else: never an answer from the cache
  (which would tell what other clients asked: cache snooping), never forwarded;
* ``allow_snoop`` -- as ``allow``, and RD=0 queries are answered from the cache too
  (SERVFAIL on a miss: an RD=0 query is never forwarded, net/handler.py, as Unbound);
* ``refuse`` -- every query gets REFUSED with Extended DNS Error 18 (Prohibited,
  RFC 8914 §4.19); a DoT/TCP connection is still accepted (and TLS completed);
* ``deny`` -- UDP datagrams are dropped silently; TCP/TLS connections are closed at
  accept, before any TLS work.

``allow`` and ``allow_snoop`` are Unbound's: a client of ``allow`` gets REFUSED for an
RD=0 query that local data does not answer there too. The check is the listeners'
(``net/udp.py`` per datagram, ``net/server.py`` per connection, decided at accept) and
costs one bit test per query (``wire[2] & 1``); the refusal is
:meth:`dnstls.net.handler.QueryHandler.refuse_norec`.

**Longest prefix match wins**, as in Unbound: with ``"10.0.0.0/8 allow"`` and
``"10.1.2.3 refuse"``, 10.1.2.3 is refused and 10.1.2.4 answered, whatever the order
of the rules. An address that matches no rule is refused. Two rules for the same
netblock are an error (Unbound keeps the first with a warning; a contradiction in a
security setting should not pass quietly).

As Unbound does, a netblock with host bits set (``"10.0.0.1/8 allow"``) is accepted and
means its network (``10.0.0.0/8``); a scope (``"fe80::1%eth0 allow"``) is accepted and
ignored. A source address seen on a dual-stack ``[::]`` socket as IPv4-mapped IPv6
(``::ffff:192.0.2.1``) is matched as the IPv4 address, and a mapped netblock in a rule
(``::ffff:10.0.0.0/104``) as the IPv4 one (``10.0.0.0/8``). A link-local source with a
scope (``fe80::1%eth0``) is matched without it.

**Default** (no rules configured): dnsdist's default ACL, :data:`DEFAULT_RULES` --
loopback and the private, shared (CGNAT) and link-local ranges are allowed (``allow``,
not ``allow_snoop``: Unbound's default for localhost), everything else is refused.
Rules given by the operator replace the default entirely (as dnsdist's ``setACL``): to
add a network, copy the default and append to it.

**Cost.** :meth:`AccessControl.check` runs for every UDP datagram on the plain-DNS
path and for every accepted connection. A verdict is remembered per address string
(a bounded dict, emptied when full), so a client that keeps asking costs one dict
lookup; a new address is parsed once and looked up with one dict probe per distinct
prefix length in the rules (integer keys: the address shifted right by the host bits).

Sans-IO: no sockets, no clock; the listeners (``net/server.py``, ``net/udp.py``) ask
:meth:`AccessControl.check` and act on the answer. The counters
(:attr:`AccessControl.refused`, :attr:`AccessControl.denied`,
:attr:`AccessControl.norec_refused`) are kept here so that
every listener of a service adds to one place.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_pton
from typing import Final

ALLOW: Final = 0
REFUSE: Final = 1
DENY: Final = 2
ALLOW_SNOOP: Final = 3

#: The action names, as Unbound spells them (lower case only, as Unbound).
ACTIONS: Final = {"allow": ALLOW, "refuse": REFUSE, "deny": DENY, "allow_snoop": ALLOW_SNOOP}
ACTION_NAMES: Final = ("allow", "refuse", "deny", "allow_snoop")

#: dnsdist's default ACL: loopback, RFC 1918 private, RFC 6598 shared (CGNAT), link-local
#: and unique-local networks. Used when no rule is configured.
DEFAULT_RULES: Final = (
    "127.0.0.0/8 allow", "10.0.0.0/8 allow", "100.64.0.0/10 allow",
    "169.254.0.0/16 allow", "192.168.0.0/16 allow", "172.16.0.0/12 allow",
    "::1/128 allow", "fc00::/7 allow", "fe80::/10 allow",
)

#: Addresses whose verdict is remembered; the memo is emptied when it is full.
MEMO_SIZE: Final = 65536

_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_PREFIX: Final = b"\0" * 10 + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule: a netblock (normalised: host bits cleared, IPv4-mapped netblocks
    as IPv4) and its action."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    action: int

    def __str__(self) -> str:
        return f"{self.network} {ACTION_NAMES[self.action]}"


def parse_rule(text: object) -> Rule:
    """Parse ``"NETBLOCK ACTION"``; ValueError with the message for a ConfigError."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string like \"192.168.0.0/16 allow\", got {text!r}")
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"{text!r}: expected \"NETBLOCK ACTION\", "
                         "e.g. \"192.168.0.0/16 allow\"")
    block, name = parts
    action = ACTIONS.get(name)
    if action is None:
        raise ValueError(f"unknown action {name!r} (allow, allow_snoop, refuse or deny)")
    address, slash, length = block.partition("/")
    address = address.partition("%")[0]  # a scope is accepted and ignored (as Unbound)
    try:
        if slash and not length.isdigit():
            raise ValueError(length)
        network = ipaddress.ip_network(f"{address}/{length}" if slash else address,
                                       strict=False)
    except ValueError:
        raise ValueError(f"{block!r} is not an address or netblock") from None
    if (isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96
            and network.subnet_of(_MAPPED)):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return Rule(network, action)


def parse_rules(texts: Iterable[object], field: str) -> tuple[Rule, ...]:
    """Parse every rule; ``(field_of_the_bad_rule, message)`` as a ValueError's args
    for the first bad one (a duplicate netblock included)."""
    rules: list[Rule] = []
    seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for i, text in enumerate(texts):
        try:
            rule = parse_rule(text)
        except ValueError as exc:
            raise ValueError(f"{field}[{i}]", str(exc)) from None
        if rule.network in seen:
            raise ValueError(f"{field}[{i}]", f"{rule.network} is already in "
                             f"{field}[{seen[rule.network]}]")
        seen[rule.network] = i
        rules.append(rule)
    if not rules:
        raise ValueError(field, "no rules: every client would be refused (give "
                         "\"0.0.0.0/0 allow\" and \"::/0 allow\" to answer everyone)")
    return tuple(rules)


def _tables(rules: Iterable[Rule], version: int) -> list[tuple[int, dict[int, int]]]:
    """``(host bits, {network >> host bits: action})`` per prefix length, longest first."""
    bits = 32 if version == 4 else 128
    by_length: dict[int, dict[int, int]] = {}
    for rule in rules:
        network = rule.network
        if network.version != version:
            continue
        host_bits = bits - network.prefixlen
        by_length.setdefault(host_bits, {})[int(network.network_address) >> host_bits] = \
            rule.action
    return sorted(by_length.items())


class AccessControl:
    """The verdicts for one service's listeners; see the module docstring."""

    __slots__ = ("_memo", "_v4", "_v6", "default", "denied", "memo_size", "norec_refused",
                 "refused", "rules")

    def __init__(self, rules: Sequence[Rule] | None = None, *,
                 memo_size: int = MEMO_SIZE) -> None:
        self.memo_size = memo_size
        #: Queries answered REFUSED, by transport (``udp``, ``tcp``, ``tls``).
        self.refused: Counter[str] = Counter()
        #: Datagrams dropped (``udp``) and connections closed at accept (``tcp``,
        #: ``tls``) by ``deny``, by transport.
        self.denied: Counter[str] = Counter()
        #: Queries with RD=0 from clients of ``allow`` answered REFUSED (not local data),
        #: by transport.
        self.norec_refused: Counter[str] = Counter()
        self.rules: tuple[Rule, ...] = ()
        self.default = True
        self._v4: list[tuple[int, dict[int, int]]] = []
        self._v6: list[tuple[int, dict[int, int]]] = []
        self._memo: dict[str, int] = {}
        self.replace(rules)

    def replace(self, rules: Sequence[Rule] | None) -> None:
        """Use ``rules`` from now on (None: :data:`DEFAULT_RULES`); counters are kept."""
        self.default = rules is None
        self.rules = tuple(parse_rule(r) for r in DEFAULT_RULES) if rules is None \
            else tuple(rules)
        self._v4 = _tables(self.rules, 4)
        self._v6 = _tables(self.rules, 6)
        self._memo = {}

    def adopt(self, other: AccessControl) -> None:
        """Take ``other``'s rules (a reload): counters kept, remembered verdicts dropped."""
        self.replace(None if other.default else other.rules)

    def check(self, host: str) -> int:
        """The action (:data:`ALLOW`, :data:`ALLOW_SNOOP`, :data:`REFUSE`, :data:`DENY`)
        for a client address as the loop reports it (``"192.0.2.1"``,
        ``"::ffff:192.0.2.1"``, ``"fe80::1%eth0"``)."""
        action = self._memo.get(host)
        if action is not None:
            return action
        action = self.lookup(host)
        memo = self._memo
        if len(memo) >= self.memo_size:
            memo.clear()
        memo[host] = action
        return action

    def lookup(self, host: str) -> int:
        """:meth:`check` without the memo: the longest matching prefix's action."""
        # inet_pton: a conversion, no socket (a third of ipaddress.ip_address's time)
        text = host.partition("%")[0]
        try:
            if ":" in text:
                packed = inet_pton(AF_INET6, text)
                if packed[:12] == _MAPPED_PREFIX:
                    tables, value = self._v4, int.from_bytes(packed[12:])
                else:
                    tables, value = self._v6, int.from_bytes(packed)
            else:
                tables, value = self._v4, int.from_bytes(inet_pton(AF_INET, text))
        except (OSError, ValueError):
            return REFUSE  # not an address ("?": the peer was gone before it was asked)
        for host_bits, table in tables:
            action = table.get(value >> host_bits)
            if action is not None:
                return action
        return REFUSE

    def describe(self) -> str:
        """What the rules allow, in one line for the start-up log."""
        if self.default:
            return "loopback and private networks allowed, others refused"
        parts = []
        for action in (ALLOW, ALLOW_SNOOP, REFUSE, DENY):
            blocks = [str(r.network) for r in self.rules if r.action == action]
            if blocks:
                parts.append(f"{ACTION_NAMES[action]} {', '.join(blocks)}")
        return "; ".join(parts) + "; others refused"

    def statistics(self) -> dict[str, object]:
        return {"refused": dict(self.refused), "denied": dict(self.denied),
                "norec_refused": dict(self.norec_refused), "rules": len(self.rules)}


__all__ = ["ACTIONS", "ALLOW", "ALLOW_SNOOP", "DEFAULT_RULES", "DENY", "REFUSE",
           "AccessControl", "Rule", "parse_rule", "parse_rules"]
