"""tests/conftest.py's xdist groups: the modules sharing a multi-minute session fixture that each
worker builds land on one worker (directly or through another module), every other module is a group
of its own; the sample lakehouse is built once per run for both workers (`built_once`)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import FIRST_MODULES, _handed_out_first, _worker_groups, built_once


def _item(nodeid: str, *fixtures: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, fixturenames=list(fixtures))


def test_modules_sharing_a_session_fixture_form_one_group_and_the_others_their_own():
    items = [
        _item("tests/test_analytics.py::test_views", "spark", "sample_lakehouse"),
        _item("tests/test_analytics.py::test_plain", "spark"),
        _item("tests/test_train.py::test_eval", "corpus_run", "sample_lakehouse"),
        _item("tests/test_review.py::test_page", "embedded_contaminated_corpus"),
        _item("tests/test_methods.py::test_copy", "contaminated_lakehouse", "embedded_contaminated_corpus"),
        _item("tests/test_dedup.py::test_a", "spark"),
        _item("tests/test_dedup.py::test_b"),
        _item("tests/test_cli.py::test_help"),
    ]
    groups = _worker_groups(items)
    # the sample lakehouse is built once per run for every worker: its modules are groups of their own
    assert (groups["tests/test_analytics.py"], groups["tests/test_train.py"]) == ("test_analytics", "test_train")
    assert groups["tests/test_review.py"] == groups["tests/test_methods.py"] == "embedded_contaminated_corpus"
    assert groups["tests/test_dedup.py"] == "test_dedup" and groups["tests/test_cli.py"] == "test_cli"


def test_a_module_using_both_fixtures_joins_their_groups_into_one():
    items = [
        _item("tests/test_review.py::test_page", "embedded_contaminated_corpus"),
        _item("tests/test_methods.py::test_copy", "contaminated_lakehouse", "embedded_contaminated_corpus"),
        _item("tests/test_both.py::test_one", "spark"),
        _item("tests/test_both.py::test_two", "embedded_contaminated_corpus"),
    ]
    groups = _worker_groups(items)
    assert len({groups[m] for m in ("tests/test_methods.py", "tests/test_review.py", "tests/test_both.py")}) == 1


def test_the_lakehouse_builder_goes_to_one_worker_and_the_cluster_to_the_other_before_any_reader():
    modules = ["tests/test_aggregates.py", "tests/test_analytics.py", "tests/test_cluster_standalone.py"]
    modules += ["tests/test_sample_corpus_pipeline.py", "tests/test_spark_connect.py", "tests/test_train.py"]
    order = sorted(modules, key=_handed_out_first)
    assert [Path(m).name for m in order] == [*FIRST_MODULES, "test_aggregates.py"]


def _build_in(folder: Path, log: Path) -> str:
    with log.open("a") as out:
        out.write("built\n")
    (folder / "table").write_text("rows")
    return f"handle of {folder.name}"


def _ask(folder: str, log: str, results) -> None:
    results.put(built_once(Path(folder), lambda f: _build_in(f, Path(log))))


def test_processes_asking_at_once_build_once_and_all_get_the_result(tmp_path):
    folder, log = tmp_path / "lake", tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")  # fresh processes, as xdist workers are
    results = context.Queue()
    processes = [context.Process(target=_ask, args=(str(folder), str(log), results)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in processes) == ["handle of lake"] * 3
    assert log.read_text() == "built\n" and (folder / "table").read_text() == "rows"


def test_a_failed_build_makes_the_next_caller_fail_instead_of_building_on_its_remains(tmp_path):
    def fail(folder: Path) -> str:
        (folder / "half").write_text("")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        built_once(tmp_path / "lake", fail)
    with pytest.raises(RuntimeError, match="failed or was interrupted"):
        built_once(tmp_path / "lake", lambda folder: "never built")
