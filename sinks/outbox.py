"""Outgoing mail, stored before it is sent: a relay outage delays a mail, never loses it.

A mail is queued in the same transaction as what it tells of (a delisting request, a decision), then a
sender (`sinks.mailer.OutboxSender`) delivers what is due. Each attempt first claims the row for a while
(a lease), so two processes sharing the outbox (the portal, an analyst's CLI) never send one mail twice;
a failed attempt is retried with exponential backoff (1 min, 2, 4, ... capped at 1 hour), for as long as
it takes; a mail the relay refuses for good (5xx) stays in the outbox, marked, until an operator sends
it again (`abusepipe outbox flush`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import Connection, and_, desc, insert, select, update

from sinks import models as m
from sinks.queries import utc

OUT = m.outbox
LEASE = timedelta(minutes=5)
"""How long a sender owns a mail it is delivering (longer than one SMTP transaction may take)."""
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class QueuedMail:
    id: int
    recipient: str
    purpose: str
    message: bytes
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None
    given_up_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> QueuedMail:
        return cls(
            id=row.id,
            recipient=row.recipient,
            purpose=row.purpose,
            message=bytes(row.message),
            attempts=row.attempts,
            created_at=utc(row.created_at),
            next_attempt_at=utc(row.next_attempt_at),
            sent_at=utc(row.sent_at) if row.sent_at is not None else None,
            last_error=row.last_error,
            given_up_at=utc(row.given_up_at) if row.given_up_at is not None else None,
        )

    @property
    def state(self) -> str:
        if self.sent_at is not None:
            return "sent"
        return "refused" if self.given_up_at is not None else "waiting"

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recipient": self.recipient,
            "purpose": self.purpose,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "next_attempt_at": self.next_attempt_at.isoformat() if self.state == "waiting" else None,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "last_error": self.last_error,
        }


def new_message(sender: str, recipient: str, subject: str, now: datetime) -> EmailMessage:
    """The headers every mail abusepipe sends carries; the caller adds the content."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
    return message


def enqueue(connection: Connection, message: EmailMessage, *, purpose: str, now: datetime) -> int:
    recipient = str(message["To"])
    return int(
        connection.execute(
            insert(OUT)
            .values(
                created_at=now,
                recipient=recipient[:254],
                purpose=purpose[:32],
                # CRLF as SMTP sends it: smtplib passes bytes through as they are
                message=message.as_bytes(policy=message.policy.clone(linesep="\r\n")),
                attempts=0,
                next_attempt_at=now,
            )
            .returning(OUT.c.id)
        ).scalar_one()
    )


def claim_due(connection: Connection, now: datetime, *, limit: int = 20) -> list[QueuedMail]:
    """The mails due now, each claimed for LEASE (committed by the caller before it sends)."""
    rows = connection.execute(
        select(OUT)
        .where(and_(OUT.c.sent_at.is_(None), OUT.c.given_up_at.is_(None), OUT.c.next_attempt_at <= now))
        .order_by(OUT.c.next_attempt_at, OUT.c.id)
        .limit(limit)
    ).all()
    claimed = []
    for row in rows:
        taken = connection.execute(
            update(OUT)
            .where(
                and_(
                    OUT.c.id == row.id, OUT.c.sent_at.is_(None), OUT.c.next_attempt_at == row.next_attempt_at
                )
            )
            .values(next_attempt_at=now + LEASE)
        )
        if taken.rowcount == 1:
            claimed.append(QueuedMail.of(row))
    return claimed


def sent(connection: Connection, mail_id: int, now: datetime) -> None:
    connection.execute(
        update(OUT)
        .where(OUT.c.id == mail_id)
        .values(sent_at=now, attempts=OUT.c.attempts + 1, last_error=None)
    )


def failed(
    connection: Connection,
    mail: QueuedMail,
    error: str,
    now: datetime,
    *,
    first_retry: timedelta = FIRST_RETRY,
    permanent: bool = False,
) -> datetime | None:
    """Record a failed attempt; returns when the next one is due (None: the relay refused it for good,
    and it stays in the outbox until `abusepipe outbox flush`)."""
    delay: timedelta = min(MAX_RETRY, first_retry * (2 ** min(mail.attempts, 12)))
    due: datetime = now + delay
    connection.execute(
        update(OUT)
        .where(OUT.c.id == mail.id)
        .values(
            attempts=mail.attempts + 1,
            next_attempt_at=due,
            last_error=" ".join(error.split())[:500],
            given_up_at=now if permanent else None,
        )
    )
    return None if permanent else due


def mails(connection: Connection, *, unsent_only: bool = False, limit: int = 100) -> list[QueuedMail]:
    query = select(OUT)
    if unsent_only:
        query = query.where(OUT.c.sent_at.is_(None))
    return [QueuedMail.of(row) for row in connection.execute(query.order_by(desc(OUT.c.id)).limit(limit))]


def retry_now(connection: Connection, now: datetime) -> int:
    """Make every unsent mail due now, those refused for good too (after the relay was fixed, say)."""
    done = connection.execute(
        update(OUT).where(OUT.c.sent_at.is_(None)).values(next_attempt_at=now, given_up_at=None)
    )
    return int(done.rowcount or 0)
