"""The web client's static files: plain ES modules, CSS and an icon shipped in ``static/``,
plus the Pygments token stylesheet generated at run time. No build step.

URLs carry a content hash (``/static/app.css?v=1a2b3c4d``) so a new release is picked up
at once; the files are served with ``no-cache`` + ETag, so module imports that carry no
hash are revalidated too.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import re
from dataclasses import dataclass
from typing import Final

from tether.server.web.render import pygments_css

STATIC_DIR: Final = pathlib.Path(__file__).resolve().parent / "static"
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.(js|css|svg)")
_TYPES: Final = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.lru_cache(maxsize=64)
def load(name: str) -> Asset | None:
    """A static file by its bare name (no directories), or None."""
    if not _NAME.fullmatch(name):
        return None
    if name == "pygments.css":
        body = pygments_css().encode()
    else:
        path = STATIC_DIR / name
        if not path.is_file():
            return None
        body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    return Asset(body, _TYPES[name.rsplit(".", 1)[1]], f'"{digest}"')


def asset_url(name: str) -> str:
    asset = load(name)
    version = asset.etag.strip('"')[:10] if asset else "0"
    return f"/static/{name}?v={version}"
