"""Aligned tile evidence for the `verified` decontamination method (see `udfs.verify`): does the
training image, mapped onto the benchmark image, agree with it tile by tile?

The training image is aligned onto the benchmark image by the best of three maps (a plain resize; a
similarity transform from SIFT matches with Lowe's ratio test and RANSAC, scale invariant unlike
ORB; the translation of a crop or a padded copy found by template matching); both are compared at
the lower of their two resolutions after a global linear brightness/contrast fit (`brightness_fit`:
robust to a caption band and to mostly flat screens), and the benchmark image is cut into up to
TILE_BLOCKS x TILE_BLOCKS tiles, each *agreeing* (correlation >= 0.9, or both flat at one level),
*occluded* (another level, or texture on one side only: a caption band or a sticker over a copy) or
*changed* (texture on both sides that does not correlate, away from any occluded tile: other text
or data in the same template). `aligned_coverage` is the share of the benchmark image the training
image covers; the `tiles_*` are shares of the covered tiles; `occluder_fill` is how much of its
bounding box the largest occluded region fills (a band fills it, the tops of other bars do not),
`occluder_scattered` the share of occluded tiles outside it, and `residual_peak` the worst tile's
RMS grey-level difference away from that region: resampling and re-encoding leave every tile of a
copy within a few grey levels, while a same-template image that differs only in a few small labels
(a phone screen with other rows) has those tiles tens of levels apart, even when 98% of the tiles
agree. Three more say what a copy cannot be: `tiles_unexplained` (tiles where the training image
adds texture or a level that no one compact occluder explains, plus changed tiles: a copy loses
detail but adds nothing outside a caption or a sticker), `tiles_textured` (agreeing tiles with
texture: two flat backgrounds agree everywhere without showing anything) and `frame_nesting` (how
much of one frame lies inside the other after alignment: 1 for a crop, a padded copy or a resize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

TILE_FEATURES = (
    "aligned_coverage",
    "tiles_agree",
    "tiles_occluded",
    "tiles_changed",
    "occluder_fill",
    "occluder_scattered",
    "residual_peak",
    "tiles_textured",
    "tiles_unexplained",
    "frame_nesting",
)
SIFT_SIDE = 512  # SIFT runs with the longer side at this length (smaller images are upscaled)
TILE_GRID_SIDE = 640  # the largest grid the aligned images are compared on, tile by tile
TILE_BLOCKS = 32  # tiles per side at most (fewer for small images: at least 6 pixels a tile)
MIN_TILES = 16
TILE_AGREE = 0.9  # tile correlation from which two textured tiles agree
FLAT_STD = 4.0  # grey-level standard deviation under which a tile is flat
LEVEL_DIFF = 24.0  # mean grey levels further apart than this: one side is occluded
FIT_TOLERANCE = 12.0  # grey levels within which a pixel counts for the brightness/contrast fit
# What a pair has when no alignment covers enough of the benchmark image: no agreement at all.
NO_TILES = {"aligned_coverage": 0.0, "tiles_agree": 0.0, "tiles_occluded": 0.0, "tiles_changed": 1.0}
NO_TILES |= {"occluder_fill": 0.0, "occluder_scattered": 1.0, "residual_peak": 255.0}
NO_TILES |= {"tiles_textured": 0.0, "tiles_unexplained": 1.0, "frame_nesting": 0.0}
COMPACT_FILL = 0.75  # an occluded region filling this much of its bounding box is one occluder (a band, a sticker)
MAX_HIDDEN = 0.5  # ... as long as it hides at most this share of the benchmark image's textured tiles


class TileState(IntEnum):
    """What a tile of the benchmark image shows of the aligned training image (`TileGrid.states`
    holds these values as int8)."""

    UNCOVERED = -1  # the training image covers under 90% of the tile
    AGREE = 1
    OCCLUDED = 2
    CHANGED = 3


# ---- tile evidence after alignment ------------------------------------------------------------


def sift_keypoints(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """SIFT keypoints (in the image's own pixels) and descriptors, found at SIFT_SIDE."""
    import cv2

    scale = SIFT_SIDE / max(grey.shape)
    size = (max(8, round(grey.shape[1] * scale)), max(8, round(grey.shape[0] * scale)))
    working = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    keypoints, descriptors = cv2.SIFT_create(nfeatures=2000).detectAndCompute(working, None)  # type: ignore[attr-defined]  # cv2's stubs omit SIFT_create
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2) / scale
    return points, descriptors


def sift_similarity(train_sift, bench_sift) -> np.ndarray | None:
    """A 2x3 similarity transform (scale, rotation, shift) from training to benchmark pixels, from
    SIFT matches (ratio test 0.8) and RANSAC; None without at least 6 consistent matches."""
    import cv2

    (train_points, train_desc), (bench_points, bench_desc) = train_sift, bench_sift
    if train_desc is None or bench_desc is None or len(train_desc) < 2 or len(bench_desc) < 2:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(train_desc, bench_desc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < 6:
        return None
    source = train_points[[m.queryIdx for m in good]]
    target = bench_points[[m.trainIdx for m in good]]
    matrix, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=3.0, maxIters=5000
    )
    if matrix is None or int(mask.sum()) < 6 or not 0.1 < math.sqrt(abs(np.linalg.det(matrix[:, :2]))) < 10:
        return None
    return matrix


def resize_map(train: np.ndarray, bench: np.ndarray) -> np.ndarray:
    """The map that stretches the whole training image onto the whole benchmark image."""
    return np.array([[bench.shape[1] / train.shape[1], 0, 0], [0, bench.shape[0] / train.shape[0], 0]])


def template_shift(train: np.ndarray, bench: np.ndarray) -> np.ndarray | None:
    """The translation (at scale 1) that puts the smaller image where it best matches inside the
    larger: a crop of the benchmark image, or a padded copy around it. None when neither contains
    the other."""
    import cv2

    if train.shape == bench.shape:
        return None
    if train.shape[0] <= bench.shape[0] and train.shape[1] <= bench.shape[1]:
        small, large, sign = train, bench, 1
    elif train.shape[0] >= bench.shape[0] and train.shape[1] >= bench.shape[1]:
        small, large, sign = bench, train, -1
    else:
        return None
    if small.std() < 1:
        return None
    scale = min(1.0, 192 / max(large.shape))

    def shrunk(grey: np.ndarray) -> np.ndarray:
        size = (max(4, round(grey.shape[1] * scale)), max(4, round(grey.shape[0] * scale)))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    coarse_small, coarse_large = shrunk(small), shrunk(large)
    if coarse_small.shape[0] > coarse_large.shape[0] or coarse_small.shape[1] > coarse_large.shape[1]:
        return None
    _, _, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(coarse_large, coarse_small, cv2.TM_CCOEFF_NORMED))
    # refine at full resolution in a window of a few pixels around the coarse position
    x, y, pad = round(x / scale), round(y / scale), math.ceil(2 / scale)
    top, left = max(0, y - pad), max(0, x - pad)
    window = large[top : y + small.shape[0] + pad, left : x + small.shape[1] + pad]
    if window.shape[0] >= small.shape[0] and window.shape[1] >= small.shape[1]:
        _, _, _, (dx, dy) = cv2.minMaxLoc(cv2.matchTemplate(window, small, cv2.TM_CCOEFF_NORMED))
        x, y = left + dx, top + dy
    return np.array([[1.0, 0, sign * x], [0, 1.0, sign * y]])


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    design = np.stack([x, np.ones(len(x))], 1)
    (gain, offset), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(gain), float(offset)


def brightness_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(gain, offset) with y ~ gain * x + offset (grey levels of the aligned training and benchmark
    pixels): of the identity, a pure shift and the least-squares line over all pixels, the one that
    puts the most pixels within FIT_TOLERANCE, refitted twice on those pixels. A caption band or
    other content thus stays out of the fit, and a mostly flat image (a phone screen: one background
    level) keeps the gain it started from instead of collapsing to a flat line."""
    starts = [(1.0, 0.0), (1.0, float(np.median(y - x))), _line(x, y)]
    inside_of = [np.abs(gain * x + offset - y) <= FIT_TOLERANCE for gain, offset in starts]
    best = int(np.argmax([inside.sum() for inside in inside_of]))
    (gain, offset), inside = starts[best], inside_of[best]
    for _ in range(2):
        if inside.sum() < 2:
            break
        if x[inside].std() >= 8:
            gain, offset = _line(x[inside], y[inside])
        else:
            offset = float(np.mean(y[inside] - gain * x[inside]))
        inside = np.abs(gain * x + offset - y) <= FIT_TOLERANCE
    return gain, offset


def _tile_sums(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.add.reduceat(np.add.reduceat(values, rows, axis=0), cols, axis=1)


@dataclass(frozen=True)
class TileGrid:
    """One alignment's comparison, per tile of the benchmark image (arrays [rows, cols])."""

    coverage: float  # share of the benchmark image the aligned training image covers
    inside: float  # share of the aligned training image that lies on the benchmark image
    states: np.ndarray  # a TileState per tile
    residual: np.ndarray  # RMS grey-level difference after the brightness/contrast fit
    textured: np.ndarray  # texture on at least one side
    added: np.ndarray  # occluded by something the training image adds: texture or a level the benchmark lacks
    content: np.ndarray  # texture on the benchmark side

    @property
    def nesting(self) -> float:
        """frame_nesting: 1 when one frame lies within the other (a crop, a padded copy, a resize)."""
        return max(self.coverage, self.inside)


def tile_states(train: np.ndarray, bench: np.ndarray, matrix: np.ndarray) -> TileGrid | None:
    """The training image (grey) mapped by `matrix` (training -> benchmark pixels) onto the
    benchmark image, compared at the lower of the two resolutions, tile by tile; None when under 64
    pixels are covered."""
    import cv2

    height, width = bench.shape
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    longer = max(height, width)
    grid = min(TILE_GRID_SIDE, longer, longer / scale) / longer  # benchmark pixels -> grid pixels
    target = cv2.resize(
        bench, (max(8, round(width * grid)), max(8, round(height * grid))), interpolation=cv2.INTER_AREA
    )
    factor = grid * scale  # training pixels -> grid pixels
    size = (max(2, round(train.shape[1] * factor)), max(2, round(train.shape[0] * factor)))
    source = cv2.resize(train, size, interpolation=cv2.INTER_AREA)
    shrink = np.diag([source.shape[1] / train.shape[1], source.shape[0] / train.shape[0], 1.0])
    mapping = (np.diag([grid, grid, 1.0]) @ np.vstack([matrix, [0, 0, 1]]) @ np.linalg.inv(shrink))[:2]
    rows_, cols_ = target.shape
    warped = cv2.warpAffine(source, mapping, (cols_, rows_), flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.full(source.shape, 255, np.uint8), mapping, (cols_, rows_), flags=cv2.INTER_NEAREST)
    cover = cv2.erode((covered > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    coverage = float(cover.mean())
    mapped_area = abs(float(np.linalg.det(mapping[:, :2]))) * source.shape[0] * source.shape[1]
    inside = min(1.0, float((covered > 0).sum()) / max(mapped_area, 1.0))
    if cover.sum() < 64:
        return None
    a = cv2.GaussianBlur(warped, (3, 3), 0).astype(np.float64)
    b = cv2.GaussianBlur(target, (3, 3), 0).astype(np.float64)
    gain, offset = brightness_fit(a[cover], b[cover])
    weight = cover.astype(np.float64)
    a, b = (gain * a + offset) * weight, b * weight
    blocks = int(min(TILE_BLOCKS, max(4, min(rows_, cols_) // 6)))
    rows, cols = np.linspace(0, rows_, blocks + 1).astype(int)[:-1], np.linspace(0, cols_, blocks + 1).astype(int)[:-1]
    count, area = _tile_sums(weight, rows, cols), _tile_sums(np.ones_like(weight), rows, cols)
    n = np.maximum(count, 1)
    mean_a, mean_b = _tile_sums(a, rows, cols) / n, _tile_sums(b, rows, cols) / n
    var_a = np.maximum(_tile_sums(a * a, rows, cols) / n - mean_a**2, 0)
    var_b = np.maximum(_tile_sums(b * b, rows, cols) / n - mean_b**2, 0)
    correlation = (_tile_sums(a * b, rows, cols) / n - mean_a * mean_b) / np.sqrt(np.maximum(var_a * var_b, 1e-9))
    std_a, std_b, level = np.sqrt(var_a), np.sqrt(var_b), np.abs(mean_a - mean_b)
    flat_a, flat_b = std_a < FLAT_STD, std_b < FLAT_STD
    both_flat = flat_a & flat_b
    one_sided = flat_a | flat_b | (np.maximum(std_a, std_b) > 2.5 * np.minimum(std_a, std_b))
    agree, occluded, changed = TileState.AGREE, TileState.OCCLUDED, TileState.CHANGED
    states = np.where(
        both_flat,
        np.where(level > LEVEL_DIFF, occluded, agree),
        np.where((level > LEVEL_DIFF) | one_sided, occluded, np.where(correlation >= TILE_AGREE, agree, changed)),
    ).astype(np.int8)
    states[count < 0.9 * area] = TileState.UNCOVERED
    residual = np.sqrt(np.maximum(_tile_sums((a - b) ** 2, rows, cols) / n, 0))
    # a copy loses detail (downscaling, JPEG), it never gains texture except under an occluder
    added = (states == TileState.OCCLUDED) & ((level > LEVEL_DIFF) | (std_a > 2.5 * np.maximum(std_b, FLAT_STD / 2.5)))
    return TileGrid(coverage, inside, states, residual, ~both_flat, added, ~flat_b)


def summarise_tiles(grid: TileGrid) -> dict[str, float]:
    """TILE_FEATURES of one alignment's tiles (see the module docstring)."""
    import cv2

    states = grid.states
    on_image = states != TileState.UNCOVERED
    covered = int(on_image.sum())
    if covered == 0:
        return {**NO_TILES, "aligned_coverage": grid.coverage, "frame_nesting": grid.nesting}
    occluded = (states == TileState.OCCLUDED).astype(np.uint8)
    near_occluded = cv2.dilate(occluded, np.ones((3, 3), np.uint8)) > 0  # a band's edge tiles are partly covered
    changed = (states == TileState.CHANGED) & ~near_occluded
    count, labels, stats, _ = cv2.connectedComponentsWithStats(occluded, connectivity=8)
    fill, scattered, occluder = 1.0, 0.0, np.zeros(states.shape, bool)
    if count > 1:
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        size = int(stats[largest, cv2.CC_STAT_AREA])
        fill = size / float(stats[largest, cv2.CC_STAT_WIDTH] * stats[largest, cv2.CC_STAT_HEIGHT])
        scattered = (int(occluded.sum()) - size) / covered
        occluder = cv2.dilate((labels == largest).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    # the worst tile away from the one occluder a copy may have: resampling leaves every tile of a
    # copy within a few grey levels, a changed label or row of a same-template screen does not
    elsewhere = on_image & ~occluder
    peak = float(grid.residual[elsewhere].max()) if elsewhere.any() else 0.0
    # unexplained: what the training image adds outside one compact occluder (the tops of other
    # bars, a line drawn elsewhere), and changed tiles. An occluder that hides most of what the
    # benchmark image shows explains nothing: a shape drawn over a flat image's only shape is
    # compact too, but it is other content
    content = grid.content & on_image
    hidden = float((occluder & content).sum()) / max(int(content.sum()), 1)
    compact = fill >= COMPACT_FILL and hidden <= MAX_HIDDEN
    explained = occluder & (occluded > 0) if compact else np.zeros(states.shape, bool)
    unexplained = (grid.added & ~explained) | changed
    return {
        "aligned_coverage": grid.coverage,
        "tiles_agree": float((states == TileState.AGREE).sum()) / covered,
        "tiles_occluded": float(occluded.sum()) / covered,
        "tiles_changed": float(changed.sum()) / covered,
        "occluder_fill": float(fill),
        "occluder_scattered": float(scattered),
        "residual_peak": peak,
        "tiles_textured": float(((states == TileState.AGREE) & grid.textured).sum()) / covered,
        "tiles_unexplained": float(unexplained.sum()) / covered,
        # a crop lies inside the benchmark image, a padded copy or a screenshot around it; a shape
        # drawn elsewhere on a flat background aligns onto the benchmark's only by a shift that
        # leaves both frames partly outside each other
        "frame_nesting": grid.nesting,
        "_tiles": covered,
    }


def tile_evidence(train: np.ndarray, bench: np.ndarray, train_sift=None, bench_sift=None) -> dict[str, float]:
    """TILE_FEATURES of the best of the three alignments of two grey images: the one that covers
    half of the benchmark image with MIN_TILES tiles and has the most agreeing less changed tiles."""
    train_sift = train_sift or sift_keypoints(train)
    bench_sift = bench_sift or sift_keypoints(bench)
    best: tuple[tuple[bool, float], dict[str, float]] | None = None
    for matrix in (resize_map(train, bench), sift_similarity(train_sift, bench_sift), template_shift(train, bench)):
        if matrix is None:
            continue
        grid = tile_states(train, bench, matrix)
        if grid is None:
            continue
        summary = summarise_tiles(grid)
        key = (
            summary["aligned_coverage"] >= 0.5 and summary.get("_tiles", 0) >= MIN_TILES,
            summary["tiles_agree"] - summary["tiles_changed"],
        )
        if best is None or key > best[0]:
            best = (key, summary)
    if best is None:
        return dict(NO_TILES)
    return {name: best[1][name] for name in TILE_FEATURES}
