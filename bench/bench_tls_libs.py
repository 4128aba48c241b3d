"""Server CPU per TLS handshake, and per record, with another OpenSSL: Python's ``ssl``
(the system's OpenSSL, what dnstls uses) against pyOpenSSL on the OpenSSL that the
``cryptography`` wheel bundles (a newer release: 4.0.3 with cryptography 50).

Usage (pyOpenSSL is not a dependency of dnstls; a scratch virtualenv is enough)::

    python3 -m venv /tmp/tlsx && /tmp/tlsx/bin/pip install cryptography pyOpenSSL trustme
    flock /tmp/dnstls-bench.lock /tmp/tlsx/bin/python bench/bench_tls_libs.py [-n 300]

Both servers run over memory BIOs in this thread against the same Python ``ssl``
client (ECDSA P-256 certificate, X25519, default suites and tickets on both sides);
only the server's calls are timed (``time.thread_time``). pyOpenSSL adds a Python layer
(cffi) per call, so its per-record figure is an upper bound for the library; per
handshake that layer is a few calls. Session 6 asked whether a newer OpenSSL would make
handshakes cheaper (docs/performance.md, "Session 6").
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme

try:
    from cryptography.hazmat.bindings.openssl.binding import Binding
    from OpenSSL import SSL
except ImportError:
    sys.exit("needs pyOpenSSL: see the usage in this file's docstring")

QUERY = b"\x00\x20" + b"q" * 32
ANSWER = b"\x00\x30" + b"a" * 48


class Pki:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tls-libs-"))
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        leaf = ca.issue_cert("dns.test", key_type=trustme.KeyType.ECDSA)
        self.both = str(self.dir / "both.pem")
        self.ca = str(self.dir / "ca.pem")
        leaf.private_key_and_cert_chain_pem.write_to_path(self.both)
        ca.cert_pem.write_to_path(self.ca)

    def client(self, version: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False
        v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
        ctx.minimum_version = ctx.maximum_version = v
        return ctx

    def stdlib_server(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.both)
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        return ctx

    def bundled_server(self) -> Any:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.use_certificate_chain_file(self.both)
        ctx.use_privatekey_file(self.both)
        ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
        return ctx


class StdlibServer:
    """The server side over ``ssl.MemoryBIO`` (as uvloop drives it)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)

    def step(self, data: bytes) -> tuple[bool, bytes]:
        self.inc.write(data)
        try:
            self.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        return done, self.out.read()

    def answer(self, data: bytes) -> bytes:
        self.inc.write(data)
        self.obj.read(4096)
        self.obj.write(ANSWER)
        return self.out.read()


class BundledServer:
    """The server side on pyOpenSSL's memory BIOs (``Connection(ctx, None)``)."""

    def __init__(self, ctx: Any) -> None:
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_accept_state()

    def _drain(self) -> bytes:
        try:
            return bytes(self.conn.bio_read(65536))
        except SSL.WantReadError:
            return b""

    def step(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self.conn.bio_write(data)
        try:
            self.conn.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        return done, self._drain()

    def answer(self, data: bytes) -> bytes:
        self.conn.bio_write(data)
        self.conn.recv(4096)
        self.conn.send(ANSWER)
        return self._drain()


def connect(make: Any, client_ctx: ssl.SSLContext) -> tuple[float, Any, ssl.SSLObject,
                                                             ssl.MemoryBIO, ssl.MemoryBIO]:
    """One handshake; the server's CPU seconds, the server and the client's ends."""
    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(cin, cout)
    t0 = time.thread_time()
    server = make()
    spent = time.thread_time() - t0
    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        data = cout.read()
        t0 = time.thread_time()
        if not server_done:
            server_done, reply = server.step(data)
        else:
            reply = b""
        spent += time.thread_time() - t0
        cin.write(reply)
    return spent, server, client, cin, cout


def per_connection(make: Any, client_ctx: ssl.SSLContext, n: int) -> float:
    """µs of server CPU per connection: handshake, one query read, one answer written."""
    total = 0.0
    for _ in range(n):
        spent, server, client, cin, cout = connect(make, client_ctx)
        client.write(QUERY)
        t0 = time.thread_time()
        reply = server.answer(cout.read())
        total += spent + time.thread_time() - t0
        cin.write(reply)
        client.read(4096)
    return total / n * 1e6


def per_record(make: Any, client_ctx: ssl.SSLContext, n: int) -> float:
    """µs of server CPU per query record read and answer record written."""
    _, server, client, _cin, cout = connect(make, client_ctx)
    records = []
    for _ in range(n):
        client.write(QUERY)
        records.append(cout.read())
    t0 = time.thread_time()
    for record in records:
        server.answer(record)
    return (time.thread_time() - t0) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="connections per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pki = Pki()
    bundled = Binding.ffi.string(Binding.lib.OpenSSL_version(0)).decode()
    print(f"stdlib ssl: {ssl.OPENSSL_VERSION} | pyOpenSSL: {bundled}")
    std_ctx, bun_ctx = pki.stdlib_server(), pki.bundled_server()
    for version in ("1.3", "1.2"):
        for _ in range(args.rounds):
            a = per_connection(lambda: StdlibServer(std_ctx), pki.client(version), args.n)
            b = per_connection(lambda: BundledServer(bun_ctx), pki.client(version), args.n)
            print(f"TLS {version} full, µs per connection: stdlib {a:6.1f}, "
                  f"pyOpenSSL {b:6.1f}, ratio {b / a:.2f}")
    for _ in range(args.rounds):
        a = per_record(lambda: StdlibServer(std_ctx), pki.client("1.3"), 20000)
        b = per_record(lambda: BundledServer(bun_ctx), pki.client("1.3"), 20000)
        print(f"one record read + one written, µs: stdlib {a:.2f}, pyOpenSSL {b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
