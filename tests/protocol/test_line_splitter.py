from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.line_splitter import LineSplitter, Oversize


def test_splits_lines_across_chunks() -> None:
    sp = LineSplitter(100)
    assert sp.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert sp.feed(b':2}\n\n') == [b'{"b":2}', b""]
    assert sp.close() == []


def test_trailing_line_without_newline_comes_at_close() -> None:
    sp = LineSplitter(100)
    assert sp.feed(b"tail") == []
    assert sp.close() == [b"tail"]
    assert sp.close() == []


def test_oversize_line_is_skipped_and_reported_once() -> None:
    sp = LineSplitter(10)
    out = sp.feed(b"ok\n" + b"x" * 7)
    assert out == [b"ok"]
    assert sp.feed(b"y" * 20) == []
    assert sp.buffered == 0, "an over-long line is never buffered"
    assert sp.feed(b"z\nnext\n") == [Oversize(28), b"next"]


def test_exact_limit_is_allowed() -> None:
    sp = LineSplitter(4)
    assert sp.feed(b"abcd\nabcde\n") == [b"abcd", Oversize(5)]


def test_oversize_at_end_of_input() -> None:
    sp = LineSplitter(3)
    assert sp.feed(b"abcdef") == []
    assert sp.close() == [Oversize(6)]


def test_rejects_bad_limit() -> None:
    with pytest.raises(ValueError):
        LineSplitter(0)


@settings(deadline=None, max_examples=200)
@given(lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    sp = LineSplitter(16)
    out: list[bytes | Oversize] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        out += sp.feed(data[a:b])
    out += sp.close()
    expected = [line if len(line) <= 16 else Oversize(len(line)) for line in lines]
    assert out == expected
