"""etl/tables.py: concurrent writers (decontaminate and dedup merge into removed_samples at once); pinned reads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from etl import tables
from etl.config import PipelineConfig
from etl.runs import MissingTableError, read_pinned
from etl.schema import REMOVED_SAMPLES


class Conflict(Exception):
    """Stands in for delta-spark's ConcurrentAppendException in the unit test of the retry loop."""


Conflict.__name__ = "ConcurrentAppendException"


def test_retry_repeats_a_write_that_lost_a_commit_race_and_nothing_else(monkeypatch):
    monkeypatch.setattr(tables.time, "sleep", lambda seconds: None)
    calls = []

    def write():
        calls.append(1)
        if len(calls) < 3:
            raise Conflict("another writer committed first")
        return "version"

    assert tables.retry_on_conflict(write, "merge into t") == "version" and len(calls) == 3
    with pytest.raises(ValueError):
        tables.retry_on_conflict(lambda: (_ for _ in ()).throw(ValueError("bad rows")), "merge into t")


def _merge_removals(session, ref, stage: str, ids, keys=("sample_id", "stage"), **options) -> int:
    """`stage`'s removed_samples rows for `ids`, merged into `ref` under that stage's commit."""
    rows = [{"sample_id": i, "subset": "a", "stage": stage, "reason": "r", "detail": "", "run_id": stage} for i in ids]
    commit = tables.Commit(run_id=f"run-{stage}", stage=stage, config_hash="h", git_revision="g")
    frame = session.createDataFrame(rows, REMOVED_SAMPLES)
    return tables.merge_insert(session, ref, frame, list(keys), commit, REMOVED_SAMPLES, **options)


def _stage_of_version(spark, ref) -> dict[int, str]:
    history = spark.sql(f"DESCRIBE HISTORY {ref.sql}").collect()
    return {h["version"]: json.loads(h["userMetadata"])["stage"] for h in history if h["userMetadata"]}


def test_two_stages_merging_into_one_table_at_once_both_land(spark, tmp_path, caplog):
    """Four writers (two rounds of decontaminate and dedup, each in its own session, as bundle tasks
    are) MERGE into one new table at the same time; without retries one of them fails with Delta's
    concurrent-modification error. Each records the version of its own commit, not the newest."""
    ref = tables.TableRef(name="removed_samples", path=str(tmp_path / "removed_samples"))

    def write(stage: str, start: int) -> int:
        return _merge_removals(spark.newSession(), ref, stage, [f"s{i}" for i in range(start, start + 50)])

    writers = [("decontaminate", 0), ("dedup", 0), ("decontaminate", 25), ("dedup", 25)]
    with ThreadPoolExecutor(len(writers)) as pool:
        versions = list(pool.map(lambda w: write(*w), writers))

    assert len(set(versions)) == len(writers)
    stage_of = _stage_of_version(spark, ref)
    assert [stage_of[v] for v in versions] == [stage for stage, _ in writers]
    assert "another writer committed first" in caplog.text  # the race happened and was retried
    landed = {(r["sample_id"], r["stage"]) for r in tables.read(spark, ref).collect()}
    expected = {(f"s{i}", stage) for stage in ("decontaminate", "dedup") for i in range(75)}
    assert landed == expected
    assert tables.read(spark, ref).count() == len(expected)  # no row twice


def test_writers_on_threads_of_one_session_commit_under_their_own_metadata(spark, tmp_path):
    """A MERGE's commit metadata travels in the session's conf: writers on threads of one session
    take turns, so no commit carries another writer's run or stage."""
    stages = ["ingest", "clean", "embed", "dedup"]

    def write(stage: str) -> tuple[tables.TableRef, int]:
        ref = tables.TableRef(name=stage, path=str(tmp_path / stage))
        return ref, _merge_removals(spark, ref, stage, [f"s{i}" for i in range(20)], keys=["sample_id"])

    with ThreadPoolExecutor(len(stages)) as pool:
        written = list(pool.map(write, stages))
    for stage, (ref, version) in zip(stages, written, strict=True):
        assert _stage_of_version(spark, ref) == {version: stage}
    assert spark.conf.get(tables.USER_METADATA_CONF, None) is None  # nothing left set on the session


def test_a_stage_replaces_only_the_rows_it_owns(spark, tmp_path):
    """removed_samples under a changed configuration: decontaminate's rows become exactly its new
    removals (a sample an earlier method removed comes back), and dedup's rows are untouched."""
    ref = tables.TableRef(name="removed_samples", path=str(tmp_path / "removed_samples"))

    def write(stage: str, ids: list[str]) -> int:
        return _merge_removals(spark, ref, stage, ids, owned_rows=f"t.stage = '{stage}'")

    write("dedup", ["s1", "s2"])
    write("decontaminate", ["s1", "s3", "s4"])
    write("decontaminate", ["s3", "s5"])
    landed = {(r["sample_id"], r["stage"]) for r in tables.read(spark, ref).collect()}
    assert landed == {("s1", "dedup"), ("s2", "dedup"), ("s3", "decontaminate"), ("s5", "decontaminate")}
    write("decontaminate", [])  # e.g. policy `flag` now: none of its rows stay
    assert {r["stage"] for r in tables.read(spark, ref).collect()} == {"dedup"}


def test_a_pinned_read_records_the_version_and_names_the_stage_that_writes_a_missing_table(spark, tmp_path):
    config = PipelineConfig(lakehouse=str(tmp_path))
    versions: dict[str, int] = {}
    with pytest.raises(MissingTableError, match=r"table silver_samples \(.*\) does not exist; run `finevision clean`"):
        read_pinned(spark, config, "silver_samples", versions)
    assert read_pinned(spark, config, "turn_ratings", versions, required=False) is None
    assert versions == {}  # nothing read, nothing recorded

    ref = tables.TableRef.of(config, "removed_samples")
    row = {"sample_id": "s0", "subset": "a", "stage": "dedup", "reason": "r", "detail": "", "run_id": "x"}
    commit = tables.Commit(run_id="x", stage="dedup", config_hash="h", git_revision="g")
    first = tables.append(spark, ref, spark.createDataFrame([row], REMOVED_SAMPLES), commit, REMOVED_SAMPLES)
    pinned = read_pinned(spark, config, "removed_samples", versions, required=False)
    tables.append(spark, ref, spark.createDataFrame([row], REMOVED_SAMPLES), commit, REMOVED_SAMPLES)
    assert versions == {"removed_samples": first}
    assert pinned is not None and pinned.count() == 1  # the pinned version, not the later append


def test_a_table_an_older_version_wrote_gains_the_fields_a_newer_schema_adds(spark, tmp_path):
    """contamination_hits' evidence struct grows when the verifier gains a feature: a lakehouse an
    older version wrote takes the new rows, and its old rows read null in the new fields."""
    from pyspark.sql.types import FloatType, StringType, StructField, StructType

    evidence = [StructField("score", FloatType())]
    old = StructType([StructField("id", StringType()), StructField("evidence", StructType(evidence))])
    new = StructType(
        [
            StructField("id", StringType()),
            StructField("evidence", StructType([*evidence, StructField("tiles_unexplained", FloatType())])),
            StructField("note", StringType()),
        ]
    )
    ref = tables.TableRef(name="hits", path=str(tmp_path / "hits"))
    commit = tables.Commit(run_id="r", stage="decontaminate", config_hash="h", git_revision="g")
    tables.merge_insert(spark, ref, spark.createDataFrame([("a", (0.9,))], old), ["id"], commit, old)
    assert tables.missing_fields(old, new) == [
        "`evidence`.`tiles_unexplained` float AFTER `score`",
        "`note` string AFTER `evidence`",
    ]

    tables.merge_insert(spark, ref, spark.createDataFrame([("b", (0.8, 0.01), "n")], new), ["id"], commit, new)

    rows = {r["id"]: r for r in tables.read(spark, ref).collect()}
    assert tables.read(spark, ref).schema == new
    assert rows["a"]["evidence"]["tiles_unexplained"] is None and rows["a"]["note"] is None
    assert rows["b"]["evidence"]["tiles_unexplained"] == pytest.approx(0.01) and rows["b"]["note"] == "n"


class _JavaException:
    """What py4j hands over for a JVM exception: its class is asked by name."""

    def __init__(self, simple_name: str):
        self.simple_name = simple_name

    def getClass(self):  # noqa: N802 - the JVM's method name
        return self

    def getSimpleName(self):  # noqa: N802
        return self.simple_name


def test_a_conflict_pyspark_40_leaves_unconverted_is_still_a_conflict():
    """pyspark 4.0 raises Delta's ProtocolChangedException from `spark.sql` as a bare Py4JJavaError
    (seen under `make test-compat`); 4.1 converts it. Both must be retried; other JVM errors must not."""

    def raised(simple_name: str) -> Exception:
        error = RuntimeError("An error occurred while calling o127.sql.")  # a Py4JJavaError's shape
        error.java_exception = _JavaException(simple_name)  # type: ignore[attr-defined]
        return error

    assert tables.is_write_conflict(raised("ProtocolChangedException"))
    assert tables.is_write_conflict(raised("ConcurrentAppendException"))
    assert not tables.is_write_conflict(raised("AnalysisException"))
    assert not tables.is_write_conflict(ValueError("ProtocolChangedException"))
