"""The DoT listener's connection set-up on both event loops it runs on.

``_TlsGate`` installs the loop's own TLS protocol itself (uvloop's or asyncio's), so the
set-up tests of test_serve.py run again here under uvloop (the rest of the integration
suite runs on asyncio's loop; the interop and robustness suites run the command, on
uvloop). conftest.py's ``pytest_asyncio_loop_factories`` gives this module's tests
uvloop.
"""

from __future__ import annotations

import asyncio

import test_serve as on_asyncio

_AGAIN = (
    "test_answer_over_tls_with_padding_and_keepalive",
    "test_connections_in_handshake_count_against_the_limits",
    "test_failed_handshakes_are_counted_by_reason_and_released",
    "test_per_client_connection_limit",
    "test_pipelining_200_queries_on_one_connection",
    "test_plaintext_dns_to_tls_port_is_closed",
    "test_tls_session_resumption",
)
for _name in _AGAIN:  # collected again under this module's name, on uvloop
    globals()[_name] = getattr(on_asyncio, _name)


async def test_these_run_on_uvloop() -> None:
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
