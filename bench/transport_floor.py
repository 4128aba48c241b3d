"""The floor of a DoT server transport: bare replay servers next to kresd (issue 6).

Each replay server answers every framed query with one precomputed answer (its ID
patched), so what it costs per query is the TLS transport and nothing else:

* ``floor-a``: uvloop ``create_server(ssl=ctx)`` with an ``asyncio.Protocol`` (what
  ``dnstls serve`` uses: uvloop's SSLProtocol, MemoryBIO in and out);
* ``floor-b``: a non-blocking ``ssl.SSLSocket`` driven by ``loop.add_reader`` /
  ``add_writer``: ``do_handshake()``, ``recv_into()`` / ``send()`` on the socket
  itself (OpenSSL's socket BIO), ``pending()`` instead of a read that ends in
  ``SSLWantReadError``;
* ``floor-c``: as b, with OpenSSL's read-ahead switched on for the context (one
  ``read`` syscall per read instead of one for the record header and one for its body);
* ``floor-ossl``: no Python at all: ``bench/floor_ossl.c``, an epoll loop in C on the
  system OpenSSL with memory BIOs both ways (one ``recv`` and one ``send`` per read, one
  record per answer) and the same TLS settings: what a C-level TLS path could cost at
  best (built with ``cc`` on first use into ``/tmp/dnstls-floor-ossl-*``);
* ``floor-x``: the C plumbing of floor-ossl as a Python extension
  (``bench/floor_engine.c``, built the same way) under a Python replay protocol on
  uvloop's ``add_reader``: per read one Python callback, one ``Engine.read()`` (recv,
  memory BIO, ``SSL_read`` until WANT_READ, no exception), the answers framed in Python,
  ``Engine.write()`` per answer and one ``Engine.flush()``: what a C TLS engine under
  dnstls's Python would cost (the server context is ``server_context``'s, as a and b).

The context is ``dnstls.net.tls.server_context`` (the server's own settings), so the
handshakes are comparable. Run from the worktree, under the bench lock::

    flock /tmp/dnstls-bench.lock env PYTHONPATH=$PWD/src /work/main/.venv/bin/python \\
        bench/transport_floor.py --quick --scenarios conns500,handshake \\
        --servers kresd,floor-a,floor-b,floor-c,floor-ossl --reps 2

(all options are ``bench/run.py``'s; the extra server names ``floor-a|b|c|ossl`` start this
script's ``serve`` mode, and the extra scenario ``reads500`` runs ``bench/tls_reads.py``:
server CPU per one-query read on 500 open connections, handshakes not counted).
``python bench/transport_floor.py serve --variant b --port P --cert C --key K`` runs one
replay server by itself. Variant c is a measurement only: with read-ahead, ``pending()``
does not see records OpenSSL has buffered but not decrypted, so it can stall (it lost
queries in its first run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import struct
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def answer_template() -> bytes:
    """n0.bench.test A 192.0.2.1, TTL 1 day (47 bytes; kresd's answer is 48)."""
    qname = b"\x02n0\x05bench\x04test\x00"
    header = struct.pack("!HHHHHH", 0, 0x8180, 1, 1, 0, 0)
    question = qname + b"\x00\x01\x00\x01"
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 86400, 4) + bytes([192, 0, 2, 1])
    return header + question + rr


ANSWER = answer_template()
FRAMED = struct.pack("!H", len(ANSWER)) + ANSWER


def answers(buf: bytes | bytearray | memoryview) -> tuple[bytes, int]:
    """Answers for the complete frames at the start of ``buf``; bytes consumed."""
    out = []
    pos = 0
    end = len(buf)
    while end - pos >= 2:
        length = (buf[pos] << 8) | buf[pos + 1]
        if end - pos - 2 < length:
            break
        out.append(b"\x00" + bytes([len(ANSWER)]) + bytes(buf[pos + 2:pos + 4]) + ANSWER[2:])
        pos += 2 + length
    return b"".join(out), pos


# --------------------------------------------------------------------------- variant a


class ReplayProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out, used = answers(buf)
        self.buf = buf[used:]
        if out:
            assert self.transport is not None
            self.transport.write(out)

    def eof_received(self) -> bool | None:
        return None


# --------------------------------------------------------------------------- variant b/c


class ReplayConn:
    __slots__ = ("buf", "fd", "loop", "obj", "out", "ss")

    def __init__(self, loop: asyncio.AbstractEventLoop, ss: ssl.SSLSocket) -> None:
        self.loop = loop
        self.ss = ss
        self.obj = ss._sslobj  # type: ignore[attr-defined]  # _ssl._SSLSocket
        self.fd = ss.fileno()
        self.buf = b""
        self.out = b""

    def handshake(self) -> None:
        try:
            self.ss.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:
            self.loop.add_writer(self.fd, self.handshake)
            return
        except (ssl.SSLError, OSError):
            self.close()
            return
        self.loop.remove_writer(self.fd)
        self.obj = self.ss._sslobj  # type: ignore[attr-defined]
        self.loop.add_reader(self.fd, self.on_read)
        self.on_read()

    def on_read(self) -> None:
        obj = self.obj
        while True:
            try:
                data = obj.read(16384)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                return
            except (ssl.SSLError, OSError):
                self.close()
                return
            if not data:
                self.close(notify=True)
                return
            buf = self.buf + data if self.buf else data
            out, used = answers(buf)
            self.buf = buf[used:]
            if out:
                self.write(out)
            if not obj.pending():
                return

    def write(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        try:
            self.obj.write(data)
        except ssl.SSLWantWriteError:
            self.out = data
            self.loop.add_writer(self.fd, self.on_write)
        except (ssl.SSLError, OSError):
            self.close()

    def on_write(self) -> None:
        data, self.out = self.out, b""
        self.loop.remove_writer(self.fd)
        self.write(data)

    def close(self, notify: bool = False) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        if notify:
            with contextlib.suppress(ssl.SSLError, OSError):
                self.obj.shutdown()
        self.ss.close()


# --------------------------------------------------------------------------- variant x


class EngineConn:
    __slots__ = ("buf", "eng", "fd", "loop", "sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, eng: object) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.eng = eng
        self.buf = b""

    def on_read(self) -> None:
        eng = self.eng
        data = eng.read()  # type: ignore[attr-defined]
        if data is None:
            self.close()
            return
        if not data:
            return
        buf = self.buf + data if self.buf else data
        used = 0
        end = len(buf)
        write = eng.write  # type: ignore[attr-defined]
        while end - used >= 2:
            length = (buf[used] << 8) | buf[used + 1]
            if end - used - 2 < length:
                break
            write(b"\x00" + bytes([len(ANSWER)]) + buf[used + 2:used + 4] + ANSWER[2:])
            used += 2 + length
        self.buf = buf[used:]
        if eng.flush():  # type: ignore[attr-defined]
            self.loop.add_writer(self.fd, self.on_write)

    def on_write(self) -> None:
        if not self.eng.flush():  # type: ignore[attr-defined]
            self.loop.remove_writer(self.fd)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.eng.close()  # type: ignore[attr-defined]
        self.sock.close()


def build_c(source_name: str, *, extension: bool) -> Path:
    """A C file of this directory compiled once per source version against the system
    OpenSSL (the one Python's ``ssl`` uses): an executable, or a Python extension."""
    import hashlib
    import subprocess
    import sysconfig
    import tempfile

    source = BENCH / source_name
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    stem = source_name.removesuffix(".c")
    out_dir = Path(tempfile.gettempdir()) / f"dnstls-{stem.replace('_', '-')}-{digest}"
    if extension:
        binary = out_dir / f"_{stem}{sysconfig.get_config_var('EXT_SUFFIX')}"
        flags = ["-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}"]
    else:
        binary = out_dir / stem
        flags = []
    if not binary.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", *flags, "-o", str(binary), str(source),
                        "-lssl", "-lcrypto"], check=True)
    return binary


def set_read_ahead(ctx: ssl.SSLContext) -> None:
    """SSL_CTX_set_read_ahead(ctx, 1) through ctypes (the ssl module has no API)."""
    import _ssl
    import ctypes

    lib = ctypes.CDLL(_find_libssl(_ssl.__file__))
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    ptr = ctypes_address(ctx)
    lib.SSL_CTX_ctrl(ptr, 41, 1, None)  # SSL_CTRL_SET_READ_AHEAD
    assert lib.SSL_CTX_ctrl(ptr, 40, 0, None) == 1  # SSL_CTRL_GET_READ_AHEAD


def ctypes_address(ctx: ssl.SSLContext) -> int:
    """The context's ``SSL_CTX *`` (CPython keeps it right after the object header)."""
    import ctypes

    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    assert ptr
    return ptr


def _find_libssl(module: str) -> str:
    import subprocess

    for line in subprocess.run(["ldd", module], capture_output=True, text=True).stdout.splitlines():
        if "libssl" in line and "=>" in line:
            return line.split("=>")[1].split()[0]
    return "libssl.so.3"


async def serve(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH.parent / "src"))
    from dnstls.net.tls import CertPair, server_context

    ctx = server_context(CertPair(Path(args.cert), Path(args.key)))
    loop = asyncio.get_running_loop()
    if args.variant == "a":
        server = await loop.create_server(ReplayProtocol, args.host, args.port, backlog=1024,
                                          reuse_address=True, ssl=ctx,
                                          ssl_handshake_timeout=5.0)
        await server.serve_forever()
        return
    if args.variant == "c":
        set_read_ahead(ctx)
    engine = None
    if args.variant == "x":
        import importlib.util

        path = build_c("floor_engine.c", extension=True)
        spec = importlib.util.spec_from_file_location("_floor_engine", path)
        assert spec is not None and spec.loader is not None
        engine = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(engine)
        ctx_address = ctypes_address(ctx)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(1024)
    lsock.setblocking(False)
    conns: set[ReplayConn] = set()

    def on_accept() -> None:
        for _ in range(64):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if engine is not None:
                econn = EngineConn(loop, sock, engine.Engine(ctx_address, sock.fileno()))
                loop.add_reader(econn.fd, econn.on_read)
                continue
            ss = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = ReplayConn(loop, ss)
            loop.add_reader(conn.fd, conn.handshake)
            conn.handshake()

    loop.add_reader(lsock.fileno(), on_accept)
    await asyncio.Event().wait()
    del conns


def serve_main(argv: list[str]) -> None:
    import os
    import resource

    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["a", "b", "c", "x", "ossl"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--stateful", action="store_true",
                        help="floor-ossl: dnstls serve's default stateful session cache "
                             "(tls.session_cache = 10000) instead of session tickets")
    args = parser.parse_args(argv)
    if args.variant == "ossl":
        if args.host != "127.0.0.1":
            raise SystemExit("floor-ossl listens on 127.0.0.1 only")
        binary = str(build_c("floor_ossl.c", extension=False))
        os.execv(binary, [binary, str(args.port), args.cert, args.key,
                          *(["--stateful"] if args.stateful else [])])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(args))


def bench_main() -> int:
    sys.path.insert(0, str(BENCH))
    import peers
    import run

    original = peers.start_all

    def start_all(group, pki, *, server_cpu, aux_cpu, names, variants=None,  # type: ignore[no-untyped-def]
                  variant_env=None):
        floors = [n for n in names if n.startswith("floor-")]
        servers = original(group, pki, server_cpu=server_cpu, aux_cpu=aux_cpu,
                           names=[n for n in names if n not in floors], variants=variants,
                           variant_env=variant_env)
        for name in floors:
            work = group.workdir(name)
            port = peers.free_port()
            argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--variant",
                    name.removeprefix("floor-"), "--port", str(port), "--cert",
                    str(pki.cert_pem), "--key", str(pki.key_pem)]
            peer = group.start(peers.Peer(name, peers._pinned(server_cpu, argv), work,
                                          port=port))
            servers.resolvers[name] = peer.wait_tcp(timeout=30)
        servers.resolvers = {n: servers.resolvers[n] for n in names}
        return servers

    def scenario_reads500(self: run.Bench) -> None:
        """500 open connections, one query each per round; handshakes not measured."""
        import json
        import subprocess

        def one(name: str, peer: peers.Peer, rep: int) -> dict[str, object]:
            argv = [sys.executable, str(BENCH / "tls_reads.py"), "--port", str(peer.port),
                    "--ca", str(self.pki.ca_pem), "--server-pid", str(peer.pid),
                    "--conns", "500", "--rounds", "40"]
            if self.s.client_cpu is not None:
                argv = ["taskset", "-c", self.s.client_cpu, *argv]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            try:
                return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (IndexError, json.JSONDecodeError):
                return {"error": proc.stderr[-300:], "ok": False}

        self.interleaved("reads500", one)

    run.SCENARIOS.append("reads500")
    run.Bench.scenario_reads500 = scenario_reads500  # type: ignore[attr-defined]
    peers.start_all = start_all
    return run.main()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_main(sys.argv[2:])
    else:
        sys.exit(bench_main())
