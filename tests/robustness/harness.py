"""The real ``dnstls serve`` as a subprocess, and what the robustness cases observe of it.

Every case starts the daemon the way an operator does (``python -m dnstls serve`` with a
TOML file of small limits, a per-run trustme certificate and a local zone), on loopback
port 0 (the ports are read from its start-up banner), and never lets it forward to a
public resolver: it gets ``--no-upstream`` unless the case gives loopback upstreams.

What the cases assert on afterwards (see docs/robustness.md):

* the process is alive and its log has no ``Traceback`` and no ``ERROR`` line;
* its open file descriptors (``/proc/PID/fd``) come back to the baseline taken after
  start-up, and its RSS (``/proc/PID/status``);
* its Prometheus metrics (``/metrics``), parsed with prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from prometheus_client.parser import text_string_to_metric_families

LOOPBACK = "127.0.0.1"
TLS_NAME = "dns.test"
READY_TIMEOUT = 20.0

#: ~2 KB TXT answer (8 strings of 250 bytes) for the slow-reader case.
BIG_TXT = "\n".join(f'big IN TXT "{chr(97 + i) * 250}"' for i in range(8))
ZONE = f"""$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.1
{BIG_TXT}
"""
WWW = "www.example.test."
WWW_ADDRESS = "192.0.2.1"

#: Small limits shared by the cases (each case overrides what it studies).
SMALL_LIMITS: dict[str, Any] = {
    "handshake_timeout": 1.0,
    "idle_timeout": 1.0,
    "message_timeout": 1.0,
    "write_timeout": 1.0,
    "query_timeout": 1.0,
    "max_in_flight": 20,
    "max_pending_output": 65536,
    "max_connections": 1000,
    "max_connections_per_client": 500,
    "shutdown_grace": 2.0,
    "reload_check_interval": 0.5,
}

_BANNER = {
    "tls": re.compile(r"DNS over TLS on 127\.0\.0\.1:(\d+)"),
    "metrics": re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics"),
    "plain": re.compile(r"plain DNS \(UDP\+TCP\) on 127\.0\.0\.1:(\d+)"),
}
# unhandled exceptions, errors, and asyncio complaining about misuse (writes after close,
# unclosed transports, slow callbacks are not enabled)
_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|WARNING asyncio:")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(v)}" for key, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class Certs:
    """A per-run CA and the server's certificate+key file (one PEM, as --cert/--key)."""

    ca: trustme.CA
    directory: Path
    serial: int = 0

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.directory / "server.pem"

    @classmethod
    def create(cls, directory: Path) -> Certs:
        directory.mkdir(parents=True, exist_ok=True)
        certs = cls(trustme.CA(), directory)
        certs.ca.cert_pem.write_to_path(str(certs.ca_file))
        certs.issue()
        return certs

    def issue(self) -> bytes:
        """Write a new leaf (new key) atomically over server.pem; return its DER."""
        self.serial += 1
        leaf = self.ca.issue_cert(TLS_NAME, LOOPBACK, organization_unit_name=f"gen{self.serial}")
        tmp = self.directory / "server.pem.tmp"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp))
        os.replace(tmp, self.server_pem)
        return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.set_alpn_protocols(["dot"])
        return ctx


class Metrics:
    """One scrape: samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples.append((s.name, dict(s.labels), float(s.value)))

    def get(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(v for n, lbl, v in self.samples
                   if n == name and all(lbl.get(k) == want for k, want in labels.items()))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, lbl, v in self.samples:
            if n == name and all(lbl.get(k) == want for k, want in labels.items()):
                out[lbl.get(label, "")] = out.get(lbl.get(label, ""), 0.0) + v
        return out


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log_path: Path
    certs: Certs
    ports: dict[str, int] = field(default_factory=dict)
    fd_baseline: int = 0
    rss_baseline: int = 0

    # -- addresses ---------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def tls_addr(self) -> tuple[str, int]:
        return LOOPBACK, self.ports["tls"]

    @property
    def plain_addr(self) -> tuple[str, int]:
        return LOOPBACK, self.ports["plain"]

    # -- observation -------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        """Resident set size in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def problems(self) -> list[str]:
        """Log lines that show an unhandled exception or an error."""
        return [line for line in self.log().splitlines() if _PROBLEM.search(line)]

    def count_log(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def scrape_sync(self) -> Metrics:
        url = f"http://{LOOPBACK}:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return Metrics(response.read().decode())

    async def scrape(self) -> Metrics:
        return await asyncio.to_thread(self.scrape_sync)

    async def wait_until(self, predicate: Callable[[], bool], within: float,
                         interval: float = 0.05) -> float | None:
        """Poll ``predicate``; the seconds it took to become true, or None on timeout."""
        start = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - start
            if time.monotonic() - start > within:
                return None
            await asyncio.sleep(interval)

    async def wait_metric(self, check: Callable[[Metrics], bool], within: float,
                          ) -> Metrics | None:
        deadline = time.monotonic() + within
        while True:
            m = await self.scrape()
            if check(m):
                return m
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    async def settle(self, within: float) -> tuple[int, float]:
        """Wait until fds are back to baseline and no connection is open.

        Returns (fds now, seconds it took); the caller asserts.
        """
        start = time.monotonic()
        await self.wait_until(lambda: self.fds() <= self.fd_baseline, within)
        remaining = max(0.5, within - (time.monotonic() - start))
        await self.wait_metric(lambda m: m.get("dnstls_connections_open") == 0, remaining)
        # the scrapes' own HTTP connections: the metrics thread closes its end after the
        # client has read the answer, so under load one can still be open here
        remaining = max(0.5, within - (time.monotonic() - start))
        await self.wait_until(lambda: self.fds() <= self.fd_baseline, remaining)
        return self.fds(), time.monotonic() - start

    async def quiet_fds(self, period: float = 0.5) -> int:
        """The fewest open fds seen over ``period`` (a metrics connection being closed by
        its thread must not raise the baseline)."""
        fewest = self.fds()
        end = time.monotonic() + period
        while time.monotonic() < end:
            await asyncio.sleep(0.05)
            fewest = min(fewest, self.fds())
        return fewest

    def assert_healthy(self) -> None:
        assert self.alive(), f"daemon exited ({self.proc.returncode}):\n{self.log()[-4000:]}"
        problems = self.problems()
        assert not problems, "daemon logged problems:\n" + "\n".join(problems[:20])

    # -- control -----------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, within: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def daemon_command() -> list[str]:
    return [sys.executable, "-m", "dnstls"]


def start_daemon(directory: Path, certs: Certs, *, server: Mapping[str, Any] | None = None,
                 sections: Mapping[str, Mapping[str, Any]] | None = None,
                 upstreams: Sequence[str] = (), plain: bool = False,
                 extra_args: Sequence[str] = ()) -> Daemon:
    """Start ``dnstls serve`` on loopback port 0 and wait for its banner."""
    directory.mkdir(parents=True, exist_ok=True)
    zone = directory / "example.test.zone"
    zone.write_text(ZONE)
    server_table: dict[str, Any] = {"listen": [f"{LOOPBACK}:0"], "metrics": f"{LOOPBACK}:0",
                                    **SMALL_LIMITS, **(server or {})}
    if plain:
        server_table["plain"] = [f"{LOOPBACK}:0"]
    config = write_toml(directory / "serve.toml", {"server": server_table, **(sections or {})})
    for uri in upstreams:
        host = uri.split("://", 1)[1].split("#", 1)[0].rsplit(":", 1)[0].strip("[]")
        if not (host.startswith("127.") or host == "::1"):
            raise ValueError(f"robustness tests only forward to loopback, not {uri}")
    args = [*daemon_command(), "serve", "--config", str(config),
            "--cert", str(certs.server_pem), "--key", str(certs.server_pem),
            "--local-zone", str(zone), "--state-dir", str(directory / "state")]
    if upstreams:
        for uri in upstreams:
            args += ["--upstream", uri]
        if any(u.startswith("tls://") for u in upstreams):
            args += ["--ca-file", str(certs.ca_file)]
    else:
        args.append("--no-upstream")
    args += list(extra_args)
    log_path = directory / "dnstls.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=directory, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    daemon = Daemon(proc, log_path, certs)
    wanted = {"tls", "metrics"} | ({"plain"} if plain else set())
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        text = log_path.read_text(errors="replace")
        for key, pattern in _BANNER.items():
            match = pattern.search(text)
            if match:
                daemon.ports[key] = int(match.group(1))
        if wanted <= set(daemon.ports):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            raise RuntimeError(f"dnstls serve did not start:\n{text[-4000:]}")
        time.sleep(0.05)
    return daemon
