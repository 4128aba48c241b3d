"""Per-run test certificates (trustme): a CA, a DoT server certificate, and bad ones.

Nothing is committed: every call makes new keys. ``ca_file`` is written under the
directory given (pytest's ``tmp_path``). :func:`issue_chain` makes a root, an
intermediate and a leaf (for tests that look at the whole presented chain); :func:`der`
turns one PEM certificate into DER.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from dnstls.proto.pins import spki_pin

SERVER_NAME = "dns.test"


def der(pem: bytes | trustme.Blob) -> bytes:
    """The DER form of one PEM certificate."""
    data = pem.bytes() if isinstance(pem, trustme.Blob) else pem
    return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))


@dataclass
class IssuedChain:
    """Root CA (its certificate in ``ca_file``) -> intermediate -> leaf, and a server
    context presenting the leaf and the intermediate."""

    root: trustme.CA
    leaf: trustme.LeafCert
    ca_file: Path
    server_ctx: ssl.SSLContext

    @property
    def chain_der(self) -> list[bytes]:
        """What the server presents, leaf first, DER."""
        return [der(blob) for blob in self.leaf.cert_chain_pems]


def issue_chain(ca_file: Path, *names: str) -> IssuedChain:
    """A new root, intermediate and leaf for ``names``; the root is written to ``ca_file``."""
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    root.cert_pem.write_to_path(str(ca_file))
    return IssuedChain(root, leaf, ca_file, ctx)


@dataclass
class TestPKI:
    ca: trustme.CA
    leaf: trustme.LeafCert
    ca_file: str

    __test__ = False  # not a test class

    @classmethod
    def create(cls, directory: Path, name: str = SERVER_NAME) -> TestPKI:
        ca = trustme.CA()
        leaf = ca.issue_cert(name)
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca, leaf, str(ca_file))

    def server_context(self, leaf: trustme.LeafCert | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.set_alpn_protocols(["dot"])
        (leaf or self.leaf).configure_cert(ctx)
        return ctx

    def expired_leaf(self, name: str = SERVER_NAME) -> trustme.LeafCert:
        now = datetime.datetime.now(datetime.UTC)
        return self.ca.issue_cert(name, not_before=now - datetime.timedelta(days=30),
                                  not_after=now - datetime.timedelta(days=1))

    def other_name_leaf(self, name: str = "other.test") -> trustme.LeafCert:
        return self.ca.issue_cert(name)

    @staticmethod
    def untrusted_leaf(name: str = SERVER_NAME) -> trustme.LeafCert:
        return trustme.CA().issue_cert(name)

    @staticmethod
    def leaf_pin(leaf: trustme.LeafCert) -> str:
        return spki_pin(der(leaf.cert_chain_pems[0]))

    def ca_pin(self) -> str:
        return spki_pin(der(self.ca.cert_pem))
