"""UDP upstream message IDs: from the OS's CSPRNG in batches, never shared with a fork."""

from __future__ import annotations

import os

import pytest

from dnstls.net import udp_upstream


def test_ids_are_16_bit_and_spread() -> None:
    ids = [udp_upstream._query_id() for _ in range(20_000)]
    assert all(0 <= i <= 0xFFFF for i in ids)
    assert len(set(ids)) > 15_000  # ~17,300 distinct expected for uniform IDs
    assert len({i >> 8 for i in ids}) == 256 and len({i & 0xFF for i in ids}) == 256


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    udp_upstream._query_id()  # the buffer now holds unused bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, bytes([len(udp_upstream._random) == 0]))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"\x01"
    os.close(read)
