"""Shared fixtures. Tests that need Spark share one session-scoped local[2] session."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pickle
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
import yaml
from PIL import Image

from etl.config import load_config

if TYPE_CHECKING:
    from etl import tables
    from etl.config import PipelineConfig
    from etl.runs import StageReport

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

# Test tiers (see docs/testing.md): a test's marks follow from the fixtures it uses, directly or
# through other fixtures, so a new test lands in the right tier without anyone remembering to mark it.
TIER_OF_FIXTURE = {
    "spark": "spark",
    "sample_lakehouse": "pipeline",
    "chromium": "browser",
    "cluster": "cluster",
    "sample_corpus": "slow",  # builds the sample corpus's files (no Spark)
}


# Session fixtures that take minutes to build and that each xdist worker builds for itself: every
# module whose tests use one of these runs on one worker (an `xdist_group`), so each is built once per
# `make test`. (The sample lakehouse is built once per run for both workers: `built_once`.)
SHARED_FIXTURES = ("embedded_contaminated_corpus",)
# Handed out first, in this order (`--dist loadgroup` gives the first to one worker, the second to the
# other, the rest to whichever asks next): the module that builds the sample lakehouse (its tests only
# read it), then the work that runs for minutes in processes of its own (a standalone cluster, a Spark
# Connect server) while the lakehouse builds, then the lakehouse's other long readers.
FIRST_MODULES = (
    "test_sample_corpus_pipeline.py",
    "test_cluster_standalone.py",
    "test_spark_connect.py",
    "test_analytics.py",
    "test_train.py",
)


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def _worker_groups(items) -> dict[str, str]:
    """module -> its xdist group: modules that share a SHARED_FIXTURES fixture (directly, through
    another fixture, or through a module that shares another one) form one group; every other module
    is a group of its own, so module-scoped fixtures are built once too."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(SHARED_FIXTURES):
            parent[root(_module(item))] = root(fixture)
    return {_module(item): Path(root(_module(item))).stem for item in items}


def _handed_out_first(module: str) -> int:
    """A module's place in FIRST_MODULES (the others after them, in collection order)."""
    name = Path(module).name
    return FIRST_MODULES.index(name) if name in FIRST_MODULES else len(FIRST_MODULES)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    groups = _worker_groups(items)
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & TIER_OF_FIXTURE.keys():
            item.add_marker(TIER_OF_FIXTURE[fixture])
        item.add_marker(pytest.mark.xdist_group(groups[_module(item)]))
    items.sort(key=lambda item: _handed_out_first(_module(item)))  # stable: order kept otherwise


def pytest_collection_finish(session):
    """On an xdist worker with `--dist loadgroup`: fail unless xdist put every test in its group (it
    marks the node id `...@group`). With pytest 9.2 it silently stops doing so (pytest-xdist#1386),
    and each worker would build every shared fixture again."""
    if not (hasattr(session.config, "workerinput") and session.config.getvalue("loadgroup")):
        return
    ungrouped = [item.nodeid for item in session.items if "@" not in item.nodeid.rsplit("::", 1)[-1]]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist ignored the xdist_group of {len(ungrouped)} tests (e.g. {ungrouped[0]}): "
            "pytest >= 9.2 breaks --dist loadgroup (pytest-xdist#1386); use the locked pytest"
        )


@pytest.fixture(scope="session")
def spark():
    from etl.session import build_session, load_profile

    profile = load_profile("local")
    profile.master = "local[2]"
    session = build_session(
        profile, {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2", "spark.driver.memory": "3g"}
    )
    yield session
    session.stop()


def missing_prerequisite(reason: str) -> NoReturn:
    """A tier's prerequisite is missing: skip with the reason, except under `CI` (where `make test`
    provides every prerequisite), where the test fails, so a tier never goes silently unrun there."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium through playwright. Without CI a missing browser skips with the reason;
    under CI (where `make test` installs it) it fails."""
    path = shutil.which("chromium")
    if not path:
        missing_prerequisite("chromium is not installed: `make chromium` installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """`fresh(path)` makes `path` an empty MLflow SQLite store, unless it exists: a copy of one made
    once per session. A new store creates its tables and runs every schema migration (seconds each
    time); the copy is the same empty store (its Default experiment only) for a file copy."""
    template = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"

    def fresh(path: Path) -> Path:
        if not template.exists():
            from mlflow import MlflowClient

            template.parent.mkdir(exist_ok=True)
            MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates the tables
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, path)
        return path

    return fresh


@pytest.fixture
def make_config(tmp_path, mlflow_store):
    """A PipelineConfig whose lakehouse, MLflow store and data root live in tmp_path."""

    def make(sources_dir: Path | None = None, data_root: Path | None = None, **overrides):
        sets = [
            f"lakehouse={tmp_path / 'lakehouse'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"data_root={data_root or tmp_path}",
            f"sources_dir={sources_dir or tmp_path / 'sources'}",
        ]
        sets += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
        config = load_config(overrides=sets)
        if config.mlflow.enabled:
            mlflow_store(tmp_path / "mlflow.db")
        return config

    return make


def png_bytes(size=(32, 24), color=(200, 30, 30), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def jpeg_bytes(size, color=(10, 120, 200), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else (0, 50, 100, 0)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (pixel data is not even complete)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def dirty_corpus(tmp_path):
    """Three sources in three formats with one problem of each kind the stages must catch."""
    img, sources = tmp_path / "data" / "img", tmp_path / "sources"
    img.mkdir(parents=True)
    sources.mkdir()
    (img / "a.png").write_bytes(png_bytes((64, 48), (255, 0, 0)))
    (img / "b.png").write_bytes(png_bytes((64, 48), (0, 255, 0)))
    (img / "big.jpg").write_bytes(jpeg_bytes((3000, 1200)))
    (img / "cut.jpg").write_bytes(jpeg_bytes((400, 300))[:500])
    (img / "bomb.png").write_bytes(bomb_png(30000, 30000))
    data = tmp_path / "data"
    conv = lambda q, a: [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]  # noqa: E731
    (data / "llava.json").write_text(
        json.dumps(
            [
                {"id": "1", "image": "a.png", "conversations": conv("Colour?", "Red.")},
                {"id": "2", "image": "big.jpg", "conversations": conv("Size?", "Wide.")},
                {"id": "3", "image": "cut.jpg", "conversations": conv("Broken?", "Yes.")},
                {"id": "4", "image": "bomb.png", "conversations": conv("Huge?", "Yes.")},
                {"id": "5", "image": "missing.png", "conversations": conv("Where?", "Nowhere.")},
                {"id": "6", "image": "b.png", "conversations": conv("Long?", " ".join(["word"] * 9000))},
                {
                    "id": "7",
                    "image": "b.png",
                    "conversations": conv("Colour?", "Green.") + conv("  ", "empty question"),
                },
            ]
        )
    )
    (data / "chat.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}),
                "{broken json",
                json.dumps({"messages": [{"role": "user", "content": "3*3?"}, {"role": "assistant", "content": "9"}]}),
            ]
        )
        + "\n"
    )
    (data / "bench.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"qid": "q1", "image": "a.png", "question": "Colour?", "answer": "red"},
                {"qid": "q2", "image": "b.png", "question": "Colour?", "answer": "green"},
            ]
        )
        + "\n"
    )
    specs = [
        {
            "name": "photos",
            "format": "llava_json",
            "location": "llava.json",
            "image_root": "img",
            "subset": "photos",
            "category": "Captioning & Knowledge",
        },
        {
            "name": "maths",
            "format": "sharegpt_jsonl",
            "location": "chat.jsonl",
            "subset": "maths",
            "category": "Mathematics",
        },
        {
            "name": "bench",
            "format": "vqa_jsonl",
            "location": "bench.jsonl",
            "image_root": "img",
            "subset": "bench",
            "category": "General VQA",
            "benchmark": "toy_bench",
            "fields": {"id": "qid"},
        },
    ]
    for spec in specs:
        (sources / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    return {"sources": sources, "data": data}


@pytest.fixture(scope="session")
def embedded_contaminated_corpus(spark, tmp_path_factory):
    """tests/test_decontaminate.py's contaminated corpus through ingest, clean and embed, once per
    session: (corpus, lakehouse). Read-only: the decontamination-method and review tests start from
    a copy of the lakehouse (`contaminated_lakehouse`, or their own)."""
    from etl.jobs import clean, embed, ingest
    from etl.runs import PipelineRun
    from tests.test_decontaminate import contaminated_corpus

    root = tmp_path_factory.mktemp("embedded-corpus")
    corpus = contaminated_corpus.__wrapped__(root)
    config = load_config(
        overrides=[
            f"lakehouse={root / 'lakehouse'}",
            "mlflow.enabled=false",
            f"data_root={corpus['data']}",
            f"sources_dir={corpus['sources']}",
        ]
    )
    run = PipelineRun(spark, config, "embedded-corpus")
    for job in (ingest, clean, embed):
        job.run(run)
    return corpus, root / "lakehouse"


@pytest.fixture
def contaminated_lakehouse(embedded_contaminated_corpus, tmp_path):
    """The contaminated corpus (its files, read-only) and a copy of its lakehouse after ingest,
    clean and embed at tmp_path/lakehouse, where `make_config` puts the lakehouse: the tests run the
    stages after embed on it. A copy of a few small Delta tables instead of re-running three stages."""
    corpus, lakehouse = embedded_contaminated_corpus
    shutil.copytree(lakehouse, tmp_path / "lakehouse")
    return corpus


SAMPLE_CORPUS_SOURCES = [
    "easyvqa",
    "easyvqa_test",
    "charts",
    "chartqa_local",
    "photos",
    "photo_vqa",
    "arithmetic",
    "gui_desktop",
    "gui_mobile",
]


def run_temp(tmp_path_factory) -> Path:
    """This test run's temporary folder, which all its xdist workers share (each worker's basetemp is
    a folder of it); without xdist, the session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(folder: Path, build: Callable[[Path], object]) -> object:
    """What `build(folder)` returned, built by the first of the processes that ask (the xdist workers
    of a run): the others wait on a lock file beside `folder`, then read the result (pickled in
    `folder`). A build that failed leaves `folder` without it, and a later caller fails at once
    rather than build again on top of the remains."""
    result = folder / "built.pickle"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another worker builds
        if not result.exists():
            if folder.exists():
                raise RuntimeError(f"an earlier build of {folder} failed or was interrupted (see its error)")
            folder.mkdir()
            pickled = pickle.dumps(build(folder))
            result.with_suffix(".tmp").write_bytes(pickled)
            result.with_suffix(".tmp").replace(result)
    return pickle.loads(result.read_bytes())


@dataclass
class BuiltRun:
    """What the sample lakehouse's tests read of the PipelineRun that built it, picklable, so the
    worker that did not build it has it too."""

    config: PipelineConfig
    run_id: str
    mlflow_run_id: str | None
    reports: list[StageReport]

    def table(self, name: str) -> tables.TableRef:
        from etl import tables

        return tables.TableRef.of(self.config, name)


@pytest.fixture(scope="session")
def sample_lakehouse(spark, tmp_path_factory, mlflow_store):
    """The sample corpus through every pipeline stage, once per test run: (run, manifest, root), `run`
    a BuiltRun.

    Shared by the end-to-end pipeline test, the analytics, report, notebook and training tests, so
    the multi-minute pipeline runs once: on the first xdist worker that needs it, while the other
    waits, then reads the same folder (`built_once`). Its tests read it and write nothing into it
    but the training snapshots (tests/test_train.py, one module, in `_training`, which no other test
    reads). MLflow records to a SQLite store under root."""

    def build(root: Path) -> BuiltRun:
        from etl.jobs import STAGES
        from etl.runs import PipelineRun
        from etl.samples.build import build_samples

        build_samples(root / "data" / "samples")
        mlflow_store(root / "mlflow.db")
        config = load_config(
            overrides=[
                f"lakehouse={root / 'lake'}",
                f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                f"data_root={root / 'data'}",
                f"sources={json.dumps(SAMPLE_CORPUS_SOURCES)}",
            ]
        )
        run = PipelineRun(spark, config, "corpus-test")
        try:
            for stage in STAGES:
                stage.runner()(run)
        finally:
            run.close()
        return BuiltRun(run.config, run.run_id, run.mlflow_run_id, run.reports)

    root = run_temp(tmp_path_factory) / "sample-lakehouse"
    run = built_once(root, build)
    manifest = json.loads((root / "data" / "samples" / "manifest.json").read_text())
    return run, manifest, root


@pytest.fixture(scope="session")
def corpus_run(sample_lakehouse):
    """(run, manifest) of the session's sample lakehouse."""
    run, manifest, _ = sample_lakehouse
    return run, manifest
