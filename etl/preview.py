"""`finevision preview`: converted records of one source as an HTML page, for a human to audit
the mapping before ingesting at scale (FineVision's human-in-the-loop review). Runs the same
adapter as ingestion, on the driver, over the first records only."""

from __future__ import annotations

import base64
import html
import io
from itertools import islice
from pathlib import Path

from PIL import Image

from etl.config import PipelineConfig, SourceSpec
from etl.sources import ADAPTERS, plan_shards
from etl.sources.base import ReadContext, Rejected
from etl.sources.files import ArrowFiles


def _thumbnail(data: bytes, size: int = 256) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > 50_000_000:
                return "<em>image too large to preview</em>"
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}" alt="thumbnail">'
    except Exception as exc:  # noqa: BLE001 - the page must render whatever the image is
        return f"<em>unreadable image: {html.escape(str(exc))}</em>"


def preview_records(config: PipelineConfig, spec: SourceSpec, n: int):
    image_root = config.resolve(spec.image_root) if spec.image_root else None
    ctx = ReadContext(spec, ArrowFiles(), config.ingest, image_root=image_root)

    def records():
        for shard in plan_shards(spec, config.resolve(spec.location)):
            yield from ADAPTERS[spec.format](ctx, shard)

    return list(islice(records(), n))


def write_preview(config: PipelineConfig, spec: SourceSpec, n: int, out: Path) -> Path:
    cards = []
    for record in preview_records(config, spec, n):
        where = html.escape(f"{record.ref.file} {record.ref.member or ''} row {record.ref.row}")
        if isinstance(record, Rejected):
            cards.append(
                f'<div class="card rejected"><b>quarantine: {html.escape(record.reason)}</b>'
                f"<p>{html.escape(record.detail)}</p><pre>{html.escape(record.raw[:500])}</pre><small>{where}</small></div>"
            )
            continue
        images = "".join(_thumbnail(data) for data, _ in record.images)
        turns = "".join(
            f'<p class="user">Q: {html.escape(u)}</p><p class="assistant">A: {html.escape(a)}</p>'
            for u, a in record.texts
        )
        cards.append(f'<div class="card">{images}{turns}<small>{where}</small></div>')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>preview {html.escape(spec.name)}</title>
<style>body{{font-family:sans-serif;margin:1em}} .card{{border:1px solid #ccc;padding:.5em;margin:.5em;display:inline-block;
vertical-align:top;width:300px}} .rejected{{background:#fee}} .user{{color:#036}} .assistant{{color:#060}} img{{max-width:280px}}</style>
</head><body><h1>{html.escape(spec.name)}: {html.escape(spec.format)} -> subset {html.escape(spec.subset)} ({html.escape(spec.category)})</h1>
<p>{len(cards)} record(s) as the ingest stage converts them.</p>{"".join(cards)}</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
