"""Rich rendering for the web client, on the server, from well-kept libraries. Pure.

* Markdown (agent text) → HTML with markdown-it-py (CommonMark + tables + strikethrough;
  raw HTML in the source is escaped, never passed through), fenced code highlighted with
  Pygments, and the result sanitised with nh3 (an allow-list of tags, attributes, classes
  and URL schemes) before it reaches a browser.
* Code (a tool's input or output) → highlighted HTML by Pygments (it escapes its input).
* Diffs (Edit / Write / MultiEdit inputs) → a table of lines from :mod:`difflib`, every
  line escaped.

The browser inserts only what these functions return; everything else it shows as text.
"""

from __future__ import annotations

import difflib
import functools
import html
from collections.abc import Sequence
from typing import Any, Final

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.util import ClassNotFound

MAX_TEXT: Final = 200_000  # characters of one item that are rendered; the rest is cut
MAX_DIFF_LINES: Final = 2_000
HIGHLIGHT_CLASS: Final = "hl"
LIGHT_STYLE: Final = "default"
DARK_STYLE: Final = "github-dark"

_TAGS: Final = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "summary", "sup", "table",
    "tbody", "td", "th", "thead", "tr", "ul",
}
_ATTRIBUTES: Final = {
    "a": {"href", "title"},
    "td": {"align"},
    "th": {"align"},
    "ol": {"start"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
}
_URL_SCHEMES: Final = {"http", "https", "mailto"}


def _formatter() -> HtmlFormatter[str]:
    return HtmlFormatter(nowrap=True)


@functools.lru_cache(maxsize=256)
def _lexer_by_name(name: str) -> Lexer | None:
    try:
        return get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=256)
def _lexer_for_path(path: str) -> Lexer | None:
    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def highlight_code(code: str, language: str | None = None, *, path: str | None = None) -> str:
    """``<pre class="hl"><code>…</code></pre>`` with Pygments token classes (escaped)."""
    code = code[:MAX_TEXT]
    lexer = None
    if language:
        lexer = _lexer_by_name(language.strip().lower()[:40])
    if lexer is None and path:
        lexer = _lexer_for_path(path.rsplit("/", 1)[-1][:200])
    lang_class = f' data-lang="{html.escape(language or "", quote=True)}"' if language else ""
    if lexer is None:
        return f'<pre class="{HIGHLIGHT_CLASS}"{lang_class}><code>{html.escape(code)}</code></pre>'
    body = highlight(code, lexer, _formatter())
    return f'<pre class="{HIGHLIGHT_CLASS}"{lang_class}><code>{body}</code></pre>'


def _fence(code: str, lang: str, attrs: str) -> str:
    # markdown-it wraps the highlighter's result unless it starts with <pre
    return highlight_code(code, lang.split()[0] if lang.strip() else None)


@functools.lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _fence})
    md.enable(["table", "strikethrough"])
    return md


def sanitize(fragment: str) -> str:
    """The final gate: only allow-listed tags, attributes, classes and URL schemes survive."""
    return nh3.clean(
        fragment, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow", strip_comments=True,
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


@functools.lru_cache(maxsize=512)
def markdown_html(text: str) -> str:
    """Agent Markdown → sanitised HTML (cached: a reconnect re-renders the same text)."""
    return sanitize(_markdown().render(text[:MAX_TEXT]))


def _split(text: str) -> list[str]:
    return text.splitlines() if text else []


def diff_html(old: str, new: str, path: str | None = None) -> str:
    """A line diff of ``old`` → ``new`` as an escaped table (added, removed and context lines)."""
    a, b = _split(old[:MAX_TEXT]), _split(new[:MAX_TEXT])
    rows: list[str] = []
    added = removed = 0
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3):
        if rows:
            rows.append('<tr class="d-gap"><td class="d-n"></td><td class="d-n"></td><td>⋯</td></tr>')
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    rows.append(_row("ctx", i1 + k + 1, j1 + k + 1, " ", a[i1 + k]))
                continue
            for k in range(i1, i2):
                removed += 1
                rows.append(_row("del", k + 1, None, "-", a[k]))
            for k in range(j1, j2):
                added += 1
                rows.append(_row("add", None, k + 1, "+", b[k]))
        if len(rows) > MAX_DIFF_LINES:
            rows = rows[:MAX_DIFF_LINES]
            rows.append('<tr class="d-gap"><td class="d-n"></td><td class="d-n"></td><td>… (diff cut)</td></tr>')
            break
    if not rows:
        rows.append('<tr class="d-gap"><td class="d-n"></td><td class="d-n"></td><td>(no changes)</td></tr>')
    name = f'<span class="d-path">{html.escape(path)}</span>' if path else ""
    stat = f'<span class="d-stat"><span class="d-plus">+{added}</span> <span class="d-minus">−{removed}</span></span>'
    return (f'<div class="diff"><div class="d-head">{name}{stat}</div>'
            f'<div class="d-scroll"><table class="d-table"><tbody>{"".join(rows)}</tbody></table></div></div>')


def _row(kind: str, left: int | None, right: int | None, sign: str, text: str) -> str:
    ln = "" if left is None else str(left)
    rn = "" if right is None else str(right)
    return (f'<tr class="d-{kind}"><td class="d-n">{ln}</td><td class="d-n">{rn}</td>'
            f'<td class="d-t"><span class="d-s">{sign}</span>{html.escape(text)}</td></tr>')


def render_item(item: Any) -> str:
    """One request item of ``POST /web/render`` → HTML ("" for anything malformed)."""
    if not isinstance(item, dict):
        return ""
    kind = item.get("type")
    if kind == "markdown":
        text = item.get("text")
        return markdown_html(text) if isinstance(text, str) else ""
    if kind == "code":
        text, lang, path = item.get("text"), item.get("language"), item.get("path")
        if not isinstance(text, str):
            return ""
        return highlight_code(text, lang if isinstance(lang, str) else None,
                              path=path if isinstance(path, str) else None)
    if kind == "diff":
        old, new, path = item.get("old", ""), item.get("new", ""), item.get("path")
        if not isinstance(old, str) or not isinstance(new, str):
            return ""
        return diff_html(old, new, path if isinstance(path, str) else None)
    return ""


def render_items(items: Sequence[Any]) -> list[str]:
    return [render_item(item) for item in items]


@functools.lru_cache(maxsize=1)
def pygments_css() -> str:
    """Token colours for ``.hl``: a light style, and a dark one under prefers-color-scheme."""
    light = HtmlFormatter(style=LIGHT_STYLE).get_style_defs(f".{HIGHLIGHT_CLASS}")
    dark = HtmlFormatter(style=DARK_STYLE).get_style_defs(f".{HIGHLIGHT_CLASS}")

    def tokens_only(css: str) -> str:
        # drop the formatter's own background/line-number rules: the app's stylesheet owns them
        keep = [line for line in css.splitlines()
                if line.startswith(f".{HIGHLIGHT_CLASS} .") and not line.startswith(f".{HIGHLIGHT_CLASS} .hll")
                and "linenos" not in line]
        return "\n".join(keep)

    return (f"/* generated by Pygments ({LIGHT_STYLE} / {DARK_STYLE}) */\n{tokens_only(light)}\n"
            f"@media (prefers-color-scheme: dark) {{\n{tokens_only(dark)}\n}}\n")
