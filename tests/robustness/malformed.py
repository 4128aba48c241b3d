"""Malformed DNS-over-TCP frames and what the server promises for each (docs/serve.md).

Two classes, by what happens to the connection:

* **continuing** frames have a correct length prefix and a readable 12-byte header: the
  server answers FORMERR (or NOTIMP/REFUSED/BADVERS, or a normal answer for random
  bytes that happen to parse) with the frame's ID, or drops the message silently when
  QR is set -- and the connection continues;
* **terminal** frames break the framing (zero length prefix, no readable header, a
  prefix longer or shorter than the body, pure random bytes): the server closes the
  connection, at once or when ``message_timeout`` / ``idle_timeout`` has passed.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
FORMERR, NOTIMP, REFUSED = 1, 4, 5


def header(qid: int, *, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def prefixed(body: bytes, length: int | None = None) -> bytes:
    return struct.pack("!H", len(body) if length is None else length) + body


@dataclass(frozen=True)
class Frame:
    kind: str
    data: bytes  # what goes on the wire, length prefix included
    qid: int | None = None  # the ID a response must carry
    reply: bool = True  # continuing frames: is a response promised?
    rcode: int | None = None  # the RCODE promised, when known


def _random_body(rng: random.Random, qid: int, size: int) -> bytes:
    return struct.pack("!H", qid) + rng.randbytes(size - 2)


def continuing(rng: random.Random, qid: int) -> Frame:
    """A frame the connection survives; see the module docstring."""
    kind = rng.choice(CONTINUING_KINDS)
    h = header(qid)
    if kind == "qdcount0":
        return Frame(kind, prefixed(header(qid, qd=0)), qid, rcode=FORMERR)
    if kind == "qdcount2":
        return Frame(kind, prefixed(header(qid, qd=2) + QUESTION + QUESTION), qid,
                     rcode=FORMERR)
    if kind == "compression_loop":
        return Frame(kind, prefixed(h + b"\xc0\x0c\x00\x01\x00\x01"), qid, rcode=FORMERR)
    if kind == "forward_pointer":
        body = h + b"\xc0\x20\x00\x01\x00\x01" + bytes(20) + b"\x03abc\x00"
        return Frame(kind, prefixed(body), qid, rcode=FORMERR)
    if kind == "label_over_63":
        size = rng.randint(64, 191)
        body = h + bytes([size]) + b"a" * min(size, 63) + b"\x00\x00\x01\x00\x01"
        return Frame(kind, prefixed(body), qid, rcode=FORMERR)
    if kind == "name_over_255":
        labels = rng.randint(5, 8)
        body = h + (b"\x3f" + b"n" * 63) * labels + b"\x00\x00\x01\x00\x01"
        return Frame(kind, prefixed(body), qid, rcode=FORMERR)
    if kind == "two_opt":
        body = header(qid, ar=2) + QUESTION + OPT + OPT
        return Frame(kind, prefixed(body), qid, rcode=FORMERR)
    if kind == "truncated_question":
        body = h + QUESTION[: rng.randint(1, len(QUESTION) - 1)]
        return Frame(kind, prefixed(body), qid, rcode=FORMERR)
    if kind == "trailing_junk":
        return Frame(kind, prefixed(h + QUESTION + rng.randbytes(rng.randint(1, 40))), qid,
                     rcode=FORMERR)
    if kind == "qr_set":
        return Frame(kind, prefixed(header(qid, flags=0x8100) + QUESTION), qid, reply=False)
    if kind == "opcode_notify":
        return Frame(kind, prefixed(header(qid, flags=0x2000) + QUESTION), qid, rcode=NOTIMP)
    if kind == "axfr":
        return Frame(kind, prefixed(h + QUESTION[:-4] + b"\x00\xfc\x00\x01"), qid,
                     rcode=REFUSED)
    # random bytes behind a correct prefix: 12 bytes, 13..600, 512, or 65535
    size = rng.choice([12, rng.randint(13, 600), 512, 512, 65535 if rng.random() < 0.2
                       else 512])
    body = _random_body(rng, qid, size)
    return Frame(f"random_{size if size in (12, 512, 65535) else 'n'}", prefixed(body), qid,
                 reply=not body[2] & 0x80)


CONTINUING_KINDS = ("qdcount0", "qdcount2", "compression_loop", "forward_pointer",
                    "label_over_63", "name_over_255", "two_opt", "truncated_question",
                    "trailing_junk", "qr_set", "opcode_notify", "axfr", "random", "random")

TERMINAL_KINDS = ("zero_length", "length_1", "length_11", "truncated_header",
                  "short_body_512", "short_body_65535", "long_body_12", "random_blob")


def terminal(rng: random.Random, qid: int, valid_query: bytes) -> Frame:
    """A frame after which the server closes the connection (at once or on a timer)."""
    kind = rng.choice(TERMINAL_KINDS)
    if kind == "zero_length":
        return Frame(kind, b"\x00\x00" + rng.randbytes(rng.randint(0, 20)))
    if kind == "length_1":
        return Frame(kind, prefixed(rng.randbytes(1)))
    if kind == "length_11":
        return Frame(kind, prefixed(rng.randbytes(11)))
    if kind == "truncated_header":
        return Frame(kind, prefixed(header(qid)[: rng.randint(2, 10)]))
    if kind == "short_body_512":
        return Frame(kind, prefixed(_random_body(rng, qid, rng.randint(12, 500)), 512))
    if kind == "short_body_65535":
        return Frame(kind, prefixed(_random_body(rng, qid, rng.randint(12, 4000)), 65535))
    if kind == "long_body_12":
        return Frame(kind, prefixed(valid_query, 12))
    return Frame(kind, rng.randbytes(rng.randint(1, 600)))


#: Terminal kinds the server must close at once (no timer involved).
IMMEDIATE_CLOSE = {"zero_length": "framing_error", "length_1": "bad_message",
                   "length_11": "bad_message", "truncated_header": "bad_message"}
