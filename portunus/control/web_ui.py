"""The operator web UI: static pages served by the operator HTTP listener, same origin as the API.

    GET /                   302 to /ui/
    GET /ui/, /ui/{asset}   the pages (plain HTML, JS and CSS shipped in ui_assets/; no build step)
    GET /v1/auth/session    {"authenticated": false} or {"authenticated": true, "user", "csrf_token"}

The assets are public (they hold no data); everything they show comes from
the API with the session cookie, and every change carries the CSRF token.
The session probe answers 200 either way so an anonymous page load is not an
error. Pages get a strict Content-Security-Policy: only this origin's
scripts and styles, no inline code, no framing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from portunus.control import csrf
from portunus.control.tenants_api import SESSION_COOKIE
from portunus.control.tenants_api import _sha256 as session_hash
from portunus.control.tenants_db import render_user

SESSION_PATH = "/v1/auth/session"
UI_PREFIX = "/ui/"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_asset_path(path: str) -> bool:
    """Paths served without authentication: the root redirect and the static pages."""
    return path == "/" or path.startswith(UI_PREFIX)


def load_assets() -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes, content type)} of the shipped assets, read once at start."""
    out = {}
    for entry in resources.files("portunus.control").joinpath("ui_assets").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            out[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return out


def add_routes(r: web.UrlDispatcher, api: Any) -> None:
    """Register the UI on the operator API's router (`api`: the OperatorApi, for sessions)."""
    assets = load_assets()

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(UI_PREFIX)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        found = assets.get(name)
        if found is None:
            return web.Response(status=404, text=f"no UI asset {name!r}\n", headers=_HEADERS)
        body, ctype = found
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=_HEADERS)

    async def session(request: web.Request) -> web.Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        user = api.tenants.session_user(session_hash(cookie)) if cookie else None
        if user is None or cookie is None:
            return web.json_response({"authenticated": False})
        return web.json_response({"authenticated": True, "user": render_user(user, api._iso),
                                  "csrf_token": csrf.token_for(cookie)})

    r.add_get("/", root)
    r.add_get(UI_PREFIX, asset)
    r.add_get(UI_PREFIX + "{name}", asset)
    r.add_get(SESSION_PATH, session)
