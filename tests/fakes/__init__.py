"""Fakes shared by the test suite: a scriptable upstream resolver and per-run certificates.

Import as ``from fakes.upstream import FakeUpstream, Behavior`` with ``tests/`` on
``sys.path`` (see ``tests/fakes/README`` in the module docstrings).
"""

from .pki import IssuedChain, TestPKI, der, issue_chain
from .upstream import Behavior, FakeUpstream, Received

__all__ = ["Behavior", "FakeUpstream", "IssuedChain", "Received", "TestPKI", "der",
           "issue_chain"]
