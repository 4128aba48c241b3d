"""The sans-IO zone transfer reader (dnstls.proto.xfr): when a transfer ends, what
breaks it, what kdig counts, and the query it is asked with -- no sockets."""

from __future__ import annotations

import base64
import time

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
from dns.rdtypes.ANY.TSIG import TSIG

from dnstls.proto import xfr
from dnstls.proto.xfr import Transfer, TransferError

ZONE = dns.name.from_text("z.test.")
KEY = dns.tsig.Key("tsig-key.", base64.b64decode("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="),
                   dns.tsig.HMAC_SHA256)


def soa(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(ZONE, 300, "IN", "SOA",
                               f"ns1.z.test. h.z.test. {serial} 3600 600 86400 300")


def a(name: str, address: str = "192.0.2.1") -> dns.rrset.RRset:
    return dns.rrset.from_text(f"{name}.z.test.", 300, "IN", "A", address)


def msg(*rrsets: dns.rrset.RRset, rcode: int = 0, tsig: bool = False) -> dns.message.Message:
    message = dns.message.Message()
    message.flags |= dns.flags.QR
    message.set_rcode(rcode)
    message.answer = list(rrsets)
    if tsig:
        message.tsig = tsig_record()
    return message


def tsig_record(error: int = 0) -> dns.rrset.RRset:
    rdata = TSIG(dns.rdataclass.ANY, dns.rdatatype.TSIG, dns.tsig.HMAC_SHA256, 1, 300, b"",
                 1, error, b"")
    return dns.rrset.from_rdata("tsig-key.", 0, rdata)


def feed_all(transfer: Transfer, *messages: dns.message.Message, **kw: bool) -> list[bool]:
    return [transfer.feed(message, 100, **kw) for message in messages]


def test_axfr_in_one_message_ends_with_the_second_soa() -> None:
    transfer = Transfer(ZONE)
    assert feed_all(transfer, msg(soa(9), a("a"), a("b"), soa(9))) == [True]
    assert (transfer.messages, transfer.records, transfer.size) == (1, 4, 100)


def test_axfr_over_several_messages() -> None:
    transfer = Transfer(ZONE)
    assert feed_all(transfer, msg(soa(9), a("a")), msg(a("b")), msg(a("c"), soa(9))) == \
        [False, False, True]
    assert (transfer.messages, transfer.records, transfer.size) == (3, 5, 300)


def test_axfr_with_the_soa_alone_is_not_complete_as_kdig() -> None:
    """kdig waits for more after an AXFR's lone SOA (and times out)."""
    transfer = Transfer(ZONE)
    assert feed_all(transfer, msg(soa(9))) == [False]
    assert feed_all(transfer, msg(a("a"), soa(9))) == [True]


def test_axfr_does_not_end_on_an_soa_of_another_serial() -> None:
    transfer = Transfer(ZONE)
    assert feed_all(transfer, msg(soa(9), a("a")), msg(soa(10))) == [False, False]


def test_ixfr_up_to_date_is_the_soa_alone() -> None:
    transfer = Transfer(ZONE, dns.rdatatype.IXFR)
    assert feed_all(transfer, msg(soa(9))) == [True]
    assert (transfer.messages, transfer.records) == (1, 1)


def test_ixfr_answered_in_full_ends_as_an_axfr() -> None:
    transfer = Transfer(ZONE, dns.rdatatype.IXFR)
    assert feed_all(transfer, msg(soa(9), a("a")), msg(a("b"), soa(9))) == [False, True]
    assert transfer.style == "axfr"


def test_ixfr_incremental_ends_on_the_first_serial_where_an_old_soa_would_be() -> None:
    """SOA 9 | SOA 7, -a, SOA 8, +b | SOA 8, -b, SOA 9, +c | SOA 9; the new SOA 9 that
    opens the last additions ends a message: not the end."""
    transfer = Transfer(ZONE, dns.rdatatype.IXFR)
    first = msg(soa(9), soa(7), a("a"), soa(8), a("b"))
    second = msg(soa(8), a("b"), soa(9))
    third = msg(a("c"), soa(9))
    assert feed_all(transfer, first, second, third) == [False, False, True]
    assert transfer.style == "ixfr"
    assert transfer.records == 10


def test_an_error_rcode_breaks_the_transfer_with_its_name_as_kdig() -> None:
    for rcode, name in ((dns.rcode.REFUSED, "REFUSED"), (dns.rcode.NOTAUTH, "NOTAUTH"),
                        (dns.rcode.NOTIMP, "NOTIMPL")):
        with pytest.raises(TransferError) as caught:
            Transfer(ZONE).feed(msg(rcode=rcode), 12)
        assert str(caught.value) == f"server replied with error '{name}'"
        assert caught.value.kind == "rcode"


def test_a_tsig_error_is_named_by_its_tsig_error() -> None:
    message = msg(rcode=dns.rcode.NOTAUTH)
    message.tsig = tsig_record(16)
    assert xfr.rcode_name(message) == "BADSIG"


def test_a_later_error_rcode_breaks_it_too_and_is_not_counted() -> None:
    transfer = Transfer(ZONE)
    transfer.feed(msg(soa(9), a("a")), 50)
    with pytest.raises(TransferError, match="REFUSED"):
        transfer.feed(msg(rcode=dns.rcode.REFUSED), 12)
    assert (transfer.messages, transfer.size) == (1, 50)


def test_the_first_record_must_be_the_soa() -> None:
    for first in (msg(a("a"), soa(9)), msg()):
        with pytest.raises(TransferError, match="first answer record isn't SOA") as caught:
            Transfer(ZONE).feed(first, 40)
        assert caught.value.kind == "no-soa"


def test_a_signed_transfer_needs_a_signed_first_message_then_one_in_100() -> None:
    with pytest.raises(TransferError, match="expected a TSIG or SIG"):
        Transfer(ZONE).feed(msg(soa(9), a("a")), 40, signed=True)
    transfer = Transfer(ZONE)
    transfer.feed(msg(soa(9), tsig=True), 40, signed=True)
    for _ in range(xfr.MAX_UNSIGNED):
        transfer.feed(msg(a("a")), 40, signed=True)
    transfer.feed(msg(a("b"), tsig=True), 40, signed=True)  # the count starts again
    for _ in range(xfr.MAX_UNSIGNED):
        transfer.feed(msg(a("a")), 40, signed=True)
    with pytest.raises(TransferError, match="expected a TSIG"):
        transfer.feed(msg(a("c")), 40, signed=True)


def test_a_verdict_breaks_the_transfer_after_the_rcode_and_soa_checks() -> None:
    with pytest.raises(TransferError, match="REFUSED"):
        Transfer(ZONE).feed(msg(rcode=dns.rcode.REFUSED), 12, verdict="failed to verify TSIG")
    with pytest.raises(TransferError) as caught:
        Transfer(ZONE).feed(msg(soa(9), soa(9)), 12, signed=True,
                            verdict="failed to verify TSIG")
    assert caught.value.kind == "tsig" and str(caught.value) == "failed to verify TSIG"


def test_the_record_limit() -> None:
    transfer = Transfer(ZONE, limit_records=3)
    transfer.feed(msg(soa(9), a("a")), 40)
    with pytest.raises(TransferError, match="more than 3 records"):
        transfer.feed(msg(a("b"), a("c")), 40)


def test_nothing_after_the_end() -> None:
    transfer = Transfer(ZONE)
    transfer.feed(msg(soa(9), soa(9)), 40)
    with pytest.raises(TransferError, match="after the end"):
        transfer.feed(msg(a("a")), 40)


def query(rdtype: str = "AXFR") -> dns.message.Message:
    return dns.message.make_query(ZONE, rdtype)


def test_an_ixfr_query_carries_the_soa_as_kdig_sends_it() -> None:
    wire = xfr.query_wire(query("IXFR"), qid=7, serial=2024010101)
    parsed = dns.message.from_wire(wire)
    assert parsed.id == 7
    assert [rrset.to_text() for rrset in parsed.authority] == \
        ["z.test. 0 IN SOA . . 2024010101 0 0 0 0"]
    assert wire.count(ZONE.to_wire() or b"") == 1  # the owner compressed to the question's
    assert parsed.edns == 0


def test_padding_counts_the_ixfr_soa() -> None:
    for serial in (None, 1):
        wire = xfr.query_wire(query("IXFR" if serial else "AXFR"), qid=1, serial=serial,
                              pad=128)
        assert len(wire) % 128 == 0


def test_a_signed_transfer_query_verifies() -> None:
    message = query("IXFR")
    message.use_tsig(KEY)
    assert message.tsig is not None
    template = message.tsig[0]
    message.tsig = dns.rrset.from_rdata(message.tsig.name, 0,
                                        template.replace(time_signed=int(time.time())))
    wire = xfr.query_wire(message, qid=99, serial=5)
    parsed = dns.message.from_wire(wire, keyring={KEY.name: KEY})
    assert parsed.had_tsig and parsed.authority
