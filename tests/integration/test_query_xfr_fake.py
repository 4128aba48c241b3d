"""``dnstls query AXFR/IXFR`` against a scripted primary on loopback: how a transfer ends
and how it breaks, printed as kdig 3.2.6 prints it.

The expected text is kdig's, recorded from kdig 3.2.6 against the same scripted answers
(tests/interop/test_query_xfr_interop.py compares the two live, against this fake and
nsd); what is not compared here is the clock and the elapsed time. Also
``dnstls.Client.transfer`` from Python, and the TLS authentication of a transfer.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.rrset
import dns.tsig
import pytest

from dnstls import Client
from dnstls.cli.main import main
from dnstls.errors import QueryTimeout
from dnstls.net.xfr import TransferClosed
from dnstls.proto.xfr import TransferError
from fakes import TestPKI
from fakes.primary import SCRIPTS, SECRET, SOA9, Primary

pytestmark = pytest.mark.timeout(60)

@pytest.fixture
def primary() -> Iterator[Callable[..., Primary]]:
    started: list[Primary] = []

    def start(name: str, context: ssl.SSLContext | None = None) -> Primary:
        server = Primary(SCRIPTS[name], context)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def run(capsys: pytest.CaptureFixture[str], port: int, *options: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["query", "@127.0.0.1", "-p", str(port), "+timeout=2", *options])
    out, err = capsys.readouterr()
    out = re.sub(r"^;; Time .*$", ";; Time T", out, flags=re.M)
    out = re.sub(r"^(;; From \S+) in \d+\.\d ms$", r"\1", out, flags=re.M)
    return status, out, err


def footer(port: int, received: str, transport: str = "TCP") -> str:
    return f";; Received {received}\n;; Time T\n;; From 127.0.0.1@{port}({transport})\n"


def kdig_errors(port: int, first: str) -> str:
    return f"{first}\n;; ERROR: failed to query server 127.0.0.1@{port}(TCP)\n"


def test_axfr_over_two_messages(primary: Callable[..., Primary],
                                capsys: pytest.CaptureFixture[str]) -> None:
    server = primary("axfr")
    status, out, err = run(capsys, server.port, "AXFR", "z.test")
    assert (status, err) == (0, "")
    assert out == (";; AXFR for z.test.\n"
                   f"z.test.             \t300\tIN\tSOA\t{SOA9}\n"
                   "a.z.test.           \t300\tIN\tA\t192.0.2.1\n"
                   "b.z.test.           \t300\tIN\tA\t192.0.2.1\n"
                   f"z.test.             \t300\tIN\tSOA\t{SOA9}\n"
                   + footer(server.port, "190 B (2 messages, 4 records)"))


def test_ixfr_query_and_incremental_answer(primary: Callable[..., Primary],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    server = primary("ixfr")
    status, out, _ = run(capsys, server.port, "z.test", "IXFR=8", "+short")
    assert status == 0
    assert out.splitlines() == [SOA9, SOA9.replace(" 9 ", " 8 "), "192.0.2.1", SOA9,
                                "192.0.2.1", SOA9]
    query = server.queries[0]
    assert [rrset.to_text() for rrset in query.authority] == ["z.test. 0 IN SOA . . 8 0 0 0 0"]


def test_ixfr_up_to_date(primary: Callable[..., Primary],
                         capsys: pytest.CaptureFixture[str]) -> None:
    server = primary("soa")
    status, out, _ = run(capsys, server.port, "-t", "IXFR=9", "z.test")
    assert status == 0
    assert out == (f";; IXFR for z.test.\nz.test.             \t300\tIN\tSOA\t{SOA9}\n"
                   + footer(server.port, "77 B (1 messages, 1 records)"))


@pytest.mark.parametrize("script, received, first", [
    ("refused", "0 B", ";; ERROR: server replied with error 'REFUSED'"),
    ("midrefused", "95 B (1 messages, 2 records)", ";; ERROR: server replied with error "
                                                   "'REFUSED'"),
    ("nosoa", "0 B", ";; ERROR: first answer record from 127.0.0.1@{port}(TCP) isn't SOA"),
    ("close", "95 B (1 messages, 2 records)", ";; WARNING: can't receive reply from "
                                              "127.0.0.1@{port}(TCP)"),
])
def test_broken_transfers_as_kdig(script: str, received: str, first: str,
                                  primary: Callable[..., Primary],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    server = primary(script)
    status, out, err = run(capsys, server.port, "AXFR", "z.test")
    records = "".join(f"{line}\n" for line in (
        f"z.test.             \t300\tIN\tSOA\t{SOA9}",
        "a.z.test.           \t300\tIN\tA\t192.0.2.1")) if "messages" in received else ""
    assert (status, out) == (1, ";; AXFR for z.test.\n" + records
                             + footer(server.port, received))
    assert err == kdig_errors(server.port, first.format(port=server.port))


@pytest.mark.parametrize("script, first", [
    ("garbage", ";; ERROR: malformed reply packet from 127.0.0.1@{port}(TCP)"),
    ("cut", ";; WARNING: can't receive reply from 127.0.0.1@{port}(TCP)")])
def test_nothing_readable_no_header_as_kdig(script: str, first: str,
                                            primary: Callable[..., Primary],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    server = primary(script)
    status, out, err = run(capsys, server.port, "AXFR", "z.test")
    assert (status, out) == (1, footer(server.port, "0 B"))
    assert err == kdig_errors(server.port, first.format(port=server.port))


def test_a_transfer_that_stalls_ends_at_the_timeout(primary: Callable[..., Primary],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    server = primary("hang")
    status, out, err = run(capsys, server.port, "AXFR", "z.test", "+timeout=1")
    assert status == 4  # ours: a timeout (kdig exits 1)
    assert out.endswith(footer(server.port, "95 B (1 messages, 2 records)"))
    assert err == kdig_errors(server.port,
                              f";; WARNING: response timeout for 127.0.0.1@{server.port}(TCP)")


@pytest.mark.parametrize("script, verdict", [("badsig", "failed to verify TSIG"),
                                             ("unsigned", "expected a TSIG or SIG(0)")])
def test_a_tsig_that_does_not_verify_fails_the_transfer_as_kdig(
        script: str, verdict: str, primary: Callable[..., Primary],
        capsys: pytest.CaptureFixture[str]) -> None:
    """kdig prints the message, then fails (the message not counted)."""
    server = primary(script)
    status, out, err = run(capsys, server.port, "AXFR", "z.test", "-y", f"tsig-key:{SECRET}",
                           "+notsig")
    assert status == 1
    assert out == (f";; AXFR for z.test.\nz.test.             \t300\tIN\tSOA\t{SOA9}\n"
                   "a.z.test.           \t300\tIN\tA\t192.0.2.1\n"
                   f"z.test.             \t300\tIN\tSOA\t{SOA9}\n"
                   + footer(server.port, "0 B"))
    assert err == kdig_errors(
        server.port, f";; ERROR: reply verification for 127.0.0.1@{server.port}(TCP) ({verdict})")
    assert server.queries[0].had_tsig


def test_json_is_an_array_with_the_refusal_as_kdig(primary: Callable[..., Primary],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    server = primary("midrefused")
    status, out, _ = run(capsys, server.port, "AXFR", "z.test", "+json")
    assert status == 1
    document = json.loads(out)
    assert [item["RCODE"] for item in document] == [0, 5]
    assert "questionRRs" not in document[0] and "queryTime" not in document[0]


async def test_client_transfer_streams_the_messages(primary: Callable[..., Primary]) -> None:
    server = primary("axfr")
    async with Client(f"tcp://127.0.0.1:{server.port}", timeout=5) as client:
        messages = [item async for item in client.transfer(dns.message.make_query("z.test.",
                                                                                  "AXFR"))]
    assert [item.transfer.messages for item in messages] == [1, 2]
    assert messages[-1].transfer.done and messages[-1].transfer.records == 4


async def test_client_transfer_errors_are_typed(primary: Callable[..., Primary]) -> None:
    for script, error in (("refused", TransferError), ("close", TransferClosed),
                          ("hang", QueryTimeout)):
        server = primary(script)
        async with Client(f"tcp://127.0.0.1:{server.port}", timeout=1) as client:
            with pytest.raises(error):
                async for _ in client.transfer(dns.message.make_query("z.test.", "AXFR")):
                    pass


async def test_client_transfer_asks_for_one_axfr_or_ixfr(primary: Callable[..., Primary]) -> None:
    async with Client("tcp://127.0.0.1:53") as client:
        with pytest.raises(ValueError, match="AXFR or IXFR"):
            async for _ in client.transfer(dns.message.make_query("z.test.", "A")):
                pass
        with pytest.raises(ValueError, match="serial"):
            async for _ in client.transfer(dns.message.make_query("z.test.", "IXFR")):
                pass


def test_xfr_over_tls_authenticated_as_queries(primary: Callable[..., Primary], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pki = TestPKI.create(tmp_path)
    server = primary("axfr", pki.server_context())
    status, out, err = run(capsys, server.port, "+tls-ca=" + pki.ca_file, "+tls-host=dns.test",
                           "AXFR", "z.test", "+noall", "+stats")
    assert (status, err) == (0, ""), err
    assert out.endswith(f" B (2 messages, 4 records)\n;; Time T\n;; From "
                        f"127.0.0.1@{server.port}(TLS)\n")  # (answers padded as the query)
    assert len(out.splitlines()) == 4 + 3  # +noall: the records all the same, as kdig
    pin = TestPKI.leaf_pin(pki.untrusted_leaf())
    status, out, err = run(capsys, server.port, f"+tls-pin={pin}", "AXFR", "z.test")
    assert (status, out) == (3, "")
    assert "SPKI pin mismatch" in err
    assert len(server.queries) == 1  # nothing sent to a server that failed authentication
