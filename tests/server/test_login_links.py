"""``POST /v1/login-links`` and what ``/login`` does with the link: a short-lived one-time login
that opens a same-origin ``next`` (never another site), for any credential of the person."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tests.support import database
from tests.support.api import assert_error, bearer, dispatch, mint_token, register_environment, web_login
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def owner(server: ServerProcess) -> str:
    return mint_token(server.data_dir)


def mint(client: httpx.Client, token: str, next_path: object = None) -> dict[str, object]:
    body = {} if next_path is None else {"next": next_path}
    resp = client.post("/v1/login-links", json=body, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    data: dict[str, object] = resp.json()
    return data


def test_a_link_logs_in_once_and_opens_next(client: httpx.Client, owner: str, server: ServerProcess) -> None:
    env_id, _ = register_environment(client, owner)
    target = f"/code?bridge={env_id}"
    link = mint(client, owner, target)
    assert link["next"] == target and link["expires_in"] == 600
    path = str(link["path"])
    assert link["url"] == f"{server.url}{path}"
    query = parse_qs(urlsplit(path).query)
    assert query["next"] == [target] and query["token"][0].startswith("tll_")
    expires = dt.datetime.fromisoformat(str(link["expires_at"])).timestamp()
    assert 540 < expires - time.time() <= 600

    with httpx.Client(base_url=server.url, timeout=15) as phone:
        first = phone.get(path)
        assert first.status_code == 303 and first.headers["location"] == target
        assert "tether_session" in phone.cookies
        assert phone.get(target).status_code == 200  # logged in: the page itself, not a redirect to /login
        # the same QR scanned again on the phone it logged in: straight to the page
        again = phone.get(path)
        assert again.status_code == 303 and again.headers["location"] == target
    with httpx.Client(base_url=server.url, timeout=15) as other:
        used = other.get(path)
        assert used.status_code == 401 and "tether_session" not in other.cookies
        assert "invalid, used or expired" in used.text and "<code>tether admin login-link</code>" in used.text
        assert f'name="next" value="{target}"' in used.text  # a password login still opens the page

    audit = client.get("/v1/audit", headers=bearer(owner)).json()["data"]
    made = [a for a in audit if a["action"] == "login_link.create"]
    assert made and made[0]["detail"] == {"next": target, "credential": "personal"}


def test_default_next_and_expired_links(client: httpx.Client, owner: str, server: ServerProcess) -> None:
    link = mint(client, owner)
    assert link["next"] == "/code"
    token = parse_qs(urlsplit(str(link["path"])).query)["token"][0]
    changed, _ = database.execute(server.data_dir, "UPDATE tokens SET expires_at = :past WHERE kind = 'login_link' "
                                  "AND NOT revoked AND expires_at > :soon",
                                  {"past": time.time() - 1, "soon": time.time() + 300})
    assert changed >= 1
    with httpx.Client(base_url=server.url, timeout=15) as phone:
        resp = phone.get("/login", params={"token": token})
        assert resp.status_code == 401 and "tether admin login-link" in resp.text


@pytest.mark.parametrize("bad", [
    "//evil.example", "//evil.example/code", "https://evil.example/code", "http://evil.example", "/\\evil.example",
    "\\\\evil.example", "/\t/evil.example", "/\n/evil.example", "javascript:alert(1)", "code", "", " /code",
    "/" + "a" * 2000, 42, None, ["/code"], {"path": "/code"},
])
def test_open_redirects_are_refused(client: httpx.Client, owner: str, bad: object) -> None:
    resp = client.post("/v1/login-links", json={"next": bad}, headers=bearer(owner))
    error = assert_error(resp, 400, "invalid_request_error")
    assert "'next'" in error["message"]


@pytest.mark.parametrize("bad", ["//evil.example", "https://evil.example", "/\\evil.example", "/%09/evil.example"])
def test_login_pages_never_redirect_off_site(client: httpx.Client, owner: str, server: ServerProcess,
                                             bad: str) -> None:
    token = parse_qs(urlsplit(str(mint(client, owner)["path"])).query)["token"][0]
    with httpx.Client(base_url=server.url, timeout=15) as phone:
        resp = phone.get("/login", params={"token": token, "next": bad})
        assert resp.status_code == 303
        location = resp.headers["location"]
        assert location == (bad if bad.startswith("/%") else "/code")
        assert urlsplit(location).netloc == ""


def test_who_may_mint(client: httpx.Client, server: ServerProcess) -> None:
    assert_error(client.post("/v1/login-links", json={}), 401, "authentication_error")
    assert_error(client.post("/v1/login-links", json={}, headers=bearer("tpt_not-a-token")), 401)
    owner = mint_token(server.data_dir)
    got = dispatch(client, owner)
    # machine credentials are not a person's: the environment secret and the worker token are refused
    assert_error(client.post("/v1/login-links", json={}, headers=bearer(got.environment_secret)), 401)
    assert_error(client.post("/v1/login-links", json={}, headers=bearer(got.worker_token)), 401)
    # a viewer gets a link to log themselves in, as a viewer
    viewer = mint_token(server.data_dir, user="viewer-links@localhost", role="viewer")
    with httpx.Client(base_url=server.url, timeout=15) as phone:
        web_login(phone, str(mint(client, viewer)["url"]))
        page = phone.get("/settings").text
        assert "viewer-links@localhost" in page and 'id="policy-rc" disabled' in page
        # a web session may mint too (with its CSRF token), e.g. to hand the login to a phone
        refused = phone.post("/v1/login-links", json={})
        assert_error(refused, 403, "permission_error")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert csrf is not None
        ok = phone.post("/v1/login-links", json={"next": "/settings"}, headers={"x-csrf-token": csrf.group(1)})
        assert ok.status_code == 200 and ok.json()["next"] == "/settings"
    assert_error(client.post("/v1/login-links", content=b"[1]", headers=bearer(owner)), 400)
    assert_error(client.post("/v1/login-links", content=b"{", headers=bearer(owner)), 400)
