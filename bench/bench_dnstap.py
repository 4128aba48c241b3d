"""CPU per query of ``dnstls serve`` with dnstap off and on: dnsperf over UDP (or TCP)
asks local-data names (answered without an upstream: the cache-hit class of work), and
the server process's user+system CPU time is divided by the queries answered.

Usage: ``.venv/bin/python bench/bench_dnstap.py [--seconds 10] [--mode udp]`` (run it
under ``flock /tmp/dnstls-bench.lock``: the figure is CPU time, but the machine's other
load still disturbs caches). Variants: dnstap off; on, client queries and responses to
a file (tmpfs); on, to a Unix socket whose reader is slower than the server (drops).
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = 100


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(variant: str, seconds: float, mode: str, tmp: Path, max_qps: int = 0) -> str:
    port = free_port()
    zone = tmp / "bench.zone"
    zone.write_text("$ORIGIN bench.test.\n$TTL 300\n@ IN SOA ns h 1 1 1 1 1\n@ IN NS ns\n"
                    + "".join(f"n{i} IN A 192.0.2.1\n" for i in range(NAMES)))
    queries = tmp / "queries"
    queries.write_text("".join(f"n{i}.bench.test A\n" for i in range(NAMES)))
    config = tmp / f"{variant}.toml"
    text = ""
    if variant != "off":
        where = (f'file = "{tmp / "out.fstrm"}"' if variant == "file"
                 else f'socket_path = "{tmp / "tap.sock"}"')
        text = (f"[dnstap]\nenabled = true\n{where}\nlog_client_query = true\n"
                "log_client_response = true\n")
    config.write_text(text)
    reader = None
    if variant == "socket":  # a reader that accepts and then reads nothing: drops
        reader = socket.socket(socket.AF_UNIX)
        reader.bind(str(tmp / "tap.sock"))
        reader.listen()
    argv = [str(Path(sys.executable).with_name("dnstls")), "serve", "--no-upstream",
            "--listen", f"127.0.0.1:{free_port()}", "--plain", f"127.0.0.1:{port}",
            "--state-dir", str(tmp / "state"), "--local-zone", str(zone),
            "--config", str(config)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = None
        for _ in range(100):
            time.sleep(0.1)
            if reader is not None and conn is None:
                reader.settimeout(0.01)
                try:
                    conn, _ = reader.accept()
                    conn.sendall(accept_frame(conn))
                except (TimeoutError, BlockingIOError):
                    pass
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.settimeout(0.2)
                probe.sendto(bytes.fromhex("abcd01000001000000000000") + b"\x02n0\x05bench"
                             b"\x04test\x00\x00\x01\x00\x01", ("127.0.0.1", port))
                try:
                    probe.recv(512)
                    break
                except TimeoutError:
                    continue
        before = cpu_seconds(server.pid)
        done = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
                               str(queries), "-l", str(seconds), "-c", "4", "-m", mode,
                               *(["-Q", str(max_qps)] if max_qps else [])],
                              capture_output=True, text=True, check=False)
        used = cpu_seconds(server.pid) - before
        completed = int(next(line for line in done.stdout.splitlines()
                             if "Queries completed" in line).split()[2])
        return (f"{variant:7} {completed / seconds:9.0f} qps "
                f"{used / completed * 1e6:7.1f} µs CPU/query ({completed} queries)")
    finally:
        server.terminate()
        server.wait(10)
        if reader is not None:
            reader.close()


def accept_frame(conn: socket.socket) -> bytes:
    """Read the writer's READY; the ACCEPT that answers it (fstrm's handshake)."""
    conn.settimeout(5)
    conn.recv(4096)
    ctype = b"protobuf:dnstap.Dnstap"
    body = (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + len(ctype).to_bytes(4, "big")
    return bytes(4) + len(body + ctype).to_bytes(4, "big") + body + ctype


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--mode", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--max-qps", type=int, default=0, help="a light check, not a bench")
    parser.add_argument("--variants", nargs="+", default=["off", "file", "socket", "off"])
    args = parser.parse_args()
    for variant in args.variants:
        with tempfile.TemporaryDirectory(prefix="dtb") as tmp:
            print(run(variant, args.seconds, args.mode, Path(tmp), args.max_qps), flush=True)


if __name__ == "__main__":
    main()
