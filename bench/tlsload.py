"""DoT client loads dnsperf does not offer: new/resumed TLS handshakes, and idle connections.

``python bench/tlsload.py handshakes --port P --ca CA --version 1.3 [--resume] -n N``
    Opens ``N`` connections (``--threads`` at a time, sequentially in each thread): TLS
    handshake, one A query, read the answer, close. With ``--resume`` every connection
    offers the session of the previous one in its thread (tickets), and the output counts
    how many were really resumed. Prints one JSON line.

``python bench/tlsload.py idle --port P --ca CA -n N``
    Opens ``N`` connections (TLS 1.3, one query each so the handshake is complete on both
    sides), prints ``ready <open>`` and waits for a line on stdin; then asks one more
    query on each connection, prints a JSON line (how many answered) and exits.

Queries are for ``nN.bench.test`` A (cached by the warm-up), so rcodes can be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter

QNAMES = 1000


def query(i: int) -> bytes:
    name = f"n{i % QNAMES}.bench.test"
    qname = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname + b"\0\1\0\1"
    return struct.pack("!H", len(msg)) + msg


def context(ca: str, version: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the certificate names dns.test and 127.0.0.1
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    ctx.set_alpn_protocols(["dot"])
    return ctx


def _nodelay(sock: socket.socket) -> socket.socket:
    # Without it Nagle holds the query behind the client's Finished until the server's
    # delayed ACK (~40 ms): the run would measure TCP timers, not TLS.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def handshakes(args: argparse.Namespace) -> None:
    ctx = context(args.ca, args.version)
    per_thread = args.n // args.threads
    stats: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def worker(t: int) -> None:
        local: Counter[str] = Counter()
        session = None
        for i in range(per_thread):
            if time.monotonic() > deadline:
                break
            try:
                with socket.create_connection(("127.0.0.1", args.port), timeout=5) as raw, \
                        ctx.wrap_socket(_nodelay(raw),
                                        session=session if args.resume else None) as s:
                    s.sendall(query(t * per_thread + i))
                    (length,) = struct.unpack("!H", recv_exact(s, 2))
                    answer = recv_exact(s, length)
                    local["rcode_" + str(answer[3] & 0xF)] += 1
                    local["resumed" if s.session_reused else "full"] += 1
                    session = s.session
                    local["ok"] += 1
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                local["error_" + type(exc).__name__] += 1
        with lock:
            stats.update(local)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - start
    print(json.dumps({"connections": stats["ok"], "seconds": elapsed,
                      "per_second": stats["ok"] / elapsed if elapsed else 0,
                      "stats": dict(stats)}))


async def idle(args: argparse.Namespace) -> None:
    ctx = context(args.ca, "1.3")
    sem = asyncio.Semaphore(args.concurrency)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    errors: Counter[str] = Counter()

    async def one(i: int) -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", args.port, ssl=ctx), 20)
                writer.write(query(i))
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                await reader.readexactly(length)
                conns.append((reader, writer))
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(args.n)))
    opened = time.monotonic() - start
    print(f"ready {len(conns)} {opened:.1f} {json.dumps(dict(errors))}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def check(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    ) -> bool:
        try:
            writer.write(query(i))
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))
            answer = await reader.readexactly(length)
            return answer[3] & 0xF == 0
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            return False

    answered = 0
    for batch in range(0, len(conns), 500):
        part = conns[batch:batch + 500]
        answered += sum(await asyncio.gather(*(check(batch + i, r, w)
                                               for i, (r, w) in enumerate(part))))
    for _, writer in conns:
        writer.transport.abort()
    print(json.dumps({"opened": len(conns), "answered_after": answered,
                      "open_seconds": opened, "errors": dict(errors)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="DoT handshake and idle-connection load")
    sub = parser.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("handshakes")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--ca", required=True)
    h.add_argument("--version", choices=["1.2", "1.3"], default="1.3")
    h.add_argument("--resume", action="store_true")
    h.add_argument("-n", type=int, default=1000)
    h.add_argument("--threads", type=int, default=4)
    h.add_argument("--seconds", type=float, default=30.0)
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--ca", required=True)
    i.add_argument("-n", type=int, default=10000)
    i.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.cmd == "handshakes":
        handshakes(args)
    else:
        asyncio.run(idle(args))


if __name__ == "__main__":
    main()
