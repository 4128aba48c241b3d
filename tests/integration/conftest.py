"""In-process ``dnstls serve`` on loopback port 0, and a small DoT test client."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from dnstls import config
from dnstls.resolver.base import Request, Resolver
from dnstls.service import Service
from dnstls.upstreams import UpstreamSpec
from dnstls.wiring import forwarding_factory
from fakes import FakeUpstream, TestPKI

ZONE = """$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.1
{big}
""".format(big="\n".join(f'big IN TXT "{"t" * 200}{i:02d}"' for i in range(10)))


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item,
                                   ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop, except for test_serve_loops.py: uvloop (the command's loop)."""
    if item.path.name == "test_serve_loops.py":
        uvloop = pytest.importorskip("uvloop")
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    pki = TestPKI.create(tmp_path)
    pki.leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    return pki


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    return path


class Gate:
    """A resolver stage for names under ``slow.``: each waits for its own release."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Condition()
        self.max_concurrent = 0
        self._concurrent = 0

    async def resolve(self, request: Request) -> dns.message.Message:
        from dnstls.proto.answers import make_response

        name = request.message.question[0].name.to_text()
        event = self.waiting.setdefault(name, asyncio.Event())
        self._concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self._concurrent)
        async with self.arrived:
            self.arrived.notify_all()
        try:
            await event.wait()
        finally:
            self._concurrent -= 1
        return make_response(request.message)

    async def wait_arrived(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.waiting) >= count), 5)

    def release(self, name: str) -> None:
        self.waiting.setdefault(name, asyncio.Event()).set()


@dataclass
class Served:
    service: Service
    pki: TestPKI
    gate: Gate
    tmp: Path

    @property
    def tls_addr(self) -> tuple[str, int]:
        return self.service.endpoints.tls[0]

    @property
    def plain_addr(self) -> tuple[str, int]:
        return self.service.endpoints.plain[0]

    async def ask(self, transport: str, query: dns.message.Message) -> dns.message.Message:
        """``query``'s answer over ``transport``: "udp", "tcp" (plain) or "dot"."""
        wire = query.to_wire()
        if transport == "dot":
            client = await self.connect()
            try:
                await client.send(wire)
                return dns.message.from_wire(await client.recv_wire(5))
            finally:
                await client.aclose()
        host, port = self.plain_addr
        if transport == "udp":
            return await asyncio.to_thread(dns.query.udp, query, host, port=port, timeout=5)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
            return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), 5))
        finally:
            writer.close()

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        ctx.set_alpn_protocols(["dot"])
        return ctx

    async def connect(self, *, server_hostname: str = "dns.test",
                      ctx: ssl.SSLContext | None = None) -> DotClient:
        host, port = self.tls_addr
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx or self.client_context(), server_hostname=server_hostname)
        return DotClient(reader, writer)


class DotClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, *messages: dns.message.Message | bytes) -> None:
        for m in messages:
            wire = m if isinstance(m, bytes) else m.to_wire()
            self.writer.write(struct.pack("!H", len(wire)) + wire)
        await self.writer.drain()

    async def recv(self, within: float = 5.0) -> dns.message.Message:
        return dns.message.from_wire(await self.recv_wire(within))

    async def recv_wire(self, within: float = 5.0) -> bytes:
        head = await asyncio.wait_for(self.reader.readexactly(2), within)
        return await asyncio.wait_for(self.reader.readexactly(struct.unpack("!H", head)[0]),
                                      within)

    async def closed_by_server(self, within: float) -> bool:
        """True if the server closes the connection within ``within`` s (reads to EOF)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(4096):
                    pass
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
        return True

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


ServeFactory = Callable[..., Any]


@pytest.fixture
async def serve(pki: TestPKI, zone_file: Path, tmp_path: Path,
                ) -> AsyncIterator[ServeFactory]:
    """``await serve(server={...})`` starts a service; all are stopped at teardown."""
    services: list[Service] = []

    async def start(*, plain: bool = True, stage: Resolver | None = None,
                    upstreams: list[Any] | None = None,
                    reload_data: Callable[[], dict[str, dict[str, Any]]] | None = None,
                    **sections: dict[str, Any]) -> Served:
        """``reload_data``: what SIGHUP's configuration read returns, as sections merged
        over the ones given here (``service.reload()`` applies it)."""
        gate = Gate()
        server = {"listen": ["127.0.0.1:0"], "plain": ["127.0.0.1:0"] if plain else [],
                  "state_dir": str(tmp_path / "state"), **sections.pop("server", {})}
        data: dict[str, Any] = {
            "server": server,
            "tls": {"certificates": [{"cert": str(tmp_path / "server.pem"),
                                      "key": str(tmp_path / "server.pem")}]},
            "local": {"zones": [str(zone_file)]},
            **sections,
        }
        cfg = config.load(overrides=data)

        def factory(_terminal: Resolver) -> tuple[Resolver, Any]:
            return (stage or gate), None

        real = (forwarding_factory(cfg, upstreams) if upstreams or cfg.recursion.enabled
                else None)
        load = None
        if reload_data is not None:
            get = reload_data

            def load() -> config.Config:
                changes = get()
                return config.load(overrides={**data, **{
                    name: {**data.get(name, {}), **values} for name, values in changes.items()}})

        service = Service(cfg, upstream_factory=real or factory, reload_config=load)
        await service.start()
        services.append(service)
        return Served(service, pki, gate, tmp_path)

    yield start
    for service in services:
        await service.aclose()


#: ``await fakes(transport="udp", **kw)``: a started FakeUpstream, closed at teardown.
Fakes = Callable[..., Coroutine[Any, Any, FakeUpstream]]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started: list[FakeUpstream] = []

    async def start(transport: str = "udp", **kw: Any) -> FakeUpstream:
        fake = await FakeUpstream(transport, **kw).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.aclose()


def udp_spec(fake: FakeUpstream) -> UpstreamSpec:
    """The upstream spec that forwards to ``fake`` over UDP."""
    return UpstreamSpec(address=fake.address, port=fake.port, transport="udp")


@contextlib.asynccontextmanager
async def stub_with_local(pki: TestPKI, local: dict[str, Any],
                          ) -> AsyncIterator[tuple[tuple[str, int], FakeUpstream]]:
    """A started ``dnstls stub`` with the ``[local]`` section ``local``, forwarding to a
    DoT FakeUpstream: yields (its plain-DNS address, the upstream); both stopped after."""
    from dnstls.stub import StubRuntime, stub_config_from_data

    upstream = await FakeUpstream("tls", ssl_context=pki.server_context()).start()
    cfg = stub_config_from_data({
        "listen_addresses": ["127.0.0.1@0"], "timeout": 1500, "local": local,
        "upstream_recursive_servers": [{"address_data": upstream.address,
                                        "tls_port": upstream.port, "tls_auth_name": "dns.test",
                                        "tls_ca_file": pki.ca_file}]})
    service = StubRuntime(cfg).service()
    try:
        await service.start()
        yield service.endpoints.plain[0], upstream
    finally:
        await service.aclose()
        await upstream.aclose()
