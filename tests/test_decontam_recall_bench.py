"""bench/decontam_recall.py and its labelled set: the set's real counts, photographs that tuning
and evaluation seeds never share, texts drawn alike for copies and look-alikes, a regularised fit,
and a tiny seed end to end with the two figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import their siblings by name

import decontam_fit  # noqa: E402
import decontam_labelled as labelled  # noqa: E402

from udfs.verify import FEATURES, VerifierRule  # noqa: E402

TUNING, EVALUATION = (1, 2, 3), (25, 26, 27)


def test_labelled_set_counts_for_a_tiny_seed():
    bench, train = labelled.labelled_set(1, 1)
    line = labelled.counts(bench, train)
    print(line)
    # six kinds, one benchmark image each; 14 edited copies each; one look-alike each, five for the shape
    assert line == (
        "6 benchmark images (chart 1, document 1, photo 1, gui 1, shape 1, page 1), 94 training images: "
        "84 copies (14 edit families), 10 same-template negatives"
    )
    assert {image.edit for image in train} == {*labelled.EDITS, "negative"}
    assert all(train[i].original is not None and train[i].original < len(bench) for i in range(len(train)))
    identity = [image for image in train if image.edit == "identity"]
    assert all(image.data == bench[image.original].data for image in identity)
    # no other edit leaves the bytes as they were
    assert not any(image.data == bench[image.original].data for image in train if image.edit != "identity")


def test_tuning_and_evaluation_seeds_share_no_photograph():
    assert not set(labelled.TUNING_POOL) & set(labelled.EVALUATION_POOL)
    sources, pixels = {}, {}
    for seed in (*TUNING, *EVALUATION):
        bench, _ = labelled.labelled_set(seed, 4, kinds=("photo",), edits=())
        sources[seed] = {image.source for image in bench}
        pixels[seed] = {image.data for image in bench}
        assert len(sources[seed]) == 4  # two crops of scikit-image photographs, two procedural scenes
    files = {s: {src.split("@")[0] for src in sources[s] if src.startswith("skimage:")} for s in sources}
    for tuning in TUNING:
        for evaluation in EVALUATION:
            assert not files[tuning] & files[evaluation], (tuning, evaluation)
            assert not sources[tuning] & sources[evaluation]
            assert not pixels[tuning] & pixels[evaluation]
    assert all(f.removeprefix("skimage:") in labelled.TUNING_POOL for s in TUNING for f in files[s])
    assert all(f.removeprefix("skimage:") in labelled.EVALUATION_POOL for s in EVALUATION for f in files[s])


def test_copies_and_look_alikes_draw_their_texts_alike():
    with_question = {"copy": [], "negative": []}
    for seed in TUNING:
        bench, train = labelled.labelled_set(seed, 2, kinds=("shape", "page"), edits=("identity", "mirror", "gamma"))
        for image in train:
            group = "negative" if image.edit == "negative" else "copy"
            with_question[group].append(image.text == bench[image.original].text)
    for group, flags in with_question.items():
        assert 0.25 < np.mean(flags) < 0.75, (group, np.mean(flags))  # about half carry the benchmark question


def test_the_fit_is_regularised_on_separable_data():
    rng = np.random.default_rng(0)
    pairs = 400
    labels = rng.random(pairs) < 0.3
    features = {name: rng.uniform(0, 1, pairs).astype(np.float32) for name in FEATURES}
    features["sscd_views"] = np.where(labels, 0.9, 0.4).astype(np.float32)  # separates the classes perfectly
    features["tiles_unexplained"] = np.where(labels, 0.0, 0.001).astype(np.float32)  # tiny spread, separates too
    rule, standardised = decontam_fit.fit_rule(features, labels, strength=1.0, vetoes={})
    assert max(abs(w) for w in standardised.values()) < 2  # unpenalised, separable data drives them to infinity
    # the YAML's raw weight is the standardised one over the feature's spread (0.0005 here)
    spread = float(features["tiles_unexplained"].std())
    assert rule.weights["tiles_unexplained"] == pytest.approx(standardised["tiles_unexplained"] / spread, rel=0.01)
    accepted = rule.score(features) >= rule.decision
    assert not (accepted & ~labels).any()  # the decision sits above every negative
    assert accepted[labels].all()


def test_the_rule_in_conf_states_its_command_and_stays_regularised():
    path = ROOT / "conf" / "decontaminate" / "verifier.yaml"
    text = path.read_text()
    assert "# Fitted by: .venv/bin/python bench/decontam_fit.py --seed" in text
    rule = VerifierRule.from_file(path)  # the stage's loader reads it
    settings = decontam_fit.read_settings(path)
    assert settings is not None and settings["l2"] in decontam_fit.STRENGTHS
    seeds = text.split("--seed ", 1)[1].split(" --", 1)[0].split()
    assert all(int(seed) < labelled.EVALUATION_FROM for seed in seeds)  # fitted on tuning seeds only
    standardised = [abs(w) for w in eval_standardised(text).values() if w]
    assert max(standardised) <= 100 * float(np.median(standardised))
    assert set(rule.weights) <= set(FEATURES)


def eval_standardised(text: str) -> dict[str, float]:
    import json

    line = next(line for line in text.splitlines() if "standardised weights: " in line)
    return json.loads(line.split("standardised weights: ", 1)[1])


@pytest.mark.slow
def test_a_tiny_seed_end_to_end_prints_both_figures(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "decontam_recall.py"), "--seed", "1", "--per-kind", "1"]
        + ["--kinds", "page", "--cache", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    print(out)
    assert (
        "1 benchmark images (page 1), 15 training images: 14 copies (14 edit families), 1 same-template negatives"
        in out
    )
    assert "missed that the threshold finds: 0" in out
    assert "found that the threshold misses: " in out
    assert "the rule alone would have missed " in out
    cascade = re.search(
        r"cascade: of (\d+) pairs .*, (\d+) vetoed .*, (\d+) settled .*, (\d+) need the SSCD views", out
    )
    assert cascade, out
    decided, vetoed, bounded, views = map(int, cascade.groups())
    assert decided > 0 and vetoed + bounded + views == decided
    held_out = out.split("held-out edit families", 1)[1]
    assert all(f"  {family} " in held_out for family in labelled.EDITS)
    # identity copies are hits by the floor whatever the rule says
    assert "  identity             recall 1.000" in out.split("default: verified", 1)[1]
    assert list(tmp_path.glob("seed1-*.npz"))  # the cache was written
