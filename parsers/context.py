"""What every format parser receives: the input, its parsed top message, and the caller's policy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message

from parsers.headers import Defects, HeaderIndex
from parsers.limits import ParseLimits
from parsers.mime import leaves
from parsers.trust import TrustPolicy


@dataclass(slots=True)
class ParseContext:
    raw: bytes
    msg: Message
    headers: HeaderIndex
    limits: ParseLimits
    trust: TrustPolicy
    received_at: datetime | None
    trap: bool
    defects: Defects = field(default_factory=Defects)
    input_sha256: str = ""
    report_date: datetime | None = None

    def __post_init__(self) -> None:
        if not self.input_sha256:
            self.input_sha256 = hashlib.sha256(self.raw).hexdigest()

    _parts: list[Message] | None = None
    attached: list[Message] | None = None
    """The messages attached to `msg`, once computed (`parsers.attached`): several detectors ask."""

    def parts(self) -> list[Message]:
        """The leaf parts of the input, walked once and shared by every detector."""
        if self._parts is None:
            self._parts = list(leaves(self.msg, self.limits, self.defects))
        return self._parts

    def report_id(self, index: int) -> str:
        """Deterministic: the same input bytes give the same id; several reports get distinct ids."""
        if index == 0:
            return self.input_sha256[:32]
        return hashlib.sha256(f"{self.input_sha256}:{index}".encode()).hexdigest()[:32]
