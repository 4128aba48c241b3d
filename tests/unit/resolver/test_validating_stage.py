"""The DNSSEC validating stage (resolver/validating.py) with a fake validator: what is
asked upstream, and what the client gets for each verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rrset
import pytest

from dnstls import config as config_mod
from dnstls.errors import ConfigError
from dnstls.proto.answers import Transport
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.dnssec import Security, Verdict
from dnstls.resolver.forward import client_response
from dnstls.resolver.validating import (
    BUILTIN_ROOT_ANCHORS,
    ROOT_KEY_FILE,
    ValidatingStage,
    load_anchors,
    validating_query,
)

RRSIG = ("www.example. 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 12345 "
         "example. dGVzdA==")


class Upstream:
    """The forwarder: answers every question with an A record, its RRSIG and AD."""

    def __init__(self) -> None:
        self.asked: list[dns.message.Message] = []

    async def resolve(self, request: Request) -> dns.message.Message:
        self.asked.append(request.message)
        query = request.message
        answer = dns.message.make_response(query)
        answer.flags |= dns.flags.AD
        answer.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                                 "192.0.2.1"))
        answer.answer.append(dns.rrset.from_text_list("www.example.", 300, "IN", "RRSIG",
                                                      [RRSIG.split(" ", 4)[4]]))
        return client_response(query, answer)


class FixedValidator:
    def __init__(self, verdict: Verdict, delay: float = 0.0) -> None:
        self.verdict = verdict
        self.delay = delay
        self.seen: list[dns.message.Message] = []

    async def validate(self, response: dns.message.Message) -> Verdict:
        self.seen.append(response)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.verdict


def ask(name: str = "www.example.", *, do: bool | None = None, ad: bool = False,
        cd: bool = False, rdclass: str = "IN", timeout: float = 5.0) -> Request:
    query = dns.message.make_query(name, "A", rdclass=rdclass,
                                   use_edns=do is not None, want_dnssec=bool(do))
    if ad:
        query.flags |= dns.flags.AD
    if cd:
        query.flags |= dns.flags.CD
    return Request(query, Transport.UDP, ("127.0.0.1", 5353),
                   asyncio.get_running_loop().time() + timeout)


def stage(security: Security, **kw: Any) -> tuple[ValidatingStage, Upstream, FixedValidator]:
    upstream = Upstream()
    validator = FixedValidator(Verdict(security, kw.pop("ede", None), kw.pop("text", None)),
                               kw.pop("delay", 0.0))
    return ValidatingStage(upstream, validator, **kw), upstream, validator


def types_of(message: dns.message.Message) -> set[str]:
    return {dns.rdatatype.to_text(r.rdtype) for r in message.answer}


async def test_upstream_is_asked_with_do_and_cd_whatever_the_client_set() -> None:
    st, upstream, validator = stage(Security.SECURE)
    await st.resolve(ask(do=None))
    sent = upstream.asked[0]
    assert sent.flags & dns.flags.CD and sent.flags & dns.flags.RD
    assert sent.edns == 0 and sent.ednsflags & dns.flags.DO and sent.payload >= 1232
    assert validator.seen and types_of(validator.seen[0]) == {"A", "RRSIG"}


async def test_secure_with_do_sets_ad_and_keeps_signatures() -> None:
    st, _, _ = stage(Security.SECURE)
    request = ask(do=True)
    response = await st.resolve(request)
    assert response.id == request.message.id
    assert response.flags & dns.flags.AD and not response.flags & dns.flags.CD
    assert response.ednsflags & dns.flags.DO
    assert types_of(response) == {"A", "RRSIG"}


async def test_secure_with_ad_only_sets_ad_and_strips_signatures() -> None:
    st, _, _ = stage(Security.SECURE)
    response = await st.resolve(ask(do=False, ad=True))
    assert response.flags & dns.flags.AD
    assert not response.ednsflags & dns.flags.DO
    assert types_of(response) == {"A"}


async def test_secure_without_edns_gets_no_opt_and_no_ad() -> None:
    st, _, _ = stage(Security.SECURE)
    response = await st.resolve(ask(do=None))
    assert response.edns < 0 and not response.flags & dns.flags.AD
    assert types_of(response) == {"A"}


async def test_insecure_never_sets_ad_even_when_the_upstream_did() -> None:
    st, _, _ = stage(Security.INSECURE)
    response = await st.resolve(ask(do=True))
    assert not response.flags & dns.flags.AD
    assert types_of(response) == {"A", "RRSIG"}


@pytest.mark.parametrize(("ede", "expected"), [(None, 6), (7, 7), (10, 10)])
async def test_bogus_is_servfail_with_its_extended_error(ede: int | None,
                                                         expected: int) -> None:
    st, _, _ = stage(Security.BOGUS, ede=ede, text="signature expired for www.example. A")
    with pytest.raises(ResolveFailure) as info:
        await st.resolve(ask(do=True))
    assert info.value.rcode == dns.rcode.SERVFAIL and info.value.ede == expected
    assert info.value.text == "signature expired for www.example. A"
    assert st.statistics()["validations"]["bogus"] == 1


@pytest.mark.parametrize(("security", "ad"), [(Security.BOGUS, False),
                                              (Security.SECURE, True),
                                              (Security.INSECURE, False)])
async def test_client_cd_gets_the_data_whatever_the_verdict(security: Security,
                                                           ad: bool) -> None:
    st, upstream, validator = stage(security, ede=7)
    request = ask(do=True, cd=True)
    response = await st.resolve(request)
    assert validator.seen and upstream.asked[0].flags & dns.flags.CD
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.CD
    assert bool(response.flags & dns.flags.AD) is ad
    assert types_of(response) == {"A", "RRSIG"}


async def test_client_cd_is_answered_when_validation_runs_out_of_time() -> None:
    st, _, _ = stage(Security.SECURE, delay=5.0)
    response = await st.resolve(ask(do=True, cd=True, timeout=0.05))
    assert response.rcode() == dns.rcode.NOERROR and not response.flags & dns.flags.AD


async def test_domain_insecure_is_not_validated_and_has_no_ad() -> None:
    st, upstream, validator = stage(Security.BOGUS,
                                    insecure=[dns.name.from_text("example.")])
    response = await st.resolve(ask("www.example.", do=True))
    assert not validator.seen and not response.flags & dns.flags.AD
    assert upstream.asked[0].flags & dns.flags.CD == 0  # the client's query, as it came


async def test_other_classes_pass_through() -> None:
    st, upstream, validator = stage(Security.BOGUS)
    await st.resolve(ask("version.bind.", do=True, rdclass="CH"))
    assert not validator.seen and len(upstream.asked) == 1


async def test_validation_is_bounded_by_the_query_deadline() -> None:
    st, _, _ = stage(Security.SECURE, delay=5.0)
    with pytest.raises(ResolveFailure) as info:
        await st.resolve(ask(do=True, timeout=0.05))
    assert info.value.ede == int(dns.edns.EDECode.NO_REACHABLE_AUTHORITY)
    assert "did not finish in time" in (info.value.text or "")


def test_validating_query_keeps_a_larger_client_payload() -> None:
    query = dns.message.make_query("www.example.", "A", use_edns=0, payload=4000)
    assert validating_query(query).payload == 4000


# ------------------------------------------------------------------ anchors and config

def test_builtin_root_anchors_parse() -> None:
    from dnstls.resolver.dnssec import TrustAnchors

    anchors = TrustAnchors.from_text(BUILTIN_ROOT_ANCHORS)
    assert anchors.zones == (dns.name.root,)


@pytest.mark.skipif(not Path(ROOT_KEY_FILE).exists(), reason="no dns-root-data here")
def test_default_anchor_is_debians_root_key() -> None:
    anchors, source = load_anchors("")
    assert source == ROOT_KEY_FILE and anchors.zones == (dns.name.root,)


def test_missing_anchor_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_anchors(str(tmp_path / "nope.key"))
    assert info.value.field == "dnssec.trust_anchor_file"
    assert "nope.key" in str(info.value)


def test_bad_anchor_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("this is not a record\n")
    with pytest.raises(ConfigError) as info:
        load_anchors(str(bad))
    assert info.value.field == "dnssec.trust_anchor_file"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dnstls.toml"
    path.write_text(text)
    return path


def test_config_defaults_validation_off() -> None:
    cfg = config_mod.load(None)
    assert cfg.dnssec.validation is False and cfg.dnssec.domain_insecure == ()


def test_config_trust_anchor_without_validation_is_an_error(tmp_path: Path) -> None:
    anchor = tmp_path / "root.ds"
    anchor.write_text(BUILTIN_ROOT_ANCHORS)
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, f'[dnssec]\ntrust_anchor_file = "{anchor}"\n'))
    assert info.value.field == "dnssec.trust_anchor_file"


def test_config_bad_insecure_domain_names_its_index(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, '[dnssec]\ndomain_insecure = ["lan.", "a..b"]\n'))
    assert info.value.field == "dnssec.domain_insecure[1]"


def test_config_with_validation_and_anchor(tmp_path: Path) -> None:
    anchor = tmp_path / "root.ds"
    anchor.write_text(BUILTIN_ROOT_ANCHORS)
    cfg = config_mod.load(write(tmp_path, "[dnssec]\nvalidation = true\n"
                                f'trust_anchor_file = "{anchor}"\n'
                                'domain_insecure = ["lan."]\n'))
    assert cfg.dnssec.validation and cfg.dnssec.domain_insecure == ("lan.",)


def test_cli_flags_become_the_dnssec_section() -> None:
    from dnstls.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--dnssec", "--trust-anchor", "/x.key",
                                      "--domain-insecure", "lan.",
                                      "--domain-insecure", "corp."])
    from dnstls.cli.serve import overrides

    assert overrides(args)["dnssec"] == {"validation": True, "trust_anchor_file": "/x.key",
                                         "domain_insecure": ["lan.", "corp."]}
