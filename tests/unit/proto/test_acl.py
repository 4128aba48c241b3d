"""proto/acl.py: rule parsing, longest prefix match, mapped and scoped sources, default."""

import ipaddress

import pytest

from dnstls.proto.acl import (
    ACTIONS,
    ALLOW,
    ALLOW_SNOOP,
    DEFAULT_RULES,
    DENY,
    REFUSE,
    AccessControl,
    parse_rule,
    parse_rules,
)


def acl(*rules: str, memo_size: int = 65536) -> AccessControl:
    return AccessControl(parse_rules(rules, "server.access_control"), memo_size=memo_size)


@pytest.mark.parametrize(("text", "network", "action"), [
    ("192.168.0.0/16 allow", "192.168.0.0/16", ALLOW),
    ("10.1.2.3 refuse", "10.1.2.3/32", REFUSE),  # a bare address is a host
    ("2001:db8::/32 deny", "2001:db8::/32", DENY),
    ("::1 allow", "::1/128", ALLOW),
    ("  10.0.0.0/8\tallow ", "10.0.0.0/8", ALLOW),  # any blanks around and between
    ("10.0.0.1/8 allow", "10.0.0.0/8", ALLOW),  # host bits cleared, as Unbound does
    ("fe80::1%eth0 allow", "fe80::1/128", ALLOW),  # a scope is ignored, as Unbound
    ("::ffff:10.0.0.0/104 refuse", "10.0.0.0/8", REFUSE),  # mapped: the IPv4 netblock
    ("::ffff:192.0.2.1 deny", "192.0.2.1/32", DENY),
    ("0.0.0.0/0 allow", "0.0.0.0/0", ALLOW),
    ("::/0 allow", "::/0", ALLOW),
    ("192.0.2.0/24 allow_snoop", "192.0.2.0/24", ALLOW_SNOOP),  # as Unbound spells it
])
def test_parse_rule(text: str, network: str, action: int) -> None:
    rule = parse_rule(text)
    assert rule.network == ipaddress.ip_network(network)
    assert rule.action == action
    assert str(rule) == f"{network} {('allow', 'refuse', 'deny', 'allow_snoop')[action]}"


@pytest.mark.parametrize(("text", "message"), [
    ("10.0.0.0/8 alow", "unknown action 'alow' (allow, allow_snoop, refuse or deny)"),
    # lower case only, as Unbound
    ("10.0.0.0/8 ALLOW", "unknown action 'ALLOW' (allow, allow_snoop, refuse or deny)"),
    ("10.0.0.0/8 allow-snoop",
     "unknown action 'allow-snoop' (allow, allow_snoop, refuse or deny)"),
    ("10.0.0.0/33 allow", "'10.0.0.0/33' is not an address or netblock"),
    ("2001:db8::/129 allow", "'2001:db8::/129' is not an address or netblock"),
    ("10.0.0.0/ allow", "'10.0.0.0/' is not an address or netblock"),
    ("10.0.0.0/-1 allow", "'10.0.0.0/-1' is not an address or netblock"),
    ("localhost allow", "'localhost' is not an address or netblock"),
    ("10.0.0.256 allow", "'10.0.0.256' is not an address or netblock"),
    ("10.0.0.0/8", "'10.0.0.0/8': expected \"NETBLOCK ACTION\", e.g. \"192.168.0.0/16 allow\""),
    ("10.0.0.0/8 allow extra", "expected \"NETBLOCK ACTION\""),
    ("", "expected \"NETBLOCK ACTION\""),
])
def test_parse_rule_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rule(text)
    assert message in str(info.value)


def test_not_a_string() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_rule(8)


def test_parse_rules_names_the_index() -> None:
    with pytest.raises(ValueError) as info:
        parse_rules(["127.0.0.0/8 allow", "10.0.0.0/8 allow", "10.0.0.0/8 alow"],
                    "server.access_control")
    assert info.value.args == ("server.access_control[2]",
                               "unknown action 'alow' (allow, allow_snoop, refuse or deny)")


def test_duplicate_netblock_is_an_error() -> None:
    # host bits cleared first: 10.0.0.1/8 is 10.0.0.0/8
    with pytest.raises(ValueError) as info:
        parse_rules(["10.0.0.0/8 allow", "::1 allow", "10.0.0.1/8 deny"], "access_control")
    assert info.value.args == ("access_control[2]",
                               "10.0.0.0/8 is already in access_control[0]")


def test_no_rules_is_an_error() -> None:
    with pytest.raises(ValueError) as info:
        parse_rules([], "server.access_control")
    assert info.value.args[0] == "server.access_control"
    assert "every client would be refused" in info.value.args[1]


def test_longest_prefix_wins_whatever_the_order() -> None:
    for rules in (("10.0.0.0/8 allow", "10.1.0.0/16 deny", "10.1.2.3 refuse"),
                  ("10.1.2.3 refuse", "10.1.0.0/16 deny", "10.0.0.0/8 allow")):
        a = acl(*rules)
        assert a.check("10.1.2.3") == REFUSE
        assert a.check("10.1.2.4") == DENY
        assert a.check("10.2.0.1") == ALLOW
        assert a.check("11.0.0.1") == REFUSE  # no rule: refused


def test_ipv6_longest_prefix() -> None:
    a = acl("2001:db8::/32 allow", "2001:db8:1::/48 deny", "::/0 refuse")
    assert a.check("2001:db8::1") == ALLOW
    assert a.check("2001:db8:1::1") == DENY
    assert a.check("2001:db9::1") == REFUSE
    assert a.check("10.0.0.1") == REFUSE  # an IPv6 rule never matches IPv4


def test_everyone() -> None:
    a = acl("0.0.0.0/0 allow", "::/0 allow")
    for host in ("192.0.2.1", "8.8.8.8", "2001:db8::1", "::ffff:203.0.113.9"):
        assert a.check(host) == ALLOW


def test_mapped_source_is_matched_as_ipv4() -> None:
    a = acl("192.0.2.0/24 allow", "192.0.2.66 deny")
    assert a.check("::ffff:192.0.2.1") == ALLOW
    assert a.check("::ffff:192.0.2.66") == DENY
    assert a.check("::ffff:198.51.100.1") == REFUSE
    # a mapped netblock in a rule matches plain IPv4 sources too
    b = acl("::ffff:198.51.100.0/120 allow")
    assert b.check("198.51.100.7") == ALLOW
    assert b.check("::ffff:198.51.100.7") == ALLOW


def test_scoped_source() -> None:
    a = acl("fe80::/10 allow", "fe80::bad deny")
    assert a.check("fe80::1%eth0") == ALLOW
    assert a.check("fe80::bad%2") == DENY


@pytest.mark.parametrize("host", ["?", "", "not-an-address", "1.2.3", "::g"])
def test_unreadable_source_is_refused(host: str) -> None:
    assert acl("0.0.0.0/0 allow", "::/0 allow").check(host) == REFUSE


@pytest.mark.parametrize(("host", "action"), [
    ("127.0.0.1", ALLOW), ("127.255.0.9", ALLOW), ("10.9.8.7", ALLOW),
    ("100.64.0.1", ALLOW), ("100.127.255.254", ALLOW), ("100.128.0.1", REFUSE),
    ("169.254.1.1", ALLOW), ("192.168.1.20", ALLOW), ("172.16.0.1", ALLOW),
    ("172.31.255.255", ALLOW), ("172.32.0.1", REFUSE), ("192.0.2.1", REFUSE),
    ("8.8.8.8", REFUSE), ("::1", ALLOW), ("fd00::1", ALLOW), ("fc00::1", ALLOW),
    ("fe80::1%lo", ALLOW), ("2001:db8::1", REFUSE), ("::ffff:127.0.0.1", ALLOW),
    ("::ffff:192.168.0.1", ALLOW), ("::ffff:192.0.2.1", REFUSE), ("::", REFUSE),
])
def test_default_is_dnsdists(host: str, action: int) -> None:
    a = AccessControl()
    assert a.default
    assert a.check(host) == action


def test_default_rules_listed() -> None:
    assert DEFAULT_RULES == (
        "127.0.0.0/8 allow", "10.0.0.0/8 allow", "100.64.0.0/10 allow",
        "169.254.0.0/16 allow", "192.168.0.0/16 allow", "172.16.0.0/12 allow",
        "::1/128 allow", "fc00::/7 allow", "fe80::/10 allow")
    assert [str(r) for r in AccessControl().rules] == list(DEFAULT_RULES)


def test_memo_is_bounded_and_agrees_with_lookup() -> None:
    a = acl("10.0.0.0/8 allow", "10.0.0.0/24 deny", memo_size=8)
    hosts = [f"10.0.{i // 256}.{i % 256}" for i in range(300)]
    for _round in range(2):
        for host in hosts:
            assert a.check(host) == a.lookup(host)
            assert len(a._memo) <= 8
    assert a.check("10.0.0.5") == DENY and a.check("10.0.1.5") == ALLOW


def test_replace_and_adopt_keep_counters_and_forget_verdicts() -> None:
    a = acl("10.0.0.0/8 allow")
    assert a.check("10.0.0.1") == ALLOW
    a.refused["udp"] += 2
    a.adopt(acl("10.0.0.0/8 deny"))
    assert a.check("10.0.0.1") == DENY  # the remembered verdict is gone
    assert not a.default
    a.adopt(AccessControl())
    assert a.default and a.check("10.0.0.1") == ALLOW and a.check("192.0.2.1") == REFUSE
    assert a.statistics() == {"refused": {"udp": 2}, "denied": {}, "norec_refused": {},
                              "rules": 9}


def test_describe() -> None:
    assert AccessControl().describe() == "loopback and private networks allowed, others refused"
    assert acl("192.0.2.0/24 allow", "::/0 allow", "192.0.2.9 deny",
               "198.51.100.0/24 refuse").describe() == (
        "allow 192.0.2.0/24, ::/0; refuse 198.51.100.0/24; deny 192.0.2.9/32; "
        "others refused")
    assert acl("127.0.0.0/8 allow", "127.0.0.2 allow_snoop").describe() == (
        "allow 127.0.0.0/8; allow_snoop 127.0.0.2/32; others refused")


def test_allow_snoop_is_an_action_of_its_own() -> None:
    """``allow_snoop`` answers RD=0 queries from the cache too (Unbound's action);
    ``allow`` answers them from local data only (the listeners and the handler)."""
    assert ACTIONS == {"allow": ALLOW, "refuse": REFUSE, "deny": DENY,
                       "allow_snoop": ALLOW_SNOOP}
    a = acl("127.0.0.0/8 allow", "127.0.0.2 allow_snoop", "::1 allow_snoop")
    assert a.check("127.0.0.1") == ALLOW
    assert a.check("127.0.0.2") == ALLOW_SNOOP
    assert a.check("::ffff:127.0.0.2") == ALLOW_SNOOP
    assert a.check("::1") == ALLOW_SNOOP
    assert a.check("192.0.2.1") == REFUSE


def test_default_gives_loopback_allow_not_allow_snoop() -> None:
    """As Unbound's default for localhost: RD=0 queries get local data only."""
    a = AccessControl()
    assert {a.check(h) for h in ("127.0.0.1", "::1", "10.0.0.1")} == {ALLOW}
