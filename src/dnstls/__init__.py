"""dnstls: DNS over TLS (RFC 7858) in Python.

The resolver service (``dnstls serve``), the stub resolver (``dnstls stub``), the
query and pin tools, and the :class:`dnstls.Client` library share one sans-IO protocol
core (:mod:`dnstls.proto`), one resolver pipeline (:mod:`dnstls.resolver`) and thin
asyncio adapters (:mod:`dnstls.net`).

Library use::

    async with dnstls.Client("tls://1.1.1.1#cloudflare-dns.com") as client:
        answer = await client.query("example.com", "AAAA")
"""

from dnstls.client import Client, Reply, SyncClient, query_sync
from dnstls.errors import (
    CertificateError,
    ConfigError,
    DnsTlsError,
    NetworkError,
    PinMismatch,
    ProtocolError,
    QueryTimeout,
    TLSAuthenticationError,
)

__version__ = "0.1.0"

__all__ = [
    "CertificateError",
    "Client",
    "ConfigError",
    "DnsTlsError",
    "NetworkError",
    "PinMismatch",
    "ProtocolError",
    "QueryTimeout",
    "Reply",
    "SyncClient",
    "TLSAuthenticationError",
    "__version__",
    "query_sync",
]
