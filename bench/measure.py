"""Measuring helpers: CPU and memory of a process tree, query files, dnsperf runs.

CPU time comes from ``/proc/PID/task/TID/schedstat`` (nanoseconds on the CPU, per
thread), summed over every thread of every process in the server's tree, so worker
processes and helper threads are included. Memory is the sum of ``VmRSS`` over the tree.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- /proc


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (found through /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by every thread of ``pid``'s process tree."""
    total = 0
    for p in tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                total += int(Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine() -> str:
    """The CPU model, CPU count and last-level cache: ratios between an interpreted
    server and C peers move with the CPU (session 5: kresd gained 1.6-2.8x from one VM
    to the next, dnstls's Python 1.1-1.6x), so every result names its machine."""
    model, cache, flags = "?", "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "?":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    # a VM's model name can be generic ("Intel Xeon Processor"): features tell more
    notable = [f for f in ("avx2", "avx512f", "vaes", "sha_ni", "amx_tile") if f in flags]
    for index in (3, 2):
        size = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size")
        level = size.with_name("level")
        try:
            cache = f", L{level.read_text().strip()} {size.read_text().strip()}"
            break
        except OSError:
            continue
    return (f"{model} ({' '.join(notable) or 'no avx2'}), {os.cpu_count()} CPUs{cache}, "
            f"kernel {os.uname().release}")


# --------------------------------------------------------------------------- query files


def write_text_queries(path: Path, names: list[str], qtype: str) -> Path:
    path.write_text("".join(f"{name} {qtype}\n" for name in names))
    return path


def _qname(name: str) -> bytes:
    labels = [label for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(x)]) + x.encode("ascii") for x in labels) + b"\0"


def padded_query(name: str, qtype: int = 1, *, block: int = 128, payload: int = 1232) -> bytes:
    """An RD query with EDNS and a PADDING option (RFC 7830) making it ``block`` long."""
    header = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 1)
    question = _qname(name) + struct.pack("!HH", qtype, 1)
    opt_fixed = b"\0" + struct.pack("!HHIH", 41, payload, 0, 0)
    unpadded = len(header) + len(question) + len(opt_fixed) + 4
    pad = (-unpadded) % block
    rdata = struct.pack("!HH", 12, pad) + bytes(pad)
    opt = b"\0" + struct.pack("!HHIH", 41, payload, 0, len(rdata)) + rdata
    wire = header + question + opt
    assert len(wire) % block == 0
    return wire


def write_binary_queries(path: Path, messages: list[bytes]) -> Path:
    """dnsperf ``-B`` format: each message with its 2-byte length (RFC 1035 §4.2.2)."""
    path.write_bytes(b"".join(struct.pack("!H", len(m)) + m for m in messages))
    return path


# --------------------------------------------------------------------------- dnsperf


@dataclass
class PerfResult:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    request_size: float = 0.0
    response_size: float = 0.0
    runtime: float = 0.0
    qps: float = 0.0
    latency_avg_ms: float = 0.0
    reconnections: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    error: str = ""

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu_s * 1e6 / self.completed if self.completed else float("nan")

    @property
    def ok(self) -> bool:
        return (not self.error and self.lost == 0 and self.completed > 0
                and set(self.rcodes) == {"NOERROR"})

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_us_per_query"] = self.cpu_us_per_query
        d["ok"] = self.ok
        return d


_NUM = r"([0-9.]+)"


def parse_dnsperf(text: str) -> PerfResult:
    r = PerfResult()

    def grab(pattern: str) -> str | None:
        m = re.search(pattern, text)
        return m.group(1) if m else None

    r.sent = int(grab(r"Queries sent:\s+(\d+)") or 0)
    r.completed = int(grab(r"Queries completed:\s+(\d+)") or 0)
    r.lost = int(grab(r"Queries lost:\s+(\d+)") or 0)
    codes = grab(r"Response codes:\s+(.*)")
    if codes:
        for name, count in re.findall(r"([A-Z]+) (\d+)", codes):
            r.rcodes[name] = int(count)
    sizes = re.search(r"Average packet size:\s+request (\d+), response (\d+)", text)
    if sizes:
        r.request_size, r.response_size = float(sizes.group(1)), float(sizes.group(2))
    r.runtime = float(grab(r"Run time \(s\):\s+" + _NUM) or 0)
    r.qps = float(grab(r"Queries per second:\s+" + _NUM) or 0)
    r.latency_avg_ms = float(grab(r"Average Latency \(s\):\s+" + _NUM) or 0) * 1e3
    r.reconnections = int(grab(r"Reconnections:\s+(\d+)") or 0)
    return r


def percentiles(latencies: list[float]) -> tuple[float, float, float] | None:
    if not latencies:
        return None
    latencies.sort()
    n = len(latencies)

    def at(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1e3

    return at(0.50), at(0.99), at(0.999)


def run_dnsperf(*, port: int, datafile: Path, cpu: str | None, seconds: float | None = None,
                passes: int | None = None, clients: int = 16, outstanding: int = 256,
                rate: int | None = None, verbose: bool = False, binary: bool = False,
                extra: list[str] | None = None, timeout_s: float = 5.0,
                server_pid: int | None = None, out: Path | None = None) -> PerfResult:
    """One bounded dnsperf run over DoT; CPU of ``server_pid``'s tree is measured around it."""
    argv = ["dnsperf", "-m", "dot", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile),
            "-c", str(clients), "-q", str(outstanding), "-t", str(timeout_s)]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    if seconds is not None:
        argv += ["-l", str(seconds)]
    if passes is not None:
        argv += ["-n", str(passes)]
    if rate is not None:
        argv += ["-Q", str(rate)]
    if verbose:
        argv.append("-v")
    if binary:
        argv.append("-B")
    argv += extra or []
    bound = (seconds or 60) + timeout_s + 30
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    out = out or Path(os.devnull)
    with open(out, "w") if verbose else open(os.devnull, "w") as sink:
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE if not verbose else sink,
                                  stderr=subprocess.PIPE, text=True, timeout=bound)
        except subprocess.TimeoutExpired:
            return PerfResult(error=f"dnsperf did not finish within {bound:.0f}s")
    cpu1 = cpu_seconds(server_pid) if server_pid else 0.0
    text = Path(out).read_text(errors="replace") if verbose else proc.stdout
    result = parse_dnsperf(text)
    result.cpu_s = cpu1 - cpu0
    if server_pid:
        result.rss_mb = rss_bytes(server_pid) / 2**20
    if proc.returncode != 0:
        result.error = f"dnsperf exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    if verbose:
        lat = [float(m) for m in re.findall(r"^> [A-Z]+ \S+ \S+ ([0-9.]+)$", text, re.M)]
        p = percentiles(lat)
        if p:
            result.p50_ms, result.p99_ms, result.p999_ms = p
    return result
