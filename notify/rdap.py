"""The abuse contact of an address from RDAP (RFC 9083): the `abuse` role among the IP network's
entities (nested ones too), its vCard `email`.

Written here rather than with a client library: the one needed query is a GET of `{base}ip/{address}`
whose redirects lead to the registry that holds the address (rdap.org does that bootstrapping), and the
answer is read defensively — it comes from the network, bounded in size and depth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

MAX_BYTES = 1 << 20
MAX_DEPTH = 6
TIMEOUT = 10.0


class RdapError(Exception):
    """The registry could not be asked or did not answer usably (the reason is one line)."""


@dataclass(frozen=True, slots=True)
class RdapAnswer:
    contact: str | None
    network: str | None
    """The registry's range for the address (`startAddress - endAddress` or a CIDR), as it says it."""
    url: str


def _emails(vcard: Any) -> list[str]:
    if not (isinstance(vcard, list) and len(vcard) == 2 and isinstance(vcard[1], list)):
        return []
    found = []
    for item in vcard[1][:100]:
        if isinstance(item, list) and len(item) >= 4 and item[0] == "email" and isinstance(item[3], str):
            found.append(item[3].strip())
    return found


def abuse_email(document: dict[str, Any]) -> str | None:
    """The first abuse-role entity's e-mail, breadth first (the network's own entities before theirs)."""
    level: list[Any] = list(document.get("entities") or [])
    for _ in range(MAX_DEPTH):
        following: list[Any] = []
        for entity in level[:100]:
            if not isinstance(entity, dict):
                continue
            roles = entity.get("roles") or []
            if isinstance(roles, list) and "abuse" in roles:
                for email in _emails(entity.get("vcardArray")):
                    if "@" in email and len(email) <= 254 and not any(c in email for c in "\r\n <>,;"):
                        return email.lower()
            following += list(entity.get("entities") or [])
        level = following
        if not level:
            break
    return None


def _network(document: dict[str, Any]) -> str | None:
    start, end = document.get("startAddress"), document.get("endAddress")
    if isinstance(start, str) and isinstance(end, str):
        return f"{start} - {end}"[:100]
    handle = document.get("handle")
    return handle[:100] if isinstance(handle, str) else None


def lookup(base_url: str, ip: str, *, client: httpx.Client | None = None) -> RdapAnswer:
    url = f"{base_url.rstrip('/')}/ip/{ip}"
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT, follow_redirects=True, max_redirects=5)
    try:
        with http.stream("GET", url, headers={"Accept": "application/rdap+json"}) as response:
            if response.status_code == 404:
                return RdapAnswer(None, None, url)
            if response.status_code != 200:
                raise RdapError(f"RDAP {url}: HTTP {response.status_code}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise RdapError(f"RDAP {url}: answer over {MAX_BYTES} bytes")
            final = str(response.url)
    except httpx.HTTPError as exc:
        raise RdapError(f"RDAP {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            http.close()
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RdapError(f"RDAP {final}: not JSON") from exc
    if not isinstance(document, dict):
        raise RdapError(f"RDAP {final}: not an RDAP object")
    return RdapAnswer(abuse_email(document), _network(document), final)
