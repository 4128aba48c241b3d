"""Fuzz target: stream framing -> parse_query -> fast-path cache key -> local zone answer
-> finalize for every transport.

One input is a byte string: its first byte chooses where the rest is split into two
reads, the rest is fed to a server-side :class:`~dnstls.proto.stream.StreamState` as a
TCP/TLS byte stream, and every framed message (plus the rest itself, as one message)
goes through the query path. The invariants checked are the server's promises:

* framing raises nothing but ``FramingError``;
* ``parse_query`` returns a Message or a Rejection, never raises; a Rejection's bytes
  parse as a response with the query's ID;
* the cache fast path (``read_query``) accepts nothing the slow path rejects, and its
  key equals ``key_from_message``;
* the local-zone answer is rendered for UDP/TCP/TLS with the query's ID, within the
  client's UDP size, padded to 468-byte blocks on TLS when the query was padded.

Run with atheris (coverage-guided)::

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_query_path.py fuzz/corpus/query_path -max_total_time=600

or, where atheris is not available, with random mutations of the corpus::

    .venv/bin/python fuzz/fuzz_query_path.py --random 200000 --seed 1

Crashes found by atheris are written as ``crash-*`` files; add the interesting ones
to ``fuzz/corpus/query_path/`` (they are replayed by tests/robustness/test_fuzz_corpus.py).
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import campaign  # this folder: also when the tests load the harness by its path

# coverage instrumentation only when run as the atheris fuzzer, never when imported
with campaign.instrumented(__name__):
    import dns.message
    import dns.zone

    from dnstls.proto import edns
    from dnstls.proto.answers import (
        MIN_UDP,
        Rejection,
        Transport,
        error_response,
        finalize,
        parse_query,
    )
    from dnstls.proto.cachekey import key_from_message, read_query
    from dnstls.proto.stream import FramingError, StreamLimits, StreamState
    from dnstls.resolver.base import Refuse, Request, ResolveFailure
    from dnstls.resolver.local import LocalData

ZONE = """$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.1
www IN AAAA 2001:db8::1
alias IN CNAME www
loop1 IN CNAME loop2
loop2 IN CNAME loop1
out IN CNAME www.elsewhere.example.
*.wild IN TXT "wildcard"
a.b.c.ent IN A 192.0.2.7
sub IN NS ns.sub
ns.sub IN A 192.0.2.99
""" + "\n".join(f'big IN TXT "{chr(97 + i) * 250}"' for i in range(8)) + "\n"

LIMITS = StreamLimits(idle_timeout=1.0, message_timeout=1.0, write_timeout=1.0,
                      max_in_flight=4, max_pending_output=4096)
PIPELINE = LocalData(Refuse(), zones=[dns.zone.from_text(ZONE, "example.test.",
                                                         relativize=False)])
MAX_MESSAGES = 8


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that must not suspend (local answers never do)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the local answer path suspended")


def answer(query: Any, transport: Any) -> Any:
    request = Request(query, transport, None, float("inf"))
    try:
        return _run(PIPELINE.resolve(request))
    except ResolveFailure as failure:
        return error_response(query, failure.rcode, ede=failure.ede, text=failure.text)


def check_query(wire: bytes) -> None:
    parsed = parse_query(wire)
    fast = read_query(wire)
    if isinstance(parsed, Rejection):
        assert fast is None, f"fast path accepted what the slow path rejects: {parsed.reason}"
        if parsed.wire is not None:
            response = dns.message.from_wire(parsed.wire)
            assert response.id == struct.unpack_from("!H", wire)[0]
        else:
            assert len(wire) < 12 or wire[2] & 0x80
        return
    assert isinstance(parsed, dns.message.Message)
    if fast is not None:
        assert fast.key == key_from_message(parsed)
    for transport in Transport:
        response = answer(parsed, transport)
        response.id = parsed.id
        out = finalize(response, parsed, transport, keepalive=10.0)
        back = dns.message.from_wire(out)
        assert back.id == parsed.id
        if transport is Transport.UDP:
            assert len(out) <= (max(MIN_UDP, parsed.payload) if parsed.edns >= 0 else MIN_UDP)
        elif (transport is Transport.TLS and parsed.edns >= 0
              and edns.has_option(parsed, edns.PADDING)):
            assert len(out) % edns.SERVER_BLOCK == 0


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    stream = data[1:]
    cut = data[0] % (len(stream) + 1)
    state = StreamState(LIMITS, 0.0)
    messages: list[bytes] = []
    try:
        messages += state.feed(stream[:cut], 0.1)
        messages += state.feed(stream[cut:], 0.2)
        for _ in range(len(messages)):
            messages += state.answered(0.3)
    except FramingError:
        pass
    assert state.deadline() is None or state.deadline() >= 0.0
    for wire in [stream, *messages[:MAX_MESSAGES]]:
        check_query(wire)


# ------------------------------------------------------------------------- fallback


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.choice([0x00, 0x01, 0x0C, 0x29, 0x3F, 0x40, 0x80, 0xC0, 0xFF])
        elif op == 2:
            del data[pos:]
        elif op == 3:
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and data:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 5 and len(seed) > 4:  # splice in part of itself
            a = rng.randrange(len(seed))
            data[pos:pos] = seed[a:a + rng.randint(1, 40)]
        else:
            data = bytearray(rng.randbytes(rng.randint(1, 300)))
    return bytes(data)


def load_corpus(directory: Path) -> list[bytes]:
    return campaign.load_corpus(directory)


def random_campaign(corpus: list[bytes], iterations: int, seed: int, *,
                    seconds: float = float("inf"),
                    target: Callable[[bytes], None] = one_input) -> int:
    """Run mutated corpus entries (:func:`campaign.random_campaign`)."""
    return campaign.random_campaign(corpus, iterations, seed, seconds=seconds,
                                    target=target, mutate=mutate)


def main(argv: list[str]) -> int:
    return campaign.main(argv, doc=__doc__ or "", target=one_input, mutate=mutate,
                         corpus=Path(__file__).resolve().parent / "corpus" / "query_path")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
