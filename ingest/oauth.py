"""OAuth2 access tokens for the mailbox intakes (IMAP XOAUTH2/OAUTHBEARER, Microsoft Graph).

Two sources, one interface (`TokenSource`):

- `CommandTokens`: any program that prints an access token (what isync's PassCmd and mutt's oauth2
  script do): Google, or anything else. It may print the bare token, or a JSON object with
  `access_token` and `expires_in`. Bounded by a timeout; a failure, a hang or garbage is one line.
- `EntraClientCredentials`: Microsoft Entra ID app-only tokens (client secret or certificate) through
  msal; the authority is never discovered on the internet.

A token is reused until shortly before it expires (its `expires_in`, else its JWT `exp` claim, else an
assumed lifetime) and fetched again after the server refused it. Tokens are `SecretStr` everywhere and
never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from abusepipe.errors import ConfigError, Unavailable

REFRESH_MARGIN = 300.0
"""Seconds before its expiry that a token is fetched again."""
ASSUMED_LIFETIME = 3000.0
"""For a token that says nothing of its expiry (an opaque one printed bare): 50 minutes."""
# RFC 6750 b64token: what an access token may consist of.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class TokenUnavailable(Unavailable):
    """No access token could be had (the command failed, the identity platform refused): retry later."""


class TokenSource(Protocol):
    def token(self, *, refresh: bool = False) -> SecretStr:
        """A valid access token; `refresh` fetches a new one (after the server refused the last)."""
        ...


@dataclass(slots=True)
class _Held:
    value: SecretStr
    expires_at: float


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (read, not verified: only to know when to fetch the next one)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class _Cached:
    """Reuse a token until REFRESH_MARGIN before its expiry."""

    def __init__(self) -> None:
        self._held: _Held | None = None

    def token(self, *, refresh: bool = False) -> SecretStr:
        held = self._held
        if refresh or held is None or time.time() >= held.expires_at - REFRESH_MARGIN:
            held = self._held = self._fetch()
        return held.value

    def _fetch(self) -> _Held:
        raise NotImplementedError


def _held(token: str, expires_in: object, what: str) -> _Held:
    token = token.strip()
    if not token or len(token) > 16384 or not _TOKEN.fullmatch(token):
        raise TokenUnavailable(f"{what} gave no usable access token")
    now = time.time()
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = now + float(expires_in)
    else:
        expires_at = jwt_expiry(token) or now + ASSUMED_LIFETIME
    return _Held(SecretStr(token), expires_at)


class CommandTokens(_Cached):
    """Tokens printed by a command (run by /bin/sh, like isync's PassCmd)."""

    def __init__(self, command: str, *, timeout: float = 30.0) -> None:
        super().__init__()
        if not command.strip():
            raise ConfigError("--oauth2-token-command: empty command")
        self.command = command
        self.timeout = timeout

    def _fetch(self) -> _Held:
        what = "the token command"
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", self.command],
                capture_output=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise TokenUnavailable(f"{what} did not finish within {self.timeout:.0f}s") from exc
        except OSError as exc:
            raise TokenUnavailable(f"{what} could not run: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
            raise TokenUnavailable(f"{what} exited {done.returncode}" + (f": {last}" if last else ""))
        out = done.stdout.decode("utf-8", "replace").strip()
        if out.startswith("{"):
            try:
                data = json.loads(out)
            except ValueError as exc:
                raise TokenUnavailable(f"{what} printed invalid JSON") from exc
            if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
                raise TokenUnavailable(f"{what} printed JSON without an access_token")
            return _held(data["access_token"], data.get("expires_in"), what)
        return _held(out.splitlines()[0] if out else "", None, what)


@dataclass(frozen=True, slots=True)
class EntraSettings:
    tenant: str
    client_id: str
    scope: str
    client_secret: SecretStr | None = None
    certificate: Path | None = None
    """A PEM file holding the private key and its certificate (thumbprint computed from it)."""
    authority_host: str = "https://login.microsoftonline.com"
    ca_file: str | None = None
    """CA certificates for the identity platform (the tests' loopback one); default: the system's."""


class EntraClientCredentials(_Cached):
    """Microsoft Entra ID client credentials (app-only) through msal."""

    def __init__(self, settings: EntraSettings, *, timeout: float = 30.0) -> None:
        super().__init__()
        if (settings.client_secret is None) == (settings.certificate is None):
            raise ConfigError("Entra ID needs a client secret or a certificate (one of them)")
        self.settings = settings
        self.timeout = timeout

    def _credential(self) -> Any:
        s = self.settings
        if s.client_secret is not None:
            return s.client_secret.get_secret_value()
        assert s.certificate is not None
        try:
            pem = s.certificate.read_text()
        except OSError as exc:
            raise ConfigError(f"--oauth2-certificate: {exc.strerror or exc}") from exc
        found = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)
        if found is None or "PRIVATE KEY-----" not in pem:
            raise ConfigError("--oauth2-certificate: the PEM file needs the private key and its certificate")
        # Entra ID names a certificate by its SHA-1 thumbprint.
        thumbprint = hashlib.sha1(ssl.PEM_cert_to_DER_cert(found.group(0))).hexdigest()
        return {"private_key": pem, "thumbprint": thumbprint}

    def _fetch(self) -> _Held:
        import msal  # noqa: PLC0415 - only the Entra path needs msal (and requests)
        import requests  # noqa: PLC0415

        s = self.settings
        session = requests.Session()
        if s.ca_file:
            # Per request: requests lets REQUESTS_CA_BUNDLE override a session's own `verify`.
            session.request = functools.partial(session.request, verify=s.ca_file)  # type: ignore[method-assign]
        what = "Entra ID"
        try:
            app = msal.ConfidentialClientApplication(
                s.client_id,
                authority=f"{s.authority_host.rstrip('/')}/{s.tenant}",
                client_credential=self._credential(),
                http_client=session,
                instance_discovery=False,  # never ask login.microsoftonline.com about the authority
                validate_authority=False,
                timeout=self.timeout,
            )
            result = app.acquire_token_for_client(scopes=[s.scope])
        except (requests.RequestException, ValueError, OSError) as exc:
            raise TokenUnavailable(f"{what}: {' '.join(str(exc).split())[:200]}") from exc
        if not isinstance(result, dict) or "access_token" not in result:
            error = result.get("error") if isinstance(result, dict) else None
            text = result.get("error_description", "") if isinstance(result, dict) else ""
            first = str(text).splitlines()[0][:200] if text else ""
            reason = f"{error or 'no token'} {first}".strip()
            raise TokenUnavailable(f"{what} refused the client credentials: {reason}")
        return _held(str(result["access_token"]), result.get("expires_in"), what)
