"""TSIG (RFC 8945) in the upstream core: signed queries, verified answers.

``dnstls query -y`` sets a TSIG template on the query (``Message.use_tsig``, the time
signed in it); prepare_query signs what it renders, under the ID it is sent with, and
parse_response verifies the answer with the query's key and MAC, keeping a verdict in
kdig's words instead of failing (kdig prints the answer and warns).
"""

from __future__ import annotations

import struct
import time
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import dns.tsig
import pytest

from dnstls.proto.upstream import (
    TSIG_FAILED,
    TSIG_MISSING,
    check_response,
    parse_response,
    prepare_query,
    question_key,
)

KEY = dns.tsig.Key("tsig-key.", b"secretsecretsecretsecretsecret12", dns.tsig.HMAC_SHA256)
OTHER = dns.tsig.Key("tsig-key.", b"another secret", dns.tsig.HMAC_SHA256)


def signed_query(key: dns.tsig.Key = KEY) -> dns.message.Message:
    """A query with a TSIG template signed now: dnspython checks the time signed against
    its clock (300 s of fudge) when it verifies, so not a time read at import."""
    query = dns.message.make_query("www.example.test.", "A", use_edns=0)
    query.use_tsig(key, fudge=300)
    assert query.tsig is not None
    template: Any = query.tsig[0]
    query.tsig = dns.rrset.from_rdata(query.tsig.name, 0,
                                      template.replace(time_signed=int(time.time())))
    return query


def test_prepare_query_signs_what_it_renders_under_the_wire_id() -> None:
    query = signed_query()
    wire = prepare_query(query, qid=4242, pad=128)
    assert struct.unpack("!H", wire[10:12])[0] == 2  # OPT + TSIG
    # what a server does: verify with the key (dnspython raises if the MAC is wrong)
    received = dns.message.from_wire(wire, keyring={KEY.name: KEY})
    assert received.id == 4242
    rdata: Any = received.tsig[0] if received.tsig else None
    assert (rdata.original_id, rdata.time_signed, rdata.fudge) == (
        4242, query.tsig[0].time_signed if query.tsig else None, 300)
    assert query.mac == rdata.mac  # kept to verify the answer
    with pytest.raises(dns.tsig.BadSignature):
        dns.message.from_wire(wire, keyring={OTHER.name: OTHER})
    unsigned = dns.message.make_query("www.example.test.", "A", use_edns=0)
    assert struct.unpack("!H", prepare_query(unsigned, qid=1)[10:12])[0] == 1
    no_edns = prepare_query(signed_query(), qid=7, edns_version=None)
    assert struct.unpack("!H", no_edns[10:12])[0] == 1  # the TSIG alone
    dns.message.from_wire(no_edns, keyring={KEY.name: KEY})


def _answer(query_wire: bytes, key: dns.tsig.Key | None) -> bytes:
    """What a server answers: signed with ``key`` when given (nsd's behaviour)."""
    query = dns.message.from_wire(query_wire, keyring={KEY.name: KEY})
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text("www.example.test.", 300, "IN", "A",
                                             "192.0.2.1"))
    if key is None:
        answer.keyring = None
        answer.tsig = None
        answer.request_mac = b""
        return answer.to_wire()
    answer.keyring = key
    return answer.to_wire()


def verdict(message: Any) -> str | None:
    """The verdict parse_response keeps on the message (an attribute of its own)."""
    result: str | None = message.tsig_verdict
    return result


def test_parse_response_verifies_the_answer_to_a_signed_query() -> None:
    query = signed_query()
    wire = prepare_query(query, qid=99)
    good = parse_response(_answer(wire, KEY), query)
    assert good.tsig is not None and verdict(good) is None
    forged = parse_response(_answer(wire, OTHER), query)
    assert forged.tsig is not None and verdict(forged) == TSIG_FAILED
    unsigned = parse_response(_answer(wire, None), query)
    assert unsigned.tsig is None and verdict(unsigned) == TSIG_MISSING
    assert unsigned.answer  # printed all the same
    plain = parse_response(_answer(wire, None))  # unsigned query: dnspython as before
    assert not hasattr(plain, "tsig_verdict")


def test_a_tsig_error_without_question_answers_a_signed_query() -> None:
    """nsd's BADSIG/BADKEY answers carry no question (RFC 8945 §5.3.2); kdig takes them."""
    query = signed_query()
    reply = dns.message.make_response(query)
    reply.question = []
    reply.set_rcode(dns.rcode.NOTAUTH)
    reply.flags |= 0x8000
    assert check_response(reply, question_key(query), True) is None
    assert check_response(reply, question_key(query)) == "question does not match the query"
