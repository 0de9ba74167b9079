"""The JSON-lines stream helpers: batching with a last-batch flag, and line splitting with gzip."""

from __future__ import annotations

import gzip

from esm_dagster.providers.jsonlines import _lines, batches


def test_batches_flag_the_last_one_and_never_yield_nothing() -> None:
    assert list(batches(range(5), 2)) == [([0, 1], False), ([2, 3], False), ([4], True)]
    assert list(batches(range(4), 2)) == [([0, 1], False), ([2, 3], True)]
    assert list(batches([], 3)) == [([], True)]
    assert list(batches(range(2), 5)) == [([0, 1], True)]


def test_lines_split_across_chunks_and_gunzip_on_the_fly() -> None:
    text = b'{"a":1}\n{"b":2}\n{"c":3}'
    chunks = [text[:5], text[5:11], text[11:]]
    assert list(_lines(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    zipped = gzip.compress(text + b"\n")
    assert [line for line in _lines([zipped[:7], zipped[7:]]) if line] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
