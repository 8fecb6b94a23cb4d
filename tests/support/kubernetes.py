"""Loopback stand-in for the Kubernetes TokenReview API: the one piece of a cluster Vault's Kubernetes auth calls.

Tokens are unsigned-looking service-account JWTs (Vault defers their validation
to TokenReview); the stand-in authenticates exactly the tokens it issued and has
not revoked, and records every token it was asked about.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.ports import free_port

__all__ = ["TokenReviewApi", "service_account_jwt"]

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def service_account_jwt(namespace: str, service_account: str, audience: str | None = None) -> str:
    """A projected service-account token's shape: header, claims (both claim styles), a random signature."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims: dict[str, Any] = {
        "iss": "https://kubernetes.default.svc",
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "kubernetes.io": {"namespace": namespace,
                          "serviceaccount": {"name": service_account, "uid": f"uid-{service_account}"}},
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": service_account,
        "kubernetes.io/serviceaccount/service-account.uid": f"uid-{service_account}",
        "jti": uuid.uuid4().hex,
    }
    if audience is not None:
        claims["aud"] = [audience]
    header = {"alg": "RS256", "typ": "JWT", "kid": "test"}
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(uuid.uuid4().bytes * 16)])


class TokenReviewApi:
    """`POST /apis/authentication.k8s.io/v1/tokenreviews` on 127.0.0.1; a context manager."""

    def __init__(self) -> None:
        self.issued: dict[str, tuple[str, str]] = {}  # token -> (namespace, service account)
        self.reviewed: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                token = body["spec"]["token"]
                outer.reviewed.append(token)
                who = outer.issued.get(token) if self.path == TOKEN_REVIEWS else None
                status: dict[str, Any] = {"authenticated": who is not None}
                if who is not None:
                    status["user"] = {"username": f"system:serviceaccount:{who[0]}:{who[1]}",
                                      "uid": f"uid-{who[1]}", "groups": []}
                    status["audiences"] = body["spec"].get("audiences") or []
                data = json.dumps({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                   "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def issue(self, namespace: str, service_account: str, audience: str | None = None) -> str:
        """A new token the API will authenticate as that service account."""
        token = service_account_jwt(namespace, service_account, audience)
        self.issued[token] = (namespace, service_account)
        return token

    def revoke_all(self) -> None:
        """No token issued so far authenticates any more (rotation, or a cluster that rejects them)."""
        self.issued.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TokenReviewApi:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
