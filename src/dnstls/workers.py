"""``dnstls serve --workers N``: N full services sharing the listen ports (SO_REUSEPORT).

Why processes
-------------
One Python process answers DoT on one core (the GIL, one event loop). To use more cores,
the supervisor forks N workers; each is a complete :class:`~dnstls.service.Service`
(listeners, TLS context, cache, upstream pool, timers) that binds the same addresses
with ``SO_REUSEPORT``, so the kernel spreads *connections* over the workers by a hash of
the 4-tuple (Linux ≥ 3.9). Nothing is shared between workers: each has its own cache
(a name cached by one worker is a miss in another until it asked too), its own
connection limits (``max_connections`` and ``max_connections_per_client`` apply per
worker) and its own upstream connections. One client connection stays with one worker,
so pipelining and ordering are unchanged.

Supervision
-----------
The parent validates the configuration, resolves port 0 to one concrete port (held by a
bound, non-listening ``SO_REUSEPORT`` socket so no other program takes it), blocks the
signals it handles, and forks. Each worker unblocks them, runs the service with its own
event loop and reports "ready" over a pipe once every socket is bound; a worker that
fails to start fails the whole start (exit 2, the worker logged why). Afterwards the
parent waits for signals:

* SIGTERM / SIGINT: forwarded (as SIGTERM) to every worker, which shut down gracefully
  (``server.shutdown_grace``); workers still alive ``shutdown_grace + 5`` s later are
  killed. A second SIGINT kills them at once.
* SIGHUP: forwarded; every worker reloads its certificates, reads the configuration
  again and applies local data and access control (as one process does).
* TLS session tickets: the supervisor makes one ticket key and every worker uses it, so a
  client resumes on whichever worker its next connection reaches (kept across reloads
  and worker restarts; in memory only).
* a worker that exits on its own is restarted (logged with its status), with a delay
  that doubles from 0.1 s to 5 s while workers keep dying within 10 s of their start.

Metrics are **per worker**: with ``server.metrics = ADDR:P`` worker *i* serves
``/metrics`` on port ``P + i`` (with ``P = 0``, each on a free port of its own), and each
endpoint counts only that worker's connections, queries and cache (nothing is shared):
Prometheus scrapes them as N targets and sums. Each worker sends its metrics address
with its "ready" over the pipe; the supervisor's start-up line lists every worker's
URL (worker 0's banner leaves the metrics line out: it would name one endpoint of N),
and each worker's "ready" line names its own (a restarted worker's too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dnstls.config import (
    DEFAULT_DNS_PORT,
    DEFAULT_DOT_PORT,
    Config,
    format_hostport,
    metrics_url,
    parse_hostport,
)
from dnstls.errors import ConfigError

log = logging.getLogger("dnstls.workers")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
READY_TIMEOUT = 30.0
KILL_AFTER_GRACE = 5.0
RESTART_MIN, RESTART_MAX = 0.1, 5.0
QUICK_DEATH = 10.0


READY = b"\1"  # a worker's ready message: READY, then the URL of its metrics if any


@dataclass
class _Worker:
    index: int
    pid: int
    started: float
    metrics: str | None = None  # the URL of its /metrics, from its ready message


# --------------------------------------------------------------------------- ports


def _reserve(host: str, port: int, kinds: Sequence[int]) -> tuple[int, list[socket.socket]]:
    """Bind ``host:port`` (port 0: one free port for every kind) with SO_REUSEPORT, not
    listening, and return the port and the sockets that hold it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _attempt in range(20):
        held: list[socket.socket] = []
        chosen = port
        try:
            for kind in kinds:
                sock = socket.socket(family, kind)
                held.append(sock)
                if family == socket.AF_INET6:  # as the listeners bind it (net/udp.py)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, chosen))
                chosen = sock.getsockname()[1]
            return chosen, held
        except OSError as exc:
            for sock in held:
                sock.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise
    raise OSError(errno.EADDRINUSE, f"no free port on {host} for every socket kind")


def resolve_ports(config: Config) -> tuple[Config, list[socket.socket]]:
    """The config with every port 0 replaced by a reserved port, and the holding sockets.

    Without this each worker would get a different port for ``:0``.
    """
    held: list[socket.socket] = []
    server = config.server

    def fix(texts: tuple[str, ...], default: int, kinds: Sequence[int], name: str,
            ) -> tuple[str, ...]:
        out = []
        for i, text in enumerate(texts):
            host, port = parse_hostport(text, default, field=f"{name}[{i}]")
            if port == 0:
                try:
                    port, socks = _reserve(host, 0, kinds)
                except OSError as exc:
                    raise ConfigError(f"{name}[{i}]",
                                      f"cannot listen on {text}: {exc.strerror}") from None
                held.extend(socks)
            out.append(format_hostport(host, port))
        return tuple(out)

    listen = fix(server.listen, DEFAULT_DOT_PORT, [socket.SOCK_STREAM], "server.listen")
    plain = fix(server.plain, DEFAULT_DNS_PORT, [socket.SOCK_STREAM, socket.SOCK_DGRAM],
                "server.plain")
    new_server = dataclasses.replace(server, listen=listen, plain=plain)
    return dataclasses.replace(config, server=new_server), held


def worker_config(config: Config, index: int) -> Config:
    """Per-worker settings: the metrics port is the configured one plus ``index``."""
    server = config.server
    if not server.metrics:
        return config
    host, port = parse_hostport(server.metrics, 9153, field="server.metrics")
    metrics = format_hostport(host, port + index if port else 0)
    return dataclasses.replace(config, server=dataclasses.replace(server, metrics=metrics))


# --------------------------------------------------------------------------- worker side


def _worker_main(config: Config, specs: Any, index: int, ready_fd: int,
                 ticket_key: bytes | None = None,
                 reload_config: Callable[[], Config] | None = None) -> int:
    """Runs in the forked child: one full service; returns the exit status."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    from dnstls.net import loop

    return loop.run(_serve_worker(config, specs, index, ready_fd, ticket_key, reload_config))


async def _serve_worker(config: Config, specs: Any, index: int, ready_fd: int,
                        ticket_key: bytes | None,
                        reload_config: Callable[[], Config] | None = None) -> int:
    from dnstls.service import Service
    from dnstls.wiring import forwarding_factory

    service = Service(config, upstream_factory=forwarding_factory(config, specs),
                      reuse_port=True, ticket_key=ticket_key, reload_config=reload_config)
    service.install_signal_handlers()  # before binding: a signal never finds the default
    await service.start(tune_gc=True)
    if index == 0:
        for line in service.banner(metrics=False):  # the supervisor lists every worker's
            log.info("%s", line)
    metrics = service.endpoints.metrics
    url = metrics_url(metrics) if metrics else ""
    log.info("worker %d (pid %d) ready%s", index, os.getpid(),
             f", its metrics on {url}" if url else "")
    with contextlib.suppress(OSError):
        os.write(ready_fd, READY + url.encode())
        os.close(ready_fd)
    await service.run_until_stopped()
    return 0


# --------------------------------------------------------------------------- supervisor


class Supervisor:
    """Forks, watches and stops the workers; see the module docstring."""

    def __init__(self, config: Config, specs: Any, workers: int, *,
                 target: Callable[..., int] = _worker_main,
                 reload_config: Callable[[], Config] | None = None) -> None:
        if workers < 1:
            raise ConfigError("--workers", f"must be at least 1, got {workers}")
        if config.server.metrics:  # worker i listens on port + i: all must be ports
            _, port = parse_hostport(config.server.metrics, 9153, field="server.metrics")
            if port and port + workers - 1 > 65535:
                raise ConfigError("server.metrics", f"port {port}: with --workers {workers} "
                                  f"worker i serves its metrics on port {port} + i, and "
                                  f"{port + workers - 1} is not a port (at most "
                                  f"{65536 - workers} for {workers} workers)")
        if config.dnstap.enabled and config.dnstap.file and workers > 1:
            raise ConfigError("dnstap.file", f"{workers} worker processes cannot share one "
                              "file: use dnstap.socket_path (each worker connects to "
                              "the collector), or --workers 1")
        self.config = config
        self.specs = specs
        self.count = workers
        self.target = target
        self.reload_config = reload_config  # each worker reads the config again on SIGHUP
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self.stopping = False
        self.restarts = 0
        self._delay = RESTART_MIN
        self._held: list[socket.socket] = []
        # One session ticket key for every worker, restarted ones too: a client's next
        # connection may land on any worker (docs: net/tls.py)
        from dnstls.net.tls import new_ticket_key

        self.ticket_key = new_ticket_key()

    def _fork(self, index: int, config: Config) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            status = 70
            try:
                os.close(read_fd)
                for sock in self._held:
                    sock.close()
                status = self.target(worker_config(config, index), self.specs, index,
                                     write_fd, self.ticket_key, self.reload_config)
            except ConfigError as exc:
                log.error("worker %d: %s", index, exc)
                status = 2
            except BaseException:
                log.exception("worker %d failed", index)
                status = 70
            finally:
                logging.shutdown()
                os._exit(status)
        os.close(write_fd)
        self.workers[pid] = _Worker(index, pid, time.monotonic())
        return pid, read_fd

    def run(self) -> int:
        config, self._held = resolve_ports(self.config)
        self.config = config
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            if not self._start_all():
                self._stop_all(signal.SIGTERM)
                return 2
            # Every worker holds the ports now; a held UDP socket would even receive
            # (and drop) its share of datagrams.
            for sock in self._held:
                sock.close()
            self._held = []
            log.info("%d workers running (pids %s)", self.count,
                     " ".join(str(p) for p in sorted(self.workers)))
            if self.config.server.metrics:
                log.info("%s", self.metrics_line())
            return self._supervise()
        finally:
            for sock in self._held:
                sock.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def metrics_line(self) -> str:
        """Where the metrics are: one endpoint per worker, each with its own counters."""
        by_index = sorted((w.index, w.metrics or "?") for w in self.workers.values())
        return (f"metrics per worker, each counting only its own connections and queries "
                f"(scrape all {len(by_index)} and add them up): "
                + ", ".join(f"worker {i}: {url}" for i, url in by_index))

    def _start_all(self) -> bool:
        pending = dict(self._fork(i, self.config) for i in range(self.count))
        deadline = time.monotonic() + READY_TIMEOUT
        ok = True
        for pid, fd in pending.items():
            ready = self._wait_ready(pid, fd, deadline)
            ok = ok and ready
        return ok

    def _wait_ready(self, pid: int, fd: int, deadline: float) -> bool:
        import select

        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("worker (pid %d) not ready after %.0f s", pid, READY_TIMEOUT)
                    return False
                readable, _, _ = select.select([fd], [], [], min(left, 0.5))
                if readable:
                    message = os.read(fd, 512)  # one write, under PIPE_BUF: all of it
                    if message.startswith(READY):
                        if len(message) > len(READY) and pid in self.workers:
                            self.workers[pid].metrics = message[len(READY):].decode()
                        return True
                    log.error("worker (pid %d) exited during start-up", pid)
                    return False
        finally:
            os.close(fd)

    def _supervise(self) -> int:
        interrupts = 0
        while True:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            if info is None:
                continue
            sig = info.si_signo
            if sig == signal.SIGCHLD:
                self._reap()
                if self.stopping and not self.workers:
                    return 0
            elif sig == signal.SIGHUP:
                log.info("reload: forwarding SIGHUP to %d workers", len(self.workers))
                self._signal_all(signal.SIGHUP)
            else:
                interrupts += sig == signal.SIGINT
                if interrupts > 1:
                    log.warning("second interrupt: killing the workers")
                    self._signal_all(signal.SIGKILL)
                return self._stop_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None or self.stopping:
                continue
            lived = time.monotonic() - worker.started
            code = os.waitstatus_to_exitcode(status)
            self._delay = (min(self._delay * 2, RESTART_MAX) if lived < QUICK_DEATH
                           else RESTART_MIN)
            log.warning("worker %d (pid %d) exited with status %d after %.1f s; "
                        "restarting in %.1f s", worker.index, pid, code, lived, self._delay)
            time.sleep(self._delay)
            new_pid, fd = self._fork(worker.index, self.config)
            self.restarts += 1
            if not self._wait_ready(new_pid, fd, time.monotonic() + READY_TIMEOUT):
                log.error("worker %d did not come back", worker.index)

    def _stop_all(self, sig: int) -> int:
        self.stopping = True
        self._signal_all(sig)
        deadline = time.monotonic() + self.config.server.shutdown_grace + KILL_AFTER_GRACE
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        if self.workers:
            log.warning("killing %d workers that did not stop in time", len(self.workers))
            self._signal_all(signal.SIGKILL)
            while self.workers:
                self._reap()
                time.sleep(0.01)
        return 0


def serve_workers(config: Config, specs: Any, workers: int, *,
                  reload_config: Callable[[], Config] | None = None) -> int:
    """Entry point of ``dnstls serve --workers N``; returns the exit status."""
    return Supervisor(config, specs, workers, reload_config=reload_config).run()
