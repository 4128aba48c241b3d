"""Builds the resolver stages behind local data: cache -> coalescing -> forwarder.

Kept apart from :mod:`dnstls.service` so that the service only sees a factory that
turns "the stage to fall back to" into "the stage to use", plus an object to
``aclose()`` at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dnstls.config import Config
from dnstls.resolver.base import Resolver

Factory = Callable[[Resolver], tuple[Resolver, Any]]


def forwarding_factory(cfg: Config, specs: list[Any] | None) -> Factory | None:
    """The upstream stages for ``cfg`` (None: no forwarding, names outside local data
    are REFUSED)."""
    if specs is None and not cfg.forward.upstreams:
        return None
    raise NotImplementedError("forwarding is not wired yet")
