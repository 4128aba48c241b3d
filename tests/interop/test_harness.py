"""The interop harness itself: output parsers, ports, the missing-binary rule. No peers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from . import clients, peers

DNSPERF_OUTPUT = """\
Statistics:

  Queries sent:         20277
  Queries completed:    20270 (99.97%)
  Queries lost:         7 (0.03%)

  Response codes:       NOERROR 20000 (98.67%), REFUSED 270 (1.33%)
  Average packet size:  request 34, response 57
  Run time (s):         2.010080
  Queries per second:   10087.658203
"""

KDIG_OUTPUT = """\
;; TLS session (TLS1.3)-(ECDHE-SECP256R1)-(ECDSA-SECP256R1-SHA256)-(AES-256-GCM)
;; ->>HEADER<<- opcode: QUERY; status: NOERROR; id: 27015
;; Flags: qr aa rd; QUERY: 1; ANSWER: 2; AUTHORITY: 0; ADDITIONAL: 1

;; EDNS PSEUDOSECTION:
;; Version: 0; flags: ; UDP size: 1232 B; ext-rcode: NOERROR
;; Option (11): 00C8
;; PADDING: 397 B

;; QUESTION SECTION:
;; alias.example.test.   		IN	A

;; ANSWER SECTION:
alias.example.test.   	300	IN	CNAME	www.example.test.
www.example.test.   	300	IN	A	192.0.2.1

;; Received 468 B
;; Time 2026-11-28 16:17:36 UTC
;; From 127.0.0.1@28853(TCP) in 46.6 ms
"""

DIG_OUTPUT = """\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: REFUSED, id: 63985
;; flags: qr rd; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
; TCP KEEPALIVE: 20.0 secs
;; QUESTION SECTION:
;www.example.org.		IN	A

;; MSG SIZE  rcvd: 67
"""


def test_parse_dnsperf() -> None:
    result = clients.parse_dnsperf(DNSPERF_OUTPUT)
    assert (result.sent, result.completed, result.lost) == (20277, 20270, 7)
    assert result.rcodes == {"NOERROR": 20000, "REFUSED": 270}
    assert result.qps == pytest.approx(10087.658203)


def test_parse_dnsperf_without_summary_raises() -> None:
    with pytest.raises(ValueError, match="Queries"):
        clients.parse_dnsperf("[Status] Sending queries\n")


def test_kdig_output() -> None:
    result = clients.DigResult(["kdig"], 0, KDIG_OUTPUT, "")
    assert result.ok and result.status == "NOERROR"
    assert result.flags == {"qr", "aa", "rd"}
    assert result.rdata("CNAME") == ["www.example.test."]
    assert result.rdata("A") == ["192.0.2.1"]
    assert result.received_bytes == 468
    assert ";; Option (11): 00C8" in result.edns_lines
    assert ";; PADDING: 397 B" in result.edns_lines


def test_dig_output() -> None:
    result = clients.DigResult(["dig"], 0, DIG_OUTPUT, "")
    assert result.status == "REFUSED"
    assert result.flags == {"qr", "rd"}
    assert result.records() == []
    assert result.received_bytes == 67


def test_no_response() -> None:
    result = clients.DigResult(["kdig"], 1, "", ";; ERROR: failed to query server")
    assert not result.ok and result.status is None and result.received_bytes is None


def test_free_port_binds_tcp_and_udp() -> None:
    port = peers.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind((peers.LOOPBACK, port))
        udp.bind((peers.LOOPBACK, port))


def test_missing_binary_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        peers.require("no-such-dns-peer-binary")


def test_missing_binary_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        peers.require("no-such-dns-peer-binary")


def test_pki_files_and_pins(tmp_path: Path) -> None:
    pki = peers.make_pki(tmp_path)
    assert pki.ca_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in pki.key_pem.read_bytes()
    assert len({pki.pin, pki.ca_pin, pki.wrong_pin}) == 3
    assert len(pki.pin) == 44 and len(pki.wrong_pin) == 44


def test_peer_that_exits_early_is_reported(tmp_path: Path) -> None:
    group = peers.PeerGroup(tmp_path)
    peer = group.start(peers.Peer("false", ["sh", "-c", "echo boom >&2; exit 3"], tmp_path))
    with pytest.raises(peers.PeerError, match=r"(?s)exited early \(exit status 3\).*boom"):
        peer.wait_ready(lambda: False, timeout=5)
    assert group.stop_all() == []  # reported once, not again at teardown


def test_peer_that_dies_before_teardown_fails_it(tmp_path: Path) -> None:
    group = peers.PeerGroup(tmp_path)
    peer = group.start(peers.Peer("short", ["sh", "-c", "echo bye >&2; exit 4"], tmp_path))
    assert peer.proc is not None
    peer.proc.wait(timeout=5)
    [failure] = group.stop_all()
    assert "died before teardown (exit status 4)" in failure and "bye" in failure


def test_peer_is_terminated_at_teardown(tmp_path: Path) -> None:
    group = peers.PeerGroup(tmp_path)
    peer = group.start(peers.Peer("sleeper", ["sleep", "30"], tmp_path))
    assert group.stop_all() == []
    assert peer.proc is not None and peer.proc.returncode is not None
