"""Connection admission: a global bound and a per-client-address bound.

Checked when a TCP connection is accepted, before any TLS work is spent on it (a
handshake costs hundreds of microseconds of CPU), as Unbound's ``incoming-num-tcp`` and
dnsdist's ``setMaxTCPConnectionsPerClient`` do. Every admitted connection must be
released exactly once; :meth:`statistics` lets tests prove the counters recover.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_connections: int = 10000
    max_connections_per_client: int = 100

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_client < 1:
            raise ValueError("connection limits must be at least 1")


class Admission:
    __slots__ = ("_per_client", "limits", "open", "refused_global", "refused_per_client")

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._per_client: Counter[str] = Counter()
        self.open = 0
        self.refused_global = 0
        self.refused_per_client = 0

    def admit(self, client: str) -> str | None:
        """Admit a connection from ``client`` (an address), or say why not."""
        if self.open >= self.limits.max_connections:
            self.refused_global += 1
            return "global connection limit"
        if self._per_client[client] >= self.limits.max_connections_per_client:
            self.refused_per_client += 1
            return "per-client connection limit"
        self.open += 1
        self._per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        count = self._per_client[client]
        if count <= 0:
            raise RuntimeError(f"release of {client} without a matching admit")
        if count == 1:
            del self._per_client[client]
        else:
            self._per_client[client] = count - 1
        self.open -= 1

    def count(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def statistics(self) -> dict[str, int]:
        return {"open": self.open, "clients": len(self._per_client),
                "refused_global": self.refused_global,
                "refused_per_client": self.refused_per_client}
