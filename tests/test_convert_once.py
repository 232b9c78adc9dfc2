"""udfs/convert_once.py: a conversion runs once however many processes need it at the same moment,
and a folder is either complete or absent."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from udfs.convert_once import converted_once


def _complete(folder: Path) -> bool:
    return (folder / "model.bin").exists()


def _slow_convert(calls: Path):
    def convert(folder: Path) -> None:
        with calls.open("a") as log:
            log.write("converted\n")
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        time.sleep(1.0)  # long enough that the other processes arrive while this one converts
        (folder / "model.bin").write_bytes(b"weights")

    return convert


def _need(target: str, calls: str, results) -> None:
    folder = converted_once(Path(target), _complete, _slow_convert(Path(calls)))
    results.put(sorted(p.name for p in folder.iterdir()))


def test_concurrent_processes_convert_once_and_all_see_the_complete_folder(tmp_path):
    target, calls = tmp_path / "cache" / "model", tmp_path / "calls.log"
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_need, args=(str(target), str(calls), results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    seen = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert calls.read_text().splitlines() == ["converted"]
    assert seen == [["config.json", "model.bin"]] * 3
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".model.tmp")] == []


def test_a_failed_conversion_leaves_nothing_and_the_next_call_converts(tmp_path):
    target, calls = tmp_path / "model", tmp_path / "calls.log"

    def broken(folder: Path) -> None:
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        converted_once(target, _complete, broken)
    assert list(tmp_path.iterdir()) == [tmp_path / ".model.lock"]  # no target, no half-written staging folder
    assert converted_once(target, _complete, _slow_convert(calls)) == target and _complete(target)


def test_an_incomplete_folder_from_an_older_layout_is_replaced(tmp_path):
    target, calls = tmp_path / "model", tmp_path / "calls.log"
    target.mkdir()
    (target / "config.json").write_text("half")
    converted_once(target, _complete, _slow_convert(calls))
    assert (target / "config.json").read_text() == "{}" and _complete(target)
    converted_once(target, _complete, _slow_convert(calls))  # complete now: not converted again
    assert calls.read_text().splitlines() == ["converted"]
