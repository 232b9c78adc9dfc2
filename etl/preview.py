"""`finevision preview`: converted records of one source as an HTML page, for a human to audit
the mapping before ingesting at scale (FineVision's human-in-the-loop review). Runs the same
adapter as ingestion, on the driver, over the first records only."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from etl.config import PipelineConfig, SourceSpec
from etl.pages import render, thumbnail
from etl.sources import plan_shards
from etl.sources.base import ReadContext, Rejected
from etl.sources.files import ArrowFiles
from etl.sources.formats import FORMATS


def preview_records(config: PipelineConfig, spec: SourceSpec, n: int):
    image_root = config.resolve(spec.image_root) if spec.image_root else None
    ctx = ReadContext(spec, ArrowFiles(), config.ingest, image_root=image_root)

    def records():
        for shard in plan_shards(spec, config.resolve(spec.location)):
            yield from FORMATS[spec.format].read(ctx, shard)

    return list(islice(records(), n))


def write_preview(config: PipelineConfig, spec: SourceSpec, n: int, out: Path) -> Path:
    cards = [
        {
            "record": record,
            "rejected": isinstance(record, Rejected),
            "thumbnails": [] if isinstance(record, Rejected) else [thumbnail(data) for data, _ in record.images],
        }
        for record in preview_records(config, spec, n)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render("preview.html", title=f"preview {spec.name}", spec=spec, cards=cards), encoding="utf-8")
    return out
