"""An analyst's decision on a queued delisting request, and the mail that tells the requester: one
transaction, so that a decision is never made without its mail queued (the CLI and the console both)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from blocklist.delist import DelistRequest, decide
from blocklist.listings import Change
from blocklist.policy import ListingPolicy
from sinks import outbox
from web.portal import mails


@dataclass(frozen=True, slots=True)
class Decided:
    request: DelistRequest
    changes: list[Change]
    mail_id: int


def decide_and_tell(
    connection: Connection,
    policy: ListingPolicy,
    request_id: int,
    *,
    approve: bool,
    reason: str,
    actor: str,
    now: datetime,
    mail_from: str,
    portal_url: str,
) -> Decided:
    decided, changes = decide(
        connection, policy, request_id, approve=approve, reason=reason, actor=actor, now=now
    )
    message = mails.decision(
        sender=mail_from,
        request=decided,
        approved=approve,
        reason=decided.decision or reason,
        portal=portal_url,
        now=now,
    )
    mail_id = outbox.enqueue(connection, message, purpose="delist-decision", now=now)
    return Decided(decided, changes, mail_id)
