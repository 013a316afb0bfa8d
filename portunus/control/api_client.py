"""A small blocking client for the operator HTTP API (CLIs, tests, benchmarks)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from portunus.runtime import parse_host_port

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        """The {"code", "message"} of an error response ({} otherwise)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"]
        return {}

    def describe_error(self) -> str:
        e = self.error
        return f"HTTP {self.status} {e.get('code', '?')}: {e.get('message', self.body)}"


class OperatorClient:
    """Calls http://HOST:PORT/v1/... with a bearer token; never raises on HTTP errors."""

    def __init__(self, endpoint: str, token: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        host, port = parse_host_port(endpoint, "--http-endpoint")
        self.base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> ApiResponse:
        tok = self.token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return ApiResponse(resp.status, _json(resp.read()))
        except urllib.error.HTTPError as e:
            return ApiResponse(e.code, _json(e.read()))

    def get(self, path: str) -> ApiResponse:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> ApiResponse:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> ApiResponse:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> ApiResponse:
        return self.request("DELETE", path)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")
