"""Rich rendering for the web client, on the server, from well-kept libraries. Pure.

* Markdown (agent text) → HTML with markdown-it-py (CommonMark + tables + strikethrough;
  raw HTML in the source is escaped, never passed through), fenced code highlighted with
  Pygments, and the result sanitised with nh3 (an allow-list of tags, attributes, classes
  and URL schemes) before it reaches a browser.
* Code (a tool's input or output) → highlighted HTML by Pygments (it escapes its input).
* Diffs (Edit / Write / MultiEdit inputs) → a table of lines, every line escaped. The line
  diff is diff-match-patch's (Myers, O(N·D), with a time limit after which it settles for a
  coarser diff): difflib's matcher is quadratic in the line count, and 8,000 short lines took
  it 10 s (issue #11).

Every item is bounded: text longer than ``MAX_ITEM_CHARS`` or a diff of more than
``MAX_DIFF_LINES`` lines a side (or one that would show more than ``MAX_DIFF_ROWS`` rows)
renders as "" — the browser keeps showing the plain text it already has, so nothing is cut
away. :func:`render_items` stops at a deadline (the rest is "" too). The server runs it in
a worker thread (web/renderer.py), never on the event loop.

The browser inserts only what these functions return; everything else it shows as text.
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Sequence
from typing import Any, Final

import nh3
from diff_match_patch import diff_match_patch
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.util import ClassNotFound

MAX_ITEM_CHARS: Final = 100_000  # longer text (or old + new of a diff) is left as plain text
MAX_DIFF_LINES: Final = 5_000  # a side
MAX_DIFF_ROWS: Final = 2_000  # rows a diff may show
DIFF_TIME_LIMIT_S: Final = 0.5  # then diff-match-patch returns a valid, coarser diff
CACHED_CHARS: Final = 8_192  # only short Markdown is cached (a reconnect re-renders it)
CONTEXT_LINES: Final = 3
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


def markdown_html(text: str) -> str:
    """Agent Markdown → sanitised HTML."""
    if len(text) <= CACHED_CHARS:
        return _markdown_cached(text)
    return sanitize(_markdown().render(text))


@functools.lru_cache(maxsize=512)
def _markdown_cached(text: str) -> str:
    return sanitize(_markdown().render(text))


def line_diff(old: str, new: str, time_limit_s: float = DIFF_TIME_LIMIT_S) -> list[tuple[int, list[str]]]:
    """``old`` → ``new`` as runs of lines: (0 equal | -1 removed | 1 added, lines)."""
    a, b = _lines(old), _lines(new)
    index: dict[str, str] = {}
    # one character per distinct line, so the character diff is the line diff
    code_a = "".join(index.setdefault(line, chr(len(index) + 1)) for line in a)
    code_b = "".join(index.setdefault(line, chr(len(index) + 1)) for line in b)
    text_of = {char: line for line, char in index.items()}
    dmp = diff_match_patch()
    dmp.Diff_Timeout = max(time_limit_s, 0.001)
    return [(op, [text_of[c] for c in chars]) for op, chars in dmp.diff_main(code_a, code_b, False)]


def _lines(text: str) -> list[str]:
    return text.splitlines() if text else []


def diff_html(old: str, new: str, path: str | None = None, *, time_limit_s: float = DIFF_TIME_LIMIT_S) -> str:
    """A line diff of ``old`` → ``new`` as an escaped table (added, removed and context lines);
    "" when it is too large to show (the caller keeps the plain text)."""
    if len(old) + len(new) > MAX_ITEM_CHARS or max(old.count("\n"), new.count("\n")) >= MAX_DIFF_LINES:
        return ""
    rows = _diff_rows(line_diff(old, new, time_limit_s))
    if rows is None:
        return ""
    added = sum(1 for r in rows if r[0] == "add")
    removed = sum(1 for r in rows if r[0] == "del")
    cells = [_GAP if kind == "gap" else _row(kind, left, right, text) for kind, left, right, text in rows]
    if not cells:
        cells.append('<tr class="d-gap"><td class="d-n"></td><td class="d-n"></td><td>(no changes)</td></tr>')
    name = f'<span class="d-path">{html.escape(path)}</span>' if path else ""
    stat = f'<span class="d-stat"><span class="d-plus">+{added}</span> <span class="d-minus">−{removed}</span></span>'
    return (f'<div class="diff"><div class="d-head">{name}{stat}</div>'
            f'<div class="d-scroll"><table class="d-table"><tbody>{"".join(cells)}</tbody></table></div></div>')


_GAP: Final = '<tr class="d-gap"><td class="d-n"></td><td class="d-n"></td><td>⋯</td></tr>'
Row = tuple[str, int | None, int | None, str]  # kind (ctx/del/add/gap), old line no., new line no., text


def _diff_rows(runs: list[tuple[int, list[str]]]) -> list[Row] | None:
    """Changed lines with ``CONTEXT_LINES`` of context around each change, a gap row where
    unchanged lines are left out; None past ``MAX_DIFF_ROWS``."""
    rows: list[Row] = []
    left = right = 1
    for index, (op, lines) in enumerate(runs):
        if op == 0:
            first, last = index == 0, index == len(runs) - 1
            head = [] if first else lines[:CONTEXT_LINES]
            tail = [] if last else lines[max(len(head), len(lines) - CONTEXT_LINES):]
            rows += [("ctx", left + k, right + k, line) for k, line in enumerate(head)]
            if len(head) + len(tail) < len(lines) and not first and not last:
                rows.append(("gap", None, None, ""))
            skip = len(lines) - len(tail)
            rows += [("ctx", left + skip + k, right + skip + k, line) for k, line in enumerate(tail)]
            left += len(lines)
            right += len(lines)
        elif op < 0:
            rows += [("del", left + k, None, line) for k, line in enumerate(lines)]
            left += len(lines)
        else:
            rows += [("add", None, right + k, line) for k, line in enumerate(lines)]
            right += len(lines)
        if len(rows) > MAX_DIFF_ROWS:
            return None
    return rows


def _row(kind: str, left: int | None, right: int | None, text: str) -> str:
    sign = {"ctx": " ", "del": "-", "add": "+"}[kind]
    ln = "" if left is None else str(left)
    rn = "" if right is None else str(right)
    return (f'<tr class="d-{kind}"><td class="d-n">{ln}</td><td class="d-n">{rn}</td>'
            f'<td class="d-t"><span class="d-s">{sign}</span>{html.escape(text)}</td></tr>')


def render_item(item: Any, *, time_limit_s: float = DIFF_TIME_LIMIT_S) -> str:
    """One request item of ``POST /web/render`` → HTML ("" for anything malformed or too large)."""
    if not isinstance(item, dict):
        return ""
    kind = item.get("type")
    if kind == "markdown":
        text = item.get("text")
        return markdown_html(text) if isinstance(text, str) and len(text) <= MAX_ITEM_CHARS else ""
    if kind == "code":
        text, lang, path = item.get("text"), item.get("language"), item.get("path")
        if not isinstance(text, str) or len(text) > MAX_ITEM_CHARS:
            return ""
        return highlight_code(text, lang if isinstance(lang, str) else None,
                              path=path if isinstance(path, str) else None)
    if kind == "diff":
        old, new, path = item.get("old", ""), item.get("new", ""), item.get("path")
        if not isinstance(old, str) or not isinstance(new, str):
            return ""
        return diff_html(old, new, path if isinstance(path, str) else None, time_limit_s=time_limit_s)
    return ""


def render_items(items: Sequence[Any], deadline: float | None = None) -> list[str]:
    """Each item rendered, in order, until ``deadline`` (``time.monotonic()``); the rest are ""."""
    out: list[str] = []
    for item in items:
        left = DIFF_TIME_LIMIT_S if deadline is None else deadline - time.monotonic()
        out.append(render_item(item, time_limit_s=min(left, DIFF_TIME_LIMIT_S)) if left > 0 else "")
    return out


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
