"""Server URLs as the CLI accepts them (pure).

:func:`normalize_server_url` turns what a person typed (``localhost:8787``,
``https://tether.example.com/``) into the canonical base URL that credentials are stored
under: scheme ``http``/``https``, lowercase host, no trailing slash, no query or fragment.
:func:`is_plaintext_remote` says whether tokens would travel in clear text to another
machine (plain ``http`` to a host that is not loopback), which the CLI warns about.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DEFAULT_SERVER_URL",
    "EXAMPLES",
    "ServerUrlError",
    "is_loopback_host",
    "is_plaintext_remote",
    "normalize_server_url",
]

DEFAULT_SERVER_URL = "http://127.0.0.1:8787"


class ServerUrlError(ValueError):
    """Not a usable server URL."""


_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")  # "_": container names
EXAMPLES = "e.g. https://tether.example.com or http://127.0.0.1:8787"


def normalize_server_url(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise ServerUrlError("The server URL is empty.")
    bare = "://" not in text
    if bare:
        text = ("http://" if _looks_local(text) else "https://") + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ServerUrlError(f"The server URL must start with http:// or https:// (got {raw!r}).")
    if not parts.hostname:
        raise ServerUrlError(f"The server URL has no host: {raw!r}.")
    if parts.query or parts.fragment:
        raise ServerUrlError(f"The server URL must not have a query or fragment: {raw!r}.")
    if parts.username or parts.password:
        raise ServerUrlError("The server URL must not contain a user name or password.")
    try:
        port = parts.port
    except ValueError:
        raise ServerUrlError(f"The server URL has a bad port: {raw!r}.") from None
    host = parts.hostname.lower()
    if not _valid_host(host):
        raise ServerUrlError(f"{raw!r} is not a server URL: {host!r} is not a host name ({EXAMPLES}).")
    if bare and port is None and "." not in host and not is_loopback_host(host):
        # a bare word is more likely a typo than a one-label intranet host; those take a scheme
        raise ServerUrlError(f"{raw!r} does not look like a server URL ({EXAMPLES}; a one-word host name "
                             f"needs its scheme: https://{host}).")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, "", ""))


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def _host_of(text: str) -> str:
    head = text.split("/", 1)[0]
    if head.startswith("["):
        return head[1:].split("]", 1)[0]
    return head.rsplit(":", 1)[0] if head.count(":") == 1 else head


def _looks_local(text: str) -> bool:
    return is_loopback_host(_host_of(text))


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_plaintext_remote(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback_host(parts.hostname or "")
