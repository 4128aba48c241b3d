"""Case 10: TLS hygiene, probed with ``openssl s_client`` (the client side set to
``@SECLEVEL=0`` so that it really offers what it is asked to).

* TLS 1.0 and 1.1 are refused;
* every TLS 1.2 cipher suite OpenSSL knows is tried one by one: only ECDHE with an
  AEAD cipher (AES-GCM, ChaCha20-Poly1305) may be accepted, and the ECDSA ones are;
* TLS 1.3 works; no handshake negotiates compression;
* client-initiated renegotiation (s_client's ``R`` command) is refused;
* plaintext DNS on the TLS port gets no DNS answer and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time

import pytest

from .clients import frame, make_query, open_tcp, read_until_closed
from .conftest import StartDaemon
from .harness import SMALL_LIMITS, TLS_NAME, Daemon

pytestmark = [pytest.mark.robustness, pytest.mark.timeout(120)]

OPENSSL = shutil.which("openssl")
requires_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
_NEGOTIATED = re.compile(r"New, (TLSv[\d.]+|SSLv3), Cipher is (\S+)")


async def s_client(d: Daemon, *args: str, stdin: bytes = b"", hold: float = 0.0,
                   ) -> tuple[int, str]:
    """Run s_client against the daemon; (exit status, stdout+stderr)."""
    assert OPENSSL is not None
    host, port = d.tls_addr
    proc = await asyncio.create_subprocess_exec(
        OPENSSL, "s_client", "-connect", f"{host}:{port}", "-servername", TLS_NAME,
        "-CAfile", str(d.certs.ca_file), *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdin is not None
    if hold:  # keep stdin open so the session stays up (interactive commands)
        await asyncio.sleep(hold)
    proc.stdin.write(stdin)
    if hold:
        await asyncio.sleep(hold)
    proc.stdin.close()
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


def negotiated(output: str) -> tuple[str, str] | None:
    match = _NEGOTIATED.search(output)
    if match is None or match.group(2) == "(NONE)":
        return None
    return match.group(1), match.group(2)


async def tls12_suites() -> list[tuple[str, bool]]:
    """(name, ECDHE+AEAD?) for every non-TLS-1.3 suite this OpenSSL knows."""
    assert OPENSSL is not None
    proc = await asyncio.create_subprocess_exec(
        OPENSSL, "ciphers", "-v", "ALL:COMPLEMENTOFALL:@SECLEVEL=0",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    suites = []
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "TLSv1.3":
            continue
        info = dict(f.split("=", 1) for f in fields[2:] if "=" in f)
        good = info.get("Kx") == "ECDH" and info.get("Mac") == "AEAD"
        suites.append((fields[0], good))
    return suites


@requires_openssl
async def test_tls_hygiene(daemon_factory: StartDaemon) -> None:
    daemon = await daemon_factory(server={"handshake_timeout": 2.0})
    report: dict[str, object] = {}

    # old protocol versions
    for flag in ("-tls1", "-tls1_1"):
        _rc, out = await s_client(daemon, flag, "-cipher", "DEFAULT@SECLEVEL=0")
        assert negotiated(out) is None, f"{flag} was accepted:\n{out[-2000:]}"
        report[flag] = "refused"

    # every TLS 1.2 suite, one at a time
    suites = await tls12_suites()
    limit = asyncio.Semaphore(6)

    async def try_suite(name: str) -> tuple[str, str | None]:
        async with limit:
            _rc, out = await s_client(daemon, "-tls1_2", "-cipher", f"{name}@SECLEVEL=0")
        got = negotiated(out)
        if got is not None:
            assert "Compression: NONE" in out, out
        return name, got[1] if got else None

    results = await asyncio.gather(*(try_suite(name) for name, _ in suites))
    accepted = sorted(name for name, got in results if got is not None)
    good = {name for name, ok in suites if ok}
    report["tls1.2 suites tried"] = len(suites)
    report["tls1.2 accepted"] = accepted
    assert accepted, "no TLS 1.2 suite accepted at all"
    assert set(accepted) <= good, f"non ECDHE+AEAD accepted: {set(accepted) - good}"
    for name in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                 "ECDHE-ECDSA-CHACHA20-POLY1305"):
        assert name in accepted

    # TLS 1.3
    _rc, out = await s_client(daemon, "-tls1_3")
    got = negotiated(out)
    assert got is not None and got[0] == "TLSv1.3", out[-2000:]
    assert "Compression: NONE" in out
    report["tls1.3"] = got[1]

    # client-initiated renegotiation ("R" on its own line) on TLS 1.2
    _rc, out = await s_client(daemon, "-tls1_2", stdin=b"R\n", hold=0.7)
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "no renegotiation" in out, out[-2000:]
    report["renegotiation"] = "refused (no_renegotiation alert)"
    report["RFC 5746 extension"] = ("secure renegotiation supported"
                                    if "Secure Renegotiation IS supported" in out else "absent")

    # plaintext DNS on the TLS port
    reader, writer = await open_tcp(daemon)
    start = time.monotonic()
    writer.write(frame(make_query("www.example.test", qid=1)))
    got_bytes = b""
    with contextlib.suppress(ConnectionError, TimeoutError):
        got_bytes = await asyncio.wait_for(reader.read(65536), 5)
    outcome, _ = await read_until_closed(reader, SMALL_LIMITS["handshake_timeout"] + 5)
    took = time.monotonic() - start
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    assert not (len(got_bytes) > 4 and got_bytes[2:4] == b"\x00\x01"), "answered in plaintext"
    assert outcome != "timeout" and took < 2.0 + 1.5
    report["plaintext DNS"] = f"closed after {took:.2f}s, {len(got_bytes)} bytes back"

    print("\ntls hygiene: " + "; ".join(f"{k}: {v}" for k, v in report.items()))
    fds, _ = await daemon.settle(5.0)
    daemon.assert_healthy()
    assert fds <= daemon.fd_baseline
