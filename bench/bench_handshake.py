"""Microseconds of server CPU per TLS handshake (plus one query and close_notify), no
sockets: the server context's settings compared in one process.

Usage: ``PYTHONPATH=TREE/src .venv/bin/python bench/bench_handshake.py [-n 300] [--rounds 5]``

Server and client are ``SSLObject`` pairs over memory BIOs in this thread; only the
server's calls are timed (``time.thread_time``): ``do_handshake`` for every flight, the
read of one 34-byte query, the write of a 50-byte answer, ``unwrap`` (close_notify).
The client is Python's default client context (X25519 first), as in
``bench/tlsload.py``; resumed modes offer the session of the previous connection
(tickets). What it leaves out -- TCP set-up and tear-down, the event loop, the
per-connection Python of the server -- is the same for every setting compared:

* ``dnstls``: ``ServerTLS`` as the server builds it (its SNI callback included);
* ``no-sni-cb``: the same context without the SNI callback (one certificate: the
  callback has nothing to choose);
* ``tickets1``: ``num_tickets = 1`` (OpenSSL sends two TLS 1.3 tickets by default; the
  clients here keep one);
* ``both``: the two together.

Best round per mode; differences below ~10 % between runs are noise on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trustme

from dnstls.net.tls import CertPair, ServerTLS

QUERY = b"\x00\x20" + b"q" * 32
ANSWER = b"\x00\x30" + b"a" * 48


def make_pki(directory: Path) -> tuple[CertPair, str]:
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    leaf = ca.issue_cert("dns.test", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    cert, key, cafile = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    with open(cert, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    ca.cert_pem.write_to_path(str(cafile))
    return CertPair(cert, key), str(cafile)


def client_context(cafile: str, version: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    ctx.set_alpn_protocols(["dot"])
    return ctx


def connection(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
               session: ssl.SSLSession | None) -> tuple[float, ssl.SSLSession | None, bool]:
    """One connection; (server CPU seconds, the client's session, resumed)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    t = time.thread_time
    spent = 0.0
    t0 = t()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    spent += t() - t0
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=None, session=session)
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            t0 = t()
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            c_in.write(s_out.read())
            spent += t() - t0
        if client_done and server_done:
            break
    client.write(QUERY)
    s_in.write(c_out.read())
    t0 = t()
    got = server.read(16384)
    server.write(ANSWER)
    c_in.write(s_out.read())
    spent += t() - t0
    assert got == QUERY
    assert client.read(16384) == ANSWER  # also takes the TLS 1.3 tickets
    resumed = client.session_reused
    new_session = client.session
    t0 = t()
    with contextlib.suppress(ssl.SSLWantReadError):
        server.unwrap()
    s_out.read()
    spent += t() - t0
    return spent, new_session, resumed


def measure(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, n: int,
            resume: bool) -> tuple[float, float]:
    session = None
    total = 0.0
    resumed = 0
    for _ in range(n):
        spent, new, was = connection(server_ctx, client_ctx, session if resume else None)
        total += spent
        resumed += was
        session = new
    return total / n * 1e6, resumed / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pair, cafile = make_pki(Path(tmp))
        settings: dict[str, Callable[[], ssl.SSLContext]] = {}

        def dnstls() -> ssl.SSLContext:
            return ServerTLS([pair]).context

        def no_sni() -> ssl.SSLContext:
            ctx = ServerTLS([pair]).context
            ctx.sni_callback = None
            return ctx

        def tickets1() -> ssl.SSLContext:
            ctx = ServerTLS([pair]).context
            ctx.num_tickets = 1
            return ctx

        def both() -> ssl.SSLContext:
            ctx = no_sni()
            ctx.num_tickets = 1
            return ctx

        import _ssl
        import ctypes
        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                                     ctypes.c_void_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long

        def raw(ctx: ssl.SSLContext) -> int:
            return ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value or 0

        def sha256() -> ssl.SSLContext:
            ctx = ServerTLS([pair]).context
            assert lib.SSL_CTX_set_ciphersuites(
                raw(ctx), b"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                b"TLS_AES_256_GCM_SHA384") == 1
            return ctx

        def nocache() -> ssl.SSLContext:
            ctx = ServerTLS([pair]).context
            lib.SSL_CTX_ctrl(raw(ctx), 44, 0, None)  # SET_SESS_CACHE_MODE, OFF
            return ctx

        def both2() -> ssl.SSLContext:
            ctx = sha256()
            lib.SSL_CTX_ctrl(raw(ctx), 44, 0, None)
            return ctx

        def noticket() -> ssl.SSLContext:
            ctx = ServerTLS([pair]).context
            ctx.options |= ssl.OP_NO_TICKET  # stateful resumption (session cache)
            return ctx

        settings = {"dnstls": dnstls, "sha256": sha256, "nocache": nocache,
                    "sha256+nocache": both2, "noticket": noticket}
        contexts = {name: make() for name, make in settings.items()}
        modes = [("1.3", False), ("1.3", True), ("1.2", False), ("1.2", True)]
        best: dict[tuple[str, str], float] = {}
        rates: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for version, resume in modes:
                label = f"TLS {version} {'resumed' if resume else 'full'}"
                client = client_context(cafile, version)
                for name, ctx in contexts.items():  # interleaved
                    us, rate = measure(ctx, client, args.n, resume)
                    key = (label, name)
                    best[key] = min(best.get(key, us), us)
                    rates[key] = rate
        names = list(contexts)
        print(f"µs server CPU per connection (best of {args.rounds} x {args.n}); "
              f"{ssl.OPENSSL_VERSION}")
        print(f"{'mode':18}" + "".join(f"{n:>12}" for n in names) + "   resumed")
        for version, resume in modes:
            label = f"TLS {version} {'resumed' if resume else 'full'}"
            base = best[(label, "dnstls")]
            row = "".join(f"{best[(label, n)]:8.0f} {best[(label, n)] / base:4.2f}"
                          for n in names)
            print(f"{label:18}{row}   {rates[(label, 'dnstls')]:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
