"""The local credential store: ``$TETHER_HOME/credentials.json`` (docs/protocol.md §1, §6).

One login per machine user: the server URL, the OAuth access token with its refresh token
and expiry (from ``tether login``), or a personal API token (``tether login --with-token``),
plus who it belongs to (user, organisation, role; from ``GET /v1/me``).

The file is written atomically with mode 0600 (its directory 0700 when we create it).
``TETHER_SERVER`` and ``TETHER_TOKEN`` override it: ``TETHER_TOKEN`` is a personal token
that is used as is and never refreshed; ``TETHER_SERVER`` picks the server, and the stored
login is used only when it belongs to that server (a token is never sent to another server).

Refresh tokens rotate and a re-used one revokes the whole login, so processes that share the
file refresh under :meth:`CredentialStore.locked` and re-read the file first: whoever comes
second adopts the tokens the first one stored instead of refreshing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tether.errors import TetherError
from tether.protocol.server_url import DEFAULT_SERVER_URL, ServerUrlError, normalize_server_url

__all__ = [
    "CREDENTIALS_FILE",
    "ENV_HOME",
    "ENV_SERVER",
    "ENV_TOKEN",
    "FORMAT_VERSION",
    "LOCK_FILE",
    "CredentialKind",
    "CredentialSource",
    "CredentialStore",
    "Credentials",
    "CredentialsError",
    "tether_home",
]

try:  # POSIX advisory locks; elsewhere the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

CREDENTIALS_FILE: Final = "credentials.json"
LOCK_FILE: Final = "credentials.lock"
FORMAT_VERSION: Final = 1
ENV_SERVER: Final = "TETHER_SERVER"
ENV_TOKEN: Final = "TETHER_TOKEN"
ENV_HOME: Final = "TETHER_HOME"

CredentialKind = Literal["oauth", "personal"]
CredentialSource = Literal["file", "env"]


class CredentialsError(TetherError):
    """The credentials file cannot be read or written, or an override is malformed."""

    status = 400
    error_type = "credentials_error"


def tether_home(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """``$TETHER_HOME``, default ``~/.tether``."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_HOME)
    return pathlib.Path(raw).expanduser() if raw else pathlib.Path.home() / ".tether"


@dataclass(frozen=True)
class Credentials:
    server: str
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None
    """Wall-clock expiry of the access token (None: does not expire, e.g. a personal token)."""
    issued_at: float | None = None
    kind: CredentialKind = "oauth"
    source: CredentialSource = "file"
    user_id: str | None = None
    email: str | None = None
    org_uuid: str | None = None
    org_name: str | None = None
    role: str | None = None

    @property
    def can_refresh(self) -> bool:
        return self.kind == "oauth" and self.source == "file" and bool(self.refresh_token)

    def with_tokens(self, access_token: str, refresh_token: str | None, expires_at: float | None,
                    issued_at: float | None) -> Credentials:
        return dataclasses.replace(self, access_token=access_token,
                                   refresh_token=refresh_token or self.refresh_token,
                                   expires_at=expires_at, issued_at=issued_at)

    def with_identity(self, me: Mapping[str, Any]) -> Credentials:
        """Fill user / organisation / role from a ``GET /v1/me`` answer."""
        user = me.get("user") if isinstance(me.get("user"), dict) else {}
        org = me.get("organization") if isinstance(me.get("organization"), dict) else {}
        assert isinstance(user, dict) and isinstance(org, dict)
        return dataclasses.replace(
            self,
            user_id=_str_or(user.get("id"), self.user_id),
            email=_str_or(user.get("email"), self.email),
            org_uuid=_str_or(me.get("organization_uuid"), _str_or(org.get("uuid"), self.org_uuid)),
            org_name=_str_or(org.get("name"), self.org_name),
            role=_str_or(me.get("role"), _str_or(user.get("role"), self.role)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "server": self.server,
            "kind": self.kind,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "user": {"id": self.user_id, "email": self.email},
            "organization": {"uuid": self.org_uuid, "name": self.org_name},
            "role": self.role,
        }

    @classmethod
    def from_json(cls, data: object) -> Credentials:
        if not isinstance(data, dict):
            raise CredentialsError("The credentials file does not hold a JSON object.")
        server, token = data.get("server"), data.get("access_token")
        if not isinstance(server, str) or not isinstance(token, str) or not token:
            raise CredentialsError("The credentials file lacks 'server' or 'access_token'.")
        kind = data.get("kind", "oauth")
        if kind not in ("oauth", "personal"):
            raise CredentialsError(f"Unknown credential kind {kind!r}.")
        user = data.get("user") if isinstance(data.get("user"), dict) else {}
        org = data.get("organization") if isinstance(data.get("organization"), dict) else {}
        assert isinstance(user, dict) and isinstance(org, dict)
        try:
            server = normalize_server_url(server)
        except ServerUrlError as exc:
            raise CredentialsError(f"The credentials file has a bad server URL: {exc}") from None
        return cls(
            server=server, access_token=token,
            refresh_token=_str_or(data.get("refresh_token"), None),
            expires_at=_num_or_none(data.get("expires_at")),
            issued_at=_num_or_none(data.get("issued_at")),
            kind=kind, source="file",
            user_id=_str_or(user.get("id"), None), email=_str_or(user.get("email"), None),
            org_uuid=_str_or(org.get("uuid"), None), org_name=_str_or(org.get("name"), None),
            role=_str_or(data.get("role"), None),
        )


def _str_or(value: object, default: str | None) -> str | None:
    return value if isinstance(value, str) and value else default


def _num_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class CredentialStore:
    """``credentials.json`` under a Tether home, plus the environment overrides."""

    def __init__(self, home: pathlib.Path | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.home = home if home is not None else tether_home(self.environ)
        self.path = self.home / CREDENTIALS_FILE
        self.lock_path = self.home / LOCK_FILE

    # ---- the file ---------------------------------------------------------------------------
    def read_file(self) -> Credentials | None:
        """The stored login, or None when there is none. Raises :class:`CredentialsError` when
        the file exists but is unreadable or malformed."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CredentialsError(f"Cannot read {self.path}: {exc.strerror}.") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise CredentialsError(f"{self.path} is not valid JSON.") from None
        return Credentials.from_json(data)

    def save(self, creds: Credentials) -> None:
        """Write ``creds`` atomically with mode 0600 (env-sourced credentials are never written)."""
        if creds.source != "file":
            raise CredentialsError("Credentials from TETHER_TOKEN are not stored.")
        self._ensure_home()
        body = json.dumps(creds.to_json(), indent=2).encode() + b"\n"
        tmp = self.path.with_name(f".{CREDENTIALS_FILE}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # whatever the umask or a leftover file said
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise CredentialsError(f"Cannot write {self.path}: {exc.strerror}.") from None

    def delete(self) -> bool:
        """Remove the stored login; True when there was one."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False

    def _ensure_home(self) -> None:
        if not self.home.exists():
            self.home.mkdir(parents=True, mode=0o700, exist_ok=True)

    # ---- resolution with the environment overrides -------------------------------------------
    def env_server(self) -> str | None:
        raw = self.environ.get(ENV_SERVER, "").strip()
        if not raw:
            return None
        try:
            return normalize_server_url(raw)
        except ServerUrlError as exc:
            raise CredentialsError(f"{ENV_SERVER}: {exc}") from None

    def env_token(self) -> str | None:
        raw = self.environ.get(ENV_TOKEN, "").strip()
        return raw or None

    def server_url(self, explicit: str | None = None) -> str:
        """Which server a command talks to: ``explicit`` (``--server``) > ``TETHER_SERVER`` >
        the stored login's server > the local default."""
        if explicit:
            try:
                return normalize_server_url(explicit)
            except ServerUrlError as exc:
                raise CredentialsError(str(exc)) from None
        env = self.env_server()
        if env:
            return env
        stored = self.read_file_or_none()
        return stored.server if stored else DEFAULT_SERVER_URL

    def resolve(self, explicit_server: str | None = None) -> Credentials | None:
        """The credentials to use for the chosen server, or None when not logged in there."""
        server = self.server_url(explicit_server)
        token = self.env_token()
        if token:
            return Credentials(server=server, access_token=token, kind="personal", source="env")
        stored = self.read_file()
        if stored is not None and stored.server == server:
            return stored
        return None

    def read_file_or_none(self) -> Credentials | None:
        try:
            return self.read_file()
        except CredentialsError:
            return None

    # ---- cross-process refresh lock ------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, timeout: float = 15.0) -> Iterator[None]:
        """Hold an exclusive advisory lock on ``credentials.lock`` (blocking, with a deadline)."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + timeout
            while not self._try_lock(fd):
                if time.monotonic() > deadline:
                    raise CredentialsError(f"Timed out waiting for the lock on {self.lock_path}.")
                time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    @contextlib.asynccontextmanager
    async def locked_async(self, timeout: float = 15.0) -> AsyncIterator[None]:
        """:meth:`locked` for event loops: waits without blocking the loop (cancellation-safe)."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + timeout
            while not self._try_lock(fd):
                if time.monotonic() > deadline:
                    raise CredentialsError(f"Timed out waiting for the lock on {self.lock_path}.")
                await asyncio.sleep(0.02)
            yield
        finally:
            os.close(fd)

    def _open_lock(self) -> int:
        self._ensure_home()
        try:
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CredentialsError(f"Cannot open {self.lock_path}: {exc.strerror}.") from None

    @staticmethod
    def _try_lock(fd: int) -> bool:
        if fcntl is None:  # pragma: no cover
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
