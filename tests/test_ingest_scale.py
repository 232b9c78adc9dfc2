"""Ingest at scale: big JSON arrays and JSONL files are streamed and split into byte ranges that
spread over every task, and the size limit applies to one record, never to a file."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.config import IngestConfig, SourceSpec
from etl.sources import split_shard, splits
from etl.sources.base import ReadContext, Rejected, Shard
from etl.sources.files import ArrowFiles
from etl.sources.records import iter_json_records

# Strings full of what a naive splitter trips on: quotes, escapes, brackets, commas, newlines.
TEXT = st.text(alphabet=st.sampled_from(list('ab ,[]{}"\\\n:é€😀')), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
RECORDS = st.lists(st.dictionaries(TEXT, VALUES, max_size=4), max_size=25)


def spec_of(fmt: str = "llava_json", **extra) -> SourceSpec:
    return SourceSpec.model_validate(
        {"name": "t", "format": fmt, "location": "x", "subset": "t", "category": "General VQA", **extra}
    )


def read_all(path: str, fmt: str, shard_bytes: int, ingest: IngestConfig | None = None):
    """Every (row, record or reason) over the file's byte-range shards, and the shards."""
    spec = spec_of(fmt)
    ctx = ReadContext(spec, ArrowFiles(), ingest or IngestConfig())
    shards = split_shard(spec, Shard(path), ArrowFiles(), shard_bytes)
    out = []
    for shard in shards:
        for item in iter_json_records(ctx, shard):
            out.append((item.ref.row, str(item.reason)) if isinstance(item, Rejected) else (item[0].row, item[1]))
    return out, shards


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=RECORDS, indent=st.sampled_from([None, 1]), shard_bytes=st.integers(1, 400), block_bytes=st.integers(1, 64)
)
def test_json_array_shards_hold_every_element_once_in_order(
    tmp_path, monkeypatch, records, indent, shard_bytes, block_bytes
):
    monkeypatch.setattr(splits, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    out, shards = read_all(str(path), "llava_json", shard_bytes)
    assert out == list(enumerate(records))
    assert [s.start for s in shards] == sorted({s.start for s in shards})
    assert all(a.end == b.start for a, b in zip(shards, shards[1:], strict=False)) and shards[-1].end is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS, blank_every=st.integers(2, 5), shard_bytes=st.integers(1, 300), block_bytes=st.integers(1, 64))
def test_jsonl_shards_hold_every_line_once_with_its_line_number(
    tmp_path, monkeypatch, records, blank_every, shard_bytes, block_bytes
):
    monkeypatch.setattr(splits, "BLOCK_BYTES", block_bytes)
    lines = []
    for record in records:  # blank lines count as rows, as in one pass over the file
        lines.append(json.dumps(record, ensure_ascii=False))
        if len(lines) % blank_every == 0:
            lines.append("")
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    out, _ = read_all(str(path), "sharegpt_jsonl", shard_bytes)
    assert out == [(row, json.loads(line)) for row, line in enumerate(lines) if line]


def test_a_big_json_array_splits_into_several_shards_and_a_large_element_is_quarantined_alone(tmp_path):
    records = [{"id": str(i), "pad": "x" * 50} for i in range(40)]
    records[17]["pad"] = "y" * 500  # the one record over the limit
    path = tmp_path / "a.json"
    path.write_text(json.dumps(records))
    assert path.stat().st_size > 1000
    out, shards = read_all(str(path), "llava_json", shard_bytes=300, ingest=IngestConfig(max_record_bytes=200))
    assert len(shards) > 5
    assert out == [(i, r) if i != 17 else (17, "record_too_large") for i, r in enumerate(records)]


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"id": "a", ', "invalid_json"),  # cut short
        ('{"id": "a"}', "wrong_type"),
        ("", "invalid_json"),
        ('[{"id": "a"}, {"id": ]', "invalid_json"),
    ],
)
def test_a_broken_json_array_file_is_quarantined_not_raised(tmp_path, text, reason):
    (tmp_path / "b.json").write_text(text)
    out, _ = read_all(str(tmp_path / "b.json"), "llava_json", shard_bytes=10)
    assert [r for _, r in out if isinstance(r, str)] == [reason]


def test_an_empty_array_has_no_records(tmp_path):
    (tmp_path / "e.json").write_text(" [ ] \n")
    assert read_all(str(tmp_path / "e.json"), "llava_json", shard_bytes=1)[0] == []


def test_vqa_rows_grouped_by_image_are_never_split(tmp_path):
    (tmp_path / "v.jsonl").write_text("".join(json.dumps({"image": "a.png", "q": i}) + "\n" for i in range(100)))
    shard = Shard(str(tmp_path / "v.jsonl"))
    assert split_shard(spec_of("vqa_jsonl", group_by="image"), shard, ArrowFiles(), 100) == [shard]
    assert len(split_shard(spec_of("vqa_jsonl"), shard, ArrowFiles(), 100)) > 10


def test_ingest_job_spreads_a_json_array_over_many_tasks_and_quarantines_only_the_large_record(
    spark, make_config, tmp_path
):
    """The old design read a JSON array whole in one task and quarantined any file over
    `max_record_bytes`: this file is ten times the limit and must arrive whole, over many tasks."""
    import yaml

    from etl import tables
    from etl.jobs import ingest
    from etl.runs import PipelineRun

    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "chat.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "chat",
                "format": "llava_json",
                "location": "chat.json",
                "subset": "chat",
                "category": "General VQA",
            }
        )
    )
    records = [
        {
            "id": str(i),
            "conversations": [
                {"from": "human", "value": f'question {i}, [with] "quotes"'},
                {"from": "gpt", "value": "answer " + "z" * (i % 40)},
            ],
        }
        for i in range(60)
    ]
    records[33]["conversations"][1]["value"] = "long " * 200
    (tmp_path / "chat.json").write_text(json.dumps(records, indent=1))
    config = make_config(ingest__max_record_bytes=600, ingest__shard_bytes=1500)
    assert (tmp_path / "chat.json").stat().st_size > 10 * 600

    run = PipelineRun(spark, config, "test")
    ingest.run(run)
    run.close()
    report = run.reports[0]
    assert report.counters["shards"] >= 5
    assert report.rows_in == 60 and report.dropped == {"record_too_large": 1}
    bronze = tables.read(spark, run.table("bronze_samples"))
    rows = sorted(r["row"] for r in bronze.select("source_ref.row").collect())
    assert rows == [i for i in range(60) if i != 33]
    quarantined = tables.read(spark, run.table("quarantine")).collect()
    assert [(q["reason"], q["source_ref"]["row"]) for q in quarantined] == [("record_too_large", 33)]
