"""Supervisor checks made before anything is forked (the processes: tests/integration)."""

from __future__ import annotations

import pytest

from dnstls import config as config_mod
from dnstls.errors import ConfigError
from dnstls.workers import Supervisor, worker_config


def test_metrics_ports_past_65535_are_a_config_error_up_front() -> None:
    """Worker i serves metrics on port + i: with the last one past 65535, one clear
    error names the field before any worker starts (it used to be worker 1's start-up
    failure, "invalid port in '127.0.0.1:65536'", about a port nobody wrote)."""
    cfg = config_mod.load(None, {"server": {"metrics": "127.0.0.1:65535"}})
    with pytest.raises(ConfigError) as info:
        Supervisor(cfg, [], 2)
    assert str(info.value).startswith("server.metrics: port 65535: with --workers 2")
    assert "at most 65534 for 2 workers" in str(info.value)
    Supervisor(cfg, [], 1)  # one worker: port 65535 is fine
    fits = config_mod.load(None, {"server": {"metrics": "127.0.0.1:65534"}})
    Supervisor(fits, [], 2)
    assert worker_config(fits, 1).server.metrics == "127.0.0.1:65535"
    free = config_mod.load(None, {"server": {"metrics": "127.0.0.1:0"}})
    Supervisor(free, [], 8)  # port 0: each worker a free port of its own
