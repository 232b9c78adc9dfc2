"""The release folder held to the Hub's FineVision layout: the card's features, FineVision-style
config names, shards of 100-row row groups cut by size, side files keyed by row, and the shuffled
`default` config, read back with `datasets` as a user of the Hub would."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from etl import release, release_card
from etl.schema import GOLD_SAMPLES
from etl.stages.export import release_exclusions
from tests.conftest import png_bytes

# The features of the Hub's FineVision subsets, written down as facts. Source: the dataset card
# (README.md YAML `dataset_info.features`) of HuggingFaceM4/FineVision at revision dd30ac3, as the
# project's reference records it (../shared/reference/FINEVISION.md: per-turn ratings list<int64>,
# `_min` int64, `texts` a list of {user, assistant}); the column order is FineVision's parquet order
# as we know it (not read from the Hub in this session: written from knowledge of the card).
FINEVISION_CARD_FEATURES = """
- name: images
  list: image
- name: texts
  list:
  - name: user
    dtype: string
  - name: assistant
    dtype: string
- name: source
  dtype: string
- name: relevance_ratings
  list: int64
- name: relevance_min
  dtype: int64
- name: visual_dependency_ratings
  list: int64
- name: visual_dependency_min
  dtype: int64
- name: image_correspondence_ratings
  list: int64
- name: image_correspondence_min
  dtype: int64
- name: formatting_ratings
  list: int64
- name: formatting_min
  dtype: int64
"""

SUBSETS = ("aguvis-stage-1", "geo170k(qa)", "plain")
PER_SUBSET = 130  # two shards of a subset: 100 rows, then 30


def card_features():
    import datasets

    return datasets.Features._from_yaml_list(yaml.safe_load(FINEVISION_CARD_FEATURES))


def _gold_row(subset: str, i: int) -> dict:
    sample_id = hashlib.sha256(f"{subset}:{i}".encode()).hexdigest()
    return {
        "images": [{"bytes": png_bytes((8 + i % 5, 8), (i % 250, 40, 90)), "path": None}],
        "texts": [{"user": f"Q {subset} {i}?", "assistant": sample_id}, {"user": "Again?", "assistant": "Yes."}],
        "source": subset,
        **{f"{a}_ratings": [4, 2] if i % 2 else None for a in release.RELEASE_AXES},
        **{f"{a}_min": 2 if i % 2 else None for a in release.RELEASE_AXES},
        "sample_id": sample_id,
        "subset": subset,
        "category": "General VQA",
        "contaminated": i == 3,
        "dup_cluster_id": "cluster-a" if i in (5, 6) else None,
        "turn_sources": None,
    }


@pytest.fixture(scope="module")
def released(spark, tmp_path_factory):
    rows = [_gold_row(subset, i) for subset in SUBSETS for i in range(PER_SUBSET)]
    gold = spark.createDataFrame(rows, GOLD_SAMPLES)
    marked = release_exclusions(gold, keep_contaminated=True, keep_duplicates=True)
    stats = release_card.subset_statistics(marked)
    folders = release.folder_names(SUBSETS)
    folder = str(tmp_path_factory.mktemp("release"))
    frame = release.release_frame(marked, folders, shuffled_default=True, seed=7)
    shards = release.write_shards(frame, folder, shard_bytes=20_000)
    card = release_card.CardInputs(
        "test", shards, stats, folders, {"plain": [{"name": "plain", "license": "cc-by-4.0"}]}, True, True, {"k": "v"}
    )
    release.write_card(folder, release_card.dataset_card(card))
    return folder, shards, folders, {r["sample_id"]: r for r in rows}


def test_folder_names_are_path_safe_and_distinct():
    folders = release.folder_names(["geo170k(qa)", "geo170k_qa_", "aguvis-stage-1", "chart2text.v2", "_x"])
    assert folders["aguvis-stage-1"] == "aguvis-stage-1" and folders["chart2text.v2"] == "chart2text.v2"
    assert folders["geo170k_qa_"] == "geo170k_qa_" and folders["geo170k(qa)"].startswith("geo170k_qa_-")
    assert not folders["_x"].startswith("_")  # `datasets` skips folders starting with _ or .
    assert len(set(folders.values())) == len(folders)


def test_shards_carry_exactly_the_cards_features_and_concatenate_with_a_hub_subset(released):
    import datasets

    folder, _, _, _ = released
    ours = datasets.load_dataset(folder, name="geo170k(qa)", split="train")
    assert ours.features == card_features()
    assert list(ours.features) == list(card_features())  # the card's column order too
    hub = datasets.Dataset.from_dict(
        {
            "images": [[]],
            "texts": [[{"user": "q", "assistant": "a"}]],
            "source": ["hub"],
            **{f"{a}_ratings": [[5]] for a in release.RELEASE_AXES},
            **{f"{a}_min": [5] for a in release.RELEASE_AXES},
        },
        features=card_features(),
    )
    mixed = datasets.concatenate_datasets([ours, hub])
    assert len(mixed) == PER_SUBSET + 1 and mixed[-1]["source"] == "hub"
    assert mixed.features == card_features()


def test_a_finevision_style_name_loads_by_name_and_streams(released):
    import datasets

    folder, _, folders, gold = released
    assert (Path(folder) / folders["geo170k(qa)"]).is_dir() and folders["geo170k(qa)"] == "geo170k_qa_"
    assert set(datasets.get_dataset_config_names(folder)) == {"default", *SUBSETS}
    for name in SUBSETS:
        ds = datasets.load_dataset(folder, name=name, split="train")
        assert len(ds) == PER_SUBSET and set(ds["source"]) == {name}
        for row in ds.select(range(4)):
            want = gold[row["texts"][0]["assistant"]]
            assert want["subset"] == name and row["texts"] == want["texts"]
            assert (row["relevance_ratings"], row["formatting_min"]) == (
                want["relevance_ratings"],
                want["formatting_min"],
            )
            assert (
                row["images"][0].tobytes()
                == Image.open(io.BytesIO(want["images"][0]["bytes"])).convert("RGB").tobytes()
            )
    streamed = datasets.load_dataset(folder, name="aguvis-stage-1", split="train", streaming=True)
    assert sum(1 for _ in streamed) == PER_SUBSET


def test_the_default_config_holds_every_row_once_with_subsets_interleaved(released):
    import datasets

    folder, _, _, gold = released
    streamed = datasets.load_dataset(folder, split="train", streaming=True)  # `default`, as nanoVLM streams
    sources = [row["source"] for row in streamed]
    assert len(sources) == len(gold) and sorted(sources) == sorted(r["source"] for r in gold.values())
    assert set(sources[:30]) == set(SUBSETS)  # interleaved from the start, not one subset after another
    runs = sum(1 for a, b in zip(sources, sources[1:], strict=False) if a != b)
    assert runs > len(sources) / 3


def test_shards_are_cut_by_size_in_100_row_groups_and_side_files_key_every_row(released):
    folder, shards, folders, gold = released
    for config in SUBSETS:
        mine = [s for s in shards if s.config == folders[config]]  # tasks cut by range, files by size
        n = len(mine)
        assert n >= 2 and sum(s.rows for s in mine) == PER_SUBSET
        assert [Path(s.path).name for s in mine] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    for shard in shards:
        meta = pq.ParquetFile(Path(folder) / shard.path).metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(n == 100 for n in groups[:-1]) and sum(groups) == shard.rows
        data = pq.read_table(Path(folder) / shard.path)
        side = pq.read_table(Path(folder) / shard.provenance)
        assert data.column_names == list(card_features())
        assert side.column("row").to_pylist() == list(range(shard.rows))
        answers = [turns[0]["assistant"] for turns in data.column("texts").to_pylist()]
        assert side.column("sample_id").to_pylist() == answers  # row i of the side file is row i of the shard
        assert [gold[s]["contaminated"] for s in answers] == side.column("contaminated").to_pylist()


def test_card_lists_configs_with_the_hubs_sizes_and_attribution(released):
    folder, shards, folders, _ = released
    text = (Path(folder) / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default", *SUBSETS]
    assert meta["configs"][2]["data_files"] == [{"split": "train", "path": "geo170k_qa_/train-*"}]
    info = {i["config_name"]: i for i in meta["dataset_info"]}
    assert info["plain"]["features"] == yaml.safe_load(FINEVISION_CARD_FEATURES)
    plain = [s for s in shards if s.config == "plain"]
    assert info["plain"]["download_size"] == sum((Path(folder) / s.path).stat().st_size for s in plain)
    assert info["plain"]["splits"][0]["num_bytes"] == info["plain"]["dataset_size"] == sum(s.arrow_bytes for s in plain)
    assert info["plain"]["splits"][0]["num_examples"] == PER_SUBSET
    assert info["default"]["splits"][0]["num_examples"] == 3 * PER_SUBSET
    assert meta["license"] == "other"  # two subsets have no license in their spec
    assert "| plain | plain | cc-by-4.0 |" in text and "unknown (not in the source spec)" in text
    assert "eprint={2510.17269}" in text and "**kept** (`export.keep_contaminated`)" in text


def test_release_exclusions_leave_out_contaminated_then_all_but_one_per_cluster(spark):
    rows = [_gold_row("plain", i) for i in range(8)]
    rows[5]["contaminated"] = True  # of cluster-a (5, 6): 5 goes as contaminated, so 6 represents the cluster
    rows[7]["dup_cluster_id"] = "cluster-b"
    rows[2]["dup_cluster_id"] = "cluster-b"
    gold = spark.createDataFrame(rows, GOLD_SAMPLES)
    ids = [r["sample_id"] for r in rows]

    def excluded(**keep):
        marked = release_exclusions(gold, **keep).select("sample_id", "excluded").collect()
        return {ids.index(r["sample_id"]): r["excluded"] for r in marked if r["excluded"]}

    duplicate_b = 7 if ids[2] < ids[7] else 2
    assert excluded(keep_contaminated=False, keep_duplicates=False) == {
        3: "contaminated",
        5: "contaminated",
        duplicate_b: "duplicate",
    }
    assert excluded(keep_contaminated=True, keep_duplicates=False) == {
        max((5, 6), key=lambda i: ids[i]): "duplicate",
        duplicate_b: "duplicate",
    }
    assert excluded(keep_contaminated=True, keep_duplicates=True) == {}
    assert release_exclusions(gold, False, False).count() == len(rows)


def test_a_task_starts_a_new_file_once_a_file_holds_shard_bytes(tmp_path):
    """One task's rows of one config (what a Spark task hands the writer), in batches that do not
    fall on row-group boundaries: files of whole 100-row groups until the last."""
    import pyarrow as pa

    rows = [_gold_row("plain", i) for i in range(250)]
    table = pa.Table.from_pylist(
        [
            {"config": "plain", "key": f"{i:04d}"}
            | {c: r[c] for c in (*release.RELEASE_ARROW.names, *release.PROVENANCE_COLUMNS)}
            for i, r in enumerate(rows)
        ]
    )
    one_group = table.slice(0, 100).select(release.RELEASE_ARROW.names).cast(release.RELEASE_ARROW).nbytes
    write = release._write_partition(str(tmp_path), shard_bytes=one_group)  # a file is full after one group
    written = pa.Table.from_batches(list(write(table.to_batches(max_chunksize=37)))).to_pylist()
    assert [w["rows"] for w in sorted(written, key=lambda w: w["first_key"])] == [100, 100, 50]
    for w in written:
        meta = pq.ParquetFile(w["file"]).metadata
        assert meta.num_row_groups == 1 and meta.row_group(0).num_rows == w["rows"]
        assert pq.read_table(w["side"]).column("row").to_pylist() == list(range(w["rows"]))
