"""A scripted zone transfer primary on loopback (TCP or TLS) for the transfer tests.

:class:`Primary` answers each query with the frames its script returns (None closes the
connection) and keeps the connection open otherwise; :data:`SCRIPTS` holds the transfers
the tests use, ending well or breaking in the ways kdig reports (a refusal, no SOA first,
a close or a stall mid-transfer, garbage, a TSIG that does not verify).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable

import dns.message
import dns.rrset
import dns.tsig

SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
WRONG = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTM="
KEY = dns.tsig.Key("tsig-key.", base64.b64decode(SECRET), dns.tsig.HMAC_SHA256)
SOA9 = "ns1.z.test. h.z.test. 9 3600 600 86400 300"

Script = Callable[[dns.message.Message], list[bytes | None]]


def soa(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text("z.test.", 300, "IN", "SOA",
                               f"ns1.z.test. h.z.test. {serial} 3600 600 86400 300")


def a(name: str, address: str = "192.0.2.1") -> dns.rrset.RRset:
    return dns.rrset.from_text(f"{name}.z.test.", 300, "IN", "A", address)


def reply(query: dns.message.Message, *rrsets: dns.rrset.RRset, rcode: int = 0,
          key: dns.tsig.Key | None = None, unsigned: bool = False) -> bytes:
    """A framed answer, signed as the query was (dnspython) unless ``unsigned``, or
    with ``key``."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.answer = list(rrsets)
    if key is not None:
        response.use_tsig(key)
    if unsigned:
        response.tsig = None
        response.keyring = None
    wire = response.to_wire()
    return struct.pack("!H", len(wire)) + wire


SCRIPTS: dict[str, Script] = {
    "axfr": lambda q: [reply(q, soa(9), a("a")), reply(q, a("b"), soa(9))],
    "ixfr": lambda q: [reply(q, soa(9), soa(8), a("a"), soa(9), a("b"), soa(9))],
    "soa": lambda q: [reply(q, soa(9))],
    "refused": lambda q: [reply(q, rcode=5)],
    "midrefused": lambda q: [reply(q, soa(9), a("a")), reply(q, rcode=5)],
    "nosoa": lambda q: [reply(q, a("a"))],
    "close": lambda q: [reply(q, soa(9), a("a")), None],
    "hang": lambda q: [reply(q, soa(9), a("a"))],
    "garbage": lambda q: [b"\x00\x05hello"],
    "cut": lambda q: [b"\x01\x00abc", None],
    "badsig": lambda q: [reply(q, soa(9), a("a"), soa(9),
                               key=dns.tsig.Key("tsig-key.", base64.b64decode(WRONG),
                                                dns.tsig.HMAC_SHA256))],
    "unsigned": lambda q: [reply(q, soa(9), a("a"), soa(9), unsigned=True)],
}


class Primary:
    """A threaded TCP (or TLS) server answering each query with its script's frames
    (None: close the connection); it keeps the connection open otherwise."""

    def __init__(self, script: Script, context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.queries: list[dns.message.Message] = []
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError, ssl.SSLError):
                if self.context is not None:
                    conn.settimeout(5)
                    conn = self.context.wrap_socket(conn, server_side=True)
                self._open.append(conn)
                conn.settimeout(5)
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        head = conn.recv(2)
        if len(head) < 2:
            conn.close()
            return
        size = struct.unpack("!H", head)[0]
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                return
            data += chunk
        query = dns.message.from_wire(data, keyring={KEY.name: KEY}, ignore_trailing=True)
        self.queries.append(query)
        for frame in self.script(query):
            if frame is None:
                conn.close()
                return
            conn.sendall(frame)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=5)
