"""``dnstls serve`` as a process: start-up errors, SIGTERM, a second SIGINT, SIGHUP."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from cryptography import x509

from dnstls.cli.main import main
from fakes import TestPKI
from interop.peers import free_port  # free for TCP and UDP (--plain binds both)

pytestmark = pytest.mark.timeout(60)


def wait_port(port: int, proc: subprocess.Popen[bytes], within: float = 15.0) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened")


PROCS: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap() -> object:
    yield
    while PROCS:
        proc = PROCS.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnstls", "serve", "--listen", f"127.0.0.1:{port}",
         "--state-dir", str(tmp_path / "state"), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    PROCS.append(proc)
    wait_port(port, proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=15)
    return proc.returncode, err.decode()


def test_sigterm_exits_zero_and_logs_pin(tmp_path: Path) -> None:
    proc, _port = start(tmp_path, "--no-upstream")
    status, err = stop(proc)
    assert status == 0
    assert "certificate SPKI pin (sha256):" in err and "+tls-pin=" in err
    assert "Traceback" not in err


def test_generated_certificate_is_kept_across_restarts(tmp_path: Path) -> None:
    pins = []
    for _ in range(2):
        proc, _port = start(tmp_path, "--no-upstream")
        _status, err = stop(proc)
        pins.append(err.split("certificate SPKI pin (sha256): ")[1].split()[0])
    assert pins[0] == pins[1]


def test_second_sigint_exits_at_once(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # an upstream that never answers
    silent.bind(("127.0.0.1", 0))
    plain = free_port()
    proc, _port = start(tmp_path, "--upstream", f"udp://127.0.0.1:{silent.getsockname()[1]}",
                        "--plain", f"127.0.0.1:{plain}", "--config",
                        str(_config(tmp_path, "[server]\nshutdown_grace = 30.0\n"
                                    "query_timeout = 30.0\n")))
    q = dns.message.make_query("stuck.example.net", "A")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.settimeout(0.5)
    for _ in range(20):  # the plain listener may come up after the TLS port: resend
        sock.sendto(q.to_wire(), ("127.0.0.1", plain))
        try:
            silent.recvfrom(512)  # the query reached the upstream: it is in flight
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("the query never reached the upstream")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # the first one waits for the in-flight query
    status, _err = stop(proc, signal.SIGINT)
    assert status != 0
    silent.close()
    sock.close()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path


def test_sighup_reloads_the_certificate(tmp_path: Path) -> None:
    pki = TestPKI.create(tmp_path)
    pem = tmp_path / "server.pem"
    pki.leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
    proc, port = start(tmp_path, "--no-upstream", "--cert", str(pem), "--key", str(pem))
    new = pki.ca.issue_cert("dns.test")
    new.private_key_and_cert_chain_pem.write_to_path(str(pem))
    proc.send_signal(signal.SIGHUP)
    expected = x509.load_pem_x509_certificate(new.cert_chain_pems[0].bytes()).serial_number
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    serial = None
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="dns.test") as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            serial = x509.load_der_x509_certificate(der).serial_number
        if serial == expected:
            break
        time.sleep(0.1)
    assert serial == expected
    assert stop(proc)[0] == 0


def test_sighup_reads_the_configuration_again(tmp_path: Path) -> None:
    """SIGHUP applies a changed [local] data (and access control) without a restart;
    a broken file keeps what runs and says why on stderr."""
    plain = free_port()
    config = _config(tmp_path, '[local]\ndata = ["nas.lan. A 192.168.1.10"]\n')
    proc, _port = start(tmp_path, "--no-upstream", "--plain", f"127.0.0.1:{plain}",
                        "--config", str(config))

    def ask() -> str:
        answer = dns.query.udp(dns.message.make_query("nas.lan.", "A"), "127.0.0.1",
                               port=plain, timeout=2)
        return answer.answer[0][0].to_text() if answer.answer else dns.rcode.to_text(
            answer.rcode())

    for _ in range(50):  # the plain listener may come up after the TLS port
        try:
            first = ask()
            break
        except (OSError, dns.exception.Timeout):
            time.sleep(0.1)
    assert first == "192.168.1.10"
    config.write_text('[local]\ndata = ["nas.lan. A 192.168.1.11"]\n')
    proc.send_signal(signal.SIGHUP)
    for _ in range(50):
        if ask() == "192.168.1.11":
            break
        time.sleep(0.1)
    assert ask() == "192.168.1.11"
    config.write_text('[local]\ndata = ["nas.lan. A"]\n')
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert ask() == "192.168.1.11"
    status, err = stop(proc)
    assert status == 0
    assert "reload: local data changed: " in err
    assert "reload: local.data[0]: 'nas.lan. A': " in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("args", "message"), [
    (["--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem"],
     "tls.certificates[0]: certificate file /nonexistent/c.pem does not exist"),
    (["--listen", "localhost:853"], "server.listen[0]: invalid address 'localhost:853'"),
    (["--listen", "127.0.0.1:70000"], "server.listen[0]: invalid port"),
    (["--upstream", "tls://1.2.3.4:853#"], "upstream"),
    (["--upstream", "udp://127.0.0.1", "--pin", "abc"], "--pin/--ca-file"),
])
def test_bad_configuration_is_one_clear_line(args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    status = main(["serve", "--state-dir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0
    assert len(err) == 1 and err[0].startswith("dnstls serve: error: "), err
    assert message in err[0], err


def test_key_not_matching_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      ) -> None:
    pki = TestPKI.create(tmp_path)
    other = pki.ca.issue_cert("other.test")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    pki.leaf.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    assert main(["serve", "--cert", str(cert), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert f"key {key} does not match certificate {cert}" in err


def test_bind_errors_say_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # uvloop (the commands' loop) raises a UDP bind error without errno: its cause has it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        assert main(["serve", "--listen", "127.0.0.1:0", "--plain", f"127.0.0.1:{port}",
                     "--no-upstream", "--state-dir", str(tmp_path)]) == 2
        assert f"server.plain[0]: address 127.0.0.1:{port} is already in use" in \
            capsys.readouterr().err
        assert main(["stub", "--listen", f"127.0.0.1:{port}", "--upstream",
                     "tls://127.0.0.1:1#dns.test"]) == 2
        assert f"dnstls stub: error: listen_addresses[0]: address 127.0.0.1:{port} is " \
            "already in use" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["stub", "--listen", "127.0.0.1:0", "--metrics", f"127.0.0.1:{port}",
                     "--upstream", "tls://127.0.0.1:1#dns.test"]) == 2
        assert f"dnstls stub: error: metrics: address 127.0.0.1:{port} is already in use" \
            in capsys.readouterr().err
    assert main(["serve", "--listen", "192.0.2.1:8853", "--no-upstream",
                 "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "server.listen[0]: cannot listen on 192.0.2.1:8853: Cannot assign requested address")


def test_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--listen", f"127.0.0.1:{port}", "--no-upstream",
                     "--state-dir", str(tmp_path)]) == 2
    assert f"server.listen[0]: address 127.0.0.1:{port} is already in use" in \
        capsys.readouterr().err
