"""The web client's security defaults over plain HTTP: CSP and headers, CSRF on cookie
writes, no inline script, sanitised rendering, members management rights."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import web_login
from tests.support.server import ServerProcess
from tests.support.worker import auth
from tether.server.web.pages import CSP


@pytest.fixture(scope="module")
def web(web_server: ServerProcess) -> Iterator[httpx.Client]:
    """A browser-like client holding the web session cookie."""
    with httpx.Client(base_url=web_server.url, timeout=15) as client:
        assert web_server.login_link
        web_login(client, web_server.login_link)
        yield client


def csrf_of(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match, page[:500]
    return match.group(1)


@pytest.fixture(scope="module")
def csrf(web: httpx.Client) -> str:
    return csrf_of(web.get("/code").text)


def test_csp_is_strict_and_pages_have_no_inline_code(web: httpx.Client, owner: str,
                                                     web_server: ServerProcess) -> None:
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "default-src 'none'" in CSP
    sid = web.post("/v1/sessions", json={}, headers=auth(owner)).json()["id"]
    for path in ("/login", "/code", f"/code/{sid}", "/settings", "/device"):
        resp = web.get(path)
        assert resp.status_code == 200, (path, resp.text[:300])
        csp = resp.headers["content-security-policy"]
        assert csp in (CSP, CSP.replace("connect-src 'self'", f"connect-src 'self' {web_server.ws_url}"))
        assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["cache-control"] == "no-store"
        html = resp.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), f"inline handler on {path}"
        assert not re.search(r"\sstyle\s*=", html, re.I) and "<style" not in html, f"inline style on {path}"


def test_static_files(web: httpx.Client) -> None:
    for name, kind in (("app.css", "text/css"), ("session.js", "text/javascript"), ("common.js", "text/javascript"),
                       ("code.js", "text/javascript"), ("settings.js", "text/javascript"),
                       ("pygments.css", "text/css"), ("icon.svg", "image/svg+xml")):
        resp = web.get(f"/static/{name}")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(kind), name
        assert resp.headers["x-content-type-options"] == "nosniff"
        again = web.get(f"/static/{name}", headers={"if-none-match": resp.headers["etag"]})
        assert again.status_code == 304
    for bad in ("../app.py", "..%2Fapi.py", "api.py", "APP.CSS", "nope.js", ".hidden.js"):
        assert web.get(f"/static/{bad}").status_code == 404, bad


def test_cookie_writes_need_the_csrf_header(web: httpx.Client, csrf: str) -> None:
    body = {"items": [{"type": "markdown", "text": "**hi** <script>x</script>"}]}
    refused = web.post("/web/render", json=body)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    wrong = web.post("/web/render", json=body, headers={"x-csrf-token": "0" * 40})
    assert wrong.status_code == 403
    ok = web.post("/web/render", json=body, headers={"x-csrf-token": csrf})
    assert ok.status_code == 200
    assert ok.json()["html"] == ["<p><strong>hi</strong> &lt;script&gt;x&lt;/script&gt;</p>\n"]
    assert web.post("/v1/tokens", json={"name": "x"}).status_code == 403
    assert web.post("/v1/tokens", json={"name": "x"}, headers={"x-csrf-token": csrf}).status_code == 200
    with httpx.Client(base_url=str(web.base_url)) as anon:
        assert anon.post("/web/render", json=body).status_code == 401
        assert anon.get("/code").status_code == 303
        assert anon.get("/static/app.css").status_code == 200


def test_render_limits(web: httpx.Client, csrf: str) -> None:
    too_many = {"items": [{"type": "markdown", "text": "x"}] * 301}
    resp = web.post("/web/render", json=too_many, headers={"x-csrf-token": csrf})
    assert resp.status_code == 400
    assert web.post("/web/render", json={"items": "x"}, headers={"x-csrf-token": csrf}).status_code == 400


def test_session_page_of_another_org_is_not_found(web: httpx.Client, web_server: ServerProcess) -> None:
    other = web_server.token(org="elsewhere", user="someone@elsewhere")
    sid = web.post("/v1/sessions", json={}, headers=auth(other)).json()["id"]
    resp = web.get(f"/code/{sid}")
    assert resp.status_code == 404 and "Session not found" in resp.text
    assert web.get("/code/not-a-session").status_code == 404
    odd = web.get("/code", headers={"host": "evil.example'; script-src *"})
    assert "script-src *" not in odd.headers.get("content-security-policy", "")
    assert web.get(f"/web/sessions/{sid}/undelivered").status_code == 404


def test_undelivered_lists_prompts_waiting_for_a_worker(web: httpx.Client, owner: str) -> None:
    sid = web.post("/v1/sessions", json={}, headers=auth(owner)).json()["id"]
    event = {"type": "user", "uuid": "3f1c7a52-5d1e-4c43-9a55-0a4f5d0b7c11",
             "message": {"role": "user", "content": "waiting"}}
    assert web.post(f"/v1/sessions/{sid}/events", json={"events": [event]}, headers=auth(owner)).status_code == 200
    data = web.get(f"/web/sessions/{sid}/undelivered").json()["data"]
    assert [(d["uuid"], d["status"]) for d in data] == [(event["uuid"], "pending")]


def test_members_are_managed_by_owners_only(web: httpx.Client, csrf: str, web_server: ServerProcess) -> None:
    h = {"x-csrf-token": csrf}
    listed = web.get("/web/members").json()["data"]
    me = next(m for m in listed if m["you"])
    assert me["role"] == "owner"
    added = web.post("/web/members", json={"email": "viewer@example.com", "role": "viewer"}, headers=h)
    assert added.status_code == 200 and "/login?token=tll_" in added.json()["login_link"]
    again = web.post("/web/members", json={"email": "viewer@example.com", "role": "viewer"}, headers=h)
    assert again.status_code == 409
    assert web.post("/web/members", json={"email": "nope", "role": "viewer"}, headers=h).status_code == 400
    assert web.post("/web/members", json={"email": "a@b.c", "role": "god"}, headers=h).status_code == 400
    # the last owner cannot demote themselves
    demote = web.patch(f"/web/members/{me['id']}", json={"role": "member"}, headers=h)
    assert demote.status_code == 409
    # a viewer reads the list but changes nothing
    with httpx.Client(base_url=web_server.url, timeout=15) as viewer:
        web_login(viewer, added.json()["login_link"])
        assert viewer.get("/web/members").status_code == 200
        vcsrf = csrf_of(viewer.get("/settings").text)
        refused = viewer.patch(f"/web/members/{me['id']}", json={"role": "viewer"}, headers={"x-csrf-token": vcsrf})
        assert refused.status_code == 403
        page = viewer.get("/settings").text
        assert 'id="member-form"' not in page and 'id="policy-rc" disabled' in page
    assert web.patch("/web/members/user_nobody", json={"role": "member"}, headers=h).status_code == 404
