"""Server URLs as the CLI accepts them: what a person types becomes one canonical base URL, bad
input is refused with a reason, and plain http to another machine is recognised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.server_url import (
    ServerUrlError,
    is_loopback_host,
    is_plaintext_remote,
    normalize_server_url,
)


@pytest.mark.parametrize(("raw", "url"), [
    ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
    ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
    ("  http://127.0.0.1:8787  ", "http://127.0.0.1:8787"),
    ("127.0.0.1:8787", "http://127.0.0.1:8787"),
    ("localhost:9000", "http://localhost:9000"),
    ("localhost", "http://localhost"),
    ("app.localhost/x/", "http://app.localhost/x"),
    ("[::1]:8787", "http://[::1]:8787"),
    ("http://[::1]", "http://[::1]"),
    ("tether.example.com", "https://tether.example.com"),
    ("tether.example.com.", "https://tether.example.com."),
    ("10.0.0.7:8787", "https://10.0.0.7:8787"),
    ("HTTPS://Tether.Example.com:8443/base/", "https://tether.example.com:8443/base"),
    ("https://intranet-box", "https://intranet-box"),
    ("https://my_container:8787", "https://my_container:8787"),
    ("intranet-box:8787", "https://intranet-box:8787"),
])
def test_normalize_server_url(raw: str, url: str) -> None:
    assert normalize_server_url(raw) == url


@pytest.mark.parametrize(("raw", "reason"), [
    ("", "empty"),
    ("  ", "empty"),
    ("ftp://x", "must start with http:// or https://"),
    ("http://", "no host"),
    ("https://h/?q=1", "query or fragment"),
    ("https://h/#f", "query or fragment"),
    ("https://u:p@h", "user name or password"),
    ("https://u@h", "user name or password"),
    ("http://h:99999", "bad port"),
    ("http://h:port", "bad port"),
    ("not-a-url", "needs its scheme: https://not-a-url"),
    ("not a url", "is not a host name"),
    ("https://bad host", "is not a host name"),
    ("https://-x.example", "is not a host name"),
    ("https://x..example", "is not a host name"),
    ("https://" + "a." * 127 + "com", "is not a host name"),
])
def test_bad_server_urls_say_why(raw: str, reason: str) -> None:
    with pytest.raises(ServerUrlError) as caught:
        normalize_server_url(raw)
    assert reason in str(caught.value)


def test_server_url_error_is_a_value_error() -> None:
    assert issubclass(ServerUrlError, ValueError)


@given(st.sampled_from(["http://127.0.0.1:8787", "localhost:1", "Tether.Example.com/a/", "https://[::1]:9/b",
                        "intranet:80"]))
@settings(deadline=None)
def test_normalizing_is_idempotent(raw: str) -> None:
    once = normalize_server_url(raw)
    assert normalize_server_url(once) == once


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LOCALHOST", True), ("app.localhost", True), ("127.0.0.1", True), ("127.8.9.1", True),
    ("::1", True), ("[::1]", True), ("example.com", False), ("10.0.0.1", False), ("", False),
    ("localhost.example.com", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("url", "plaintext_remote"), [
    ("http://192.168.1.5:8787", True),
    ("http://tether.lan", True),
    ("http://127.0.0.1:8787", False),
    ("http://localhost:8787", False),
    ("http://[::1]:8787", False),
    ("https://tether.example.com", False),
    ("https://192.168.1.5", False),
])
def test_plaintext_remote(url: str, plaintext_remote: bool) -> None:
    assert is_plaintext_remote(url) is plaintext_remote
