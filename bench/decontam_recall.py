"""Recall and false hits of decontamination on a labelled set of edited benchmark copies.

    .venv/bin/python bench/decontam_recall.py --seed 25 --cache .cache/decontam_recall   # report (the rule in conf/)
    .venv/bin/python bench/decontam_recall.py --seed 1 3 4 5 6 7 --cache .cache/decontam_recall --cv seed \
        --veto 'tiles_unexplained>0.05' --veto 'frame_nesting<0.9' --veto 'tiles_textured<0.02' \
        --veto 'residual_peak>40' --exclude frame_nesting --negative-weight 80 --fit conf/decontaminate/verifier.yaml

The labelled set is made here from the project's own sample generators (etl/samples): benchmark
images of five kinds (bar/line/pie charts, documents, photographs from scikit-image, GUI screens,
and easy-VQA shapes as the sample corpus has them), and for each a training copy under every edit type:
- `crop`: 80-95% of each side, at a random offset;
- `downscale_jpeg`: x0.3-0.7, then JPEG quality 50-85;
- `brightness_contrast`: brightness and contrast each x0.8-1.2;
- `text_overlay`: a caption band written over the image;
- `padding`: 5-20% borders of one colour;
- `screenshot`: the image at another size (x0.6-1.4) inside a window, as a screenshot shows it;
and hard negatives that are not copies: the same template with other content (the same chart
with other data, the same document layout with other text, the same phone screen with other rows or apps,
another crop of the same photograph overlapping the benchmark crop by a tenth, five easy-VQA
training images of the shape's colour and shape).
Copies carry the benchmark question half of the time; negatives carry their template's question.

Both methods run the project's batch functions (what the Spark UDFs call) on the same SSCD
embeddings: `threshold` (whole-image cosine >= 0.95, FineVision's rule) and `verified` (FAISS
candidates at `--candidate-threshold`, top `--candidate-k` per training image, then
`udfs.verify.pair_features` and the rule). A hit is a (training image, benchmark image) pair; a
false hit is any hit other than a copy and its original, counted apart when the training image is
a copy of another benchmark image. Prints recall per edit type, per kind and overall (and without
the shapes: the four kinds of the issue), false hits, and each method's cost (pairs verified,
seconds). `--fit` fits the rule's logistic regression and vetoes on these seeds' candidate pairs and
writes it (tune on some seeds, report on others); `--cv seed` prints each seed's recall under a rule
fitted on the other seeds (`--cv K`: K folds of benchmark images), to choose features and settings.
`--cache DIR` keeps each seed's candidate pairs and features, so a rule is refitted in seconds.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from etl.config import CONF_DIR
from etl.samples import charts, documents, gui
from etl.stages.decontaminate import top_k_per_query
from udfs import knn
from udfs.sscd import EmbedderSpec, embed_bytes
from udfs.verify import FEATURES, VerifierRule, pair_features

EDITS = ("crop", "downscale_jpeg", "brightness_contrast", "text_overlay", "padding", "screenshot")
KINDS = ("chart", "document", "photo", "gui", "shape")
PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "camera.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "horse.png",
    "coins.png",
    "page.png",
    "brick.png",
    "gravel.png",
    "logo.png",
    "moon.png",
)


@dataclass
class Image_:
    name: str
    data: bytes
    text: str | None
    kind: str
    edit: str | None = None  # edit type of a copy; "negative" for a hard negative; None for a benchmark image
    original: int | None = None  # benchmark row this training image was made from


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


# ---- benchmark images and their same-template negatives ----------------------------------------

Labelled = tuple[bytes, str]  # an image and its question
Made = tuple[Labelled, list[Labelled]]  # a benchmark image and its same-template negatives


def chart_pair(rng: np.random.Generator, index: int) -> Made:
    chart = charts.make_chart(rng, charts.BENCH_THEMES, charts.BENCH_METRICS, charts.KINDS[index % len(charts.KINDS)])
    other = dict(chart)
    if chart["kind"] == "pie":
        while other["values"] == chart["values"]:
            other["values"] = charts.make_chart(rng, charts.BENCH_THEMES, charts.BENCH_METRICS, "pie")["values"][
                : len(chart["labels"])
            ]
            other["values"] += [4] * (len(chart["labels"]) - len(other["values"]))
    else:
        other["values"] = rng.permutation(chart["values"]).tolist()
        while other["values"] == chart["values"]:
            other["values"] = rng.permutation(chart["values"]).tolist()
        other["values"] = [max(5, v + int(rng.integers(-15, 16))) for v in other["values"]]
    question = chart["qa"][0][0]
    return (charts.render(chart), question), [(charts.render(other), question)]


def document_pair(rng: np.random.Generator, index: int) -> Made:
    style = int(rng.integers(1 << 30))
    text = documents.make_text(rng)
    other = documents.make_text(rng)
    for _ in range(50):  # the same kind of document (memo, receipt, notice) with other text
        if (
            other != text
            and other.split("\n")[0].isupper() == text.split("\n")[0].isupper()
            and (
                text.startswith("MEMO") == other.startswith("MEMO")
                and text.startswith("NOTICE") == other.startswith("NOTICE")
            )
        ):
            break
        other = documents.make_text(rng)
    question = documents.TEMPLATES[index % len(documents.TEMPLATES)]
    question = question if isinstance(question, str) else "What does the document say?"
    first = documents.render(np.random.default_rng(style), text)
    second = documents.render(np.random.default_rng(style), other)
    return (png(first), question), [(png(second), question)]


def photo_pair(rng: np.random.Generator, index: int) -> Made:
    import skimage

    photo = Image.open(Path(skimage.data_dir) / PHOTOS[index % len(PHOTOS)]).convert("RGB")
    width, height = photo.size
    keep = round(width * 0.55)  # two crops overlapping by a tenth of the width
    question = "Describe this image."
    return (png(photo.crop((0, 0, keep, height))), question), [
        (png(photo.crop((width - keep, 0, width, height))), question)
    ]


def gui_pair(rng: np.random.Generator, index: int) -> Made:
    """A phone screen and the same screen with other content: an app's list with other rows, or the
    home screen with other apps."""
    seeds = int(rng.integers(1 << 30)), int(rng.integers(1 << 30))
    if index % 2:
        name = gui.APPS[index % len(gui.APPS)]
        screens = [gui._mobile_app(name, random.Random(seed)) for seed in seeds]
        while screens[1].elements == screens[0].elements:
            screens[1] = gui._mobile_app(name, random.Random(int(rng.integers(1 << 30))))
        question = f"Which rows does the {name} screen list?"
    else:
        screens = [gui._mobile_home(random.Random(seed)) for seed in seeds]
        while screens[1].elements == screens[0].elements:
            screens[1] = gui._mobile_home(random.Random(int(rng.integers(1 << 30))))
        question = "Which apps are on the home screen?"
    return (gui.draw_png(screens[0]), question), [(gui.draw_png(screens[1]), question)]


@functools.lru_cache(maxsize=2)
def _shapes(split: str) -> dict[str, list[tuple[int, str]]]:
    """easy-VQA images of one split by (shape, colour): [(image id, a question about it)]."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions() if split == "test" else easy_vqa.get_train_questions()
    shape: dict[int, str] = {}
    colour: dict[int, str] = {}
    question_of: dict[int, str] = {}
    for question, answer, image_id in zip(questions, answers, image_ids, strict=True):
        if answer in ("circle", "rectangle", "triangle"):
            shape[image_id] = answer
        elif answer not in ("yes", "no"):
            colour[image_id] = answer
        question_of.setdefault(image_id, question)
    out: dict[str, list[tuple[int, str]]] = {}
    for image_id in sorted(set(shape) & set(colour)):
        out.setdefault(f"{colour[image_id]} {shape[image_id]}", []).append((image_id, question_of[image_id]))
    return out


SHAPE_NEGATIVES = 5  # per benchmark shape image: easy-VQA has hundreds of each colour and shape


def shape_pair(rng: np.random.Generator, index: int) -> Made:
    """An easy-VQA test image (a 64 px shape on a flat background, as the sample corpus' benchmark
    has them) and SHAPE_NEGATIVES training images of the same shape and colour elsewhere, at other
    sizes: one flat background and one shape, so many training images look alike."""
    import easy_vqa

    test, train = _shapes("test"), _shapes("train")
    kind = sorted(set(test) & set(train))[int(rng.integers(len(set(test) & set(train))))]
    image_id, question = test[kind][int(rng.integers(len(test[kind])))]
    chosen = [int(rng.integers(len(train[kind])))]
    chosen += rng.choice(len(train[kind]), size=SHAPE_NEGATIVES - 1, replace=False).tolist()
    train_paths = easy_vqa.get_train_image_paths()
    return (Path(easy_vqa.get_test_image_paths()[image_id]).read_bytes(), question), [
        (Path(train_paths[train[kind][i][0]]).read_bytes(), train[kind][i][1]) for i in chosen
    ]


MAKERS = {"chart": chart_pair, "document": document_pair, "photo": photo_pair, "gui": gui_pair, "shape": shape_pair}


# ---- edits ---------------------------------------------------------------------------------------


def edit(rng: np.random.Generator, data: bytes, kind: str) -> bytes:
    image = rgb(data)
    width, height = image.size
    if kind == "crop":
        fx, fy = rng.uniform(0.8, 0.95, 2)
        w, h = round(width * fx), round(height * fy)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        return png(image.crop((left, top, left + w, top + h)))
    if kind == "downscale_jpeg":
        scale = rng.uniform(0.3, 0.7)
        small = image.resize((max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BICUBIC)
        return jpeg(small, int(rng.integers(50, 86)))
    if kind == "brightness_contrast":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        return png(ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2)))
    if kind == "text_overlay":
        draw = ImageDraw.Draw(image)
        size = max(10, height // 14)
        font = ImageFont.load_default(size=size)
        top = int(rng.integers(0, max(1, height - 2 * size)))
        draw.rectangle((0, top, width, top + int(size * 1.6)), fill=(20, 20, 20))
        draw.text(
            (size // 2, top + size // 4), f"sample {int(rng.integers(1000))} - www.example.org", fill="white", font=font
        )
        return png(image)
    if kind == "padding":
        pads = (rng.uniform(0.05, 0.2, 4) * [width, height, width, height]).round().astype(int)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        canvas = Image.new("RGB", (width + pads[0] + pads[2], height + pads[1] + pads[3]), colour)
        canvas.paste(image, (int(pads[0]), int(pads[1])))
        return png(canvas)
    if kind == "screenshot":
        scale = rng.uniform(0.6, 1.4)
        shown = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
        margin = int(rng.integers(20, 60))
        canvas = Image.new("RGB", (shown.width + 2 * margin, shown.height + 2 * margin + 30), (236, 236, 236))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, 0, canvas.width, 30), fill=(60, 60, 70))
        draw.text((10, 8), "image viewer", fill="white", font=ImageFont.load_default(size=13))
        canvas.paste(shown, (margin, 30 + margin))
        return png(canvas)
    raise ValueError(f"unknown edit {kind!r}")


def labelled_set(seed: int, per_kind: int) -> tuple[list[Image_], list[Image_]]:
    """(benchmark images, training images): every benchmark image has one copy per edit type and
    its same-template negatives."""
    rng = np.random.default_rng(seed)
    bench: list[Image_] = []
    train: list[Image_] = []
    for kind in KINDS:
        for index in range(per_kind):
            offset = seed * 7 + index  # other photographs and chart kinds under another seed
            (original, question), negatives = MAKERS[kind](rng, offset)
            row = len(bench)
            bench.append(Image_(f"{kind}{index}", original, question, kind))
            for number, (negative, negative_question) in enumerate(negatives, start=1):
                name = f"{kind}{index}-negative{number if number > 1 else ''}"
                train.append(Image_(name, negative, negative_question, kind, "negative", row))
            for edit_type in EDITS:
                text = question if rng.random() < 0.5 else "What is shown here?"
                train.append(
                    Image_(f"{kind}{index}-{edit_type}", edit(rng, original, edit_type), text, kind, edit_type, row)
                )
    return bench, train


# ---- the two methods -----------------------------------------------------------------------------


def candidates(train_vectors: np.ndarray, bench_vectors: np.ndarray, threshold: float, k: int) -> knn.Hits:
    index = knn.build_index(bench_vectors)
    hits = knn.search_threshold_arrays(index, train_vectors, tau=threshold)
    keep = top_k_per_query(hits.query_rows, hits.similarities, k)
    return knn.Hits(hits.query_rows[keep], hits.index_rows[keep], hits.similarities[keep])


def fit_rule(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    margin: float = 1.5,
    negative_weight: float = 10.0,
    vetoes: dict[str, dict[str, float]] | None = None,
    excluded: tuple[str, ...] = (),
) -> VerifierRule:
    """Logistic regression (L2, gradient descent on standardised inputs) on the pairs no veto
    rejects, the classes balanced and then the negatives weighted `negative_weight` times more (a
    false hit costs more than a miss); the decision is put `margin` logits above the best-scoring
    negative, so the tuning seeds have no false hit. `excluded` features get no weight (a veto may
    still use them)."""
    vetoes = dict(vetoes or {})
    names = [name for name in FEATURES if name not in excluded]
    kept = ~VerifierRule({}, 0.0, 0.5, vetoes).vetoed(features)
    features = {name: values[kept] for name, values in features.items()}
    labels = labels[kept]
    probe = VerifierRule({name: 0.0 for name in names}, 0.0, 0.5)
    x = np.nan_to_num(probe.design(features))
    mean, std = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / std
    y = labels.astype(np.float64)
    sample_weight = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), negative_weight * 0.5 / max(1 - y.mean(), 1e-9))
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(5000):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        gradient = sample_weight * (p - y)
        w -= 0.1 * (z.T @ gradient / len(y) + 1e-3 * w)
        b -= 0.1 * gradient.mean()
    weights = w / std
    bias = b - float((w * mean / std).sum())
    logits = bias + x @ weights
    negatives = logits[y == 0]
    decision_logit = (negatives.max() if len(negatives) else 0.0) + margin
    decision = float(1 / (1 + np.exp(-decision_logit)))
    return VerifierRule(
        {n: round(float(v), 4) for n, v in zip(names, weights, strict=True)},
        round(float(bias), 4),
        min(max(round(decision, 6), 1e-6), 1 - 1e-6),
        vetoes,
    )


def cross_validate(
    features: dict[str, np.ndarray], labels: np.ndarray, folds: np.ndarray, fit: Callable[..., VerifierRule]
) -> np.ndarray:
    """Accepted candidate pairs when each fold is judged by a rule fitted on the other folds: how
    the rule does on data it was not fitted on, within the tuning seeds, so features and settings
    can be chosen without the report seed. `folds`: the fold of each pair."""
    accepted = np.zeros(len(labels), bool)
    for fold in np.unique(folds):
        held_out = folds == fold
        rule = fit({name: values[~held_out] for name, values in features.items()}, labels[~held_out])
        scores = rule.score({name: values[held_out] for name, values in features.items()})
        accepted[held_out] = scores >= rule.decision
    return accepted


def parse_vetoes(items: list[str]) -> dict[str, dict[str, float]]:
    """`--veto 'FEATURE>X'` / `--veto 'FEATURE<X'` arguments as {feature: {above|below: x}}."""
    vetoes: dict[str, dict[str, float]] = {}
    for item in items:
        match = re.fullmatch(r"(\w+)\s*([<>])\s*([-+0-9.eE]+)", item)
        if not match or match[1] not in FEATURES:
            raise SystemExit(f"--veto {item!r}: expected FEATURE>X or FEATURE<X with FEATURE one of {list(FEATURES)}")
        vetoes.setdefault(match[1], {})["above" if match[2] == ">" else "below"] = float(match[3])
    return vetoes


def report(
    name: str, hits: set[tuple[int, int]], train: list[Image_], bench: list[Image_], seconds: float, pairs: int
) -> dict:
    truth = {(row, image.original) for row, image in enumerate(train) if image.edit not in (None, "negative")}
    print(f"\n{name}: {len(hits)} hit(s), {pairs} pair(s) verified, {seconds:.1f} s")
    recalls = {}
    for edit_type in EDITS:
        rows = [(row, image.original) for row, image in enumerate(train) if image.edit == edit_type]
        found = sum(pair in hits for pair in rows)
        recalls[edit_type] = found / len(rows)
        of_kind = {kind: [p for p in rows if train[p[0]].kind == kind] for kind in KINDS}
        by_kind = ", ".join(
            f"{kind} {sum(p in hits for p in kind_rows)}/{len(kind_rows)}" for kind, kind_rows in of_kind.items()
        )
        print(f"  {edit_type:<20} recall {recalls[edit_type]:.2f}  ({by_kind})")
    for kind in KINDS:
        of_kind = {pair for pair in truth if train[pair[0]].kind == kind}
        print(f"  {kind:<20} recall {len(hits & of_kind) / len(of_kind):.3f} ({len(hits & of_kind)}/{len(of_kind)})")
    recall = len(hits & truth) / len(truth)
    issue_kinds = {pair for pair in truth if train[pair[0]].kind != "shape"}
    false_hits = sorted(hits - truth)
    # a false hit on a copy names the wrong benchmark image (a sibling screen, another shape), but
    # the training image is contaminated all the same; one on a negative flags a clean image
    on_negatives = [(row, bench_row) for row, bench_row in false_hits if train[row].edit == "negative"]
    print(
        f"  {'overall':<20} recall {recall:.3f} ({len(hits & truth)}/{len(truth)}); without shapes "
        f"{len(hits & issue_kinds) / len(issue_kinds):.3f} ({len(hits & issue_kinds)}/{len(issue_kinds)}); "
        f"false hits {len(false_hits)} ({len(on_negatives)} on images that copy no benchmark image, "
        f"{len(false_hits) - len(on_negatives)} on copies of another benchmark image)"
    )
    for row, bench_row in false_hits[:10]:
        print(f"    false hit: {train[row].name} -> {bench[bench_row].name}")
    return {
        "recall": recall,
        "false_hits": len(false_hits),
        "false_hits_on_negatives": len(on_negatives),
        "per_edit": recalls,
        "seconds": seconds,
    }


@dataclass
class Measured:
    """One or more seeds' labelled sets (concatenated) with both methods' inputs."""

    bench: list[Image_]
    train: list[Image_]
    threshold_hits: set[tuple[int, int]]
    rows: np.ndarray  # candidate pairs: training rows ...
    bench_rows: np.ndarray  # ... and benchmark rows
    features: dict[str, np.ndarray]
    embed_seconds: float
    verify_seconds: float
    pair_seeds: np.ndarray  # the seed of each candidate pair


def measure(seed: int, args: argparse.Namespace, spec: EmbedderSpec) -> Measured:
    started = time.perf_counter()
    bench, train = labelled_set(seed, args.per_kind)
    print(
        f"labelled set (seed {seed}): {len(bench)} benchmark images, {len(train)} training images "
        f"({len(train) - len(bench)} copies, {len(bench)} same-template negatives), made in "
        f"{time.perf_counter() - started:.1f} s"
    )
    cache = _cache_path(args, seed, bench, train)
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            print(f"  features of seed {seed} read from {cache}")
            features = {name: saved[f"feature_{name}"] for name in FEATURES}
            threshold_hits = set(zip(saved["exact_rows"].tolist(), saved["exact_bench_rows"].tolist(), strict=True))
            return Measured(
                bench,
                train,
                threshold_hits,
                saved["rows"],
                saved["bench_rows"],
                features,
                float(saved["embed_seconds"]),
                float(saved["verify_seconds"]),
                np.full(len(saved["rows"]), seed),
            )
    started = time.perf_counter()
    bench_vectors = embed_bytes(spec, [image.data for image in bench])
    train_vectors = embed_bytes(spec, [image.data for image in train])
    embed_seconds = time.perf_counter() - started
    exact = candidates(train_vectors, bench_vectors, args.threshold, len(bench))
    started = time.perf_counter()
    found = candidates(train_vectors, bench_vectors, args.candidate_threshold, args.candidate_k)
    rows, bench_rows = found.query_rows, found.index_rows
    features = pair_features(
        spec,
        [train[r].data for r in rows],
        [bench[b].data for b in bench_rows],
        [train[r].text for r in rows],
        [bench[b].text for b in bench_rows],
    )
    threshold_hits = set(zip(exact.query_rows.tolist(), exact.index_rows.tolist(), strict=True))
    verify_seconds = time.perf_counter() - started
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            rows=rows,
            bench_rows=bench_rows,
            exact_rows=exact.query_rows,
            exact_bench_rows=exact.index_rows,
            embed_seconds=embed_seconds,
            verify_seconds=verify_seconds,
            **{f"feature_{name}": values for name, values in features.items()},
        )
    return Measured(
        bench,
        train,
        threshold_hits,
        rows,
        bench_rows,
        features,
        embed_seconds,
        verify_seconds,
        np.full(len(rows), seed),
    )


def _cache_path(args: argparse.Namespace, seed: int, bench: list[Image_], train: list[Image_]) -> Path | None:
    """Where `--cache` keeps a seed's candidate pairs and features: keyed by the images, the search
    settings and the source of the evidence (udfs/verify.py, udfs/tiles.py, udfs/sscd.py), so a
    change to any of them measures again; rules are refitted and scored from the cache in seconds."""
    if not args.cache:
        return None
    digest = hashlib.sha256()
    for image in [*bench, *train]:
        digest.update(image.data)
        digest.update((image.text or "").encode())
    for module in ("verify", "tiles", "sscd"):
        digest.update((Path(__file__).parents[1] / "udfs" / f"{module}.py").read_bytes())
    digest.update(f"{args.candidate_threshold} {args.candidate_k} {args.threshold}".encode())
    return Path(args.cache) / f"seed{seed}-{digest.hexdigest()[:16]}.npz"


def concatenated(parts: list[tuple[int, Measured]]) -> Measured:
    """Several seeds' sets as one: each seed searched on its own (a photograph can recur across
    seeds), its rows shifted past the previous seeds'."""
    if len(parts) == 1:
        return parts[0][1]
    out = Measured([], [], set(), np.empty(0, np.int64), np.empty(0, np.int64), {}, 0.0, 0.0, np.empty(0, np.int64))
    for seed, part in parts:
        train_offset, bench_offset = len(out.train), len(out.bench)
        out.bench += [Image_(f"s{seed}/{i.name}", i.data, i.text, i.kind) for i in part.bench]
        out.train += [
            Image_(
                f"s{seed}/{i.name}",
                i.data,
                i.text,
                i.kind,
                i.edit,
                None if i.original is None else i.original + bench_offset,
            )
            for i in part.train
        ]
        out.threshold_hits |= {(r + train_offset, b + bench_offset) for r, b in part.threshold_hits}
        out.rows = np.concatenate([out.rows, part.rows + train_offset])
        out.bench_rows = np.concatenate([out.bench_rows, part.bench_rows + bench_offset])
        out.features = {
            name: np.concatenate([out.features.get(name, np.empty(0, np.float32)), part.features[name]])
            for name in part.features
        }
        out.pair_seeds = np.concatenate([out.pair_seeds, part.pair_seeds])
        out.embed_seconds += part.embed_seconds
        out.verify_seconds += part.verify_seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, nargs="+", default=[2], help="one or more seeds, taken together")
    parser.add_argument("--per-kind", type=int, default=5, help="benchmark images per kind (7 training images each)")
    parser.add_argument("--candidate-threshold", type=float, default=0.3)
    parser.add_argument("--candidate-k", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument(
        "--cache",
        help="keep each seed's candidate pairs and features here, and reuse them while nothing they depend on changed",
    )
    parser.add_argument("--rule", default=str(CONF_DIR / "decontaminate" / "verifier.yaml"))
    parser.add_argument("--fit", help="fit the rule on these seeds and write it to this YAML file")
    parser.add_argument(
        "--cv",
        default=None,
        help="also print cross-validated recall: 'seed' leaves one seed out at a time (several --seed), "
        "a number K folds over benchmark images",
    )
    parser.add_argument(
        "--margin", type=float, default=1.5, help="--fit: logits between the decision and the best negative"
    )
    parser.add_argument(
        "--negative-weight", type=float, default=80.0, help="--fit: how much more a negative pair weighs than a copy"
    )
    parser.add_argument(
        "--veto",
        action="append",
        default=[],
        metavar="'FEATURE>X'",
        help="--fit: pairs with FEATURE above (>) or below (<) X are never hits (repeatable)",
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="FEATURE", help="--fit: a feature the weights leave out"
    )
    args = parser.parse_args()

    spec = EmbedderSpec()
    measured = concatenated([(seed, measure(seed, args, spec)) for seed in args.seed])
    train, rows, bench_rows, features = (
        measured.train,
        measured.rows,
        measured.bench_rows,
        measured.features,
    )
    seeds = " ".join(str(seed) for seed in args.seed)
    print(f"SSCD whole-image embeddings: {measured.embed_seconds:.1f} s (shared by both methods)")
    threshold_report = report(
        f"threshold (SSCD >= {args.threshold})", measured.threshold_hits, train, measured.bench, 0.0, 0
    )

    truth = {(row, image.original) for row, image in enumerate(train) if image.edit not in (None, "negative")}
    labels = np.array([(r, b) in truth for r, b in zip(rows.tolist(), bench_rows.tolist(), strict=True)])
    missed_by_search = len(truth - set(zip(rows.tolist(), bench_rows.tolist(), strict=True)))
    print(
        f"\ncandidates (SSCD >= {args.candidate_threshold}, top {args.candidate_k}): {len(rows)} pairs, "
        f"{int(labels.sum())} true; {missed_by_search} copies not among them"
    )
    vetoes = parse_vetoes(args.veto)

    def fit(features: dict[str, np.ndarray], labels: np.ndarray) -> VerifierRule:
        return fit_rule(features, labels, args.margin, args.negative_weight, vetoes, tuple(args.exclude))

    if args.cv:
        if args.cv == "seed":
            folds, over = measured.pair_seeds, "seeds, one left out at a time"
        else:
            folds, over = bench_rows % int(args.cv), f"{args.cv} folds of benchmark images"
        accepted = cross_validate(features, labels, folds, fit)
        for fold in np.unique(folds):
            held = folds == fold
            print(
                f"  held out {fold}: {int((accepted & labels & held).sum())}/{int((labels & held).sum())} copies, "
                f"{int((accepted & ~labels & held).sum())} false hits"
            )
        false_hits = [
            f"{train[r].name} -> {measured.bench[b].name}"
            for r, b in zip(rows[accepted & ~labels], bench_rows[accepted & ~labels], strict=True)
        ]
        print(
            f"cross-validation over {over} (seed {seeds}): {int((accepted & labels).sum())}/{int(labels.sum())} "
            f"copies, {int((accepted & ~labels).sum())} false hits {false_hits}"
        )
    if args.fit:
        rule = fit(features, labels)
        Path(args.fit).parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Fitted by bench/decontam_recall.py --seed {seeds} --per-kind {args.per_kind} "
            f"--candidate-threshold {args.candidate_threshold} --candidate-k {args.candidate_k} --margin {args.margin} "
            f"--negative-weight {args.negative_weight}{''.join(f" --veto '{veto}'" for veto in args.veto)}"
            f"{''.join(f' --exclude {name}' for name in args.exclude)}\n"
            "# score = sigmoid(bias + sum(weight * feature)), inliers as log1p; hit when score >= decision\n"
            "# and no veto applies\n"
        )
        body = {"weights": dict(rule.weights), "bias": rule.bias, "decision": rule.decision, "vetoes": vetoes}
        Path(args.fit).write_text(header + yaml.safe_dump(body, sort_keys=False))
        print(f"rule fitted and written to {args.fit}: {body}")
    else:
        rule = VerifierRule.from_file(args.rule)
    scores = rule.score(features)
    accepted = scores >= rule.decision
    verified_hits = set(zip(rows[accepted].tolist(), bench_rows[accepted].tolist(), strict=True))
    verified_report = report("verified", verified_hits, train, measured.bench, measured.verify_seconds, len(rows))
    for name in FEATURES:
        values = features[name]
        print(
            f"  feature {name:<12} copies median {np.nanmedian(values[labels]) if labels.any() else float('nan'):.3f}"
            f"  others max {np.nanmax(values[~labels]) if (~labels).any() else float('nan'):.3f}"
        )
    print(
        f"\nsummary (seed {seeds}): threshold recall {threshold_report['recall']:.3f} / false hits "
        f"{threshold_report['false_hits']} ({threshold_report['false_hits_on_negatives']} on non-copies); verified "
        f"recall {verified_report['recall']:.3f} / false hits {verified_report['false_hits']} "
        f"({verified_report['false_hits_on_negatives']} on non-copies); verified cost {len(rows)} pairs, {measured.verify_seconds:.1f} s "
        f"(+ {measured.embed_seconds:.1f} s embedding)"
    )


if __name__ == "__main__":
    main()
