"""The one error hierarchy of abusepipe: every error a stage raises derives from `AbusepipeError`."""

from __future__ import annotations


class AbusepipeError(Exception):
    """Root of every abusepipe error."""


class ConfigError(AbusepipeError):
    """A setting or command-line argument is invalid."""


class Unavailable(AbusepipeError):
    """A service a command needs (the store, the broker, a mailbox) cannot be reached or refused the work
    for now: nothing was acknowledged, and trying again later may succeed (exit 75, SMTP 451)."""


class ReportRejected(AbusepipeError):
    """An input message yields no report: not a report, unreadable, or over a limit.

    The raw bytes are not lost: callers dead-letter them with `reason`.
    """

    def __init__(self, reason: str, *, defects: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.defects = list(defects or [])


class LimitExceeded(ReportRejected):
    """An input is over a named parse limit (size, parts, depth, decoded size)."""

    def __init__(self, limit: str, value: int, maximum: int) -> None:
        super().__init__(f"{limit} is {value}, over the limit of {maximum}")
        self.limit = limit
        self.value = value
        self.maximum = maximum
