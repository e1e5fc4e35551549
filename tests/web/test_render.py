"""Server-side rendering for the web client: Markdown, highlighting, diffs, sanitising."""

from __future__ import annotations

import time
from html.parser import HTMLParser

import pytest

from tether.server.web import render


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "![x](https://tracker.example/p.png)",
    '<iframe src="https://example.com"></iframe>',
    "<svg onload=alert(1)>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "```html\n<script>alert(1)</script>\n```",
    "```\"><script>alert(1)</script>\nx\n```",
])
def test_markdown_never_lets_markup_through(source: str) -> None:
    out = render.markdown_html(source)
    for tag, attrs in elements(out):
        assert tag in render._TAGS, out
        for name, value in attrs:
            assert name in {"href", "title", "class", "target", "rel", "align", "start"}, out
            if name == "href":
                assert (value or "").startswith(("http://", "https://", "mailto:")), out


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def elements(fragment: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Collect()
    parser.feed(fragment)
    return parser.found


def test_markdown_renders_common_constructs() -> None:
    out = render.markdown_html("# Title\n\nSome **bold** and `code`.\n\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n"
                               "[link](https://example.com/a?b=1)\n\n```python\ndef f():\n    return 1\n```\n~~gone~~")
    assert "<h1>Title</h1>" in out and "<strong>bold</strong>" in out and "<code>code</code>" in out
    assert "<li>a</li>" in out and "<table>" in out and "<s>gone</s>" in out
    assert '<a href="https://example.com/a?b=1"' in out and 'rel="noopener noreferrer nofollow"' in out
    assert '<pre class="hl"><code><span class="k">def</span>' in out


def test_code_and_diff_escape_everything() -> None:
    code = render.highlight_code("<b>&</b>", "no-such-language")
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in code and "<b>" not in code
    assert '<span class="' in render.highlight_code("x = '<b>'", None, path="a.py")
    diff = render.diff_html("keep\n<old>\n", "keep\n<new>\nadded\n", "src/<x>.py")
    assert "&lt;old&gt;" in diff and "&lt;new&gt;" in diff and "<old>" not in diff and "src/&lt;x&gt;.py" in diff
    assert diff.count('class="d-del"') == 1 and diff.count('class="d-add"') == 2
    assert '<span class="d-plus">+2</span>' in diff and '<span class="d-minus">−1</span>' in diff
    assert "(no changes)" in render.diff_html("same\n", "same\n")


def test_render_items_tolerates_garbage() -> None:
    items = [None, 1, {"type": "markdown"}, {"type": "diff", "old": 1}, {"type": "nope", "text": "x"},
             {"type": "code", "text": "x", "language": 5}, {"type": "markdown", "text": "*hi*"}]
    out = render.render_items(items)
    assert out[:5] == ["", "", "", "", ""]
    assert "x" in out[5] and out[6] == "<p><em>hi</em></p>\n"


def test_too_large_items_are_left_as_plain_text() -> None:
    """Over a bound an item renders as "": the browser keeps the full plain text (nothing is cut away)."""
    assert render.diff_html("", "a\n" * (render.MAX_DIFF_LINES + 50)) == ""
    assert render.diff_html("", "".join(f"{i}\n" for i in range(render.MAX_DIFF_ROWS + 1))) == ""
    big = "x" * (render.MAX_ITEM_CHARS + 1)
    for item in ({"type": "markdown", "text": big}, {"type": "code", "text": big},
                 {"type": "diff", "old": big, "new": ""}):
        assert render.render_item(item) == ""
    assert render.render_item({"type": "markdown", "text": "x" * render.MAX_ITEM_CHARS}).startswith("<p>x")


def test_line_diff_shows_context_and_gaps() -> None:
    old = "".join(f"line {i}\n" for i in range(40))
    new = old.replace("line 5\n", "five\n").replace("line 30\n", "thirty\nextra\n")
    out = render.diff_html(old, new)
    assert out.count('class="d-del"') == 2 and out.count('class="d-add"') == 3
    assert out.count('class="d-gap"') == 1  # between the two changes; none before the first or after the last
    assert out.count('class="d-ctx"') == 3 + 3 + 3 + 3
    assert '<td class="d-n">6</td><td class="d-n"></td>' in out  # old line numbers count from 1
    assert '<span class="d-plus">+3</span> <span class="d-minus">−2</span>' in out


@pytest.mark.parametrize("old, new", [
    ("a\nb\n" * 2000, "b\na\n" * 2000),
    ("x\n" * 4000, "x\n" * 2000 + "y\n" + "x\n" * 1999),
    ("a\n" * 2000 + "b\n" * 2000, "b\n" * 2000 + "a\n" * 2000),
    ("".join(f"{i}\n" for i in range(4999)), "".join(f"{i * 7}\n" for i in range(4999))),
])
def test_diffs_that_were_quadratic_are_fast(old: str, new: str) -> None:
    """difflib took 6–17 s on inputs of this kind; measured as CPU time, so machine load does not count."""
    started = time.process_time()
    out = render.diff_html(old, new, time_limit_s=render.DIFF_TIME_LIMIT_S)
    assert time.process_time() - started < 2 * render.DIFF_TIME_LIMIT_S + 0.5
    assert out == "" or out.startswith('<div class="diff">')


def test_render_items_stop_at_the_deadline() -> None:
    items = [{"type": "markdown", "text": "*hi*"}] * 3
    assert render.render_items(items, deadline=time.monotonic() - 1) == ["", "", ""]
    assert render.render_items(items, deadline=time.monotonic() + 60) == ["<p><em>hi</em></p>\n"] * 3


def test_pygments_stylesheet_has_light_and_dark_tokens() -> None:
    css = render.pygments_css()
    assert ".hl .k " in css and "@media (prefers-color-scheme: dark)" in css
    assert "background" not in css.split("@media")[0].split(".hl .k ")[0]
