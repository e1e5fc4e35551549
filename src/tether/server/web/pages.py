"""The web client's pages: login (password or one-time link), logout, device approval,
settings, the session list (/code) and one session (/code/{id}).

Pages are small server-rendered shells; the live parts are plain ES modules under
``static/`` (no build step) that talk to the JSON APIs and the subscribe socket. Every
value put into a page is escaped here; the scripts only ever insert text, or HTML that
the server rendered and sanitised (see :mod:`tether.server.web.render`).
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tether.errors import NotFound, RateLimited, TetherError
from tether.protocol.redirects import next_or_default
from tether.server.api.common import SESSION_COOKIE, ctx_of, parse_session_id, read_limited
from tether.server.auth import secrets as sec
from tether.server.auth.service import IssuedToken, Principal
from tether.server.clock import now
from tether.server.context import ServerContext
from tether.server.web.assets import asset_url

router = APIRouter(include_in_schema=False)  # HTML pages, not API: left out of /openapi.json
LOGIN_COOKIE = "tether_login"  # binds the login form's CSRF token to this browser
LOGIN_COOKIE_TTL_S = 3600

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}
e = html.escape


def page(title: str, body: str, status: int = 200, *, script: str | None = None, csrf: str = "",
         principal: Principal | None = None, data: dict[str, str] | None = None, narrow: bool = True,
         active: str = "", socket_origin: str | None = None) -> HTMLResponse:
    """One HTML document: head (CSP-friendly: no inline script or style), top bar, main.

    ``socket_origin`` (ws://host or wss://host) is allowed in connect-src next to 'self', for
    browsers whose 'self' does not cover WebSocket URLs yet."""
    attrs = "".join(f' data-{k}="{e(v)}"' for k, v in (data or {}).items())
    scripts = f'<script type="module" src="{asset_url(script)}"></script>' if script else ""
    nav = _nav(principal, csrf, active) if principal else ""
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="light dark">
<meta name="csrf-token" content="{e(csrf)}">
<title>{e(title)} · Tether</title>
<link rel="icon" href="{asset_url('icon.svg')}" type="image/svg+xml">
<link rel="stylesheet" href="{asset_url('app.css')}">
<link rel="stylesheet" href="{asset_url('pygments.css')}">
{scripts}
</head><body{attrs}>
<a class="skip" href="#main">Skip to content</a>
<header class="topbar"><a class="brand" href="/code" aria-label="Tether home"><span class="logo" aria-hidden="true"></span>Tether</a>{nav}</header>
<main id="main" class="{'narrow' if narrow else 'wide'}">{body}</main>
<div id="toasts" class="toasts" role="status" aria-live="polite"></div>
</body></html>"""
    headers = dict(SECURITY_HEADERS)
    if socket_origin:
        headers["content-security-policy"] = CSP.replace("connect-src 'self'", f"connect-src 'self' {socket_origin}")
    return HTMLResponse(doc, status_code=status, headers=headers)


_NETLOC = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def socket_origin(request: Request) -> str | None:
    """The WebSocket origin of the page's own server, as the browser addressed it."""
    netloc = request.url.netloc
    if not _NETLOC.fullmatch(netloc):
        return None
    return f"{'wss' if request.url.scheme == 'https' else 'ws'}://{netloc}"


def _nav(principal: Principal, csrf: str, active: str) -> str:
    def link(href: str, label: str, key: str) -> str:
        current = ' aria-current="page"' if key == active else ""
        return f'<a href="{href}"{current}>{label}</a>'

    return (f'<nav class="topnav" aria-label="Main">{link("/code", "Sessions", "code")}'
            f'{link("/settings", "Settings", "settings")}'
            f'<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="{e(csrf)}">'
            f'<button type="submit" class="link" title="Log out {e(principal.email)}">Log out</button></form></nav>')


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


def csrf_for(ctx: ServerContext, cookie: str) -> str:
    return sec.csrf_token(cookie, ctx.auth.csrf_key)


def _web_session_started(ctx: ServerContext, issued: IssuedToken, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, issued.secret, max_age=int(ctx.config.web_session_ttl_s),
                        httponly=True, samesite="lax", secure=ctx.config.url.startswith("https"), path="/")
    return response


def _login_form(csrf: str, error: str = "", next_url: str = "/code", *, error_html: str = "") -> str:
    """``error`` is text; ``error_html`` a fixed snippet of this module (never user input)."""
    notice = error_html or e(error)
    err = f'<p class="notice error" role="alert">{notice}</p>' if notice else ""
    return f"""<section class="card auth">
<h1>Log in</h1>{err}
<form method="post" action="/login" class="stack">
<input type="hidden" name="csrf" value="{e(csrf)}">
<input type="hidden" name="next" value="{e(next_url)}">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" class="primary">Log in</button></form>
<p class="muted">{_LINK_HELP}</p></section>"""


_LINK_HELP = ("No password? Use a one-time login link: run <code>tether admin login-link</code> on the server's "
              "machine, or press space in a running <code>tether rc</code> or <code>tether up</code> and scan its "
              "QR code with your phone.")
_LINK_REFUSED = ("That login link is invalid, used or expired: each link works once. For a new one, run "
                 "<code>tether admin login-link</code> on the server's machine, or press space in a running "
                 "<code>tether rc</code> or <code>tether up</code> for a fresh QR code.")


def _login_page(ctx: ServerContext, request: Request, status: int = 200, *, error: str = "",
                error_html: str = "", next_url: str = "/code") -> Response:
    """The login form. Its CSRF token is bound to a pre-login cookie (double submit), so a
    cross-site form cannot log a browser into someone else's account (login CSRF)."""
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    fresh = not cookie.startswith("tlc_")
    if fresh:
        cookie = "tlc_" + secrets.token_urlsafe(24)
    form = _login_form(csrf_for(ctx, cookie), error, next_url, error_html=error_html)
    response = page("Log in", form, status)
    if fresh:
        response.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_COOKIE_TTL_S, httponly=True, samesite="lax",
                            secure=ctx.config.url.startswith("https"), path="/login")
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    ctx = ctx_of(request)
    link = request.query_params.get("token")
    next_url = next_or_default(request.query_params.get("next"))
    if link:
        issued = await ctx.accounts.redeem_login_link(link)
        if issued is not None:
            return _web_session_started(ctx, issued, next_url)
        if await web_principal(request) is not None:
            # the same QR scanned twice on a phone that the first scan logged in
            return RedirectResponse(next_url, status_code=303)
        return _login_page(ctx, request, 401, error_html=_LINK_REFUSED, next_url=next_url)
    return _login_page(ctx, request, next_url=next_url)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await _form(request)
    client = request.client.host if request.client else "?"
    wait = ctx.login_limiter.check(f"login:{client}", now())
    if wait:
        raise RateLimited("Too many login attempts; wait a minute.", retry_after=wait)
    next_url = next_or_default(form.get("next"))
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not cookie or not hmac.compare_digest(form.get("csrf", ""), csrf_for(ctx, cookie)):
        return _login_page(ctx, request, 403, error="The form expired; log in again.", next_url=next_url)
    issued = await ctx.accounts.password_login(form.get("email", ""), form.get("password", ""))
    if issued is None:
        return _login_page(ctx, request, 401, error="Wrong email or password.", next_url=next_url)
    return _web_session_started(ctx, issued, next_url)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Revoke the web session (its open sockets close: 4003). The form carries the CSRF token,
    so another site cannot log the browser out."""
    ctx = ctx_of(request)
    found = await web_principal(request)
    if found:
        principal, cookie = found
        form = await _form(request)
        if not hmac.compare_digest(form.get("csrf", ""), csrf_for(ctx, cookie)):
            body = ('<section class="card auth"><h1>Log out</h1><p class="notice error" role="alert">'
                    'The form expired; reload the page and log out again.</p></section>')
            return page("Log out", body, 403, csrf=csrf_for(ctx, cookie), principal=principal)
        await ctx.accounts.logout(principal)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _device_form(ctx: ServerContext, cookie: str, code: str, error: str = "") -> str:
    err = f'<p class="notice error" role="alert">{e(error)}</p>' if error else ""
    return f"""<section class="card auth"><h1>Connect a device</h1>{err}
<p>Enter the code that <code>tether login</code> shows in your terminal. Approve only a code you
started yourself: the device gets full access to your sessions.</p>
<form method="post" action="/device" class="stack"><input type="hidden" name="csrf" value="{csrf_for(ctx, cookie)}">
<label for="user_code">Code</label>
<input id="user_code" name="user_code" value="{e(code)}" autocomplete="off" autocapitalize="characters"
 spellcheck="false" inputmode="text" required class="code-input">
<div class="row gap"><button name="action" value="approve" type="submit" class="primary">Approve</button>
<button name="action" value="deny" type="submit">Deny</button></div></form></section>"""


def _login_redirect(target: str) -> Response:
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


@router.get("/device")
async def device_page(request: Request) -> Response:
    found = await web_principal(request)
    code = request.query_params.get("user_code", "")
    if found is None:
        return _login_redirect("/device" + (f"?{urlencode({'user_code': code})}" if code else ""))
    ctx = ctx_of(request)
    return page("Connect a device", _device_form(ctx, found[1], code), csrf=csrf_for(ctx, found[1]),
                principal=found[0])


@router.post("/device")
async def device_submit(request: Request) -> Response:
    ctx = ctx_of(request)
    found = await web_principal(request)
    if found is None:
        return RedirectResponse("/login?next=/device", status_code=303)
    principal, cookie = found
    csrf = csrf_for(ctx, cookie)
    form = await _form(request)
    if form.get("csrf") != csrf:
        body = ('<section class="card auth"><h1>Connect a device</h1><p class="notice error" role="alert">'
                'The form expired; reload and try again.</p></section>')
        return page("Connect a device", body, 403, csrf=csrf, principal=principal)
    wait = ctx.login_limiter.check(f"device-approval:{principal.user_id}", now())
    if wait:
        raise RateLimited("Too many device approvals; wait a minute.", retry_after=wait)
    approve = form.get("action", "approve") == "approve"
    try:
        await ctx.accounts.approve_device(principal.user_id, form.get("user_code", ""), approve)
    except TetherError as exc:
        return page("Connect a device", _device_form(ctx, cookie, form.get("user_code", ""), exc.message), 400,
                    csrf=csrf, principal=principal)
    verdict = ("approved: return to your terminal" if approve else "denied")
    body = (f'<section class="card auth"><h1>Connect a device</h1><p class="notice {"ok" if approve else ""}" '
            f'role="status">Device {verdict}.</p><p><a href="/code">Go to your sessions</a></p></section>')
    return page("Connect a device", body, csrf=csrf, principal=principal)


def _shell(request: Request, principal: Principal, cookie: str, title: str, body: str, script: str,
           active: str, **data: str) -> HTMLResponse:
    ctx = ctx_of(request)
    return page(title, body, csrf=csrf_for(ctx, cookie), principal=principal, script=script, narrow=False,
                active=active, socket_origin=socket_origin(request), data={"page": active, "role": principal.role, "email": principal.email, **data})


_SVG = 'aria-hidden="true" focusable="false" viewBox="0 0 24 24" width="20" height="20" class="icon"'
_ICON_CLIP = (f'<svg {_SVG} fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" '
              'stroke-linejoin="round"><path d="M21 11.5 12.6 19.9a5.5 5.5 0 0 1-7.8-7.8l8.5-8.5a3.7 3.7 0 0 1 5.2 '
              '5.2l-8.5 8.5a1.8 1.8 0 0 1-2.6-2.6l7.8-7.8"/></svg>')
_ICON_SEND = (f'<svg {_SVG} fill="none" stroke="currentColor" stroke-width="2.4" stroke-linecap="round" '
              'stroke-linejoin="round"><path d="M12 19V5M5 12l7-7 7 7"/></svg>')
_ICON_STOP = f'<svg {_SVG} fill="currentColor"><rect x="6" y="6" width="12" height="12" rx="2"/></svg>'
_NOSCRIPT = '<noscript><p class="notice error">The Tether web client needs JavaScript.</p></noscript>'


@router.get("/code")
async def code_page(request: Request) -> Response:
    found = await web_principal(request)
    if found is None:
        target = "/code" + (f"?{request.url.query}" if request.url.query else "")
        return _login_redirect(target)
    principal, cookie = found
    body = f"""{_NOSCRIPT}
<div class="code-layout">
<section class="machines" aria-labelledby="machines-h">
 <div class="section-head"><h2 id="machines-h">Machines</h2>
  <button type="button" id="ns-server" class="primary small-btn" hidden>New session on the server</button></div>
 <ul id="environments" class="env-list" aria-live="polite"><li class="muted placeholder">Loading…</li></ul>
 <p class="muted small hint">Run <code>tether up</code> or <code>tether remote-control</code> in a project to add a machine.</p>
</section>
<section class="sessions" aria-labelledby="sessions-h">
 <div class="section-head"><h1 id="sessions-h">Sessions</h1><span id="live" class="live-dot" role="status"></span></div>
 <form id="filters" class="filters" role="search" aria-label="Filter sessions">
  <div class="filter"><label for="f-status">Status</label><select id="f-status" name="status">
   <option value="active">Active</option><option value="all">All</option><option value="running">Running</option>
   <option value="requires_action">Requires action</option><option value="idle">Idle</option>
   <option value="archived">Archived</option></select></div>
  <div class="filter"><label for="f-env">Machine</label><select id="f-env" name="environment"><option value="">All machines</option></select></div>
  <div class="filter"><label for="f-worker">Worker</label><select id="f-worker" name="worker_type"><option value="">All workers</option></select></div>
 </form>
 <ul id="sessions" class="session-list" aria-live="polite"><li class="muted placeholder">Loading…</li></ul>
</section>
</div>
<dialog id="new-session" class="sheet" aria-labelledby="ns-title">
 <form id="ns-form" method="dialog" class="stack">
  <h2 id="ns-title">New session</h2>
  <p id="ns-env" class="muted"></p>
  <label for="ns-prompt">First prompt</label>
  <textarea id="ns-prompt" name="prompt" rows="5" required placeholder="What should the agent do?"></textarea>
  <label for="ns-name">Title <span class="muted">(optional)</span></label>
  <input id="ns-name" name="title" maxlength="200" autocomplete="off">
  <div id="ns-repo-row" class="stack" hidden><label for="ns-repo">Repository <span class="muted">(optional: a git
   URL, or a path the runner allows)</span></label>
  <input id="ns-repo" name="repo" maxlength="4096" autocomplete="off" placeholder="https://…">
  <label for="ns-branch">Branch <span class="muted">(optional)</span></label>
  <input id="ns-branch" name="branch" maxlength="255" autocomplete="off"></div>
  <p id="ns-error" class="notice error" role="alert" hidden></p>
  <div class="row gap end"><button type="button" id="ns-cancel">Cancel</button>
  <button type="submit" class="primary" id="ns-submit">Start session</button></div>
 </form>
</dialog>"""
    return _shell(request, principal, cookie, "Sessions", body, "code.js", "code")


@router.get("/code/{session_id}")
async def session_page(session_id: str, request: Request) -> Response:
    found = await web_principal(request)
    if found is None:
        return _login_redirect(f"/code/{session_id}")
    principal, cookie = found
    ctx = ctx_of(request)
    try:
        body_id = parse_session_id(session_id)
        row = await ctx.sessions.session(body_id, principal.org_id)
    except NotFound:
        body = ('<section class="card auth"><h1>Session not found</h1><p>It does not exist, or it belongs to '
                'another organisation.</p><p><a href="/code">Back to your sessions</a></p></section>')
        return page("Not found", body, 404, csrf=csrf_for(ctx, cookie), principal=principal)
    sid = f"session_{body_id}"
    title = row.title or "Untitled session"
    body = f"""{_NOSCRIPT}
<div class="session-view">
<div class="session-head">
 <a class="back" href="/code" aria-label="All sessions">‹</a>
 <div class="title-wrap">
  <h1 id="title" class="session-title">{e(title)}</h1>
  <p id="health" class="health" role="status" aria-live="polite"><span class="dot" aria-hidden="true"></span><span class="text">Connecting…</span></p>
 </div>
 <span id="badge" class="badge" hidden></span>
 <details class="menu" id="menu"><summary aria-label="Session actions">⋯</summary>
  <div class="menu-pop" role="group" aria-label="Session actions">
   <button type="button" id="rename">Rename</button>
   <button type="button" id="archive" class="danger">Archive</button>
   <p id="env-info" class="muted small"></p>
  </div></details>
</div>
<button type="button" id="load-earlier" class="link load-earlier" hidden>Show earlier messages</button>
<div id="transcript" class="transcript" role="log" aria-label="Transcript" aria-live="polite" aria-relevant="additions"></div>
<div id="outbox" class="transcript outbox" aria-label="Prompts being sent"></div>
<div id="streaming" class="transcript" aria-hidden="true"></div>
<section id="asks" class="asks" aria-label="Permission requests" aria-live="assertive"></section>
<button type="button" id="jump" class="jump" hidden>↓ New messages</button>
<p id="ended" class="ended" role="note" hidden></p>
<form id="composer" class="composer" aria-label="Send a prompt">
 <div id="terminal" class="terminal-bar" role="status" aria-live="polite" hidden><span class="text"></span>
  <button type="button" id="take-over" hidden>Take over</button>
  <button type="button" id="return-terminal" hidden>Return to terminal</button></div>
 <ul id="attachments" class="attachments" aria-label="Attachments"></ul>
 <div class="composer-row">
  <label class="attach" title="Attach images or files">{_ICON_CLIP}<span class="sr-only">Attach files</span>
   <input type="file" id="file" multiple></label>
  <label for="prompt" class="sr-only">Prompt</label>
  <textarea id="prompt" rows="1" placeholder="Message the agent…" enterkeyhint="send" autocomplete="off"></textarea>
  <button type="button" id="stop" class="stop" hidden aria-label="Stop">{_ICON_STOP}<span class="btn-label">Stop</span></button>
  <button type="submit" id="send" class="primary send" aria-label="Send">{_ICON_SEND}<span class="btn-label">Send</span></button>
 </div>
 <p class="muted small composer-hint" aria-live="polite">Enter to send · Shift+Enter for a new line</p>
</form>
</div>
<dialog id="rename-dialog" class="sheet" aria-labelledby="rn-title"><form id="rename-form" method="dialog" class="stack">
 <h2 id="rn-title">Rename session</h2><label for="rn-input">Title</label>
 <input id="rn-input" maxlength="500" required autocomplete="off">
 <div class="row gap end"><button type="button" id="rn-cancel">Cancel</button><button type="submit" class="primary">Save</button></div>
</form></dialog>
<dialog id="archive-dialog" class="sheet" aria-labelledby="ar-title"><form id="archive-form" method="dialog" class="stack">
 <h2 id="ar-title">Archive this session?</h2>
 <p>The agent stops and the session becomes read-only. Its transcript stays.</p>
 <div class="row gap end"><button type="button" id="ar-cancel">Cancel</button><button type="submit" class="danger">Archive</button></div>
</form></dialog>"""
    return _shell(request, principal, cookie, title, body, "session.js", "session", session=sid)


@router.get("/settings")
async def settings_page(request: Request) -> Response:
    found = await web_principal(request)
    if found is None:
        return _login_redirect("/settings")
    principal, cookie = found
    owner = principal.role == "owner"
    body = f"""{_NOSCRIPT}
<div class="settings">
<h1>Settings</h1>
<section class="card" aria-labelledby="acct-h"><h2 id="acct-h">Account</h2>
 <dl class="kv"><dt>Email</dt><dd>{e(principal.email)}</dd><dt>Role</dt><dd>{e(principal.role)}</dd>
 <dt>Organisation</dt><dd id="org-name">…</dd></dl>
 <p class="muted small">To connect a terminal, run <code>tether login</code> and approve its code at <a href="/device">/device</a>.</p>
</section>
<section class="card" aria-labelledby="tok-h"><h2 id="tok-h">Personal API tokens</h2>
 <p class="muted small">For scripts and CI: send <code>Authorization: Bearer &lt;token&gt;</code>. A token is shown once.</p>
 <form id="token-form" class="row gap wrap">
  <div class="field grow"><label for="token-name">Name</label><input id="token-name" name="name" maxlength="100" required autocomplete="off" placeholder="e.g. CI"></div>
  <div class="field"><label for="token-expiry">Expires</label><select id="token-expiry" name="expires">
   <option value="30">in 30 days</option><option value="90" selected>in 90 days</option>
   <option value="365">in a year</option><option value="">never</option></select></div>
  <button type="submit" class="primary">Create token</button>
 </form>
 <div id="token-secret" class="secret" hidden role="status"></div>
 <ul id="tokens" class="plain-list"><li class="muted">Loading…</li></ul>
</section>
<section class="card" aria-labelledby="pol-h"><h2 id="pol-h">Organisation policy</h2>
 <label class="switch"><input type="checkbox" id="policy-rc" {"" if owner else "disabled"}>
 <span>Allow Remote Control</span></label>
 <p class="muted small">When off, machines cannot register and no new sessions start (existing ones keep their transcript).
 {"" if owner else "Only owners can change this."}</p>
</section>
<section class="card" aria-labelledby="mem-h"><h2 id="mem-h">Members</h2>
 <ul id="members" class="plain-list"><li class="muted">Loading…</li></ul>
 {'''<form id="member-form" class="row gap wrap"><div class="field grow"><label for="member-email">Email</label><input id="member-email" type="email" required autocomplete="off"></div>
 <div class="field"><label for="member-role">Role</label><select id="member-role"><option value="member">member</option><option value="viewer">viewer</option>
 <option value="owner">owner</option></select></div><button type="submit">Add member</button></form>
 <div id="member-link" class="secret" hidden role="status"></div>''' if owner else ""}
</section>
</div>"""
    return _shell(request, principal, cookie, "Settings", body, "settings.js", "settings")


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/code", status_code=303)
