"""Device flow, refresh rotation, revocation, web login and CSRF (docs/protocol.md §1, §3).

A real `tether server` per module; a second one with tight login limits for the 429 tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.support.api import (
    DEVICE_GRANT,
    admin_cli,
    approve_device,
    assert_error,
    bearer,
    csrf_of,
    device_login,
    logged_in_web,
    login_form_csrf,
    logout,
    password_login,
    register_environment,
)
from tests.support.server import ServerProcess, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module requests many device codes: lift the per-IP login/device limit."""
    limits = {"rate_per_second": 0, "login_per_minute": 10_000}
    with ServerProcess(tmp_path_factory.mktemp("oauth"), limits=limits) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def web(server: ServerProcess) -> Iterator[httpx.Client]:
    with logged_in_web(server) as c:
        yield c


def new_code(client: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = client.post("/oauth/device/code", json={"client_id": "tests", **body})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def poll_token(client: httpx.Client, device_code: str, *, form: bool = True) -> httpx.Response:
    body = {"grant_type": DEVICE_GRANT, "device_code": device_code}
    return client.post("/oauth/token", data=body) if form else client.post("/oauth/token", json=body)


def refresh(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token})


# ---- device flow ---------------------------------------------------------------------------

def test_device_flow_end_to_end(server: ServerProcess, client: httpx.Client, web: httpx.Client) -> None:
    code = new_code(client)
    assert code["device_code"].startswith("tdc_")
    assert code["verification_uri"] == f"{server.url}/device"
    assert code["verification_uri_complete"].endswith(f"/device?user_code={code['user_code']}")
    assert code["expires_in"] > 0 and code["interval"] >= 1
    assert len(code["user_code"]) == 9 and code["user_code"][4] == "-"

    # before approval: pending, then slow_down for polling faster than `interval`
    assert_error(poll_token(client, code["device_code"]), 400, "authorization_pending")
    assert_error(poll_token(client, code["device_code"], form=False), 400, "slow_down")

    # the browser: /device?user_code=… pre-fills the code and carries the CSRF field
    page = web.get("/device", params={"user_code": code["user_code"]})
    assert page.status_code == 200 and code["user_code"] in page.text and 'name="csrf"' in page.text
    approved = approve_device(web, code["user_code"].lower().replace("-", " "))  # forgiving about the format
    assert approved.status_code == 200 and "approved" in approved.text, approved.text

    tokens = poll_token(client, code["device_code"])
    assert tokens.status_code == 200, tokens.text
    pair = tokens.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] > 0
    assert pair["access_token"].startswith("tat_") and pair["refresh_token"].startswith("trt_")
    me = client.get("/v1/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200 and me.json()["credential"] == "access"
    assert me.json()["user"]["email"] == "owner@localhost"
    # the access token is a full user credential (env register, sessions)
    register_environment(client, pair["access_token"])

    # a device code is good for one exchange only, and cannot be approved again
    assert_error(poll_token(client, code["device_code"]), 400, "invalid_grant")
    assert approve_device(web, code["user_code"]).status_code == 400
    # the approval is audited
    audit = client.get("/v1/audit", headers=bearer(pair["access_token"])).json()["data"]
    assert "device.approve" in [e["action"] for e in audit]


def test_device_flow_denied(client: httpx.Client, web: httpx.Client) -> None:
    code = new_code(client)
    denied = approve_device(web, code["user_code"], action="deny")
    assert denied.status_code == 200 and "denied" in denied.text
    # a decision is final
    again = approve_device(web, code["user_code"])
    assert again.status_code == 400 and "already used" in again.text
    assert_error(poll_token(client, code["device_code"]), 400, "access_denied")
    assert_error(poll_token(client, code["device_code"]), 400, "access_denied")


@pytest.mark.parametrize("body", [
    {"grant_type": DEVICE_GRANT},
    {"grant_type": DEVICE_GRANT, "device_code": "tdc_" + "x" * 43},
    {"grant_type": DEVICE_GRANT, "device_code": "trt_" + "x" * 43},
    {"grant_type": DEVICE_GRANT, "device_code": 12},
    {"grant_type": "refresh_token"},
    {"grant_type": "refresh_token", "refresh_token": "tat_" + "x" * 43},
    {"grant_type": "refresh_token", "refresh_token": ["trt_x"]},
])
def test_token_endpoint_rejects_unknown_grants(client: httpx.Client, body: dict[str, Any]) -> None:
    assert_error(client.post("/oauth/token", json=body), 400, "invalid_grant")


@pytest.mark.parametrize("body", [{}, {"grant_type": "password", "username": "a", "password": "b"},
                                  {"grant_type": "client_credentials"}])
def test_token_endpoint_unsupported_grant(client: httpx.Client, body: dict[str, Any]) -> None:
    assert_error(client.post("/oauth/token", data=body), 400, "unsupported_grant_type")


def test_device_page_needs_login_and_csrf(server: ServerProcess, client: httpx.Client, web: httpx.Client) -> None:
    code = new_code(client)
    # not logged in → to the login page, coming back to the code afterwards
    anon = httpx.Client(base_url=server.url, timeout=15)
    with anon:
        resp = anon.get("/device", params={"user_code": code["user_code"]})
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")
        assert code["user_code"] in httpx.URL(resp.headers["location"]).params["next"]
        resp = anon.post("/device", data={"user_code": code["user_code"], "action": "approve"})
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login")
    # logged in but without / with a wrong CSRF field → refused, nothing approved
    for form in ({"user_code": code["user_code"]}, {"user_code": code["user_code"], "csrf": "0" * 32}):
        resp = web.post("/device", data=form)
        assert resp.status_code == 403, resp.text
    assert_error(poll_token(client, code["device_code"]), 400, "authorization_pending")
    # an unknown code is an error on the page
    resp = approve_device(web, "BBBB-BBBB")
    assert resp.status_code == 400 and "unknown or expired" in resp.text


# ---- refresh rotation and revocation -------------------------------------------------------

def test_refresh_rotation_and_family_revocation(client: httpx.Client, web: httpx.Client) -> None:
    first = device_login(client, web)
    resp = refresh(client, first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert client.get("/v1/me", headers=bearer(second["access_token"])).status_code == 200
    # JSON bodies work as well as forms
    third_resp = client.post("/oauth/token", json={"grant_type": "refresh_token",
                                                   "refresh_token": second["refresh_token"]})
    assert third_resp.status_code == 200, third_resp.text
    third = third_resp.json()

    # replaying a rotated refresh token fails and revokes the whole family
    assert_error(refresh(client, first["refresh_token"]), 400, "invalid_grant")
    assert_error(refresh(client, third["refresh_token"]), 400, "invalid_grant")
    for access in (first["access_token"], second["access_token"], third["access_token"]):
        assert_error(client.get("/v1/me", headers=bearer(access)), 401, "authentication_error")

    # other logins (other families) are unaffected
    other = device_login(client, web)
    assert client.get("/v1/me", headers=bearer(other["access_token"])).status_code == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_revoke(client: httpx.Client, web: httpx.Client, owner_token: str) -> None:
    pair = device_login(client, web)
    resp = client.post("/oauth/revoke", data={"token": pair["access_token"]})
    assert resp.status_code == 200 and resp.json() == {}
    assert_error(client.get("/v1/me", headers=bearer(pair["access_token"])), 401, "authentication_error")
    assert_error(refresh(client, pair["refresh_token"]), 400, "invalid_grant")  # same family

    pair = device_login(client, web)
    assert client.post("/oauth/revoke", json={"token": pair["refresh_token"]}).status_code == 200
    assert_error(refresh(client, pair["refresh_token"]), 400, "invalid_grant")
    assert_error(client.get("/v1/me", headers=bearer(pair["access_token"])), 401, "authentication_error")

    personal = client.post("/v1/tokens", json={"name": "revoke-me"}, headers=bearer(owner_token)).json()["token"]
    assert client.post("/oauth/revoke", data={"token": personal}).status_code == 200
    assert_error(client.get("/v1/me", headers=bearer(personal)), 401, "authentication_error")

    # unknown tokens: 200 (RFC 7009); a missing token is a 400
    assert client.post("/oauth/revoke", data={"token": "tat_unknown"}).status_code == 200
    assert_error(client.post("/oauth/revoke", data={}), 400, "invalid_request_error")
    assert_error(client.post("/oauth/revoke", json={"token": 5}), 400, "invalid_request_error")
    assert_error(client.post("/oauth/revoke", content=b"[1,2]", headers={"content-type": "application/json"}),
                 400, "invalid_request_error")
    # the owner's own token was not touched
    assert client.get("/v1/me", headers=bearer(owner_token)).status_code == 200


# ---- web login ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def owner_password(server: ServerProcess) -> str:
    out = admin_cli(server.data_dir, "set-password", "owner@localhost", "--password", "correct horse")
    assert out.stdout.strip() == "Password set for owner@localhost.", out.output
    return "correct horse"


def test_password_login(server: ServerProcess, client: httpx.Client, owner_password: str) -> None:
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        page = browser.get("/login")
        assert page.status_code == 200 and 'name="password"' in page.text
        wrong = password_login(browser, "owner@localhost", "battery staple")
        assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
        assert "tether_session" not in browser.cookies
        unknown = password_login(browser, "nobody@localhost", owner_password)
        assert unknown.status_code == 401

        right = password_login(browser, "owner@localhost", owner_password, next="/device")
        assert right.status_code == 303 and right.headers["location"] == "/device"
        set_cookie = right.headers["set-cookie"].lower()
        assert "tether_session=" in set_cookie and "httponly" in set_cookie and "samesite=lax" in set_cookie
        me = browser.get("/v1/me")
        assert me.status_code == 200 and me.json()["credential"] == "web_session"
        assert browser.get("/code").status_code == 200

        # logout revokes the session
        cookie = browser.cookies["tether_session"]
        assert logout(browser).status_code == 303
        with httpx.Client(base_url=server.url, cookies={"tether_session": cookie}) as stale:
            assert_error(stale.get("/v1/me"), 401, "authentication_error")


def test_login_and_logout_forms_need_their_csrf_field(server: ServerProcess, owner_password: str) -> None:
    """Another site cannot log a browser into an account (login CSRF) nor log it out."""
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        # no form fetched: no pre-login cookie, no token → refused even with the right password
        bare = browser.post("/login", data={"email": "owner@localhost", "password": owner_password})
        assert bare.status_code == 403 and "The form expired" in bare.text
        assert "tether_session" not in browser.cookies
        login_form_csrf(browser)  # now the browser holds the pre-login cookie
        forged = browser.post("/login", data={"email": "owner@localhost", "password": owner_password,
                                              "csrf": "0" * 32})
        assert forged.status_code == 403 and "tether_session" not in browser.cookies
        assert password_login(browser, "owner@localhost", owner_password).status_code == 303

        refused = browser.post("/logout")
        assert refused.status_code == 403 and "The form expired" in refused.text
        assert browser.get("/v1/me").status_code == 200  # still logged in
        assert logout(browser).status_code == 303
        assert_error(browser.get("/v1/me"), 401, "authentication_error")


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                    "\\\\evil.example", "javascript:alert(1)", "/\t/evil.example"])
def test_login_never_redirects_off_site(server: ServerProcess, owner_password: str, target: str) -> None:
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        resp = password_login(browser, "owner@localhost", owner_password, next=target)
        assert resp.status_code == 303
        location = resp.headers["location"]
        # a path on this site: no scheme, no authority, no backslash a browser would read as '/'
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location, location
        assert httpx.URL(server.url).join(location).host == "127.0.0.1"


def test_login_link_is_one_time(server: ServerProcess) -> None:
    link = admin_cli(server.data_dir, "login-link", "--port", str(server.port)).stdout.strip()
    assert link.startswith(f"{server.url}/login?token=tll_")
    with httpx.Client(base_url=server.url, timeout=15) as a, httpx.Client(base_url=server.url, timeout=15) as b:
        resp = a.get(httpx.URL(link).copy_merge_params({"next": "//evil.example"}))
        assert resp.status_code == 303 and resp.headers["location"] == "/code"
        assert "tether_session" in a.cookies
        again = b.get(link.removeprefix(server.url))
        assert again.status_code == 401 and "tether_session" not in b.cookies
        forged = b.get("/login", params={"token": "tll_forged"})
        assert forged.status_code == 401


def test_cookie_writes_need_csrf_header(server: ServerProcess, web: httpx.Client) -> None:
    assert web.get("/v1/me").status_code == 200  # reads need no CSRF token
    assert_error(web.post("/v1/tokens", json={"name": "from-browser"}), 403, "permission_error")
    assert_error(web.post("/v1/tokens", json={"name": "x"}, headers={"x-csrf-token": "0" * 32}),
                 403, "permission_error")
    assert_error(web.post("/v1/sessions", json={"title": "t"}), 403, "permission_error")
    assert_error(web.put("/v1/org/policy", json={"allow_remote_control": False}), 403, "permission_error")
    csrf = csrf_of(web)
    ok = web.post("/v1/tokens", json={"name": "from-browser"}, headers={"x-csrf-token": csrf})
    assert ok.status_code == 200, ok.text
    session = web.post("/v1/sessions", json={"title": "t"}, headers={"x-csrf-token": csrf})
    assert session.status_code == 200, session.text
    # a forged cookie is no credential at all
    with httpx.Client(base_url=server.url, timeout=15, cookies={"tether_session": "tws_forged"}) as forged:
        assert_error(forged.post("/v1/tokens", json={}), 401, "authentication_error")


# ---- limits ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("limited"), limits={"rate_per_second": 0, "login_per_minute": 3},
                         device_code_ttl_s=1).start()
    try:
        yield proc
    finally:
        proc.stop()


def _until_429(send: Callable[[], httpx.Response], attempts: int) -> httpx.Response:
    for _ in range(attempts):
        resp = send()
        if resp.status_code == 429:
            return resp
    raise AssertionError(f"no 429 after {attempts} attempts")


def test_login_rate_limit(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.url, timeout=15) as browser:
        statuses = []
        for _ in range(3):
            statuses.append(password_login(browser, "x@y", "nope").status_code)
        assert statuses == [401, 401, 401]
        resp = password_login(browser, "x@y", "nope")
        error = assert_error(resp, 429, "rate_limit_error")
        assert int(resp.headers["retry-after"]) >= 1, error


def test_device_approvals_are_rate_limited(limited: ServerProcess) -> None:
    """Guessing user codes from a logged-in browser is bounded like logins (per user)."""
    with logged_in_web(limited) as web:
        statuses = [approve_device(web, f"BCDF-GHJ{c}").status_code for c in "KLMN"]
        assert statuses[:3] == [400, 400, 400] and statuses[3] == 429, statuses


def test_device_code_rate_limit_and_expiry(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.url, timeout=15) as client:
        first = client.post("/oauth/device/code", json={})
        assert first.status_code == 200, first.text
        resp = _until_429(lambda: client.post("/oauth/device/code", json={}), attempts=3)
        assert_error(resp, 429, "rate_limit_error")
        assert int(resp.headers["retry-after"]) >= 1
        # the first code expires after device_code_ttl_s = 1
        code = first.json()["device_code"]
        expired = wait_until(
            lambda: (r := poll_token(client, code)).json()["error"]["type"] == "expired_token" and r,
            timeout=10, interval=0.2, message="the device code to expire")
        assert_error(expired, 400, "expired_token")
