"""Schemas of every Delta table, declared once.

Column names follow the FineVision release (`images`, `texts`, `source`) and add the ids and
provenance FineVision did not publish. Each image struct carries its own `image_id` (sha256 of
its bytes), `width` and `height`; the gold export projects it back to the release's
`struct<bytes, path>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

CATEGORIES = (
    "Captioning & Knowledge",
    "Chart & Table",
    "General VQA",
    "Grounding & Counting",
    "Mathematics",
    "Naive OCR",
    "OCR QA",
    "Science",
    "Text-only",
)

# The judges' rating axes, the one list (config validates `rate.axes` against it); RATING_AXES is the
# order of turn_ratings' axes and of subset_stats' rating columns.
Axis = Literal["formatting", "relevance", "visual_dependency", "image_correspondence"]
RATING_AXES: tuple[Axis, ...] = get_args(Axis)

IMAGE = StructType(
    [
        StructField("bytes", BinaryType()),
        StructField("path", StringType()),
        StructField("image_id", StringType()),
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
    ]
)
TURN = StructType([StructField("user", StringType()), StructField("assistant", StringType())])
SOURCE_REF = StructType(
    [
        StructField("file", StringType()),
        StructField("member", StringType()),
        StructField("row", LongType()),
    ]
)

SAMPLE_FIELDS = [
    StructField("sample_id", StringType(), nullable=False),
    StructField("subset", StringType(), nullable=False),
    StructField("category", StringType(), nullable=False),
    StructField("source", StringType(), nullable=False),
    StructField("images", ArrayType(IMAGE)),
    StructField("texts", ArrayType(TURN)),
    StructField("source_ref", SOURCE_REF),
]

# bronze_samples and silver_samples share this schema.
SAMPLES = StructType(SAMPLE_FIELDS)

BENCHMARK_ITEMS = StructType(
    [
        StructField("benchmark", StringType(), nullable=False),
        StructField("item_id", StringType(), nullable=False),
        *SAMPLE_FIELDS,
    ]
)

QUARANTINE = StructType(
    [
        StructField("quarantine_id", StringType(), nullable=False),
        StructField("stage", StringType(), nullable=False),
        StructField("reason", StringType(), nullable=False),
        StructField("detail", StringType()),
        StructField("subset", StringType()),
        StructField("sample_id", StringType()),
        StructField("source_ref", SOURCE_REF),
        StructField("raw", StringType()),
        StructField("run_id", StringType()),
    ]
)

PIPELINE_RUNS = StructType(
    [
        StructField("run_id", StringType(), nullable=False),
        StructField("stage", StringType(), nullable=False),
        StructField("started_at", TimestampType()),
        StructField("ended_at", TimestampType()),
        StructField("status", StringType()),
        StructField("input_versions", MapType(StringType(), LongType())),
        StructField("output_versions", MapType(StringType(), LongType())),
        StructField("rows_in", LongType()),
        StructField("rows_out", LongType()),
        StructField("dropped", MapType(StringType(), LongType())),
        StructField("counters", MapType(StringType(), LongType())),
        StructField("config_hash", StringType()),
        StructField("git_revision", StringType()),  # the commit the wheel was built from (etl/build_info.py)
        StructField("mlflow_run_id", StringType()),
        StructField("package_version", StringType()),  # finevision-etl's version, from the wheel
    ]
)

IMAGE_EMBEDDINGS = StructType(
    [
        StructField("image_id", StringType(), nullable=False),
        StructField("model_id", StringType(), nullable=False),
        StructField("embedding", ArrayType(FloatType())),
    ]
)

# What the `verified` decontamination method measured of a pair (udfs/verify.py's FEATURES) and
# its rule's score and decision.
EVIDENCE = StructType(
    [
        *(
            StructField(name, FloatType())
            for name in (
                "sscd_whole",
                "sscd_views",
                "inliers",
                "inlier_area",
                "aligned_ncc",
                "aligned_ncc_low",
                "text_overlap",
                "aligned_coverage",
                "tiles_agree",
                "tiles_occluded",
                "tiles_changed",
                "occluder_fill",
                "occluder_scattered",
                "residual_peak",
                "tiles_textured",
                "tiles_unexplained",
                "frame_nesting",
            )
        ),
        StructField("score", FloatType()),
        StructField("decision", FloatType()),
    ]
)

CONTAMINATION_HITS = StructType(
    [
        StructField("image_id", StringType()),  # null for text hits
        StructField("sample_id", StringType(), nullable=False),
        StructField("subset", StringType()),
        StructField("benchmark", StringType(), nullable=False),
        StructField("benchmark_item_id", StringType(), nullable=False),
        StructField("similarity", FloatType()),
        StructField("model_id", StringType(), nullable=False),
        StructField("threshold", FloatType()),
        StructField("method", StringType(), nullable=False),
        StructField("run_id", StringType()),
        StructField("evidence", EVIDENCE),  # the verified method's features and score; null otherwise
        StructField("decided_by", StringType()),  # threshold | verified | both | text; null in older tables
        StructField("rule", StringType()),  # the configuration that made the hit (etl.jobs.decontaminate.current_rules)
    ]
)

NEAR_DUPLICATE_CLUSTERS = StructType(
    [
        StructField("image_id", StringType(), nullable=False),
        StructField("cluster_id", StringType(), nullable=False),
        StructField("cluster_size", LongType()),
        StructField("representative", BooleanType()),
    ]
)

# Samples a policy took out of the corpus (decontaminate `remove`, dedup `keep-one`).
REMOVED_SAMPLES = StructType(
    [
        StructField("sample_id", StringType(), nullable=False),
        StructField("subset", StringType()),
        StructField("stage", StringType(), nullable=False),
        StructField("reason", StringType(), nullable=False),
        StructField("detail", StringType()),
        StructField("run_id", StringType()),
    ]
)


RELEASE_IMAGE = StructType([StructField("bytes", BinaryType()), StructField("path", StringType())])
# Where each turn of a gold row came from: the silver sample and its turn index (`export.turns`).
TURN_SOURCES = ArrayType(StructType([StructField("sample_id", StringType()), StructField("turn_index", IntegerType())]))
# gold_samples (and the release) list the rating columns relevance first, then the others in order.
GOLD_RATING_AXES = ("relevance", *(axis for axis in RATING_AXES if axis != "relevance"))

# The FineVision release columns first, then what this project adds (see etl/stages/export.py).
GOLD_SAMPLES = StructType(
    [
        StructField("images", ArrayType(RELEASE_IMAGE)),
        StructField("texts", ArrayType(TURN)),
        StructField("source", StringType(), nullable=False),
        *[StructField(f"{axis}_ratings", ArrayType(IntegerType())) for axis in GOLD_RATING_AXES],
        *[StructField(f"{axis}_min", IntegerType()) for axis in GOLD_RATING_AXES],
        StructField("sample_id", StringType(), nullable=False),
        StructField("subset", StringType(), nullable=False),
        StructField("category", StringType(), nullable=False),
        StructField("contaminated", BooleanType(), nullable=False),
        StructField("dup_cluster_id", StringType()),
        # null: the row is its silver sample unchanged; else one source turn per turn (etl/stages/turns.py)
        StructField("turn_sources", TURN_SOURCES),
    ]
)


def require_columns(df: DataFrame, columns: list[str], what: str) -> None:
    """Fail with a message naming the missing columns, before any Spark job runs."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; the input has {df.columns}")


def image_occurrences(
    samples: DataFrame, *columns: str, fields: Sequence[str] = ("image_id",), position: bool = False
) -> DataFrame:
    """One row per image of each sample (none for a sample without images): the sample's `columns`,
    then `position` (the image's index in `images`) when asked, then the image struct's `fields`.

    Only `fields` are taken out of the image structs before the explode: bytes travel only when asked.

        image_occurrences(silver, "sample_id", "subset")   # (sample_id, subset, image_id)
    """
    require_columns(samples, [*columns, "images"], "image_occurrences")
    image = F.transform("images", lambda i: F.struct(*[i[field].alias(field) for field in fields]))
    exploded = F.posexplode(image).alias("position", "image") if position else F.explode(image).alias("image")
    return samples.select(*columns, exploded).select(
        *columns, *(["position"] if position else []), *[F.col("image")[field].alias(field) for field in fields]
    )


# One judge score per (turn, axis, judge, prompt); score and expected_score are null with `error`
# when the judge did not give one (see udfs/judge.py).
TURN_RATINGS = StructType(
    [
        StructField("sample_id", StringType(), nullable=False),
        StructField("turn_index", IntegerType(), nullable=False),
        StructField("axis", StringType(), nullable=False),
        StructField("score", IntegerType()),
        StructField("expected_score", FloatType()),
        StructField("judge_model", StringType(), nullable=False),
        StructField("prompt_hash", StringType(), nullable=False),
        StructField("error", StringType()),
        StructField("run_id", StringType()),
    ]
)

# The work list of the last rate run: one row per sample with requests still to rate, with what the
# judges read (images only where an image-axis judge is configured), partitioned by commit chunk.
RATE_REQUEST = StructType(  # nullable: Delta has no NOT NULL inside arrays
    [
        StructField("turn_index", IntegerType()),
        StructField("axis", StringType()),
        StructField("judge_model", StringType()),
        StructField("prompt_hash", StringType()),
    ]
)
RATE_PENDING = StructType(
    [
        StructField("chunk", IntegerType(), nullable=False),
        StructField("sample_id", StringType(), nullable=False),
        StructField("requests", ArrayType(RATE_REQUEST)),
        StructField("texts", ArrayType(TURN)),
        StructField("images", ArrayType(BinaryType())),
    ]
)

# Per subset (and `*` for all) and axis: how many turns the current judge scored 1..5.
RATING_DISTRIBUTION = StructType(
    [
        StructField("subset", StringType(), nullable=False),
        StructField("axis", StringType(), nullable=False),
        StructField("score", IntegerType(), nullable=False),
        StructField("n", LongType()),
        StructField("share", FloatType()),
        StructField("judge_model", StringType()),
        StructField("prompt_hash", StringType()),
    ]
)

# `finevision evaluate`: one row per benchmark item and evaluation (etl/train/evaluate.py).
EVAL_PREDICTIONS = StructType(
    [
        StructField("eval_id", StringType(), nullable=False),
        StructField("mlflow_run_id", StringType()),
        StructField("model", StringType(), nullable=False),
        StructField("benchmark", StringType(), nullable=False),
        StructField("item_id", StringType(), nullable=False),
        StructField("contaminated", BooleanType(), nullable=False),
        StructField("metric", StringType(), nullable=False),
        StructField("prompt", StringType()),  # the question as asked (options and instruction included)
        StructField("answer", StringType()),
        StructField("prediction", StringType()),
        StructField("choice", StringType()),  # the option letter a multiple-choice prediction chose
        StructField("score", DoubleType()),
    ]
)

# `finevision analyze`: FineVision's per-subset table, per subset, per category and in total
# (etl/stages/corpus_stats.py).
SUBSET_STATS = StructType(
    [
        StructField("level", StringType(), nullable=False),  # subset | category | total
        StructField("name", StringType(), nullable=False),  # the subset, the category, or "*"
        StructField("category", StringType()),  # the subset's category (null for total)
        StructField("samples", LongType()),
        StructField("images", LongType()),  # image occurrences, as FineVision counts them
        StructField("turns", LongType()),
        StructField("question_tokens", LongType()),
        StructField("answer_tokens", LongType()),
        StructField("sample_share", DoubleType()),  # of all samples
        StructField("answer_token_share", DoubleType()),  # of all answer tokens
        StructField("images_per_sample", DoubleType()),
        StructField("turns_per_sample", DoubleType()),
        StructField("side_p10", IntegerType()),  # longest image side, pixels
        StructField("side_p50", IntegerType()),
        StructField("side_p90", IntegerType()),
        StructField("megapixels_p50", DoubleType()),
        StructField("exact_duplicate_share", DoubleType()),  # samples sharing an image_id with another sample
        StructField("near_duplicate_share", DoubleType()),  # samples with an image in a near-duplicate cluster
        StructField("contaminated_sample_rate", DoubleType()),
        StructField("contaminated_image_rate", DoubleType()),  # distinct images with an SSCD hit / distinct images
        *[StructField(f"rating_{axis}", DoubleType()) for axis in RATING_AXES],  # mean score over rated turns
    ]
)

# `finevision analyze`: the diversity of SSCD embeddings per subset, category and in total
# (etl/stages/diversity.py).
DIVERSITY_METRICS = StructType(
    [
        StructField("level", StringType(), nullable=False),  # subset | category | total
        StructField("name", StringType(), nullable=False),
        StructField("images", LongType()),  # distinct images with an embedding
        StructField("dimension", IntegerType()),
        StructField("effective_rank", DoubleType()),
        StructField("participation_ratio", DoubleType()),
        StructField("diversity_score", DoubleType()),
        StructField("model_id", StringType()),
    ]
)

# `finevision analyze`: unified GUI actions per subset (etl/stages/gui_stats.py).
ACTION_STATS = StructType(
    [
        StructField("subset", StringType(), nullable=False),
        StructField("action", StringType(), nullable=False),
        StructField("count", LongType()),
        StructField("share", FloatType()),
    ]
)

# contamination_rates: per subset and overall (subset '*'), written by decontaminate
CONTAMINATION_RATES = StructType(
    [
        StructField("subset", StringType(), nullable=False),
        StructField("samples", LongType()),
        StructField("contaminated_samples", LongType()),
        StructField("sample_rate", FloatType()),
        StructField("images", LongType()),
        StructField("contaminated_images", LongType()),
        StructField("image_rate", FloatType()),
    ]
)


# What a column means, for the columns whose meaning is the same in every table that has them: the
# column comments the tables carry (COMMENT on create; `finevision maintain` sets them on tables
# created before). docs/tables.md describes every column at length.
COLUMN_DOCS = {
    "sample_id": "deterministic sample id: sha256 of source, record location and content (32 hex)",
    "subset": "the subset (one per source spec; a release config); * = all subsets in the statistics tables",
    "category": "one of FineVision's 9 categories",
    "source": "FineVision's source column (defaults to the subset)",
    "images": "the sample's images, in order",
    "texts": "the sample's turns (user, assistant), in order",
    "source_ref": "where the record came from: file, archive member, row",
    "image_id": "sha256 of the image bytes",
    "benchmark": "the benchmark a test item belongs to",
    "stage": "the pipeline stage that wrote the row",
    "reason": "why the row was quarantined or removed",
    "detail": "human-readable detail of the reason",
    "run_id": "the curation run that wrote the row (pipeline_runs.run_id)",
    "model_id": "what compared the images or texts: the embedding model and its preprocessing, or word-<n>gram",
    "contaminated": "an image or turn of the sample has a hit of the current decontamination configuration",
    "dup_cluster_id": "the near-duplicate cluster of the sample's images (the smallest, if several); null if none",
    "judge_model": "the judge that gave the score",
    "prompt_hash": "hash of the judge prompt",
    "turn_index": "position of the turn in texts",
    "axis": "rating axis: formatting, relevance, visual_dependency or image_correspondence",
}


@dataclass(frozen=True)
class Table:
    """How a pipeline table is kept (its schema is the one its writer passes, declared above).

    `cluster_by`: the column its readers reach rows by, if one (joins on it, merges on it as key or
    key range). `finevision maintain` clusters the table's files by it (OPTIMIZE ... ZORDER BY), so
    such a read or merge opens few files; a table read whole (gold, which training and the release
    scan; the small statistics tables) is only compacted. `pinned`: training runs and release cards
    pin its versions, which stay readable for maintain.gold_retention_days."""

    cluster_by: str | None = None
    pinned: bool = False


# Every table the pipeline writes, by name (tables.TableRef.of(config, name) locates it).
TABLES = {
    "bronze_samples": Table("sample_id"),  # ingest merges by sample_id
    "silver_samples": Table("sample_id"),  # clean merges by it; export, review, rate join on it
    "benchmark_items": Table("sample_id"),  # ingest merges by sample_id
    "quarantine": Table(),  # read by stage and reason
    "image_embeddings": Table("image_id"),  # embed merges, decontaminate and dedup join by image
    "contamination_hits": Table("sample_id"),  # merged by a key led by sample_id, joined on it
    "contamination_rates": Table(),
    "near_duplicate_clusters": Table("image_id"),  # joined on image_id by export
    "removed_samples": Table("sample_id"),  # merged by sample_id, anti-joined by export
    "turn_ratings": Table("sample_id"),  # rate merges by sample_id range
    "rate_pending": Table(),  # partitioned by chunk, read a chunk at a time
    "rating_distribution": Table(),
    "gold_samples": Table(pinned=True),  # read whole: training, the release
    "action_stats": Table(),
    "subset_stats": Table(),
    "diversity_metrics": Table(),
    "pipeline_runs": Table(),
}
