"""SQL views over the lakehouse, registered by one call (`finevision views`).

With `catalog: cat.schema` the views are permanent (`CREATE OR REPLACE VIEW cat.schema.v_...`);
with path-based tables they are temporary views of the Spark session that registers them (the
notebooks and `finevision views --query` use them that way). A view whose tables do not exist yet
is skipped and reported, never created broken.

    registered, skipped = register_views(spark, config)
    spark.sql("SELECT * FROM v_subset_stats ORDER BY samples DESC").show()

`run_query` runs SQL as the docs write it: a relative ``delta.`lakehouse/quarantine` `` path is
made absolute against the working directory first (Delta refuses relative paths in SQL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from etl import tables
from etl.config import PipelineConfig
from etl.reference import RATING_SHARES
from etl.schema import RATING_AXES


def _published_ratings_sql() -> str:
    rows = ", ".join(
        f"('{axis}', {score}, {share / 100:.4f})"
        for axis in RATING_AXES
        for score, share in enumerate(RATING_SHARES[axis], start=1)
    )
    return f"(VALUES {rows}) AS fv(axis, score, finevision_share)"


@dataclass(frozen=True)
class View:
    name: str
    tables: tuple[str, ...]
    sql: str  # {table} placeholders are replaced by the table's SQL name
    about: str


VIEWS = (
    View(
        "v_subset_stats",
        ("subset_stats",),
        "SELECT * FROM {subset_stats} WHERE level = 'subset'",
        "FineVision's per-subset table: samples, images, turns, tokens, duplicates, contamination, ratings",
    ),
    View(
        "v_category_stats",
        ("subset_stats",),
        "SELECT * FROM {subset_stats} WHERE level IN ('category', 'total')",
        "the same figures per category and in total (name '*')",
    ),
    View(
        "v_diversity",
        ("diversity_metrics",),
        "SELECT * FROM {diversity_metrics}",
        "effective rank, participation ratio and diversity score per subset, category and overall",
    ),
    View(
        "v_contamination_by_benchmark",
        ("contamination_hits",),
        "SELECT benchmark, method, count(*) AS hits, count(DISTINCT sample_id) AS samples, "
        "count(DISTINCT image_id) AS images, count(DISTINCT subset) AS subsets, max(similarity) AS max_similarity "
        "FROM {contamination_hits} GROUP BY benchmark, method",
        "hits, contaminated samples and images per benchmark and method",
    ),
    View(
        "v_contamination_pairs",
        ("contamination_hits",),
        "SELECT subset, benchmark, count(DISTINCT sample_id) AS samples, count(*) AS hits "
        "FROM {contamination_hits} GROUP BY subset, benchmark",
        "which training subset overlaps which benchmark",
    ),
    View(
        "v_rating_distribution",
        ("turn_ratings",),
        "SELECT r.axis, r.score, r.turns, r.share, CAST(fv.finevision_share AS DOUBLE) AS finevision_share FROM ("
        "SELECT axis, score, count(*) AS turns, count(*) / sum(count(*)) OVER (PARTITION BY axis) AS share "
        "FROM {turn_ratings} WHERE score IS NOT NULL GROUP BY axis, score) r "
        "LEFT JOIN " + _published_ratings_sql() + " ON r.axis = fv.axis AND r.score = fv.score",
        "share of rated turns per axis and score, next to FineVision's published shares",
    ),
    View(
        "v_duplicate_clusters",
        ("near_duplicate_clusters", "silver_samples"),
        "SELECT c.cluster_id, first(c.cluster_size) AS cluster_size, count(DISTINCT o.sample_id) AS samples, "
        "sort_array(collect_set(o.subset)) AS subsets FROM {near_duplicate_clusters} c JOIN "
        "(SELECT sample_id, subset, explode(images.image_id) AS image_id FROM {silver_samples}) o "
        "ON c.image_id = o.image_id GROUP BY c.cluster_id",
        "near-duplicate clusters with the samples and subsets that hold them",
    ),
    View(
        "v_quarantine_reasons",
        ("quarantine",),
        "SELECT stage, reason, subset, count(*) AS records FROM {quarantine} GROUP BY stage, reason, subset",
        "rejected records by stage, reason and subset",
    ),
    View(
        "v_training_candidates",
        ("silver_samples",),
        "SELECT s.sample_id, s.subset, s.category, size(s.images) AS images, size(s.texts) AS turns, "
        "r.sample_id IS NOT NULL AS removed FROM {silver_samples} s "
        "LEFT JOIN (SELECT DISTINCT sample_id FROM {removed_samples_or_empty}) r ON s.sample_id = r.sample_id",
        "every silver sample with its counts and whether a policy removed it",
    ),
)

_REMOVED_EMPTY = "(SELECT CAST(NULL AS STRING) AS sample_id WHERE false)"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def view_sql(view: View, config: PipelineConfig, spark: SparkSession) -> str:
    """The view's SELECT with table placeholders replaced by validated table references."""

    def name(match: re.Match) -> str:
        table = match.group(1)
        if table == "removed_samples_or_empty":
            ref = tables.TableRef.of(config, "removed_samples")
            return ref.sql if tables.exists(spark, ref) else _REMOVED_EMPTY
        return tables.TableRef.of(config, table).sql  # validates the identifier

    return _PLACEHOLDER.sub(name, view.sql)


def register_views(spark: SparkSession, config: PipelineConfig) -> tuple[list[str], dict[str, str]]:
    """Create or replace every view whose tables exist; returns (registered, {skipped: why})."""
    registered, skipped = [], {}
    for view in VIEWS:
        missing = [t for t in view.tables if not tables.exists(spark, tables.TableRef.of(config, t))]
        if missing:
            skipped[view.name] = f"table(s) {', '.join(missing)} not written yet"
            if not config.catalog:
                spark.catalog.dropTempView(view.name)  # a view from another lakehouse must not linger
            continue
        select = view_sql(view, config, spark)
        if config.catalog:
            spark.sql(f"CREATE OR REPLACE VIEW {config.catalog}.{view.name} AS {select}")
        else:
            spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {view.name} AS {select}")
        registered.append(view.name)
    return registered, skipped


_DELTA_PATH = re.compile(r"\bdelta\.`([^`]+)`", re.IGNORECASE)


def resolve_table_paths(sql: str, base: Path | None = None) -> str:
    """`sql` with every relative ``delta.`path` `` made absolute against `base` (the working directory)."""

    def absolute(match: re.Match) -> str:
        path = match.group(1)
        if path.startswith("/") or "://" in path:
            return match.group(0)
        return f"delta.`{((base or Path.cwd()) / path).resolve()}`"

    return _DELTA_PATH.sub(absolute, sql)


def run_query(spark: SparkSession, sql: str):
    """The DataFrame of one SQL statement, with relative Delta paths resolved (see `resolve_table_paths`)."""
    return spark.sql(resolve_table_paths(sql.strip().rstrip(";")))
