"""The pieces of job bodies and results: id length bounds, the text parser, CSV cells."""

from __future__ import annotations

import pytest

from taogate._ids import ID_LENGTH_BOUND, IdPolicy
from taogate.http._jobs import _TextIds, csv_cell
from taogate.http._problems import Problem


@pytest.mark.parametrize(
    ("pattern", "longest"),
    [
        (None, 20),
        (r"\d{6,12}", 12),
        (r"\d+", ID_LENGTH_BOUND),
        (r"[a-z]{1,500}", ID_LENGTH_BOUND),
    ],
)
def test_the_longest_id_a_pattern_admits(pattern: str | None, longest: int) -> None:
    policy = IdPolicy() if pattern is None else IdPolicy(pattern=pattern)
    assert policy.max_length == longest


def test_text_ids_fed_in_any_pieces() -> None:
    body = b"11\r\n\r\n22\n 33 \n11\n44"
    for size in range(1, len(body) + 1):
        parser = _TextIds(IdPolicy(), max_ids=10)
        for i in range(0, len(body), size):
            parser.feed(body[i : i + size])
        assert parser.close() == ["11", "22", "33", "44"], size
        assert parser.line == 6


def test_a_line_without_an_end_is_bounded() -> None:
    parser = _TextIds(IdPolicy(), max_ids=10)
    parser.feed(b"1\n")
    for _ in range(4):  # 4,000 bytes of one line: still within the bound
        parser.feed(b"9" * 1000)
    with pytest.raises(Problem) as caught:
        parser.feed(b"9" * 1000)
    assert caught.value.extensions["line"] == 2


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        ("9.90", "9.90"),
        (None, ""),
        ("", ""),
    ],
)
def test_csv_cells(value: str | None, cell: str) -> None:
    assert csv_cell(value) == cell
