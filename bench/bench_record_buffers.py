"""Microseconds of server CPU per TLS record in and out, with and without OpenSSL's
``SSL_MODE_RELEASE_BUFFERS`` (no sockets).

Usage: ``PYTHONPATH=TREE/src .venv/bin/python bench/bench_record_buffers.py [-n 50]``

CPython's ``ssl`` sets ``SSL_MODE_RELEASE_BUFFERS`` on every context: OpenSSL frees a
connection's read and write buffers (~17 KB each) whenever they are empty and allocates
them again for the next record, which saves memory on idle connections but might cost a
malloc/free pair per record on busy ones. This measures what a one-query read costs the
server -- read one 31-byte query record, write one 47-byte answer record, take the bytes
out of the memory BIO -- on 200 TLS 1.3 connections (``server_context`` as ``dnstls
serve`` builds it), with the mode as ``ssl`` leaves it and cleared (``SSL_CTX_ctrl``
``SSL_CTRL_CLEAR_MODE`` through :mod:`dnstls.net.tls`'s guarded ctypes path), alternated
three times. The client's work is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import tempfile
import time
from pathlib import Path

import trustme

from dnstls.net import tls

SSL_CTRL_MODE = 33
SSL_CTRL_CLEAR_MODE = 78
SSL_MODE_RELEASE_BUFFERS = 0x10
QUERY = b"\x00\x1d" + b"q" * 29
ANSWER = b"\x00\x2d" + b"a" * 45

Pair = tuple[ssl.SSLObject, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO,
             ssl.MemoryBIO]


def server(cert: Path, key: Path, *, release: bool) -> tuple[ssl.SSLContext, int]:
    ctx = tls.server_context(tls.CertPair(cert, key))
    raw = tls._ssl_ctx(ctx)
    ctrl = tls._LibSSL._ctrl
    if raw is None or ctrl is None:
        raise SystemExit("bench: OpenSSL's SSL_CTX_ctrl is not reachable from this Python")
    if not release:
        ctrl(raw, SSL_CTRL_CLEAR_MODE, SSL_MODE_RELEASE_BUFFERS, None)
    return ctx, int(ctrl(raw, SSL_CTRL_MODE, 0, None))


def connect(client: ssl.SSLContext, srv: ssl.SSLContext) -> Pair:
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(ci, co, server_hostname="dns.test")
    s = srv.wrap_bio(si, so, server_side=True)
    for _ in range(10):  # bounded: a TLS 1.3 handshake takes two flights each way
        for end in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        si.write(co.read())
        ci.write(so.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        c.read(1)  # take the session tickets in
    return c, s, ci, co, si, so


def per_record(client: ssl.SSLContext, srv: ssl.SSLContext, rounds: int) -> float:
    conns = [connect(client, srv) for _ in range(200)]
    spent = 0.0
    for _ in range(rounds):
        for c, s, _ci, co, si, so in conns:
            c.write(QUERY)
            si.write(co.read())
            start = time.thread_time()
            s.read(4096)
            s.write(ANSWER)
            so.read()
            spent += time.thread_time() - start
    return spent / (rounds * len(conns)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=50)
    args = parser.parse_args()
    ca = trustme.CA()
    leaf = ca.issue_cert("dns.test")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)
        for release in (True, False) * 3:
            srv, mode = server(cert, key, release=release)
            print(f"SSL_MODE_RELEASE_BUFFERS {'on ' if release else 'off'} (mode {mode:#x}): "
                  f"{per_record(client, srv, args.rounds):.2f} µs per record in + out")


if __name__ == "__main__":
    main()
