"""Versioned pydantic models that cross every stage boundary, and their exported JSON Schema."""

from __future__ import annotations

from typing import Any

from schemas.report import (
    FEEDBACK_TYPES,
    FORMATS,
    SCHEMA_VERSION,
    AbuseReport,
    Attachment,
    AuthResult,
    Evidence,
    ExchangeVerdict,
    FeedbackFields,
    Original,
    ReceivedHop,
    Reporter,
    Source,
    Url,
)

__all__ = [
    "FEEDBACK_TYPES",
    "FORMATS",
    "SCHEMA_VERSION",
    "AbuseReport",
    "Attachment",
    "AuthResult",
    "Evidence",
    "ExchangeVerdict",
    "FeedbackFields",
    "Original",
    "ReceivedHop",
    "Reporter",
    "Source",
    "Url",
    "json_schema",
]


def json_schema() -> dict[str, Any]:
    """JSON Schema of `AbuseReport`, for consumers in other languages."""
    schema = AbuseReport.model_json_schema()
    schema["$id"] = f"https://abusepipe.invalid/schemas/abuse-report.v{SCHEMA_VERSION}.json"
    return schema
