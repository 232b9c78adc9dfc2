"""Each source adapter on a small fixture in its real format, and the quarantine reasons."""

from __future__ import annotations

import base64
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.config import IngestConfig, SourceSpec
from etl.sources import plan_shards
from etl.sources.base import RawSample, ReadContext, Rejected, pair_turns
from etl.sources.files import ArrowFiles
from etl.sources.formats import FORMATS
from tests.conftest import png_bytes


def run_adapter(spec: dict, tmp_path, ingest: IngestConfig | None = None):
    spec = SourceSpec.model_validate({"subset": "t", "category": "General VQA", "name": "t", **spec})
    location = str(tmp_path / spec.location)
    ctx = ReadContext(spec, ArrowFiles(), ingest or IngestConfig(), image_root=str(tmp_path / "img"))
    out = []
    for shard in plan_shards(spec, location):
        out.extend(FORMATS[spec.format].read(ctx, shard))
    return out


def samples_of(records):
    return [r for r in records if isinstance(r, RawSample)]


def reasons_of(records):
    return sorted(str(r.reason) for r in records if isinstance(r, Rejected))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    red, blue = png_bytes(color=(255, 0, 0)), png_bytes(color=(0, 0, 255))
    (folder / "red.png").write_bytes(red)
    (folder / "blue.png").write_bytes(blue)
    (tmp_path / "secret.txt").write_text("outside image_root")
    return {"red": red, "blue": blue}


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")


def test_llava_json_converts_conversations_and_quarantines_bad_records(tmp_path, images):
    records = [
        {
            "id": "a",
            "image": "red.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour?"},
                {"from": "gpt", "value": "Red."},
                {"from": "human", "value": "Sure?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
        {"id": "b", "conversations": [{"from": "human", "value": "Text only?"}, {"from": "gpt", "value": "Yes."}]},
        {
            "id": "c",
            "image": "missing.png",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        },
        {
            "id": "d",
            "image": "../secret.txt",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        },
        {"id": "e", "image": "red.png"},
        {"id": "f", "image": "red.png", "conversations": [{"from": "human", "value": "only a question"}]},
        {"id": "g", "image": 42, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    (tmp_path / "llava.json").write_text(json.dumps(records))
    out = run_adapter({"format": "llava_json", "location": "llava.json", "image_root": "img"}, tmp_path)
    good = samples_of(out)
    assert [s.texts for s in good] == [[("What colour?", "Red."), ("Sure?", "Yes.")], [("Text only?", "Yes.")]]
    assert good[0].images == [(images["red"], "red.png")] and good[1].images == []
    assert reasons_of(out) == ["missing_field", "missing_image", "no_turns", "unsafe_path", "wrong_type"]
    missing = next(r for r in out if isinstance(r, Rejected) and r.reason == "missing_image")
    assert missing.ref.row == 2 and '"id": "c"' in missing.raw


def test_llava_json_that_is_not_json_is_one_quarantined_record(tmp_path, images):
    (tmp_path / "broken.json").write_text('[{"id": "a", ')
    out = run_adapter({"format": "llava_json", "location": "broken.json", "image_root": "img"}, tmp_path)
    assert reasons_of(out) == ["invalid_json"]


def test_sharegpt_jsonl_messages_text_only_inline_images_and_data_urls(tmp_path, images):
    data_url = "data:image/png;base64," + base64.b64encode(images["blue"]).decode()
    write_lines(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                ]
            },
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "image": "red.png"}, {"type": "text", "text": "Colour?"}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "Red"}]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url}},
                            {"type": "text", "text": "And this?"},
                        ],
                    },
                    {"role": "assistant", "content": "Blue"},
                ]
            },
            {
                "conversations": [{"from": "human", "value": "<image>Hi"}, {"from": "gpt", "value": "Hello"}],
                "images": ["red.png"],
            },
            '{"messages": [ not json',
            {"messages": [{"role": "wizard", "content": "x"}]},
            {"messages": [{"role": "user", "content": "unanswered"}]},
        ],
    )
    out = run_adapter({"format": "sharegpt_jsonl", "location": "chat.jsonl", "image_root": "img"}, tmp_path)
    good = samples_of(out)
    assert [s.texts for s in good] == [[("2+2?", "4")], [("Colour?", "Red"), ("And this?", "Blue")], [("Hi", "Hello")]]
    assert [len(s.images) for s in good] == [0, 2, 1]
    assert good[1].images[1] == (images["blue"], None)
    assert reasons_of(out) == ["invalid_json", "no_turns", "wrong_type"]


def test_pair_turns_merges_consecutive_roles_and_drops_unanswered():
    messages = [("user", "a"), ("user", "b"), ("assistant", "c"), ("assistant", "d"), ("user", "e")]
    assert pair_turns(messages) == [("a\nb", "c\nd")]


def test_vqa_jsonl_groups_questions_of_one_image_into_turns(tmp_path, images):
    write_lines(
        tmp_path / "vqa.jsonl",
        [
            {"image": "red.png", "question": "Colour?", "answer": "red", "qid": 1},
            {"image": "blue.png", "question": "Colour?", "answer": "blue", "qid": 2},
            {"image": "red.png", "question": "Shape?", "answer": 3, "qid": 3},
            {"image": "red.png", "question": "Bad?", "answer": ["list"], "qid": 4},
            {"image": "red.png", "answer": "no question", "qid": 5},
        ],
    )
    out = run_adapter(
        {
            "format": "vqa_jsonl",
            "location": "vqa.jsonl",
            "image_root": "img",
            "group_by": "image",
            "fields": {"id": "qid"},
        },
        tmp_path,
    )
    good = samples_of(out)
    assert [(s.images[0][1], s.texts, s.item_id) for s in good] == [
        ("red.png", [("Colour?", "red"), ("Shape?", "3")], "1"),
        ("blue.png", [("Colour?", "blue")], "2"),
    ]
    assert reasons_of(out) == ["missing_field", "wrong_type"]


def test_vqa_csv_captions_get_deterministic_templated_questions(tmp_path, images):
    (tmp_path / "caps.csv").write_text("file,text\nred.png,A red square.\nblue.png,A blue square.\nred.png\n")
    spec = {
        "format": "vqa_csv",
        "location": "caps.csv",
        "image_root": "img",
        "fields": {"image": "file", "caption": "text"},
        "question_templates": ["Describe the image.", "What is shown?"],
    }
    first, second = run_adapter(spec, tmp_path), run_adapter(spec, tmp_path)
    good = samples_of(first)
    assert [s.texts[0][1] for s in good] == ["A red square.", "A blue square."]
    assert all(s.texts[0][0] in ("Describe the image.", "What is shown?") for s in good)
    assert [s.texts for s in good] == [s.texts for s in samples_of(second)]
    assert reasons_of(first) == ["invalid_row"]


def test_vqa_image_over_the_size_limit_is_quarantined(tmp_path, images):
    write_lines(tmp_path / "v.jsonl", [{"image": "red.png", "question": "q", "answer": "a"}])
    out = run_adapter(
        {"format": "vqa_jsonl", "location": "v.jsonl", "image_root": "img"}, tmp_path, IngestConfig(max_image_bytes=10)
    )
    assert reasons_of(out) == ["image_too_large"]


def _parquet(path, table, row_group_size=2):
    pq.write_table(table, path, row_group_size=row_group_size)


def test_hf_parquet_finevision_layout_shards_per_row_group(tmp_path, images):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    text_type = pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())])
    table = pa.table(
        {
            "images": pa.array(
                [
                    [{"bytes": images["red"], "path": "r.png"}],
                    [],
                    [{"bytes": images["blue"], "path": None}],
                    [{"bytes": None, "path": None}],
                    [{"bytes": images["red"], "path": None}],
                ],
                pa.list_(image_type),
            ),
            "texts": pa.array(
                [
                    [{"user": "q1", "assistant": "a1", "source": "cauldron"}],
                    [{"user": "t", "assistant": "u", "source": "x"}],
                    [
                        {"user": "q3", "assistant": "a3", "source": "x"},
                        {"user": "q4", "assistant": "a4", "source": "x"},
                    ],
                    [{"user": "q", "assistant": "a", "source": "x"}],
                    [],
                ],
                pa.list_(text_type),
            ),
        }
    )
    (tmp_path / "pq").mkdir()
    _parquet(tmp_path / "pq" / "train-00000.parquet", table)
    spec = SourceSpec(name="t", format="hf_parquet", location="pq", subset="t", category="Chart & Table")
    assert [s.part for s in plan_shards(spec, str(tmp_path / "pq"))] == [0, 1, 2]
    out = run_adapter({"format": "hf_parquet", "location": "pq"}, tmp_path)
    good = samples_of(out)
    assert [s.texts for s in good] == [[("q1", "a1")], [("t", "u")], [("q3", "a3"), ("q4", "a4")]]
    assert [s.ref.row for s in good] == [0, 1, 2]
    assert good[0].images == [(images["red"], "r.png")]
    assert reasons_of(out) == ["missing_field", "no_turns"]
    assert "<" in next(r.raw for r in out if isinstance(r, Rejected) and r.reason == "no_turns")  # bytes elided


def test_hf_parquet_columns_layout(tmp_path, images):
    table = pa.table({"img": [images["red"], images["blue"]], "q": ["Colour?", "Colour?"], "a": ["red", "blue"]})
    _parquet(tmp_path / "cols.parquet", table)
    out = run_adapter(
        {
            "format": "hf_parquet",
            "location": "cols.parquet",
            "options": {"layout": "columns"},
            "fields": {"image": "img", "question": "q", "answer": "a"},
        },
        tmp_path,
    )
    assert [(s.images[0][0], s.texts) for s in samples_of(out)] == [
        (images["red"], [("Colour?", "red")]),
        (images["blue"], [("Colour?", "blue")]),
    ]


def _tar(path, members):
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_webdataset_groups_members_by_key_and_refuses_unsafe_names(tmp_path, images):
    (tmp_path / "wds").mkdir()
    _tar(
        tmp_path / "wds" / "shard-000.tar",
        [
            ("doc1.png", images["red"]),
            ("doc1.json", json.dumps({"question": "Text?", "answer": "HELLO"}).encode()),
            ("doc2.jpg", images["blue"]),
            ("doc2.txt", b"a blue page"),
            ("../evil.png", images["red"]),
            ("doc3.json", b'{"question": "no image", "answer": "x"}'),
            ("doc4.png", images["red"]),
            ("doc4.json", b"{not json"),
        ],
    )
    out = run_adapter({"format": "webdataset", "location": "wds", "question_templates": ["What is written?"]}, tmp_path)
    good = samples_of(out)
    assert [(s.ref.member, s.texts) for s in good] == [
        ("doc1", [("Text?", "HELLO")]),
        ("doc2", [("What is written?", "a blue page")]),
    ]
    assert good[1].images == [(images["blue"], "doc2.jpg")]
    assert reasons_of(out) == ["invalid_json", "missing_field", "unsafe_path"]


def test_webdataset_truncated_tar_keeps_whole_samples_and_quarantines_the_cut_one(tmp_path, images):
    _tar(
        tmp_path / "ok.tar",
        [("a.png", images["red"]), ("a.txt", b"caption"), ("b.png", images["red"]), ("b.txt", b"x")],
    )
    data = (tmp_path / "ok.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:3413])  # inside b.png: b.txt is lost
    out = run_adapter({"format": "webdataset", "location": "cut.tar", "question_templates": ["Q?"]}, tmp_path)
    assert [(s.ref.member, s.texts) for s in samples_of(out)] == [("a", [("Q?", "caption")])]
    rejected = [r for r in out if isinstance(r, Rejected)]
    assert [(r.reason, r.ref.member) for r in rejected] == [("missing_field", "b")]


def test_image_paths_cannot_escape_image_root(tmp_path, images):
    ctx = ReadContext(
        SourceSpec(name="t", format="vqa_jsonl", location="x", subset="t", category="Science"),
        ArrowFiles(),
        IngestConfig(),
        image_root=str(tmp_path / "img"),
    )
    for bad in ["../secret.txt", "/etc/passwd", "a/../../secret.txt", "s3://bucket/x.png", ""]:
        with pytest.raises(ValueError):
            ctx.image_path(bad)
    assert ctx.image_path("sub/../red.png") == f"{tmp_path}/img/red.png"


def test_overlong_jsonl_line_is_quarantined_without_losing_the_next(tmp_path, images):
    write_lines(
        tmp_path / "v.jsonl",
        [
            {"image": "red.png", "question": "q" * 500, "answer": "a"},
            {"image": "red.png", "question": "short?", "answer": "yes", "qid": None},
        ],
    )
    out = run_adapter(
        {"format": "vqa_jsonl", "location": "v.jsonl", "image_root": "img", "fields": {"id": "qid"}},
        tmp_path,
        IngestConfig(max_record_bytes=100),
    )
    assert reasons_of(out) == ["record_too_large"]
    assert [(s.texts, s.item_id) for s in samples_of(out)] == [([("short?", "yes")], None)]  # a null id is no id


def test_glob_locations_do_not_cross_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jsonl", "b.jsonl", "sub/c.jsonl"):
        (tmp_path / name).write_text("{}\n")
    from etl.sources.files import list_files

    assert list_files(f"{tmp_path}/*.jsonl", (".jsonl",)) == [f"{tmp_path}/a.jsonl", f"{tmp_path}/b.jsonl"]
    assert len(list_files(str(tmp_path), (".jsonl",))) == 3
