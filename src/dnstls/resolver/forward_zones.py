"""Per-domain forwarding (Unbound's ``forward-zone:``): one forwarder per zone.

``[[forward_zone]]`` sends the names at or under a zone to that zone's own upstreams
("corp.example. and 10.in-addr.arpa. to the company's server, home.arpa. to the home
router, everything else to Cloudflare over DoT"). :class:`ZoneRouter` has the
forwarder's interface -- :meth:`resolve` for the message path (the coalescer's next
stage), :meth:`start_wire` and :meth:`resolve_wire` for the wire path
(:class:`dnstls.resolver.wire.WireForwarder`), :meth:`statistics` -- and hands each
query to the forwarder of the longest zone at or above its name, the default
forwarder (``[[upstream]]``) when there is none. Both paths route the same way.

Names are matched by whole labels, case-insensitively (RFC 4343): ``corp.example.``
covers ``corp.example.`` and ``a.b.corp.example.``, not ``xcorp.example.``. Each zone's
forwarder is a complete :class:`~dnstls.resolver.forward.Forwarder` over upstream
objects of its own: strategy, health, back-off, down upstreams and SERVFAIL with an
Extended DNS Error behave per zone exactly as for the default upstreams, and an
upstream listed in two zones is two upstream objects (its health in one zone says
nothing about the names of the other; its metrics carry a ``zone`` label). The cache
in front is shared: its keys are whole questions.

Cost. Without zones the service hands the callers the default forwarder itself (no
router). With zones, a name under none of them costs one ``bytes.endswith`` against
the zones' last labels (C) before the default forwarder is called; only a name that
ends like a zone is walked label by label, one dict lookup per label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dns.message
import dns.name

from dnstls.resolver.base import Request
from dnstls.resolver.default_zones import enclosing


def _wire(name: dns.name.Name) -> bytes:
    return (name.to_wire() or b"").lower()


class ZoneRouter:
    """The forwarder interface over ``default`` and one forwarder per zone (``zones``:
    (zone name, forwarder) pairs, names distinct, never the root)."""

    def __init__(self, default: Any, zones: Sequence[tuple[dns.name.Name, Any]]) -> None:
        self.default = default
        self.zones: list[tuple[dns.name.Name, Any]] = list(zones)
        self._by_name: dict[dns.name.Name, Any] = {name: f for name, f in self.zones}
        self._by_wire: dict[bytes, Any] = {_wire(name): f for name, f in self.zones}
        # the zones' last labels with the root (b"\x07example\x00"): a name that ends
        # with none of them is under no zone
        self._endings: tuple[bytes, ...] = tuple(
            {_wire(dns.name.Name(name.labels[-2:])) for name, _ in self.zones})

    def __repr__(self) -> str:
        zones = ", ".join(name.to_text() for name, _ in self.zones)
        return f"<ZoneRouter [{zones}] default={self.default!r}>"

    def route_wire(self, question: bytes) -> Any:
        """The forwarder for a question in wire form (the lower-cased name, then QTYPE
        and QCLASS: the cache key without its flag byte)."""
        name = question[:-4]
        if not name.endswith(self._endings):
            return self.default
        by_wire = self._by_wire
        pos = 0
        end = len(name) - 1  # the root label: never a zone
        while pos < end:
            found = by_wire.get(name[pos:])
            if found is not None:
                return found
            pos += 1 + name[pos]
        return self.default

    def route(self, name: dns.name.Name) -> Any:
        """The forwarder for ``name`` (the message path's)."""
        found = enclosing(name, self._by_name)
        return self.default if found is None else found

    async def resolve(self, request: Request) -> dns.message.Message:
        question = request.message.question
        forwarder = self.route(question[0].name) if len(question) == 1 else self.default
        response: dns.message.Message = await forwarder.resolve(request)
        return response

    async def resolve_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                           deadline: float, check: Callable[[bytes], bool] | None = None,
                           ) -> bytes:
        answer: bytes = await self.route_wire(question).resolve_wire(
            question, flags=flags, payload=payload, do=do, deadline=deadline, check=check)
        return answer

    def start_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                   deadline: float,
                   callback: Callable[[bytes | None, BaseException | None], None],
                   check: Callable[[bytes], bool] | None = None) -> bool:
        started: bool = self.route_wire(question).start_wire(
            question, flags=flags, payload=payload, do=do, deadline=deadline,
            callback=callback, check=check)
        return started

    def statistics(self) -> dict[str, Any]:
        """The default forwarder's statistics, plus ``zones``: each zone's (by its name
        with the final dot)."""
        out: dict[str, Any] = dict(self.default.statistics())
        out["zones"] = {name.to_text(): f.statistics() for name, f in self.zones}
        return out


__all__ = ["ZoneRouter"]
