"""Lenient `Authentication-Results` (RFC 8601), `Received-SPF` and `DKIM-Signature` parsing.

Microsoft omits the authserv-id (`spf=pass (sender IP is ...) ...`); comments and odd spacing are common.
"""

from __future__ import annotations

import re

from schemas import AuthResult

_METHOD = re.compile(r"(?:^|[;\s])([a-z][a-z0-9_-]*)\s*=\s*([a-z0-9_-]+)", re.IGNORECASE)
_COMMENT = re.compile(r"\([^()]*\)")
_PROPS = re.compile(
    r"(smtp\.mailfrom|smtp\.helo|header\.d|header\.i|header\.from)\s*=\s*([^\s;]+)", re.IGNORECASE
)
_KNOWN = {
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "compauth",
    "iprev",
    "auth",
    "bimi",
    "dkim-atps",
    "domainkeys",
    "sender-id",
}
_DKIM_D = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)
_SPF_RESULT = re.compile(r"^\s*([a-z]+)", re.IGNORECASE)


def parse_authentication_results(value: str, limit: int = 20) -> list[AuthResult]:
    stripped = _COMMENT.sub(" ", value)
    head, sep, rest = stripped.partition(";")
    authserv: str | None = None
    body = stripped
    if sep and "=" not in head:
        authserv = head.strip().split()[0][:255] if head.strip() else None
        body = rest
    out: list[AuthResult] = []
    for chunk in body.split(";"):
        match = _METHOD.search(chunk)
        if not match or match.group(1).lower() not in _KNOWN:
            continue
        method = match.group(1).lower()
        domain = None
        reason = None
        for prop, prop_value in _PROPS.findall(chunk):
            if prop.lower() in ("smtp.mailfrom", "header.d", "header.from") and domain is None:
                domain = prop_value.rsplit("@", 1)[-1].lower().strip('"<>')
        reason_match = re.search(r"reason\s*=\s*\"?([^\";]+)", chunk)
        if reason_match:
            reason = reason_match.group(1).strip()[:100]
        out.append(
            AuthResult(
                method=method,
                result=match.group(2).lower(),
                domain=domain,
                reason=reason,
                authserv_id=authserv,
            )
        )
        if len(out) >= limit:
            break
    return out


def parse_received_spf(value: str) -> AuthResult | None:
    match = _SPF_RESULT.match(value)
    if not match:
        return None
    domain = None
    env = re.search(r"envelope-from=\"?<?([^\s;\">]+)", value, re.IGNORECASE)
    if env:
        domain = env.group(1).rsplit("@", 1)[-1].lower()
    return AuthResult(method="spf", result=match.group(1).lower(), domain=domain, authserv_id="Received-SPF")


def dkim_domain(signature: str) -> str | None:
    match = _DKIM_D.search(signature)
    if not match:
        return None
    return match.group(1).strip().lower().rstrip(".")[:255] or None
