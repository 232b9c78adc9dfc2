"""The release's dataset card (README.md): the Hub's YAML metadata (configs, features, sizes as the
Hub defines them), what was left out and why, per-subset statistics, license, citation and
attribution per source, and provenance.

    stats = subset_statistics(rows)          # rows: gold with `excluded` (etl.stages.export.release_exclusions)
    text = dataset_card(CardInputs(...))
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl.release import DEFAULT_CONFIG, RELEASE_FEATURES, Shard

FINEVISION_CITATION = """@misc{wiedmann2025finevisionopendataneed,
      title={FineVision: Open Data Is All You Need},
      author={Luis Wiedmann and Orr Zohar and Amir Mahla and Xiaohan Wang and Rui Li and Thibaud Frere
              and Leandro von Werra and Aritra Roy Gosthipaty and Andrés Marafioti},
      year={2025},
      eprint={2510.17269},
      archivePrefix={arXiv},
      primaryClass={cs.CV},
      url={https://arxiv.org/abs/2510.17269},
}"""


def subset_statistics(rows: DataFrame) -> list[dict]:
    """Per subset: released samples, images, turns and contaminated samples (non-zero only when they
    are kept), the samples each rule left out, and the mean of each `<axis>_min` over released rows."""
    from etl.release import RELEASE_AXES

    released = F.col("excluded").isNull()

    def over_released(value):
        return F.sum(F.when(released, value).otherwise(F.lit(0)))

    aggregates = [
        over_released(F.lit(1)).alias("samples"),
        over_released(F.size("images")).alias("images"),
        over_released(F.size("texts")).alias("turns"),
        over_released(F.col("contaminated").cast("long")).alias("contaminated_samples"),
        F.sum(F.when(F.col("excluded") == "contaminated", 1).otherwise(0)).alias("left_out_contaminated"),
        F.sum(F.when(F.col("excluded") == "duplicate", 1).otherwise(0)).alias("left_out_duplicate"),
        F.first("category").alias("category"),
        *[F.avg(F.when(released, F.col(f"{a}_min"))).alias(f"mean_{a}_min") for a in RELEASE_AXES],
    ]
    return [r.asDict() for r in rows.groupBy("subset").agg(*aggregates).orderBy("subset").collect()]


_TURNS = {
    "keep": "Turns are as the sources were ingested (`export.turns: keep`).",
    "merge": "The single-image questions of one image were merged into one sample per image (`export.turns:"
    " merge`); `turn_sources` names the source sample and turn of every turn of a merged sample.",
    "split": "Multi-turn samples were split into one sample per turn (`export.turns: split`, ids"
    " `<sample_id>/turn<i>`); `turn_sources` names each one's source sample and turn.",
}


@dataclass
class CardInputs:
    name: str
    shards: list[Shard]
    stats: list[dict]
    folders: dict[str, str]  # config (subset) -> folder
    sources: dict[str, list[dict]]  # subset -> its source specs' {name, license, homepage, citation}
    keep_contaminated: bool
    keep_duplicates: bool
    provenance: dict[str, str] = field(default_factory=dict)
    turns: str = "keep"  # export.turns


def features_yaml() -> list[dict]:
    """RELEASE_FEATURES in the card's `dataset_info.features` form (`list:` as datasets >= 4 writes)."""

    def entry(name: str, feature: dict) -> dict:
        if feature["_type"] == "Value":
            return {"name": name, "dtype": feature["dtype"]}
        if feature["_type"] == "Image":
            return {"name": name, "dtype": "image"}
        inner = feature["feature"]
        if inner.get("_type") == "Value":
            return {"name": name, "list": inner["dtype"]}
        if inner.get("_type") == "Image":
            return {"name": name, "list": "image"}
        return {"name": name, "list": [entry(k, v) for k, v in inner.items()]}

    return [entry(name, feature) for name, feature in RELEASE_FEATURES.items()]


def _metadata(card: CardInputs) -> dict:
    by_config: dict[str, list[Shard]] = {}
    for shard in card.shards:
        by_config.setdefault(shard.config, []).append(shard)
    config_of = {folder: config for config, folder in card.folders.items()} | {DEFAULT_CONFIG: DEFAULT_CONFIG}
    order = sorted(by_config, key=lambda folder: (folder != DEFAULT_CONFIG, config_of[folder]))
    configs, infos = [], []
    for folder in order:
        parts = by_config[folder]
        arrow, files = sum(s.arrow_bytes for s in parts), sum(s.bytes for s in parts)
        configs.append(
            {"config_name": config_of[folder], "data_files": [{"split": "train", "path": f"{folder}/train-*"}]}
        )
        infos.append(
            {
                "config_name": config_of[folder],
                "features": features_yaml(),
                "splits": [{"name": "train", "num_bytes": arrow, "num_examples": sum(s.rows for s in parts)}],
                "download_size": files,
                "dataset_size": arrow,
            }
        )
    licenses = {
        spec.get("license") or "unknown" for s in card.stats for spec in (card.sources.get(s["subset"]) or [{}])
    }
    total = sum(s["samples"] for s in card.stats)
    return {
        "pretty_name": card.name,
        "license": licenses.pop() if len(licenses) == 1 and "unknown" not in licenses else "other",
        "task_categories": ["image-text-to-text"],
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": infos,
    }


def dataset_card(card: CardInputs) -> str:
    import yaml

    stats = card.stats
    total = sum(s["samples"] for s in stats)
    first = next((c for c in sorted(card.folders) if c != DEFAULT_CONFIG), "<subset>")
    left_contaminated = sum(s["left_out_contaminated"] for s in stats)
    left_duplicate = sum(s["left_out_duplicate"] for s in stats)
    lines = [
        "---",
        yaml.safe_dump(_metadata(card), sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {card.name}",
        "",
        "Vision-language training data curated by the FineVision ETL (Spark + Delta Lake), in the layout of",
        "[FineVision](https://huggingface.co/datasets/HuggingFaceM4/FineVision): the same columns and features,",
        "one config per subset (split `train`), and a `default` config of every row in one shuffled order.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("<this repo or folder>", name="{first}", split="train")',
        'mixed = load_dataset("<this repo or folder>", split="train", streaming=True)  # `default`: shuffled',
        "```",
        "",
        "## Columns",
        "",
        "FineVision's: `images`, `texts` (turns of `user` and `assistant`), `source`, `<axis>_ratings` (one judge",
        "score 1-5 per turn, int64) and `<axis>_min` (the lowest over the turns; null unless every turn is rated)",
        "for the axes relevance, visual_dependency, image_correspondence and formatting. The project's own",
        "columns (`sample_id`, `subset`, `category`, `contaminated`, `dup_cluster_id`, `turn_sources`) are in side",
        "files of the same name under `_provenance/`, one row per shard row (`row` is its index in the shard).",
        _TURNS[card.turns],
        "",
        "## What was left out",
        "",
        "- Contaminated samples (an image or a text matching a benchmark test item): "
        + (
            "**kept** (`export.keep_contaminated`); `_provenance` flags them."
            if card.keep_contaminated
            else f"**left out**, {left_contaminated} samples."
        ),
        "- Near- and exact-duplicate clusters: "
        + (
            "**every sample kept** (`export.keep_duplicates`)."
            if card.keep_duplicates
            else f"**one sample per cluster kept** (the smallest `sample_id`), {left_duplicate} samples left out. "
            "The per-step samples of a GUI trajectory (`export.gui_per_step`) count as one sample."
        ),
        "",
        "## Subsets",
        "",
        "| subset | folder | category | samples | images | turns | contaminated | left out: contaminated | left out: duplicates |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stats:
        lines.append(
            f"| {s['subset']} | `{card.folders.get(s['subset'], '-')}` | {s['category']} | {s['samples']} | "
            f"{s['images']} | {s['turns']} | {s['contaminated_samples']} | {s['left_out_contaminated']} | "
            f"{s['left_out_duplicate']} |"
        )
    lines += [
        f"| **all** | | | {total} | {sum(s['images'] for s in stats)} | {sum(s['turns'] for s in stats)} | "
        f"{sum(s['contaminated_samples'] for s in stats)} | {left_contaminated} | {left_duplicate} |",
        "",
        *_ratings_table(stats),
        *_attribution(card),
        "## Citation",
        "",
        "The curation follows FineVision; cite it, and each source you train on (above):",
        "",
        "```bibtex",
        FINEVISION_CITATION,
        "```",
        "",
        "## How it was made",
        "",
        "Ingest into one chat schema, clean (images downscaled to 2,048 px, corrupt images and over-long turns",
        "dropped), SSCD embeddings, decontamination against the benchmark test sets, near-duplicate clustering,",
        "LLM/VLM ratings, then this export. Provenance:",
        "",
        *[f"- {key}: `{value}`" for key, value in card.provenance.items()],
        "",
    ]
    return "\n".join(lines)


def _ratings_table(stats: list[dict]) -> list[str]:
    from etl.release import RELEASE_AXES

    rated = [s for s in stats if any(s[f"mean_{a}_min"] is not None for a in RELEASE_AXES)]
    if not rated:
        return ["No `turn_ratings` table existed at export time: the rating columns are null.", ""]
    lines = [
        "Mean of the per-sample minimum rating:",
        "",
        "| subset | " + " | ".join(RELEASE_AXES) + " |",
        "|---|" + "---:|" * len(RELEASE_AXES),
    ]
    for s in rated:
        cells = [f"{s[f'mean_{a}_min']:.2f}" if s[f"mean_{a}_min"] is not None else "-" for a in RELEASE_AXES]
        lines.append(f"| {s['subset']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _attribution(card: CardInputs) -> list[str]:
    lines = [
        "## Sources, licenses and attribution",
        "",
        "Each subset keeps its source's license; check it before you redistribute or train commercially.",
        "",
        "| subset | source | license | homepage |",
        "|---|---|---|---|",
    ]
    citations = []
    for s in card.stats:
        specs = card.sources.get(s["subset"]) or [{"name": "-", "license": None, "homepage": None}]
        for spec in specs:
            lines.append(
                f"| {s['subset']} | {spec['name']} | {spec.get('license') or 'unknown (not in the source spec)'} | "
                f"{spec.get('homepage') or '-'} |"
            )
            if spec.get("citation"):
                citations.append(spec["citation"].strip())
    lines.append("")
    if citations:
        lines += ["Sources' citations:", "", "```bibtex", *dict.fromkeys(citations), "```", ""]
    return lines


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"
