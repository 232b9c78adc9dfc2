"""Byte ranges of big text files, so one 1 GB JSON array or JSONL file spreads over every core.

A JSONL file splits after newlines; a JSON array splits after the commas between its top-level
elements. Those commas cannot be found by looking near an offset (a comma or a bracket may sit in
a string), so `ArrayScanner` follows the array's structure from its first byte, vectorised with
numpy block by block: it is exact for valid JSON because every structural character is ASCII
(never a byte of a multi-byte UTF-8 sequence) and a quote is escaped exactly when an odd run of
backslashes precedes it. `split_points` runs that pass once per big file on an executor and returns
a handful of (start, end, first_row) ranges; each range holds whole records only, so parsing the
ranges in parallel loses and duplicates nothing, and every record keeps the row number (line or
array index) it would have had in one pass over the file.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BLOCK_BYTES = 8 * 1024 * 1024

_OPEN, _CLOSE, _COMMA = 1, 2, 3
_STRUCTURAL = np.zeros(256, dtype=np.int8)
_STRUCTURAL[[ord("["), ord("{")]] = _OPEN
_STRUCTURAL[[ord("]"), ord("}")]] = _CLOSE
_STRUCTURAL[ord(",")] = _COMMA
_QUOTE, _BACKSLASH, _NEWLINE = ord('"'), ord("\\"), ord("\n")


class ByteRange(io.RawIOBase):
    """Bytes [start, end) of a seekable file, as a readable stream (end None: to the end of the file)."""

    def __init__(self, handle, start: int = 0, end: int | None = None):
        self._handle, self._left = handle, None if end is None else end - start
        handle.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = len(buffer) if self._left is None else min(len(buffer), self._left)
        if size <= 0:
            return 0
        data = self._handle.read(size)
        buffer[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)


def blocks(stream, start: int, block_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(absolute offset, bytes) blocks of a stream that begins at byte `start`."""
    offset = start
    while block := stream.read(block_bytes or BLOCK_BYTES):
        yield offset, block
        offset += len(block)


@dataclass
class ArrayScanner:
    """The top-level structure of a JSON array, one block at a time.

    State between blocks: bracket depth, whether the block begins inside a string, and the length
    of the backslash run the previous block ended with. A scanner for a range that begins right
    after a top-level comma starts at depth 1 outside any string.
    """

    depth: int = 0
    in_string: bool = False
    backslashes: int = 0

    def feed(self, block: bytes, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Absolute offsets, in this block, of the array's opening bracket, of the commas
        between its elements and of its closing bracket."""
        data = np.frombuffer(block, dtype=np.uint8)
        quotes = np.flatnonzero(data == _QUOTE)
        is_backslash = data == _BACKSLASH
        if is_backslash.any():
            positions = np.arange(len(data))
            last_other = np.maximum.accumulate(np.where(is_backslash, -1, positions))
            before = np.where(quotes > 0, last_other[np.maximum(quotes - 1, 0)], -1)
            run = quotes - 1 - before + np.where(before == -1, self.backslashes, 0)
            quotes = quotes[run % 2 == 0]
            tail = len(data) - 1 - int(last_other[-1])
            self.backslashes = tail + (self.backslashes if last_other[-1] == -1 else 0)
        else:
            if len(quotes) and quotes[0] == 0 and self.backslashes % 2:
                quotes = quotes[1:]  # escaped by the run the previous block ended with
            self.backslashes = 0
        kinds = _STRUCTURAL[data]
        found = np.flatnonzero(kinds)
        outside = (np.searchsorted(quotes, found) + self.in_string) % 2 == 0
        found = found[outside]
        kind = kinds[found]
        depth_after = self.depth + np.cumsum(np.where(kind == _OPEN, 1, np.where(kind == _CLOSE, -1, 0)))
        opens = found[(kind == _OPEN) & (depth_after == 1)]
        commas = found[(kind == _COMMA) & (depth_after == 1)]
        closes = found[(kind == _CLOSE) & (depth_after == 0)]
        if len(depth_after):
            self.depth = int(depth_after[-1])
        self.in_string = bool((self.in_string + len(quotes)) % 2)
        return opens + offset, commas + offset, closes + offset


def record_ends(kind: str, stream, start: int = 0, block_bytes: int | None = None) -> Iterator[np.ndarray]:
    """Per block, the offsets of the bytes that end a record: newlines (`jsonl`) or the commas
    between top-level array elements (`json_array`)."""
    scanner = ArrayScanner()
    for offset, block in blocks(stream, start, block_bytes):
        if kind == "jsonl":
            yield np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE) + offset
        else:
            _, commas, closes = scanner.feed(block, offset)
            yield commas
            if len(closes):
                return


def split_points(
    kind: str, stream, size: int, shard_bytes: int, block_bytes: int | None = None
) -> list[tuple[int, int | None, int]]:
    """(start, end, first_row) of ranges of about `shard_bytes` that each begin right after a
    record end; the last range runs to the end of the file (end None). One pass over the file."""
    starts = [(0, 0)]
    target, rows_before = shard_bytes, 0
    for ends in record_ends(kind, stream, 0, block_bytes):
        while target < size and len(ends):
            index = int(np.searchsorted(ends, target - 1))
            if index == len(ends):
                break
            start = int(ends[index]) + 1
            if start < size:
                starts.append((start, rows_before + index + 1))
            target = max(target + shard_bytes, start + shard_bytes)
        rows_before += len(ends)
        if target >= size:
            break
    return [(start, starts[i + 1][0] if i + 1 < len(starts) else None, row) for i, (start, row) in enumerate(starts)]
