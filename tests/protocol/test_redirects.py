"""The ``next`` rule of login pages and login links: same-origin relative paths only."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.redirects import DEFAULT_NEXT, MAX_NEXT_LEN, next_or_default, safe_next_path

ORIGIN = "https://tether.example"


@pytest.mark.parametrize("value", [
    "/code", "/code?bridge=env_01abc", "/code/session_01abc", "/device?user_code=ABCD-EFGH",
    "/code?status=all&environment=env_1", "/%2F%2Fevil.example", "/a/b/../c", "/x#frag",
])
def test_same_origin_paths_pass(value: str) -> None:
    assert safe_next_path(value) == value
    assert next_or_default(value) == value


@pytest.mark.parametrize("value", [
    "//evil.example", "//evil.example/code", "/\\evil.example", "\\\\evil.example", "/code\\..\\x",
    "https://evil.example", "http://evil.example/code", "javascript:alert(1)", "evil.example",
    "code", "", " /code", "/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "/\x00",
    "/code\x7f", "/c o d e", "/\u3000/evil.example", "/\uff0f\uff0fevil.example", "/" + "a" * MAX_NEXT_LEN,
    None, 42, ["/code"],
])
def test_everything_else_is_refused(value: object) -> None:
    assert safe_next_path(value) is None
    assert next_or_default(value) == DEFAULT_NEXT


def _browser_target(value: str) -> str:
    """Where a browser would go for ``Location: value`` on ORIGIN (it drops tabs and newlines,
    and reads a backslash as a slash in http(s) URLs)."""
    cleaned = value.replace("\t", "").replace("\n", "").replace("\r", "").strip("\x00 ").replace("\\", "/")
    return urljoin(ORIGIN + "/login", cleaned)


@settings(deadline=None, max_examples=400)
@given(st.one_of(st.text(max_size=60), st.text(alphabet="/\\\t\n :.%?#@evil", max_size=20).map(lambda s: "/" + s)))
def test_an_accepted_value_never_leaves_the_origin(value: str) -> None:
    accepted = safe_next_path(value)
    if accepted is not None:
        target = urlsplit(_browser_target(accepted))
        assert (target.scheme, target.netloc) == ("https", "tether.example"), value
