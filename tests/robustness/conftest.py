"""Fixtures of the robustness suite: per-run certificates and the daemon subprocess."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from .clients import Conn, answer_ok, make_query
from .harness import Certs, Daemon, start_daemon

StartDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.create(tmp_path / "pki")


async def warm_up(daemon: Daemon) -> None:
    """One query and one scrape (lazy allocations happen), then take the baselines."""
    conn = await Conn.open(daemon)
    wire = make_query("www.example.test", qid=4242)
    got = await conn.query(wire)
    assert got is not None and answer_ok(got.to_wire(), 4242)
    await conn.aclose()
    await daemon.scrape()
    await daemon.settle(5.0)
    daemon.fd_baseline = await daemon.quiet_fds()
    daemon.rss_baseline = daemon.rss()


@pytest.fixture
async def daemon_factory(tmp_path: Path, certs: Certs) -> AsyncIterator[StartDaemon]:
    """``await daemon_factory(server={...})``: a warmed-up daemon; stopped at teardown."""
    started: list[Daemon] = []

    async def start(name: str = "dnstls", **kwargs: Any) -> Daemon:
        daemon = start_daemon(tmp_path / f"{name}{len(started)}", certs, **kwargs)
        started.append(daemon)
        await warm_up(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
