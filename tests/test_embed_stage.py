"""The embed stage's input: every distinct image without an embedding, once, with its bytes moved
across the network at most once (ids first, bytes last)."""

from __future__ import annotations

import hashlib

import pytest
from pyspark.sql import Row

from etl.confs import session_conf
from etl.schema import BENCHMARK_ITEMS, IMAGE_EMBEDDINGS, SAMPLES
from etl.stages.embed import embed_images, held_embeddings, images_to_embed
from tests.conftest import png_bytes
from udfs.sscd import EmbedderSpec

RED, GREEN, BLUE, GREY = (png_bytes(color=c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (90, 90, 90)])


def image_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _images(*datas):
    return [{"bytes": d, "path": None, "image_id": image_id(d), "width": 32, "height": 24} for d in datas]


@pytest.fixture
def frames(spark):
    silver = spark.createDataFrame(
        [
            Row(
                sample_id="s1",
                subset="a",
                category="c",
                source="a",
                images=_images(RED, GREEN),
                texts=[],
                source_ref=None,
            ),
            Row(
                sample_id="s2",
                subset="a",
                category="c",
                source="a",
                images=_images(RED, RED),
                texts=[],
                source_ref=None,
            ),  # one image twice
            Row(sample_id="s3", subset="b", category="c", source="b", images=[], texts=[], source_ref=None),  # no image
            Row(sample_id="s4", subset="b", category="c", source="b", images=_images(GREY), texts=[], source_ref=None),
        ],
        SAMPLES,
    )
    benchmark = spark.createDataFrame(
        [  # one image also in silver, one only here
            Row(
                benchmark="toy",
                item_id="q1",
                sample_id="b1",
                subset="toy",
                category="c",
                source="toy",
                images=_images(GREEN, BLUE),
                texts=[],
                source_ref=None,
            ),
        ],
        BENCHMARK_ITEMS,
    )
    return [silver, benchmark]


def test_every_distinct_image_without_an_embedding_comes_once_with_its_bytes(spark, frames):
    embedded = spark.createDataFrame(
        [  # GREY is embedded by this model, BLUE only by another one
            Row(image_id=image_id(GREY), model_id="sscd", embedding=[0.0] * 512),
            Row(image_id=image_id(BLUE), model_id="other", embedding=[0.0] * 512),
        ],
        IMAGE_EMBEDDINGS,
    )
    got = sorted((r["image_id"], bytes(r["bytes"])) for r in images_to_embed(frames, embedded, "sscd").collect())
    assert got == sorted((image_id(d), d) for d in [RED, GREEN, BLUE])
    first_run = sorted(r["image_id"] for r in images_to_embed(frames, None, "sscd").collect())
    assert first_run == sorted(image_id(d) for d in [RED, GREEN, BLUE, GREY])


def _plan_nodes(node):
    yield node
    children = node.children()
    for i in range(children.size()):
        yield from _plan_nodes(children.apply(i))


def _carries_bytes(node) -> bool:
    output = node.output()
    return any("binary" in output.apply(i).dataType().catalogString() for i in range(output.size()))


def test_bytes_are_shuffled_once_right_before_the_model(spark, frames):
    embedded = spark.createDataFrame(
        [Row(image_id=image_id(GREY), model_id="sscd", embedding=[0.0] * 512)], IMAGE_EMBEDDINGS
    )
    spec = EmbedderSpec()
    # no broadcasts and no adaptive re-planning: every join is a shuffle join, so every exchange shows in the plan
    with session_conf(spark, {"spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.enabled": "false"}):
        plan = (
            embed_images(images_to_embed(frames, embedded, "sscd"), spec, "sscd")._jdf.queryExecution().executedPlan()
        )
    model = [n for n in _plan_nodes(plan) if n.nodeName() == "MapInPandas"]
    assert len(model) == 1
    exchanges = [n for n in _plan_nodes(model[0]) if "Exchange" in n.nodeName()]
    with_bytes = [n for n in exchanges if _carries_bytes(n)]
    # distinct and anti-join exchange ids only; the one exchange of bytes per input frame is the join that
    # fetches each pending image from the one copy chosen for it (the old plan shuffled bytes for the distinct
    # of each frame, the distinct of their union and the anti-join)
    assert len(exchanges) > len(with_bytes)
    assert len(with_bytes) == len(frames)
    for exchange in with_bytes:
        assert exchange.output().size() == 4  # image_id, sample_id, position, bytes: the fetch join's input


def test_the_embeddings_of_held_images_come_without_shuffling_a_vector(spark, frames):
    silver, _ = frames
    embedded = spark.createDataFrame(  # blue: a benchmark-only image, embedded but held by no sample
        [Row(image_id=image_id(data), model_id="sscd", embedding=[0.1] * 512) for data in (RED, GREEN, BLUE, GREY)],
        IMAGE_EMBEDDINGS,
    )
    # no automatic broadcasts (the ids of a big corpus pass the broadcast size) and no adaptive re-planning
    with session_conf(spark, {"spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.enabled": "false"}):
        held = held_embeddings(embedded, silver)
        plan = held._jdf.queryExecution().executedPlan()
        ids = {row.image_id for row in held.collect()}
    assert ids == {image_id(RED), image_id(GREEN), image_id(GREY)}
    exchanges = [n for n in _plan_nodes(plan) if "Exchange" in n.nodeName()]
    assert exchanges  # ids are exchanged ...
    for exchange in exchanges:  # ... vectors never
        output = exchange.output()
        assert all(output.apply(i).name() != "embedding" for i in range(output.size())), exchange.nodeName()
