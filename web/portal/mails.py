"""The portal's mails, in the requester's language: the confirmation link and an analyst's decision.

Only what the requester typed (their address, their IP) and our own words go in: never a reporter, a
trap or a reported message. Every header value here is either ours or a validated address, so nothing
the requester typed can add a header.
"""

from __future__ import annotations

import textwrap
from datetime import datetime
from email.message import EmailMessage

from blocklist.delist import DelistRequest
from sinks.outbox import new_message
from web.portal.i18n import translations


def _wrap(body: str) -> str:
    """Lines of at most ~76 characters (SMTP allows 998 octets; Cyrillic takes two each), links whole."""
    return "\n".join(
        textwrap.fill(line, width=76, break_long_words=False, break_on_hyphens=False) if line else ""
        for line in body.splitlines()
    )


def _message(sender: str, recipient: str, subject: str, body: str, now: datetime) -> EmailMessage:
    body = _wrap(body)
    message = new_message(sender, recipient, subject, now)
    # 7bit or 8bit, never quoted-printable or base64: the link stays one readable line in any client
    message.set_content(body, charset="utf-8", cte="7bit" if body.isascii() else "8bit")
    return message


def confirmation(
    *, sender: str, request: DelistRequest, link: str, minutes: int, portal: str, now: datetime
) -> EmailMessage:
    _ = translations(request.lang).gettext
    subject = _("Confirm the delisting request for %(ip)s") % {"ip": request.ip}
    body = "\n\n".join(
        [
            _("Someone, probably you, asked to remove the IP address %(ip)s from our blocked-senders list.")
            % {"ip": request.ip},
            _("To continue, open this link within %(minutes)d minutes. It works once.")
            % {"minutes": minutes},
            link,
            _("If you did not ask for this, ignore this mail: nothing changes.") + "\n" + portal,
        ]
    )
    return _message(sender, request.email, subject, body + "\n", now)


def decision(
    *, sender: str, request: DelistRequest, approved: bool, reason: str, portal: str, now: datetime
) -> EmailMessage:
    _ = translations(request.lang).gettext
    values = {"ip": request.ip}
    if approved:
        subject = _("%(ip)s was removed from our blocked-senders list") % values
        first = _("Your request to remove %(ip)s from our blocked-senders list was approved.") % values
        then = _(
            "Our mail servers accept mail from it again within a minute. New junk from it lists it again, "
            "for longer."
        )
    else:
        subject = _("%(ip)s stays on our blocked-senders list") % values
        first = _("Your request to remove %(ip)s from our blocked-senders list was refused.") % values
        then = _("You can ask again once the cause is fixed.")
    body = "\n\n".join([first, _("The reviewer's reason: %(reason)s") % {"reason": reason}, then, portal])
    return _message(sender, request.email, subject, body + "\n", now)
