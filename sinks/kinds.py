"""The offender kinds: what a report can count against. Cheap to import (the CLI's argument parser lists
them before any command runs)."""

from __future__ import annotations

KINDS = ("ip", "network", "tenant", "from_domain", "mail_from_domain", "dkim_domain", "url_domain", "asn")
"""`asn` (keys like `AS64500`) only when an ASN database is configured (ABUSEPIPE_ASN_DB)."""
