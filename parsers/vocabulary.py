"""Mapping reporters' own words for a complaint onto abusepipe's feedback types."""

from __future__ import annotations


def feedback_type_for(category: str, report_type: str) -> str:
    text = f"{category} {report_type}".lower()
    if any(word in text for word in ("phish", "fraud")):
        return "fraud"
    if any(word in text for word in ("malware", "virus", "trojan", "botnet")):
        return "virus"
    if any(word in text for word in ("spam", "abuse", "attack", "harvest", "regbot", "login")):
        return "abuse"
    return "other"
