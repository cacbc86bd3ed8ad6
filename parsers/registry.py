"""The ordered registry of format parsers: the first whose `detect` matches parses the message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from parsers import arf, dmarc_text, forward, iodef, jmrp, ms_submission, spamcop, unsubscribe, xarf
from parsers.context import ParseContext
from schemas import AbuseReport


@dataclass(frozen=True, slots=True)
class FormatParser:
    detect: Callable[[ParseContext], bool]
    parse: Callable[[ParseContext], list[AbuseReport]]


# Order matters: specific structures before generic ones (an ARF report also has an attached message).
FORMAT_PARSERS: dict[str, FormatParser] = {
    "xarf": FormatParser(xarf.detect, xarf.parse),
    "arf": FormatParser(arf.detect, arf.parse),
    "iodef": FormatParser(iodef.detect, iodef.parse),
    "dmarc-text": FormatParser(dmarc_text.detect, dmarc_text.parse),
    "jmrp": FormatParser(jmrp.detect, jmrp.parse),
    "spamcop": FormatParser(spamcop.detect, spamcop.parse),
    "ms-submission": FormatParser(ms_submission.detect, ms_submission.parse),
    "unsubscribe": FormatParser(unsubscribe.detect, unsubscribe.parse),
    "forward-attachment": FormatParser(forward.detect_attachment, forward.parse_attachment),
    "forward-inline": FormatParser(forward.detect_inline, forward.parse_inline),
}
