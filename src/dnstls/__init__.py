"""dnstls: DNS over TLS (RFC 7858) in Python.

The resolver service (``dnstls serve``), the stub resolver (``dnstls stub``), the
query and pin tools, and the :class:`dnstls.Client` library share one sans-IO protocol
core (:mod:`dnstls.proto`), one resolver pipeline (:mod:`dnstls.resolver`) and thin
asyncio adapters (:mod:`dnstls.net`).
"""

from dnstls.errors import DnsTlsError

__version__ = "0.1.0"

__all__ = ["DnsTlsError", "__version__"]
