"""The verified method's evidence on real images (SSCD int8 ONNX, OpenCV ORB + RANSAC) and its rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from etl.config import CONF_DIR
from etl.samples import charts
from udfs.sscd import EmbedderSpec
from udfs.verify import FEATURES, VerifierRule, _grey_at, decode_rgb, geometric_match, pair_features, text_overlap

SPEC = EmbedderSpec(intra_op_threads=1)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images():
    """A photograph, its centre crop keeping 70% of each side, a same-template chart pair."""
    import skimage.data

    photo = Image.fromarray(skimage.data.astronaut())
    crop = photo.crop((77, 77, 77 + 358, 77 + 358))
    rng = np.random.default_rng(5)
    chart = charts.make_chart(rng, charts.BENCH_THEMES, charts.BENCH_METRICS, "bar")
    other = {**chart, "values": [v + 13 if i % 2 else max(5, v - 11) for i, v in enumerate(chart["values"])]}
    return {"photo": png(photo), "crop": png(crop), "chart": charts.render(chart), "other_chart": charts.render(other)}


@pytest.fixture(scope="module")
def features(images):
    pairs = [("crop", "photo"), ("other_chart", "chart"), ("photo", "chart")]
    return pair_features(
        SPEC,
        [images[a] for a, _ in pairs],
        [images[b] for _, b in pairs],
        ["what is in the picture", None, "x"],
        ["What is in the picture?", "q", None],
    )


def test_a_crop_meets_its_matching_view(features):
    crop = {name: float(values[0]) for name, values in features.items()}
    assert crop["sscd_views"] >= 0.95 and crop["sscd_views"] > crop["sscd_whole"] + 0.03, crop
    assert crop["inliers"] >= 50 and crop["inlier_area"] >= 0.2 and crop["aligned_ncc"] >= 0.9, crop


def test_a_same_template_chart_is_not_geometrically_the_same_image(images, features):
    template = {name: float(values[1]) for name, values in features.items()}
    crop = {name: float(values[0]) for name, values in features.items()}
    assert template["aligned_ncc_low"] < crop["aligned_ncc_low"] - 0.2
    # and an unrelated pair has no geometry at all
    unrelated = geometric_match(_grey_at(decode_rgb(images["photo"]), 512), _grey_at(decode_rgb(images["chart"]), 512))
    assert unrelated.homography is None or unrelated.inlier_area < 0.1


def test_text_overlap_needs_text_on_both_sides(features):
    assert features["text_overlap"].tolist() == [1.0, 0.0, 0.0]
    assert text_overlap("Which team scored most goals in May", "Which team scored most goals?") == pytest.approx(3 / 3)
    assert text_overlap("Which team scored fewest", "Which team scored most goals?") == pytest.approx(1 / 3)


def test_undecodable_images_have_no_image_evidence(images):
    out = pair_features(SPEC, [b"not an image"], [images["photo"]])
    assert all(np.isnan(out[name][0]) for name in FEATURES if name != "text_overlap")


def test_packaged_rule_accepts_the_copy_and_rejects_the_template(features):
    rule = VerifierRule.from_file(CONF_DIR / "decontaminate" / "verifier.yaml")
    accepted = rule.score(features) >= rule.decision
    assert accepted.tolist() == [True, False, False]


def test_rule_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "rule.yaml"
    bad.write_text("weights: {colour: 1}\nbias: 0\ndecision: 0.5\n")
    with pytest.raises(ValueError, match=r"rule.yaml.*unknown feature"):
        VerifierRule.from_file(bad)
    rule = VerifierRule({"sscd_whole": 10.0, "inliers": 1.0}, -9.0, 0.5)
    scores = rule.score({"sscd_whole": np.array([0.99, 0.5, np.nan]), "inliers": np.array([np.e - 1, 0, 3])})
    assert (
        scores[0] == pytest.approx(1 / (1 + np.exp(-(-9 + 9.9 + 1))), rel=1e-5) and scores[1] < 0.5 and scores[2] == 0
    )


def test_the_hits_table_stores_every_feature_and_the_score():
    from etl.schema import CONTAMINATION_HITS, EVIDENCE

    assert EVIDENCE.fieldNames() == [*FEATURES, "score", "decision"]
    assert CONTAMINATION_HITS["evidence"].dataType == EVIDENCE
