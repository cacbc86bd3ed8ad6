"""Loopback stand-ins for what cannot be reached from here: Microsoft Graph's mail API and Entra ID's
token endpoint. They answer the few calls abusepipe makes, with bodies shaped as Microsoft's
documentation shows them (Graph: message `id` lists with `@odata.nextLink` paging, `/$value` MIME,
`/move` giving the message a new id, `mailFolders` lookups; Entra: OpenID configuration, client
credentials grant). Not Microsoft: their real behaviour beyond this is not tested here."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class GraphState:
    token: str
    mailbox: str = "abuse@contoso.example"
    folders: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """Folder id -> {message id: MIME}; `inbox` is there from the start."""
    names: dict[str, str] = field(default_factory=dict)
    """Display name -> folder id, for the folders created by name."""
    throttle: dict[str, int] = field(default_factory=dict)
    """Path kind (`list`, `value`, `move`) -> how many more requests to answer 429 (Retry-After: 1)."""
    fail_moves: int = 0
    """How many more moves to answer 500 (a crash between the durable write and the move)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.folders.setdefault("inbox", {})

    def deliver(self, raw: bytes) -> str:
        message_id = "AAMk" + uuid.uuid4().hex
        with self.lock:
            self.folders["inbox"][message_id] = raw
        return message_id

    def folder(self, name: str) -> dict[str, bytes]:
        return self.folders.get(self.names.get(name, name), {})


class _GraphHandler(BaseHTTPRequestHandler):
    state: GraphState
    page_size_seen: list[int]

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def _send(
        self,
        status: int,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "message/rfc822" if raw is not None else "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.state.token}":
            self._send(
                401, {"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}}
            )
            return False
        return True

    def _throttled(self, kind: str) -> bool:
        with self.state.lock:
            left = self.state.throttle.get(kind, 0)
            if left:
                self.state.throttle[kind] = left - 1
        if left:
            self._send(
                429,
                {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
                headers={"Retry-After": "1"},
            )
        return bool(left)

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        return parts, parse_qs(url.query)

    def do_GET(self) -> None:
        parts, query = self._route()
        self.state.requests.append(("GET", self.path))
        if not self._authorized():
            return
        # /v1.0/users/{mailbox}/mailFolders?$filter=displayName eq 'X'
        if parts[-1] == "mailFolders":
            wanted = (
                query.get("$filter", [""])[0].split("'")[1].replace("''", "'")
                if "'" in query.get("$filter", [""])[0]
                else ""
            )
            found = self.state.names.get(wanted)
            value = (
                [{"id": found, "displayName": wanted, "totalItemCount": len(self.state.folders[found])}]
                if found
                else []
            )
            self._send(
                200,
                {
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/mailFolders",
                    "value": value,
                },
            )
            return
        # /v1.0/users/{mailbox}/mailFolders/{folder}/messages?$select=id&$top=N[&$skip=M]
        if parts[-1] == "messages" and len(parts) >= 2 and parts[-3] == "mailFolders":
            if self._throttled("list"):
                return
            folder = self.state.folders.get(parts[-2])
            if folder is None:
                self._send(
                    404,
                    {
                        "error": {
                            "code": "ErrorItemNotFound",
                            "message": "The specified object was not found in the store.",
                        }
                    },
                )
                return
            top = int(query.get("$top", ["10"])[0])
            skip = int(query.get("$skip", ["0"])[0])
            with self.state.lock:
                ids = list(folder)
            page = [{"@odata.etag": 'W/"x"', "id": message_id} for message_id in ids[skip : skip + top]]
            body: dict[str, Any] = {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/mailFolders('inbox')/messages(id)",
                "value": page,
            }
            if skip + top < len(ids):
                host = self.headers.get("Host")
                body["@odata.nextLink"] = (
                    f"http://{host}/v1.0/users/{parts[2]}/mailFolders/{parts[-2]}/messages?%24select=id&%24top={top}&%24skip={skip + top}"
                )
            self._send(200, body)
            return
        # /v1.0/users/{mailbox}/messages/{id}/$value
        if parts[-1] == "$value":
            if self._throttled("value"):
                return
            message_id = parts[-2]
            for folder in self.state.folders.values():
                if message_id in folder:
                    self._send(200, raw=folder[message_id])
                    return
            self._send(
                404,
                {
                    "error": {
                        "code": "ErrorItemNotFound",
                        "message": "The specified object was not found in the store.",
                    }
                },
            )
            return
        self._send(400, {"error": {"code": "BadRequest", "message": "unsupported by the stand-in"}})

    def do_POST(self) -> None:
        parts, _ = self._route()
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        self.state.requests.append(("POST", self.path))
        if not self._authorized():
            return
        if parts[-1] == "mailFolders":
            name = payload["displayName"]
            folder_id = "AQMk" + uuid.uuid4().hex
            with self.state.lock:
                self.state.names[name] = folder_id
                self.state.folders[folder_id] = {}
            self._send(201, {"id": folder_id, "displayName": name, "childFolderCount": 0})
            return
        if parts[-1] == "move":
            if self._throttled("move"):
                return
            with self.state.lock:
                failing = self.state.fail_moves > 0
                if failing:
                    self.state.fail_moves -= 1
            if failing:
                self._send(
                    500, {"error": {"code": "ErrorInternalServerError", "message": "stand-in failure"}}
                )
                return
            message_id, destination = parts[-2], payload["destinationId"]
            with self.state.lock:
                for folder in self.state.folders.values():
                    if message_id in folder:
                        raw = folder.pop(message_id)
                        new_id = "AAMk" + uuid.uuid4().hex  # a moved message gets a new id
                        self.state.folders.setdefault(destination, {})[new_id] = raw
                        self._send(201, {"id": new_id, "parentFolderId": destination})
                        return
            self._send(
                404,
                {
                    "error": {
                        "code": "ErrorItemNotFound",
                        "message": "The specified object was not found in the store.",
                    }
                },
            )
            return
        self._send(400, {"error": {"code": "BadRequest", "message": "unsupported by the stand-in"}})


def serve_graph(state: GraphState) -> ThreadingHTTPServer:
    handler = type("Handler", (_GraphHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class EntraState:
    tenant: str
    client_id: str
    client_secret: str
    issue: Any
    """Called with the requested scope: the access token to hand out."""
    grants: list[dict[str, list[str]]] = field(default_factory=list)


class _EntraHandler(BaseHTTPRequestHandler):
    state: EntraState

    def log_message(self, *_: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        base = f"https://{self.headers.get('Host')}/{self.state.tenant}"
        if self.path.startswith(f"/{self.state.tenant}/v2.0/.well-known/openid-configuration"):
            self._json(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
            )
            return
        self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        self.state.grants.append(form)
        if not self.path.startswith(f"/{self.state.tenant}/oauth2/v2.0/token"):
            self._json(404, {"error": "not_found"})
            return
        if form.get("client_id") != [self.state.client_id] or form.get("client_secret") != [
            self.state.client_secret
        ]:
            self._json(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x",
                },
            )
            return
        scope = form.get("scope", [""])[0]
        self._json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self.state.issue(scope),
            },
        )


def serve_entra(state: EntraState, certificate: Any) -> ThreadingHTTPServer:
    """An HTTPS token endpoint with a trustme server certificate (`certificate`: trustme's LeafCert)."""
    import ssl

    handler = type("Handler", (_EntraHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
