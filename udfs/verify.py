"""Verification of decontamination candidates, one (training image, benchmark image) pair at a time:
the Spark-free batch functions of the `verified` method.

A candidate pair comes from a FAISS search at a low SSCD similarity; the verifier measures evidence
that the training image is an edited copy of the benchmark image, and a small documented rule
(`VerifierRule`, a logistic regression whose weights live in `conf/decontaminate/verifier.yaml`)
decides:

- `sscd_whole`: SSCD cosine of the two whole images (what FineVision thresholds at 0.95); in the
  stage, the search's cosine of the embed stage's vectors.
- `sscd_views`: the best SSCD cosine between views of the two images: the whole image and its
  centre crops at `VIEW_SCALES` on each side, so that a crop of the benchmark image meets the
  matching crop, and a padded copy meets the benchmark image through its own centre crop (at least
  `sscd_whole`: the whole images are one of the views).
- `inliers`, `inlier_area`: ORB keypoints matched with Lowe's ratio test, then a RANSAC homography
  (OpenCV): the inlier count and the share of the benchmark image that the inliers' convex hull
  covers. A copy agrees on one geometry over most of the image; a same-template chart agrees on
  its axes and labels only.
- `aligned_ncc`, `aligned_ncc_low`: normalised cross-correlation of the two images in grey levels,
  after mapping the training image onto the benchmark image (through the homography when there is
  one, else by resizing), block by block at the smaller image's resolution: the median and the
  20th percentile over textured blocks. Invariant to brightness and contrast; the median is robust
  to a text overlay, the low percentile sees the few blocks where a same-template image differs.
- `text_overlap`: where both sides have text, the share of the benchmark text's word 3-grams found
  in the training text (1.0 for a normalised exact match); 0 where either side has none.
- the aligned tile evidence (`udfs.tiles`, TILE_FEATURES): the training image aligned onto the
  benchmark image (resize, SIFT similarity or template shift) and compared tile by tile, including
  what a copy cannot be (`tiles_unexplained`, `tiles_textured`, `frame_nesting`).

Images are decoded once per distinct image of a batch. The stage decides a batch with
`verify_pairs`, a cascade from cheap evidence to costly (tile evidence and its vetoes, then ORB
geometry, then the SSCD views only where the score's bounds leave the decision open), which
decides every pair exactly as measuring every feature (`pair_features`, what the rule is fitted
on) would; on the labelled set the views, three model calls an image and most of the cost, are
needed for under 1% of the pairs the rule decides.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from udfs.sscd import MAX_DECODE_PIXELS, RESIZE_FILTER, EmbedderSpec, get_embedder
from udfs.tiles import TILE_FEATURES, sift_keypoints, tile_evidence
from udfs.words import normalised_words

FEATURES = (
    "sscd_whole",
    "sscd_views",
    "inliers",
    "inlier_area",
    "aligned_ncc",
    "aligned_ncc_low",
    "text_overlap",
    *TILE_FEATURES,
)
THRESHOLD, VERIFIED, BOTH = "threshold", "verified", "both"  # contamination_hits.decided_by
VIEW_SCALES = (1.0, 0.85, 0.7)
MATCH_SIDE = 512  # both images are resized so that their longer side is this long for ORB
NCC_SIDE = 256  # the largest grid the aligned images are compared on
NCC_BLOCKS = 8  # blocks per side for the block-wise correlation
MIN_INLIERS = 8


# ---- decoding and views ---------------------------------------------------------------------


def decode_rgb(data: bytes | None) -> np.ndarray | None:
    """RGB uint8 [h, w, 3], or None for missing or undecodable bytes."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_DECODE_PIXELS:
                return None
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - an undecodable image has no evidence
        return None


def centre_crop(image: np.ndarray, scale: float) -> np.ndarray:
    """The centred crop keeping `scale` of each side."""
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (height - h) // 2, (width - w) // 2
    return image[top : top + h, left : left + w]


def view_pixels(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [len(VIEW_SCALES), size, size, 3]: each view resized as the embed stage resizes."""
    return np.stack(
        [np.asarray(Image.fromarray(centre_crop(image, s)).resize((size, size), RESIZE_FILTER)) for s in VIEW_SCALES]
    )


# ---- geometric verification -----------------------------------------------------------------


def _full_grey(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _grey_at(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = side / max(grey.shape)
    return cv2.resize(
        grey,
        (max(8, round(grey.shape[1] * scale)), max(8, round(grey.shape[0] * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
    )


@dataclass(frozen=True)
class Geometry:
    inliers: int
    inlier_area: float  # share of the benchmark image covered by the inliers' convex hull
    homography: np.ndarray | None  # training (MATCH_SIDE grid) -> benchmark (MATCH_SIDE grid)


def _orb(grey: np.ndarray):
    import cv2

    return cv2.ORB_create(nfeatures=1500, fastThreshold=10).detectAndCompute(grey, None)  # type: ignore[attr-defined]  # cv2's stubs omit ORB_create


def geometric_match(train_grey: np.ndarray, bench_grey: np.ndarray, train_orb=None, bench_orb=None) -> Geometry:
    """ORB matches (ratio test 0.8) and a RANSAC homography from the training to the benchmark image."""
    import cv2

    (train_points, train_desc) = train_orb or _orb(train_grey)
    (bench_points, bench_desc) = bench_orb or _orb(bench_grey)
    none = Geometry(0, 0.0, None)
    if train_desc is None or bench_desc is None or len(train_desc) < 2 or len(bench_desc) < 2:
        return none
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(train_desc, bench_desc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < MIN_INLIERS:
        return none
    source = np.array([train_points[m.queryIdx].pt for m in good], dtype=np.float32)
    target = np.array([bench_points[m.trainIdx].pt for m in good], dtype=np.float32)
    homography, mask = cv2.findHomography(source, target, cv2.RANSAC, 5.0)
    if homography is None or mask is None:
        return none
    inliers = mask.ravel().astype(bool)
    if inliers.sum() < MIN_INLIERS or not _plausible(homography):
        return none
    hull = cv2.convexHull(target[inliers])
    area = float(cv2.contourArea(hull)) / float(bench_grey.shape[0] * bench_grey.shape[1])
    return Geometry(int(inliers.sum()), min(area, 1.0), homography)


def _plausible(homography: np.ndarray) -> bool:
    """A copy's homography keeps orientation and scales by a bounded factor (no fold, no collapse)."""
    affine = homography[:2, :2] / homography[2, 2]
    determinant = float(np.linalg.det(affine))
    return 0.05 < determinant < 20 and float(np.abs(homography[2, :2]).max()) < 0.005


# ---- photometric agreement ------------------------------------------------------------------


def _block_correlations(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Correlation of a and b (float grids of one shape) in each of NCC_BLOCKS x NCC_BLOCKS blocks
    that is covered: 0 where only one side has texture, none where both are flat (no evidence)."""
    side = a.shape[0] // NCC_BLOCKS
    scores = []
    for i in range(NCC_BLOCKS):
        for j in range(NCC_BLOCKS):
            window = (slice(i * side, (i + 1) * side), slice(j * side, (j + 1) * side))
            keep = valid[window]
            if keep.mean() < 0.8:
                continue
            x, y = a[window][keep], b[window][keep]
            flat_x, flat_y = x.std() < 2.0, y.std() < 2.0
            if flat_x and flat_y:
                continue
            if flat_x or flat_y:  # content on one side only: the images disagree here
                scores.append(0.0)
                continue
            x, y = x - x.mean(), y - y.mean()
            scores.append(float((x * y).sum()) / math.sqrt(float((x * x).sum()) * float((y * y).sum())))
    return np.array(scores, np.float64)


def _summary(scores: np.ndarray) -> tuple[float, float]:
    """(median, 20th percentile) of block correlations; (0, 0) under 4 textured blocks."""
    if len(scores) < 4:
        return 0.0, 0.0
    return float(np.median(scores)), float(np.percentile(scores, 20))


def aligned_ncc(train: np.ndarray, bench: np.ndarray, geometry: Geometry) -> tuple[float, float]:
    """Block-wise correlation of the training image mapped onto the benchmark image, as (median,
    20th percentile over blocks): the better of a plain resize and, when there is one, the
    homography. Both sides are compared at the smaller image's resolution (at most NCC_SIDE), so a
    downscaled copy is not penalised for the detail it lost."""
    import cv2

    side = int(min(NCC_SIDE, max(48, min(max(train.shape[:2]), max(bench.shape[:2])))))
    side -= side % NCC_BLOCKS
    grid = (side, side)

    def prepared(grey: np.ndarray) -> np.ndarray:
        small = cv2.resize(grey, grid, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)

    bench_grey, train_grey = _grey_at(bench, MATCH_SIDE), _grey_at(train, MATCH_SIDE)
    target = prepared(bench_grey)
    best = _summary(_block_correlations(prepared(train_grey), target, np.ones(grid, bool)))
    if geometry.homography is not None:
        height, width = bench_grey.shape
        warped = cv2.warpPerspective(train_grey, geometry.homography, (width, height))
        covered = cv2.warpPerspective(np.full(train_grey.shape, 255, np.uint8), geometry.homography, (width, height))
        valid = cv2.resize(covered, grid, interpolation=cv2.INTER_AREA) >= 250
        if valid.mean() >= 0.3:
            best = max(best, _summary(_block_correlations(prepared(warped), target, valid)))
    return best


# ---- text -----------------------------------------------------------------------------------


def text_overlap(train_text: str | None, bench_text: str | None) -> float:
    """Share of the benchmark text's word 3-grams found in the training text (whole texts under 3
    words must match exactly); 0 when either side has no text."""
    train_words, bench_words = normalised_words(train_text), normalised_words(bench_text)
    if not train_words or not bench_words:
        return 0.0
    if len(bench_words) < 3:
        return 1.0 if " ".join(bench_words) in " ".join(train_words) else 0.0
    bench_grams = {tuple(bench_words[i : i + 3]) for i in range(len(bench_words) - 2)}
    train_grams = {tuple(train_words[i : i + 3]) for i in range(len(train_words) - 2)}
    return len(bench_grams & train_grams) / len(bench_grams)


# ---- the batch functions --------------------------------------------------------------------


class _Images:
    """The distinct images of a batch, each decoded once, with its derived inputs computed on first use."""

    def __init__(self, spec: EmbedderSpec, blobs: Sequence[bytes | None]):
        self.spec = spec
        self.pixels: dict[bytes, np.ndarray] = {}
        for blob in blobs:
            if blob and blob not in self.pixels:
                image = decode_rgb(blob)
                if image is not None:
                    self.pixels[blob] = image
        self._orb: dict[bytes, tuple] = {}
        self._sift: dict[bytes, tuple] = {}
        self._full_grey: dict[bytes, np.ndarray] = {}
        self._views: dict[bytes, np.ndarray] = {}

    def decoded(self, *blobs: bytes | None) -> bool:
        return all(blob in self.pixels for blob in blobs)

    def full_grey(self, blob: bytes) -> np.ndarray:
        if blob not in self._full_grey:
            self._full_grey[blob] = _full_grey(self.pixels[blob])
        return self._full_grey[blob]

    def sift(self, blob: bytes) -> tuple:
        if blob not in self._sift:
            self._sift[blob] = sift_keypoints(self.full_grey(blob))
        return self._sift[blob]

    def orb(self, blob: bytes) -> tuple:
        """(grey at MATCH_SIDE, ORB keypoints and descriptors)."""
        if blob not in self._orb:
            grey = _grey_at(self.pixels[blob], MATCH_SIDE)
            self._orb[blob] = (grey, _orb(grey))
        return self._orb[blob]

    def views(self, blobs: Iterable[bytes]) -> dict[bytes, np.ndarray]:
        """Per image, float32 [len(VIEW_SCALES), 512] unit rows; the missing ones embedded in one batch."""
        missing = list(dict.fromkeys(blob for blob in blobs if blob not in self._views))
        if missing:
            embedded = _view_embeddings(self.spec, [self.pixels[blob] for blob in missing])
            self._views.update(zip(missing, embedded, strict=True))
        return self._views


def _measure_tiles(images: _Images, out: dict[str, np.ndarray], pairs: list[tuple[int, bytes, bytes]]) -> None:
    for row, train, bench in pairs:
        tiles = tile_evidence(images.full_grey(train), images.full_grey(bench), images.sift(train), images.sift(bench))
        for name, value in tiles.items():
            out[name][row] = value


def _measure_geometry(images: _Images, out: dict[str, np.ndarray], pairs: list[tuple[int, bytes, bytes]]) -> None:
    for row, train, bench in pairs:
        (train_grey, train_orb), (bench_grey, bench_orb) = images.orb(train), images.orb(bench)
        geometry = geometric_match(train_grey, bench_grey, train_orb, bench_orb)
        out["inliers"][row] = geometry.inliers
        out["inlier_area"][row] = geometry.inlier_area
        out["aligned_ncc"][row], out["aligned_ncc_low"][row] = aligned_ncc(
            images.pixels[train], images.pixels[bench], geometry
        )


def _measure_views(images: _Images, out: dict[str, np.ndarray], pairs: list[tuple[int, bytes, bytes]]) -> None:
    """`sscd_views` (and `sscd_whole` where the caller gave no similarity): the best cosine between
    views, at least the whole images' cosine."""
    views = images.views(blob for _, train, bench in pairs for blob in (train, bench))
    for row, train, bench in pairs:
        cosines = views[train] @ views[bench].T  # [views, views], [0, 0] = the whole images
        if np.isnan(out["sscd_whole"][row]):
            out["sscd_whole"][row] = cosines[0, 0]
        out["sscd_views"][row] = max(float(cosines.max()), float(out["sscd_whole"][row]))


def _texts(out: dict[str, np.ndarray], train_texts, bench_texts) -> None:
    for row in range(len(out["text_overlap"])):
        train_text = train_texts[row] if train_texts is not None else None
        bench_text = bench_texts[row] if bench_texts is not None else None
        out["text_overlap"][row] = text_overlap(train_text, bench_text)


def _start(
    spec: EmbedderSpec, train_images, bench_images, train_texts, bench_texts, similarity
) -> tuple[_Images, dict[str, np.ndarray], list[tuple[int, bytes, bytes]]]:
    """The decoded images, the features (NaN = not measured; `sscd_whole` from `similarity` where
    given, text measured) and the pairs whose two images decode."""
    count = len(train_images)
    out = {name: np.full(count, np.nan, np.float32) for name in FEATURES}
    images = _Images(spec, [*train_images, *bench_images])
    decodable = [
        (row, train, bench)
        for row, (train, bench) in enumerate(zip(train_images, bench_images, strict=True))
        if images.decoded(train, bench)
    ]
    if similarity is not None:
        for row, _, _ in decodable:
            out["sscd_whole"][row] = similarity[row]
    _texts(out, train_texts, bench_texts)
    return images, out, decodable


def pair_features(
    spec: EmbedderSpec,
    train_images: Sequence[bytes | None],
    bench_images: Sequence[bytes | None],
    train_texts: Sequence[str | None] | None = None,
    bench_texts: Sequence[str | None] | None = None,
    similarity: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Every one of FEATURES for each pair (train_images[i], bench_images[i]) as float32 arrays (what
    the rule is fitted on); a pair with an undecodable image gets NaN image features. `sscd_whole`
    is `similarity[i]` where given (the search's cosine of the embed stage's vectors), else computed."""
    images, out, decodable = _start(spec, train_images, bench_images, train_texts, bench_texts, similarity)
    _measure_tiles(images, out, decodable)
    _measure_geometry(images, out, decodable)
    _measure_views(images, out, decodable)
    return out


@dataclass(frozen=True)
class Verdicts:
    """`verify_pairs`' answer: the features measured (NaN = not needed for the decision), each pair's
    score (where the cascade settled a pair without a feature, the bound that settled it: at or above
    the decision for an accepted pair, below it for a rejected one), and the step that settled it."""

    features: dict[str, np.ndarray]
    scores: np.ndarray
    settled_by: np.ndarray  # object: "undecodable" | "veto" | "bounds" | "views" per pair


def verify_pairs(
    spec: EmbedderSpec,
    rule: VerifierRule,
    similarity: Sequence[float],
    train_images: Sequence[bytes | None],
    bench_images: Sequence[bytes | None],
    train_texts: Sequence[str | None] | None = None,
    bench_texts: Sequence[str | None] | None = None,
) -> Verdicts:
    """The rule's score of each pair, measuring only the evidence its decision needs: a cascade from
    cheap to costly that decides every pair exactly as `rule.score(pair_features(...))` would.

    1. Tile evidence (SIFT per image, then per pair) and text: a veto on them rejects the pair.
    2. ORB geometry and aligned correlation for the pairs left.
    3. The score's bounds over the one feature left, `sscd_views`, which lies in [sscd_whole, 1]
       (the whole images are one of the views): when both bounds fall on one side of the decision,
       that settles the pair.
    4. The SSCD views (len(VIEW_SCALES) model calls per image, the costly step) only for the rest.
    `similarity` is the search's cosine of the pair (`sscd_whole`): no model call for the whole images.
    """
    images, out, decodable = _start(spec, train_images, bench_images, train_texts, bench_texts, similarity)
    settled_by = np.full(len(out["sscd_whole"]), "undecodable", dtype=object)
    _measure_tiles(images, out, decodable)
    early = rule.vetoed(out)  # a feature not measured yet (NaN) vetoes nothing
    left = [pair for pair in decodable if not early[pair[0]]]
    settled_by[[row for row, _, _ in decodable if early[row]]] = "veto"
    _measure_geometry(images, out, left)
    bound = view_bound(rule, out)
    bounded = [row for row, _, _ in left if not np.isnan(bound[row])]
    costly = [pair for pair in left if np.isnan(bound[pair[0]])]
    _measure_views(images, out, costly)
    scores = rule.score(out)
    scores[bounded] = bound[bounded]
    settled_by[bounded] = "bounds"
    settled_by[[row for row, _, _ in costly]] = "views"
    return Verdicts(out, scores.astype(np.float32), settled_by)


def view_bound(rule: VerifierRule, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per pair, the score bound that settles it whatever `sscd_views` is within [sscd_whole, 1]:
    the lower bound where even it reaches the decision, the upper where even it falls short; NaN
    where the views decide (the score is monotone in `sscd_views`, unless a veto reads it)."""
    low, high = dict(features), dict(features)
    low["sscd_views"], high["sscd_views"] = features["sscd_whole"], np.ones_like(features["sscd_whole"])
    ends = np.stack([rule.score(low), rule.score(high)]).astype(np.float64)
    out = np.full(ends.shape[1], np.nan)
    if "sscd_views" in rule.vetoes:
        return out
    accepted, rejected = ends.min(0) >= rule.decision, ends.max(0) < rule.decision
    out[accepted], out[rejected] = ends.min(0)[accepted], ends.max(0)[rejected]
    return out


def _view_embeddings(spec: EmbedderSpec, images: list[np.ndarray]) -> list[np.ndarray]:
    """Per image, float32 [len(VIEW_SCALES), 512] unit rows."""
    if not images:
        return []
    embedder = get_embedder(spec)
    pixels = np.concatenate([view_pixels(image, spec.image_size) for image in images])
    vectors = embedder.embed(pixels)
    return list(vectors.reshape(len(images), len(VIEW_SCALES), -1))


# ---- the decision --------------------------------------------------------------------------


def decide(similarity: np.ndarray, scores: np.ndarray, threshold: float, decision: float) -> np.ndarray:
    """Per pair, the rule that makes it a hit, or None: `threshold` at SSCD cosine >= threshold
    (FineVision's rule, whatever the verifier's score, vetoes included), `verified` below it when
    the verifier's score reaches `decision`. So the verified method's hits include the threshold
    method's: verification only adds hits below the threshold."""
    similarity = np.asarray(similarity, np.float32)
    above = similarity >= np.float32(threshold)
    accepted = ~above & (np.nan_to_num(np.asarray(scores, np.float64), nan=-1.0) >= decision)
    out = np.full(len(similarity), None, dtype=object)
    out[above] = THRESHOLD
    out[accepted] = VERIFIED
    return out


# ---- the decision rule ----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierRule:
    """score = sigmoid(bias + sum(weight * transform(feature))); a pair is a hit when score >= decision.

    `inliers` enters as log1p(inliers); the other features as they are (all in [0, 1] or so).
    `vetoes` ({feature: {above: x}} and/or {below: x}) score a pair 0 whatever the weights say, e.g.
    `tiles_unexplained` above a few percent (content the training image adds all over the benchmark
    image is not an edit of it) or `frame_nesting` below 0.9 (no crop, padding or resize leaves the
    two frames only partly overlapping). A NaN feature (an image that could not be decoded) makes
    the score 0.
    """

    weights: Mapping[str, float]
    bias: float
    decision: float
    vetoes: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = (set(self.weights) | set(self.vetoes)) - set(FEATURES)
        if unknown:
            raise ValueError(f"verifier rule: unknown feature(s) {sorted(unknown)}; known: {list(FEATURES)}")
        if not 0 < self.decision < 1:
            raise ValueError(f"verifier rule: decision must be in (0, 1), not {self.decision}")
        for name, bound in self.vetoes.items():
            if not bound or set(bound) - {"above", "below"}:
                raise ValueError(f"verifier rule: veto of {name} must be {{above: x}} and/or {{below: x}}, not {bound}")

    @classmethod
    def from_file(cls, path: str | Path) -> VerifierRule:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
            vetoes = {
                name: {side: float(value) for side, value in bound.items()}
                for name, bound in (data.get("vetoes") or {}).items()
            }
            return cls(dict(data["weights"]), float(data["bias"]), float(data["decision"]), vetoes)
        except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: not a verifier rule (weights, bias, decision, vetoes): {exc}") from None

    def digest(self) -> str:
        """A short hash of the rule's content: a hit records which rule decided it."""
        import hashlib
        import json

        content = {"weights": dict(self.weights), "bias": self.bias, "decision": self.decision}
        content["vetoes"] = {name: dict(bound) for name, bound in self.vetoes.items()}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]

    def vetoed(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """bool [pairs]: some feature is beyond its veto's bound."""
        pairs = len(next(iter(features.values()))) if features else 0
        out = np.zeros(pairs, bool)
        for name, bound in self.vetoes.items():
            values = np.asarray(features[name], np.float64)
            if "above" in bound:
                out |= values > bound["above"]
            if "below" in bound:
                out |= values < bound["below"]
        return out

    def design(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """The rule's inputs: [pairs, len(weights)] in the order of `weights`."""
        columns = []
        for name in self.weights:
            values = np.asarray(features[name], np.float64)
            columns.append(np.log1p(values) if name == "inliers" else values)
        return np.stack(columns, axis=1) if columns else np.empty((0, 0))

    def score(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        x = self.design(features)
        logits = self.bias + x @ np.array(list(self.weights.values()), np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        return np.where(np.isnan(scores) | self.vetoed(features), 0.0, scores).astype(np.float32)
