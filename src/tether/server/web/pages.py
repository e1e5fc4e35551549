"""Login (password or one-time link), logout, and device-code approval pages.

The full web client (/code) is its own piece of work; here it is a plain list so that
a login lands somewhere useful.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tether.errors import AuthenticationFailed, RateLimited, TetherError
from tether.server.api.common import SESSION_COOKIE, ctx_of
from tether.server.api.oauth import approve_device, read_limited
from tether.server.auth import secrets as sec
from tether.server.auth.service import Principal
from tether.server.clock import now
from tether.server.context import ServerContext

router = APIRouter()
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><title>{html.escape(title)} · Tether</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}}
input,button{{font:inherit;padding:.5rem;margin:.25rem 0}} .err{{color:#c33}}</style></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    return HTMLResponse(doc, status_code=status, headers={"content-security-policy": CSP,
                                                          "x-frame-options": "DENY"})


async def _form(request: Request) -> dict[str, str]:
    raw = await read_limited(request, 16 * 1024)
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


async def web_principal(request: Request) -> tuple[Principal, str] | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return await ctx_of(request).auth.principal(cookie, kinds=("web_session",)), cookie
    except TetherError:
        return None


async def _start_web_session(ctx: ServerContext, user_id: str, target: str) -> Response:
    async with ctx.store.write() as tx:
        account = await tx.get_user(user_id)
        if account is None:
            raise AuthenticationFailed("No such user.")
        issued = await ctx.auth.issue(tx, "web_session", account, ttl=ctx.config.web_session_ttl_s)
        await tx.insert_audit(account["org_id"], user_id, "web.login", None, None, now())
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, issued.secret, max_age=int(ctx.config.web_session_ttl_s),
                        httponly=True, samesite="lax", secure=ctx.config.url.startswith("https"), path="/")
    return response


def _login_form(error: str = "", next_url: str = "/code") -> str:
    err = f'<p class="err">{html.escape(error)}</p>' if error else ""
    return f"""{err}<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(next_url)}">
<label>Email<br><input name="email" type="email" autocomplete="username" required></label><br>
<label>Password<br><input name="password" type="password" autocomplete="current-password" required></label><br>
<button type="submit">Log in</button></form>
<p>Or open the one-time login link printed by <code>tether server</code> / <code>tether up</code>.</p>"""


def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/") and not value.startswith("//") else "/code"


@router.get("/login")
async def login_page(request: Request) -> Response:
    ctx = ctx_of(request)
    link = request.query_params.get("token")
    next_url = _safe_next(request.query_params.get("next"))
    if link:
        t = now()
        async with ctx.store.write() as tx:
            row = await tx.token_by_hash(sec.hash_secret(link)) if sec.kind_of(link) == "login_link" else None
            if row is None or row["revoked"] or (row["expires_at"] or 0) <= t:
                return page("Log in", _login_form("That login link is invalid, used or expired."), 401)
            await tx.update_token(row["id"], revoked=True, last_used_at=t)
        return await _start_web_session(ctx, row["user_id"], next_url)
    return page("Log in", _login_form(next_url=next_url))


@router.post("/login")
async def login_submit(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await _form(request)
    client = request.client.host if request.client else "?"
    wait = ctx.login_limiter.check(f"login:{client}", now())
    if wait:
        raise RateLimited("Too many login attempts; wait a minute.", retry_after=wait)
    email, password = form.get("email", ""), form.get("password", "")
    async with ctx.store.read() as tx:
        account = await tx.get_user_by_email(email)
    if account is None or not sec.verify_password(password, account["password_hash"]):
        return page("Log in", _login_form("Wrong email or password."), 401)
    return await _start_web_session(ctx, account["id"], _safe_next(form.get("next")))


@router.post("/logout")
async def logout(request: Request) -> Response:
    ctx = ctx_of(request)
    found = await web_principal(request)
    if found:
        async with ctx.store.write() as tx:
            await tx.update_token(found[0].token_id, revoked=True)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _device_form(ctx: ServerContext, cookie: str, code: str, error: str = "") -> str:
    err = f'<p class="err">{html.escape(error)}</p>' if error else ""
    csrf = sec.csrf_token(cookie, ctx.auth.csrf_key)
    return f"""{err}<p>Enter the code shown by <code>tether login</code>.</p>
<form method="post" action="/device"><input type="hidden" name="csrf" value="{csrf}">
<label>Code<br><input name="user_code" value="{html.escape(code)}" autocomplete="off" required></label><br>
<button name="action" value="approve" type="submit">Approve</button>
<button name="action" value="deny" type="submit">Deny</button></form>"""


@router.get("/device")
async def device_page(request: Request) -> Response:
    found = await web_principal(request)
    code = request.query_params.get("user_code", "")
    if found is None:
        target = "/device" + (f"?{urlencode({'user_code': code})}" if code else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
    return page("Connect a device", _device_form(ctx_of(request), found[1], code))


@router.post("/device")
async def device_submit(request: Request) -> Response:
    ctx = ctx_of(request)
    found = await web_principal(request)
    if found is None:
        return RedirectResponse("/login?next=/device", status_code=303)
    principal, cookie = found
    form = await _form(request)
    if form.get("csrf") != sec.csrf_token(cookie, ctx.auth.csrf_key):
        return page("Connect a device", "<p class='err'>The form expired; reload and try again.</p>", 403)
    approve = form.get("action", "approve") == "approve"
    try:
        await approve_device(ctx, principal.user_id, form.get("user_code", ""), approve)
    except TetherError as exc:
        return page("Connect a device", _device_form(ctx, cookie, form.get("user_code", ""), exc.message), 400)
    verdict = "approved: return to your terminal" if approve else "denied"
    return page("Connect a device", f"<p>Device {verdict}.</p>")


@router.get("/code")
async def code_page(request: Request) -> Response:
    ctx = ctx_of(request)
    found = await web_principal(request)
    if found is None:
        return RedirectResponse("/login?next=/code", status_code=303)
    principal = found[0]
    async with ctx.store.read() as tx:
        rows = await tx.list_sessions(principal.org_id, limit=100)
    items = "".join(
        f"<li><code>session_{html.escape(r['id'])}</code> {html.escape(r['title'] or '(untitled)')}"
        f" — {html.escape(r['status'])}</li>" for r in rows
    )
    return page("Sessions", f"<p>Logged in as {html.escape(principal.email)}.</p><ul>{items}</ul>")


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/code", status_code=303)
