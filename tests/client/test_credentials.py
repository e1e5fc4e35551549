"""The local credential store (docs/protocol.md §6): file format and mode, environment overrides,
and the cross-process refresh lock. Real files in a temporary TETHER_HOME."""

from __future__ import annotations

import json
import os
import pathlib
import stat

import pytest

from tether.client.credentials import Credentials, CredentialsError, CredentialStore, tether_home
from tether.protocol.server_url import DEFAULT_SERVER_URL

SERVER = "http://127.0.0.1:18080"


def oauth(**fields: object) -> Credentials:
    base: dict[str, object] = dict(server=SERVER, access_token="tat_a", refresh_token="trt_r",
                                   expires_at=2000.0, issued_at=1000.0, user_id="user_1", email="me@x",
                                   org_uuid="org_1", org_name="acme", role="owner")
    base.update(fields)
    return Credentials(**base)  # type: ignore[arg-type]


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_tether_home(tmp_path: pathlib.Path) -> None:
    assert tether_home({"TETHER_HOME": str(tmp_path)}) == tmp_path
    assert tether_home({}) == pathlib.Path.home() / ".tether"
    assert CredentialStore(environ={"TETHER_HOME": str(tmp_path)}).path == tmp_path / "credentials.json"


def test_round_trip_and_mode(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    store = CredentialStore(home, environ={})
    assert store.read_file() is None
    store.save(oauth())
    assert mode(home) == 0o700
    assert mode(store.path) == 0o600
    assert store.read_file() == oauth()
    data = json.loads(store.path.read_text())
    assert data["version"] == 1 and data["server"] == SERVER and data["kind"] == "oauth"
    assert data["user"] == {"id": "user_1", "email": "me@x"}
    assert data["organization"] == {"uuid": "org_1", "name": "acme"} and data["role"] == "owner"
    assert not list(home.glob(".credentials.json.*"))  # no temporary file left behind


def test_save_tightens_a_loose_file(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    store.path.write_text("{}")
    os.chmod(store.path, 0o644)
    store.save(oauth())
    assert mode(store.path) == 0o600


def test_delete(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    assert store.delete() is False
    store.save(oauth())
    assert store.delete() is True and not store.path.exists()


def test_corrupt_file(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    for content in ("not json", "[1]", json.dumps({"server": SERVER}), json.dumps(
            {"server": "ftp://x", "access_token": "t"}), json.dumps({"server": SERVER, "access_token": "t",
                                                                      "kind": "weird"})):
        store.path.write_text(content)
        with pytest.raises(CredentialsError):
            store.read_file()
        assert store.read_file_or_none() is None


def test_old_or_partial_file_fields_default(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    store.path.write_text(json.dumps({"server": SERVER + "/", "access_token": "tpt_x", "kind": "personal",
                                      "expires_at": "soon", "user": "nope"}))
    creds = store.read_file()
    assert creds is not None and creds.server == SERVER and creds.expires_at is None
    assert creds.kind == "personal" and not creds.can_refresh and creds.user_id is None


def test_can_refresh() -> None:
    assert oauth().can_refresh
    assert not oauth(refresh_token=None).can_refresh
    assert not oauth(kind="personal").can_refresh
    assert not oauth(source="env").can_refresh


def test_with_tokens_and_identity() -> None:
    creds = oauth().with_tokens("tat_b", None, 5000.0, 4000.0)
    assert (creds.access_token, creds.refresh_token, creds.expires_at, creds.issued_at) == \
        ("tat_b", "trt_r", 5000.0, 4000.0)
    assert creds.with_tokens("tat_c", "trt_s", None, None).refresh_token == "trt_s"
    me = {"user": {"id": "user_2", "email": "b@x", "role": "member"},
          "organization": {"uuid": "org_2", "name": "beta"}, "organization_uuid": "org_2", "role": "member"}
    who = Credentials(server=SERVER, access_token="t").with_identity(me)
    assert (who.user_id, who.email, who.org_uuid, who.org_name, who.role) == \
        ("user_2", "b@x", "org_2", "beta", "member")


def test_env_credentials_are_never_written(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    with pytest.raises(CredentialsError):
        store.save(oauth(source="env"))


# ---- resolution -------------------------------------------------------------------------------


def test_server_url_precedence(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    assert store.server_url() == DEFAULT_SERVER_URL
    store.save(oauth())
    assert store.server_url() == SERVER
    env_store = CredentialStore(tmp_path, environ={"TETHER_SERVER": "http://127.0.0.1:9/"})
    assert env_store.server_url() == "http://127.0.0.1:9"
    assert env_store.server_url("localhost:7") == "http://localhost:7"
    with pytest.raises(CredentialsError):
        CredentialStore(tmp_path, environ={"TETHER_SERVER": "ftp://x"}).server_url()
    with pytest.raises(CredentialsError):
        store.server_url("http://")


def test_resolve_stored(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    assert store.resolve() is None
    store.save(oauth())
    assert store.resolve() == oauth()
    assert store.resolve(SERVER + "/") == oauth()
    # a login is never used for another server
    assert store.resolve("http://127.0.0.1:1") is None


def test_tether_server_picks_the_server(tmp_path: pathlib.Path) -> None:
    CredentialStore(tmp_path, environ={}).save(oauth())
    same = CredentialStore(tmp_path, environ={"TETHER_SERVER": SERVER})
    assert same.resolve() == oauth()
    other = CredentialStore(tmp_path, environ={"TETHER_SERVER": "http://127.0.0.1:1"})
    assert other.resolve() is None


def test_tether_token_overrides_and_never_refreshes(tmp_path: pathlib.Path) -> None:
    CredentialStore(tmp_path, environ={}).save(oauth())
    store = CredentialStore(tmp_path, environ={"TETHER_TOKEN": " tpt_env \n"})
    creds = store.resolve()
    assert creds is not None
    assert (creds.server, creds.access_token, creds.kind, creds.source) == (SERVER, "tpt_env", "personal", "env")
    assert creds.refresh_token is None and not creds.can_refresh
    both = CredentialStore(tmp_path / "empty", environ={"TETHER_TOKEN": "tpt_env",
                                                        "TETHER_SERVER": "https://t.example.com"})
    creds = both.resolve()
    assert creds is not None and creds.server == "https://t.example.com" and creds.access_token == "tpt_env"
    assert CredentialStore(tmp_path / "empty", environ={"TETHER_TOKEN": "t"}).resolve() is not None


# ---- the refresh lock -------------------------------------------------------------------------


def test_lock_is_exclusive_across_open_files(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    other = CredentialStore(tmp_path, environ={})
    with store.locked():
        assert mode(store.lock_path) == 0o600
        fd = other._open_lock()
        try:
            assert not other._try_lock(fd)  # flock conflicts between open file descriptions
        finally:
            os.close(fd)
        with pytest.raises(CredentialsError, match="Timed out"), other.locked(timeout=0.05):
            pass
    with other.locked(timeout=0.05):  # released on exit
        pass


@pytest.mark.anyio
async def test_async_lock(tmp_path: pathlib.Path) -> None:
    store = CredentialStore(tmp_path, environ={})
    async with store.locked_async():
        with pytest.raises(CredentialsError):
            async with CredentialStore(tmp_path, environ={}).locked_async(timeout=0.05):
                pass
    async with store.locked_async(timeout=0.05):
        pass
