"""A DataFrame used by several actions: cached on classic sessions; on Databricks serverless, which
refuses caching and checkpoints, recomputed or kept in a scratch Delta table.

    with reused(parsed, run.scratch()) as parsed:   # parsing runs once, however many actions follow
        counts = counts_by_reason(parsed)
        ...

Which one a call site asks for is its own decision:
- recompute (no scratch): where the frame is cheap to rebuild from pinned table versions and every
  rebuild gives the same rows (joins, filters, aggregations, an order with a unique tiebreak);
- a scratch table: where rebuilding repeats expensive work (parsing files, image and model UDFs,
  judges, FAISS search) or could give other rows (anything with rand/uuid/sampling, an endpoint's
  answers), and where lineage would otherwise grow without bound (connected components' rounds).

A session is serverless when its profile says so (`serverless: true`, conf/profiles/serverless.yaml);
`build_session` marks it and `is_serverless` reads the mark. See docs/clusters.md, "Databricks serverless".
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from etl.config import PipelineConfig
from etl.session import is_serverless
from etl.tables import TableRef

log = logging.getLogger("finevision")

SCRATCH_PREFIX = "scratch_"  # scratch tables: <catalog>.<schema>.scratch_<id>, or <lakehouse>/_scratch/scratch_<id>


class Scratch:
    """Scratch Delta tables for one block of work, all dropped when the block ends.

    `keep(frame)` writes the frame once and returns a frame reading what was written. Tables go
    where the pipeline's tables go: managed tables of `catalog` (dropped with DROP TABLE), else
    folders under `<lakehouse>/_scratch/` (removed when the lakehouse is a local path; on object
    storage the folder stays for a lifecycle rule to clear)."""

    def __init__(self, spark: SparkSession, config: PipelineConfig):
        self.spark, self.config = spark, config
        self.refs: list[TableRef] = []

    def _new_ref(self) -> TableRef:
        name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:16]}"
        if self.config.catalog:
            return TableRef.of(self.config, name)
        lake = TableRef.of(self.config, "scratch").location.rsplit("/", 1)[0]
        return TableRef(name=name, path=f"{lake}/_scratch/{name}")

    def keep(self, frame: DataFrame) -> DataFrame:
        ref = self._new_ref()
        self.refs.append(ref)
        writer = frame.write.format("delta").mode("overwrite")
        if ref.qualified_name:
            writer.saveAsTable(ref.qualified_name)
            return self.spark.read.table(ref.qualified_name)
        writer.save(ref.location)
        return self.spark.read.format("delta").load(ref.location)

    def drop(self) -> None:
        for ref in self.refs:
            if ref.qualified_name:
                self.spark.sql(f"DROP TABLE IF EXISTS {ref.qualified_name}")
            elif "://" not in ref.location:
                shutil.rmtree(Path(ref.location), ignore_errors=True)
            else:
                log.info("scratch table %s left on storage (not a local path)", ref.location)
        self.refs = []

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.drop()


@contextmanager
def reused(frame: DataFrame, scratch: Scratch | None = None) -> Iterator[DataFrame]:
    """`frame` for several actions inside the block: persisted (memory and disk) on a classic
    session and unpersisted after; on a serverless one kept in `scratch` when given, else
    recomputed by each action (pass no scratch only where that gives the same rows)."""
    if not is_serverless(frame.sparkSession):
        persisted = frame.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            yield persisted
        finally:
            persisted.unpersist()
    elif scratch is None:
        yield frame
    else:
        yield scratch.keep(frame)


def pinned(frame: DataFrame, scratch: Scratch | None = None) -> DataFrame:
    """`frame` computed now and cut from its lineage: a local checkpoint on a classic session; on
    a serverless one a scratch table when given, else `frame` itself (then every action recomputes
    it, so pass no scratch only where that gives the same rows)."""
    if not is_serverless(frame.sparkSession):
        return frame.localCheckpoint(eager=True)
    return scratch.keep(frame) if scratch is not None else frame
