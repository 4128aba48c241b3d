"""Per-run test certificates (trustme): a CA, a DoT server certificate, and bad ones.

Nothing is committed: every call makes new keys. ``ca_file`` is written under the
directory given (pytest's ``tmp_path``).
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from dnstls.proto.pins import spki_pin

SERVER_NAME = "dns.test"


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
        return spki_pin(_der(leaf.cert_chain_pems[0].bytes()))

    def ca_pin(self) -> str:
        return spki_pin(_der(self.ca.cert_pem.bytes()))


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
