"""Onward reporting: tell the network that runs a source about the junk it sent, only when there is
something new (AbuseIO's rule), at most once per contact per interval, never to a contact that opted
out; junk sent through Exchange Online goes to Microsoft as Microsoft asks. Every mail goes through the
outbox in the same transaction that records it as sent (`notifications`, `notified_reports`), so a
crash never sends one twice nor forgets one; `--dry-run` shows the plan and writes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import Connection, func, insert, select

from notify.contacts import ContactFinder
from notify.messages import Evidence, arf, digest, junk_of, microsoft
from sinks import models as m
from sinks import outbox
from sinks.queries import utc
from sinks.stored import decompress

R, RAW, N, NR = m.reports, m.raw_messages, m.notifications, m.notified_reports
MICROSOFT = "microsoft"


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    sender: str
    operator: str
    """Who we are, in the reports' words (the mail domain of the abuse desk)."""
    window: timedelta = timedelta(days=7)
    """Reports older than this are not sent on (a first run on an old store sends the last week)."""
    interval: timedelta = timedelta(hours=24)
    """At most one notification per contact this often."""
    max_arf: int = 5
    """Up to this many new reports go as one ARF mail each; more as a digest."""
    opt_out: frozenset[str] = frozenset()
    """Addresses or domains never notified."""
    microsoft_junk: str = "junk@office365.microsoft.com"
    microsoft_phish: str = "phish@office365.microsoft.com"
    """Empty: junk through Exchange Online is not sent to Microsoft."""


@dataclass
class Planned:
    contact: str
    kind: str
    """arf, digest or microsoft."""
    reports: list[Evidence] = field(default_factory=list)

    def line(self) -> str:
        sources = sorted({e.source_ip for e in self.reports if e.source_ip and not e.via_microsoft})
        shown = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        return f"{self.kind} to {self.contact}: {len(self.reports)} reports" + (
            f" ({shown})" if shown else ""
        )


def _opted_out(policy: NotifyPolicy, contact: str) -> bool:
    contact = contact.lower()
    domain = contact.rpartition("@")[2]
    return contact in policy.opt_out or any(domain == d or domain.endswith("." + d) for d in policy.opt_out)


def _new_reports(connection: Connection, since: datetime) -> list[Evidence]:
    """Junk reports in the window that no notification has carried yet."""
    carried = select(NR.c.report_id).where(NR.c.report_id == R.c.report_id).exists()
    query = (
        select(
            R.c.report_id, R.c.feedback_type, R.c.source_ip, R.c.seen_at, R.c.reporter, R.c.platform,
            R.c.mail_from_domain, R.c.from_domain, R.c.subject, R.c.message_id, R.c.input_sha256,
        )
        .where(R.c.junk.is_(True), R.c.seen_at >= since, ~carried)
        .order_by(R.c.seen_at, R.c.report_id)
        .limit(10_000)
    )  # fmt: skip
    return [
        Evidence(
            report_id=row.report_id,
            feedback_type=row.feedback_type,
            source_ip=row.source_ip,
            seen_at=utc(row.seen_at),
            reporter=row.reporter,
            input_sha256=row.input_sha256,
            from_domain=row.from_domain,
            subject=row.subject,
            message_id=row.message_id,
            via_microsoft=row.platform == "exchange-online",
        )
        for row in connection.execute(query)
    ]


def _with_original(connection: Connection, evidence: Evidence) -> Evidence:
    """The junk itself, read only for the mails that attach it (a digest or a report that waits
    needs none)."""
    data = connection.execute(select(RAW.c.data).where(RAW.c.sha256 == evidence.input_sha256)).scalar_one()
    return replace(evidence, original=junk_of(decompress(data)))


def _last_sent(connection: Connection, contact: str) -> datetime | None:
    moment = connection.execute(select(func.max(N.c.at)).where(N.c.contact == contact)).scalar()
    return utc(moment) if moment is not None else None


@dataclass
class OnwardReporter:
    policy: NotifyPolicy
    contacts: ContactFinder
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def plan(self, connection: Connection) -> tuple[list[Planned], list[str]]:
        """What would be sent now, and why other new reports wait (one line each)."""
        now = self.clock()
        by_contact: dict[str, list[Evidence]] = defaultdict(list)
        waiting: list[str] = []
        no_contact: set[str] = set()
        contact_of: dict[str, str | None] = {}  # a flood's many reports from one address: one look
        for evidence in _new_reports(connection, now - self.policy.window):
            if evidence.via_microsoft:
                fraud = evidence.feedback_type == "fraud"
                address = self.policy.microsoft_phish if fraud else self.policy.microsoft_junk
                if address:
                    by_contact[f"{MICROSOFT}:{address}"].append(evidence)
                continue
            if evidence.source_ip is None:
                continue
            if evidence.source_ip not in contact_of:
                contact_of[evidence.source_ip] = self.contacts.find(connection, evidence.source_ip).contact
            contact = contact_of[evidence.source_ip]
            if contact is None:
                no_contact.add(evidence.source_ip)
                continue
            by_contact[contact].append(evidence)
        plans: list[Planned] = []
        for key, reports in sorted(by_contact.items()):
            if key.startswith(f"{MICROSOFT}:"):
                plans.append(Planned(key.removeprefix(f"{MICROSOFT}:"), MICROSOFT, reports))
                continue
            if _opted_out(self.policy, key):
                waiting.append(f"{key}: opted out ({len(reports)} reports not sent)")
                continue
            last = _last_sent(connection, key)
            if last is not None and now - last < self.policy.interval:
                waiting.append(f"{key}: notified {last:%Y-%m-%d %H:%M} UTC; {len(reports)} new reports wait")
                continue
            kind = "arf" if len(reports) <= self.policy.max_arf else "digest"
            plans.append(Planned(key, kind, reports))
        if no_contact:
            waiting.append(f"{len(no_contact)} source addresses without an abuse contact")
        return plans, waiting

    def send(self, connection: Connection, plans: list[Planned]) -> int:
        """Queue the planned mails in the outbox and record them; returns how many mails."""
        now = self.clock()
        mails = 0
        for planned in plans:
            messages: list[EmailMessage]
            if planned.kind == MICROSOFT:
                messages = [
                    microsoft(
                        _with_original(connection, e),
                        sender=self.policy.sender,
                        recipient=planned.contact,
                        now=now,
                    )
                    for e in planned.reports
                ]
            elif planned.kind == "arf":
                messages = [
                    arf(
                        _with_original(connection, e),
                        sender=self.policy.sender,
                        recipient=planned.contact,
                        operator=self.policy.operator,
                        now=now,
                    )
                    for e in planned.reports
                ]
            else:
                messages = [
                    digest(
                        planned.reports,
                        sender=self.policy.sender,
                        recipient=planned.contact,
                        operator=self.policy.operator,
                        now=now,
                    )
                ]
            ids = [
                outbox.enqueue(connection, message, purpose=f"notify-{planned.kind}", now=now)
                for message in messages
            ]
            notification = connection.execute(
                insert(N)
                .values(
                    contact=planned.contact[:254],
                    kind=planned.kind,
                    reports=len(planned.reports),
                    mails=len(ids),
                    at=now,
                )
                .returning(N.c.id)
            ).scalar_one()
            connection.execute(
                insert(NR),
                [{"report_id": e.report_id, "notification_id": notification} for e in planned.reports],
            )
            mails += len(ids)
        return mails


def history(connection: Connection, *, limit: int = 100) -> list[dict[str, object]]:
    """What was sent to whom (the audit of onward reporting)."""
    rows = connection.execute(select(N).order_by(N.c.id.desc()).limit(limit))
    return [
        {
            "id": r.id,
            "at": utc(r.at).isoformat(),
            "contact": r.contact,
            "kind": r.kind,
            "reports": r.reports,
            "mails": r.mails,
        }
        for r in rows
    ]


__all__ = ["NotifyPolicy", "OnwardReporter", "Planned", "history"]
