"""Received-line shapes and the trusted-hop rules."""

from __future__ import annotations

import ipaddress

import pytest

from parsers.received import parse_ip, parse_received
from parsers.trust import TrustPolicy, is_microsoft_internal_hop, is_microsoft_outbound


@pytest.mark.parametrize(
    ("line", "ip", "by", "protocol"),
    [
        # Postfix
        (
            "from helo.example (rdns.example [203.0.113.7]) by mx.example (Postfix) with ESMTPS id X; Mon",
            "203.0.113.7",
            "mx.example",
            "ESMTPS",
        ),
        # Exim: the connecting address first, HELO in the comment
        (
            "from [198.51.100.9] (helo=[10.1.1.1]) by mx.example with esmtp (Exim 4.92) id 1",
            "198.51.100.9",
            "mx.example",
            "esmtp",
        ),
        (
            "from mail-wr1.google.com ([209.85.221.41]:33333) by mx.example with esmtps (Exim 4.96)",
            "209.85.221.41",
            "mx.example",
            "esmtps",
        ),
        # Sendmail
        (
            "from relay.example (relay.example [192.0.2.44]) by host.example (8.15.2/8.15.2) with ESMTP id abc",
            "192.0.2.44",
            "host.example",
            "ESMTP",
        ),
        # qmail
        (
            "from unknown (HELO ourmailserver.com) (10.1.0.252) by ourmailserver.com with SMTP; 30 Dec 2010",
            "10.1.0.252",
            "ourmailserver.com",
            "SMTP",
        ),
        # Exchange
        (
            "from AS8PR04CU009.outbound.protection.outlook.com (52.102.161.21) by CO1PEPF000044F0.mail.protection"
            ".outlook.com (10.167.241.70) with Microsoft SMTP Server id 15.20 via Frontend Transport; Mon",
            "52.102.161.21",
            "CO1PEPF000044F0.mail.protection.outlook.com",
            "Microsoft",
        ),
        (
            "from AM7.eurprd07.prod.outlook.com ([fe80::a4d2:6677:a960:4855]) by AM8.eurprd07.prod.outlook.com "
            "([fe80::a4d2:6677:a960:4855%6]) with mapi id 15.20.9434.009; Mon",
            "fe80::a4d2:6677:a960:4855",
            "AM8.eurprd07.prod.outlook.com",
            "mapi",
        ),
        # IPv6 literal forms
        (
            "from client.example (client.example [IPv6:2001:db8::5]) by mx with ESMTPSA id x",
            "2001:db8::5",
            "mx",
            "ESMTPSA",
        ),
        (
            "from [IPv6:::ffff:203.0.113.68] (unknown [203.0.113.68]) by example.com (Postfix) with ESMTP id 9",
            "203.0.113.68",
            "example.com",
            "ESMTP",
        ),
        ("from host.example (::1) by other.example with HTTPS; Mon", "::1", "other.example", "HTTPS"),
        # no connecting IP
        ("(qmail 16743 invoked from network); 30 Dec 2010 18:37:33 -0000", None, None, None),
        ("by mx.example (Postfix, from userid 0) id 4; Mon", None, "mx.example", None),
    ],
)
def test_received_shapes(line: str, ip: str | None, by: str | None, protocol: str | None) -> None:
    hop = parse_received(line)
    assert (str(hop.from_ip) if hop.from_ip else None) == ip
    assert hop.by_host == by
    assert hop.protocol == protocol


def test_parse_ip_forms() -> None:
    assert parse_ip("[IPv6:2001:db8::1]") == ipaddress.ip_address("2001:db8::1")
    assert parse_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_ip("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert parse_ip("not-an-ip") is None
    assert parse_ip("") is None


def test_trust_rules() -> None:
    policy = TrustPolicy.from_cidrs(["5.6.7.0/24"])
    assert (
        policy.trust_reason(parse_received("from a (a [10.0.0.1]) by b with ESMTP")) == "non-global address"
    )
    assert (
        policy.trust_reason(parse_received("from a (a [5.6.7.8]) by b with ESMTP"))
        == "operator-trusted network"
    )
    assert "authenticated" in (
        policy.trust_reason(parse_received("from a (a [8.8.8.8]) by b with ESMTPSA")) or ""
    )
    assert policy.trust_reason(parse_received("from a (a [8.8.8.8]) by b with ESMTP")) is None
    with pytest.raises(ValueError, match="not a network"):
        TrustPolicy.from_cidrs(["300.1.1.0/24"])


def test_microsoft_ranges_and_internal_hops() -> None:
    assert is_microsoft_outbound(ipaddress.ip_address("40.107.22.1"))
    assert is_microsoft_outbound(ipaddress.ip_address("2a01:111:f403:c200::1"))
    assert not is_microsoft_outbound(ipaddress.ip_address("8.8.8.8"))
    internal = parse_received(
        "from X.namprd13.prod.outlook.com (2603:10b6:a03:180::41) by Y.namprd10.prod.outlook.com "
        "(2603:10b6:303:94::20) with Microsoft SMTP Server id 15.20; Mon"
    )
    assert is_microsoft_internal_hop(internal)
    boundary = parse_received(
        "from out.outbound.protection.outlook.com (40.107.1.2) by Z.mail.protection.outlook.com "
        "(10.167.241.70) with Microsoft SMTP Server id 15.20 via Frontend Transport; Mon"
    )
    assert not is_microsoft_internal_hop(boundary)
