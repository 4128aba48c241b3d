"""A dnstap collector for tests: a Frame Streams reader on a Unix socket (the
bidirectional handshake, as fstrm_capture and dnscollector accept it), and a protobuf
decoder of dnstap messages written apart from the encoder it checks (field numbers from
dnstap.proto, read generically)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5

MESSAGE_TYPES = {5: "CLIENT_QUERY", 6: "CLIENT_RESPONSE", 7: "FORWARDER_QUERY",
                 8: "FORWARDER_RESPONSE", 3: "RESOLVER_QUERY", 4: "RESOLVER_RESPONSE"}
_MESSAGE_FIELDS = {1: "type", 2: "socket_family", 3: "socket_protocol", 4: "query_address",
                   5: "response_address", 6: "query_port", 7: "response_port",
                   8: "query_time_sec", 9: "query_time_nsec", 10: "query_message",
                   11: "query_zone", 12: "response_time_sec", 13: "response_time_nsec",
                   14: "response_message"}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
    raise ValueError("varint too long")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's (field number, value) pairs, in order."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, at = _varint(data, at)
        elif wire_type == 2:
            length, at = _varint(data, at)
            value = data[at:at + length]
            if len(value) != length:
                raise ValueError("truncated field")
            at += length
        elif wire_type == 5:
            (value,) = struct.unpack_from("<I", data, at)
            at += 4
        elif wire_type == 1:
            (value,) = struct.unpack_from("<Q", data, at)
            at += 8
        else:
            raise ValueError(f"wire type {wire_type}")
        out.append((number, value))
    return out


def decode(frame: bytes) -> dict[str, Any]:
    """A Dnstap message as a dict: identity, version, type and the message's fields
    (``message_type`` by name)."""
    out: dict[str, Any] = {}
    for number, value in fields(frame):
        if number == 1:
            out["identity"] = value
        elif number == 2:
            out["version"] = value
        elif number == 15:
            out["dnstap_type"] = value
        elif number == 14:
            assert isinstance(value, bytes)
            for mnumber, mvalue in fields(value):
                out[_MESSAGE_FIELDS.get(mnumber, str(mnumber))] = mvalue
            out["message_type"] = MESSAGE_TYPES.get(out.get("type", 0), str(out.get("type")))
    return out


def control(kind: int, content_type: bytes | None = CONTENT_TYPE) -> bytes:
    body = struct.pack(">I", kind)
    if content_type is not None:
        body += struct.pack(">II", 1, len(content_type)) + content_type
    return struct.pack(">II", 0, len(body)) + body


def write_file(path: Path, frames: list[bytes]) -> None:
    """A Frame Streams file (as fstrm_capture writes it) of ``frames``."""
    with open(path, "wb") as fh:
        fh.write(control(START))
        for frame in frames:
            fh.write(struct.pack(">I", len(frame)) + frame)
        fh.write(control(STOP, None))


def read_file(path: Path) -> list[bytes]:
    """The data frames of a Frame Streams file (checked: START first, STOP last)."""
    data = path.read_bytes()
    frames: list[bytes] = []
    controls: list[int] = []
    at = 0
    while at < len(data):
        (length,) = struct.unpack_from(">I", data, at)
        at += 4
        if length == 0:
            (clen, kind) = struct.unpack_from(">II", data, at)
            controls.append(kind)
            at += 4 + clen
        else:
            frames.append(data[at:at + length])
            at += length
    assert controls[0] == START and controls[-1] == STOP, controls
    return frames


@dataclass
class Session:
    """One writer's connection: its control frames and data frames."""

    controls: list[tuple[int, list[bytes]]] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    finished: bool = False


class Collector:
    """``await Collector.start(path)``: accepts writers on the Unix socket ``path``.
    ``paused``: after the handshake, read nothing (a collector that does not keep up)."""

    def __init__(self, path: Path, *, paused: bool = False) -> None:
        self.path = path
        self.paused = paused
        self.sessions: list[Session] = []
        self.server: asyncio.AbstractServer | None = None
        self.changed = asyncio.Condition()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()

    @classmethod
    async def start(cls, path: Path, *, paused: bool = False) -> Collector:
        collector = cls(path, paused=paused)
        collector.server = await asyncio.start_unix_server(collector._serve, str(path))
        return collector

    @property
    def frames(self) -> list[bytes]:
        return [f for s in self.sessions for f in s.frames]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [decode(f) for f in self.frames]

    async def wait_frames(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.frames) >= count), within)
        return self.messages

    async def wait_sessions(self, count: int, within: float = 5.0) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.sessions) >= count), within)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     ) -> None:
        self._writers.append(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.append(task)
        session = Session()
        try:
            kind, types = await _read_control(reader)
            session.controls.append((kind, types))
            if kind != READY or CONTENT_TYPE not in types:
                return
            writer.write(control(ACCEPT))
            kind, types = await _read_control(reader)
            session.controls.append((kind, types))
            if kind != START:
                return
            self.sessions.append(session)
            await self._notify()
            if self.paused:
                writer.transport.pause_reading()
                await self._stop.wait()
                return
            while True:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                if length == 0:
                    (clen,) = struct.unpack(">I", await reader.readexactly(4))
                    body = await reader.readexactly(clen)
                    session.controls.append((struct.unpack_from(">I", body)[0], []))
                    if session.controls[-1][0] == STOP:
                        writer.write(control(FINISH, None))
                        session.finished = True
                        await self._notify()
                        return
                    continue
                session.frames.append(await reader.readexactly(length))
                await self._notify()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def drop_connections(self) -> None:
        """Close every writer's connection (the collector restarting)."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def aclose(self) -> None:
        self._stop.set()
        self.drop_connections()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


async def _read_control(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    escape, length = struct.unpack(">II", await reader.readexactly(8))
    assert escape == 0, "expected a control frame"
    body = await reader.readexactly(length)
    kind = struct.unpack_from(">I", body)[0]
    types = []
    at = 4
    while at < len(body):
        ftype, flen = struct.unpack_from(">II", body, at)
        at += 8
        if ftype == 1:
            types.append(body[at:at + flen])
        at += flen
    return kind, types


class ThreadCollector:
    """:class:`Collector` on its own loop in a thread (the interop tests are sync)."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.collector: Collector = self._run(Collector.start(path))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def frames(self) -> list[bytes]:
        return self._run(_frames(self.collector))

    def wait_frames(self, count: int) -> list[bytes]:
        self._run(self.collector.wait_frames(count, within=15))
        return self.frames()

    def wait_sessions(self, count: int) -> None:
        self._run(self.collector.wait_sessions(count, within=20))

    def sessions(self) -> list[Session]:
        return self._run(_sessions(self.collector))  # type: ignore[no-any-return]

    def close(self) -> None:
        self._run(self.collector.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _frames(collector: Collector) -> list[bytes]:
    return list(collector.frames)


async def _sessions(collector: Collector) -> list[Session]:
    return list(collector.sessions)
