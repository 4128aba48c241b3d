"""Server CPU per one-query read on many open DoT connections, handshakes excluded.

``python bench/tls_reads.py --port P --ca CA --server-pid PID [--conns 500] [--rounds 40]``

Opens ``--conns`` TLS 1.3 connections first (not measured), then runs ``--rounds``
rounds: one query on every connection, then wait for every answer. The server's CPU
(schedstat, all threads of its process tree) is taken around the rounds only, so the
figure is the transport and the query path per read, without the handshakes that the
conns500 dnsperf scenario spreads over its queries. Prints one JSON line shaped like
``bench/measure.py``'s dnsperf results. Queries are for ``nN.bench.test`` A (cached by
the warm-up of ``bench/run.py``). Bounded: every wait has a timeout.

Used by ``bench/transport_floor.py --scenarios reads500``.
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure
from tlsload import context, query


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--around", action="append", default=[],
                        help="a command (shell words) started just before the measured "
                             "rounds and stopped with SIGINT after them, e.g. perf record "
                             "-p PID (bench/perf_conns.py)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = context(args.ca, "1.3")
    open_cpu0 = measure.cpu_seconds(args.server_pid)
    conns: list[ssl.SSLSocket] = []
    for _ in range(args.conns):
        raw = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(ctx.wrap_socket(raw))
    sel = selectors.DefaultSelector()
    for i, s in enumerate(conns):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    rcodes: Counter[str] = Counter()
    lost = 0
    sizes = 0
    answered = 0

    def one_round(r: int) -> None:
        nonlocal lost, sizes, answered
        bufs = [b""] * len(conns)
        waiting = set(range(len(conns)))
        for i, s in enumerate(conns):
            s.sendall(query(r * len(conns) + i))
        deadline = time.monotonic() + args.timeout
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                i = key.data
                s = conns[i]
                while True:
                    try:
                        chunk = s.recv(4096)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        break
                    if not chunk:
                        waiting.discard(i)
                        sel.unregister(s)
                        break
                    bufs[i] += chunk
                buf = bufs[i]
                if len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    n = struct.unpack("!H", buf[:2])[0]
                    rcodes[["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP",
                            "REFUSED"][buf[5] & 0xF] if (buf[5] & 0xF) < 6 else "other"] += 1
                    sizes += n
                    answered += 1
                    bufs[i] = buf[2 + n:]
                    waiting.discard(i)
        lost += len(waiting)

    one_round(0)  # warm: every connection has answered once
    # server CPU per connection for the handshakes and the first query on each
    open_us = (measure.cpu_seconds(args.server_pid) - open_cpu0) * 1e6 / len(conns)
    around = [subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE) for cmd in args.around]
    if around:
        time.sleep(0.3)  # let perf attach
    cpu0 = measure.cpu_seconds(args.server_pid)
    t0 = time.monotonic()
    answered = 0
    sizes = 0
    rcodes.clear()
    for r in range(1, args.rounds + 1):
        one_round(r)
    elapsed = time.monotonic() - t0
    cpu = measure.cpu_seconds(args.server_pid) - cpu0
    for proc in around:
        proc.send_signal(signal.SIGINT)
    for proc in around:
        _out, err = proc.communicate(timeout=60)
        sys.stderr.write(err.decode(errors="replace"))
    for s in conns:
        s.close()
    print(json.dumps({
        "qps": answered / elapsed if elapsed else 0.0,
        "cpu_us_per_query": cpu * 1e6 / answered if answered else float("nan"),
        "lost": lost, "rcodes": dict(rcodes), "completed": answered,
        "response_size": sizes / answered if answered else 0.0,
        "ok": lost == 0 and set(rcodes) == {"NOERROR"},
        "open_us_per_connection": open_us}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
