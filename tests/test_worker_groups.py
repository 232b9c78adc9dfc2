"""tests/conftest.py's xdist groups: the modules sharing a multi-minute session fixture land on one
worker (directly or through another module), every other module is a group of its own."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import _worker_groups


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
    assert groups["tests/test_analytics.py"] == groups["tests/test_train.py"] == "sample_lakehouse"
    assert groups["tests/test_review.py"] == groups["tests/test_methods.py"] == "embedded_contaminated_corpus"
    assert groups["tests/test_dedup.py"] == "test_dedup" and groups["tests/test_cli.py"] == "test_cli"


def test_a_module_using_both_fixtures_joins_their_groups_into_one():
    items = [
        _item("tests/test_analytics.py::test_views", "sample_lakehouse"),
        _item("tests/test_review.py::test_page", "embedded_contaminated_corpus"),
        _item("tests/test_both.py::test_one", "sample_lakehouse"),
        _item("tests/test_both.py::test_two", "embedded_contaminated_corpus"),
    ]
    groups = _worker_groups(items)
    assert len({groups[m] for m in ("tests/test_analytics.py", "tests/test_review.py", "tests/test_both.py")}) == 1
