"""The source format registry (`etl.sources.formats`): each entry's options are checked when a spec
loads, and its extensions and splitting are what the readers and the shard planner really do."""

from __future__ import annotations

import io
import json
import re
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from etl.config import ConfigError, IngestConfig, SourceSpec, load_source_spec
from etl.sources import plan_shards, split_shard, splittable
from etl.sources.base import RawSample, ReadContext, Shard
from etl.sources.files import ArrowFiles
from etl.sources.formats import FORMATS, Split
from tests.conftest import png_bytes

FORMATS_WITH_OPTIONS = [name for name, entry in FORMATS.items() if entry.options.model_fields]
# The options each format needs to load at all (gui_trajectory's dialect and coordinates).
REQUIRED = {"gui_trajectory": {"dialect": "unified", "coordinates": "fraction"}}


def load(tmp_path, format_name: str, options: dict, **extra) -> SourceSpec:
    path = tmp_path / f"{format_name}.yaml"
    spec = {"name": "s", "format": format_name, "location": "x", "subset": "s", "category": "General VQA"}
    path.write_text(yaml.safe_dump({**spec, "options": options, **extra}))
    return load_source_spec(path)


def test_the_misspelt_option_test_below_covers_hf_parquet_and_gui_trajectory():
    assert FORMATS_WITH_OPTIONS == ["hf_parquet", "gui_trajectory"]


@pytest.mark.parametrize("format_name", FORMATS_WITH_OPTIONS)
def test_a_misspelt_option_of_every_format_fails_at_load_naming_option_and_format(tmp_path, format_name):
    first = next(iter(FORMATS[format_name].options.model_fields))
    misspelt = first[:-1] + first[-1] * 2  # layout -> layoutt, dialect -> dialectt
    options = {**REQUIRED.get(format_name, {}), misspelt: "x"}
    with pytest.raises(ConfigError, match=rf"options: '{misspelt}' is not an option of format {format_name} \(") as e:
        load(tmp_path, format_name, options)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.parametrize(
    "format_name, options, message",
    [
        # used to pass silently: a misspelt key was never read, a misspelt layout read as finevision
        ("hf_parquet", {"layuot": "columns"}, "'layuot' is not an option of format hf_parquet"),
        ("hf_parquet", {"layout": "column"}, "layout: Input should be 'finevision', 'columns' or 'benchmark'"),
        ("hf_parquet", {"layout": "benchmark", "answer_format": "idx"}, "answer_format: Input should be 'text'"),
        ("hf_parquet", {"images": "list"}, "images: read by layout benchmark only, not finevision"),
        ("gui_trajectory", {"dialet": "web", "coordinates": "pixels"}, "'dialet' is not an option of format"),
        ("gui_trajectory", {"dialect": "web"}, "coordinates is required by format gui_trajectory"),
        ("llava_json", {"layout": "columns"}, "'layout' is not an option of format llava_json (its options: none)"),
        ("webdataset", {"image_exts": ["jpg"]}, "'image_exts' is not an option of format webdataset"),
    ],
)
def test_bad_options_are_one_line_errors_at_load(tmp_path, format_name, options, message):
    with pytest.raises(ConfigError, match=re.escape(f"options: {message}")):
        load(tmp_path, format_name, options)


def test_an_unknown_format_names_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"format: .*'parquet' is not a source format; known: \['hf_parquet'"):
        load(tmp_path, "parquet", {})


def test_options_are_kept_as_written_and_every_format_loads_its_defaults(tmp_path):
    for name in FORMATS:
        assert load(tmp_path, name, REQUIRED.get(name, {})).options == REQUIRED.get(name, {})


def test_plan_shards_lists_exactly_the_extensions_of_the_entry(tmp_path):
    every = sorted({ext for entry in FORMATS.values() for ext in entry.extensions})
    for ext in every:
        (tmp_path / f"f{ext}").write_bytes(b"")
    for name, entry in FORMATS.items():
        if entry.split is Split.ROW_GROUPS:
            continue  # needs real parquet files: test_parquet_shards_per_row_group_iff_its_entry_says_so
        spec = load(tmp_path, name, REQUIRED.get(name, {}))
        listed = sorted(shard.path[len(str(tmp_path)) + 2 :] for shard in plan_shards(spec, str(tmp_path)))
        assert listed == sorted(entry.extensions), name


def test_parquet_shards_per_row_group_iff_its_entry_says_so(tmp_path):
    row = {"images": [{"bytes": png_bytes(), "path": None}], "texts": [{"user": "q", "assistant": "a"}]}
    pq.write_table(pa.Table.from_pylist([row] * 3), tmp_path / "d.parquet", row_group_size=1)
    spec = load(tmp_path, "hf_parquet", {})
    shards = plan_shards(spec, str(tmp_path / "d.parquet"))
    row_groups = FORMATS["hf_parquet"].split is Split.ROW_GROUPS
    assert [s.part for s in shards] == ([0, 1, 2] if row_groups else [None])
    ctx = ReadContext(spec, ArrowFiles(), IngestConfig())
    assert [r.ref.row for s in shards for r in FORMATS["hf_parquet"].read(ctx, s)] == [0, 1, 2]


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


# One small valid file of 12 records per format, (file name, bytes, options): a 64-byte range holds
# about one record, so a format that splits by byte ranges reads this file as several shards.
def _records(format_name: str) -> tuple[str, bytes, dict]:
    n = range(12)
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    message = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    step = {"screenshot": "s.png", "action": "click(x=0.5, y=0.5)"}
    files: dict[str, tuple[str, str | bytes, dict]] = {
        "hf_parquet": ("d.parquet", _parquet([{"images": [], "texts": [{"user": "q", "assistant": "a"}]}] * 12), {}),
        "llava_json": ("d.json", json.dumps([{"id": i, "conversations": turns} for i in n]), {}),
        "sharegpt_jsonl": ("d.jsonl", "".join(json.dumps({**message, "id": i}) + "\n" for i in n), {}),
        "vqa_jsonl": (
            "d.jsonl",
            "".join(json.dumps({"image": "s.png", "question": f"q{i}", "answer": "a"}) + "\n" for i in n),
            {},
        ),
        "vqa_csv": ("d.csv", "image,question,answer\n" + "".join(f"s.png,q{i},a\n" for i in n), {}),
        "webdataset": (
            "d.tar",
            _tar(
                [m for i in n for m in [(f"{i}.png", png_bytes()), (f"{i}.json", b'{"question": "q", "answer": "a"}')]]
            ),
            {},
        ),
        "gui_trajectory": (
            "d.jsonl",
            "".join(json.dumps({"id": i, "instruction": "Do it", "steps": [step]}) + "\n" for i in n),
            REQUIRED["gui_trajectory"],
        ),
    }
    if format_name not in files:
        raise AssertionError(f"no test file for {format_name}: add one here when adding the format")
    name, data, options = files[format_name]
    return name, data.encode() if isinstance(data, str) else data, options


@pytest.mark.parametrize("format_name", list(FORMATS))
def test_byte_ranges_iff_the_entry_says_so_and_they_read_what_the_whole_file_reads(tmp_path, format_name):
    name, data, options = _records(format_name)
    (tmp_path / name).write_bytes(data)
    (tmp_path / "s.png").write_bytes(png_bytes())
    spec = load(tmp_path, format_name, options, location=name)
    ctx = ReadContext(spec, ArrowFiles(), IngestConfig(), image_root=str(tmp_path))
    shards = plan_shards(spec, str(tmp_path))  # the folder: listed by the entry's extensions
    ranges = [r for shard in shards for r in split_shard(spec, shard, ArrowFiles(), shard_bytes=64)]

    assert splittable(spec) == (FORMATS[format_name].split is Split.BYTE_RANGES)
    assert (len(ranges) > len(shards)) == splittable(spec), ranges

    def read(shards: list[Shard]) -> list[tuple]:
        records = [r for s in shards for r in FORMATS[format_name].read(ctx, s)]
        assert all(isinstance(r, RawSample) for r in records), records
        return [(r.ref, r.texts) for r in records if isinstance(r, RawSample)]

    assert len(read(shards)) == 12
    assert read(ranges) == read(shards)


def test_group_by_keeps_a_byte_range_format_whole(tmp_path):
    name, data, _ = _records("vqa_jsonl")
    (tmp_path / name).write_bytes(data)
    spec = load(tmp_path, "vqa_jsonl", {}, group_by="answer", location=name)
    [whole] = plan_shards(spec, str(tmp_path / name))
    assert not splittable(spec) and split_shard(spec, whole, ArrowFiles(), shard_bytes=64) == [whole]
