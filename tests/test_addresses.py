"""Address headers as senders write them: one mailbox, or a list whose first mailbox is the one meant."""

from __future__ import annotations

import pytest

from parsers import parse_message
from parsers.forwarding import addressed_domains
from parsers.headers import HeaderIndex, parse_address, split_address_list
from tests.mail import JUNK_HEADERS, arf, junk


@pytest.mark.parametrize(
    ("value", "address", "name"),
    [
        (
            "Bob Marley <bob@example.net>, Jimmy Hendrix <jimmy@examplehq.com>",
            "bob@example.net",
            "Bob Marley",
        ),
        ("first@one.example, second@two.example", "first@one.example", None),
        ("<a@one.example>, <b@two.example>", "a@one.example", None),
        ('"x" <a@one.example>, (c) d@two.example', "a@one.example", "x"),
        ('"Doe, John" <john@one.example>', "john@one.example", "Doe, John"),  # a comma in a quoted name
        ("Doe (work, home) <doe@one.example>", "doe@one.example", "Doe"),  # ... and in a comment
        ('Ann ("x, y) <a@one.example>, b@two.example', "a@one.example", "Ann"),  # a comment holds no quotes
        ("a@one.example,", "a@one.example", None),
    ],
)
def test_the_first_mailbox_of_a_list(value: str, address: str, name: str | None) -> None:
    parsed = parse_address(value)
    assert parsed is not None
    assert (parsed.address, parsed.name) == (address, name)


def test_a_reported_message_from_a_list_is_from_its_first_mailbox() -> None:
    headers = [
        (n, "Shop <news@first.example>, Other <x@second.example>" if n == "From" else v)
        for n, v in JUNK_HEADERS
    ]
    (report,) = parse_message(arf("abuse", junk(headers=headers)))
    assert report.original.from_domain == "first.example"


@pytest.mark.parametrize(
    ("value", "members"),
    [
        ("a@one.example, b@two.example", ["a@one.example", " b@two.example"]),
        ('"Doe, John" <j@one.example>, b@two.example', ['"Doe, John" <j@one.example>', " b@two.example"]),
        ("(x, y) a@one.example", ["(x, y) a@one.example"]),
        ("a@one.example", ["a@one.example"]),
        ("a, b, c, d", ["a", " b", " c"]),  # at most the limit
    ],
)
def test_an_address_list_splits_between_its_members(value: str, members: list[str]) -> None:
    assert split_address_list(value, 3) == members


def test_a_domain_in_a_quoted_sender_name_is_not_one_the_message_claims() -> None:
    # The forwarding rule never trusts a relay of a domain the message claims to come from. Read at every
    # comma, the display name below claimed recipient-isp.net, and so kept the recipient's own forwarder
    # from being recognised.
    headers = HeaderIndex(
        [
            ("To", "user@recipient-isp.net"),
            ("From", '"user@recipient-isp.net, support" <news@sender-shop.com>'),
        ]
    )
    assert addressed_domains(headers) == frozenset({"recipient-isp.net"})
