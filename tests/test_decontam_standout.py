"""The verified method's filter from the embeddings alone (`udfs.knn.standout_scores`,
`copy_groups`): SSCD's score normalisation against the other benchmark images."""

from __future__ import annotations

import numpy as np

from udfs.knn import copy_groups, standout_scores

THRESHOLD, FLOOR = 0.95, 0.3


def mask(queries, index_rows, similarities, groups, margin=0.05, neighbours=3, weight=1.0):
    """What the stage keeps: pairs whose normalised score reaches `margin` (+inf at or above the threshold)."""
    scores = standout_scores(
        np.array(queries),
        np.array(index_rows),
        np.array(similarities, np.float32),
        np.array(groups),
        THRESHOLD,
        FLOOR,
        neighbours,
        weight,
    )
    return scores >= np.float32(margin)


def test_a_look_alike_among_siblings_is_rejected_and_a_standout_copy_kept():
    # query 0: a chart of the benchmark's template, about as close to four benchmark charts (0.70-0.68)
    # query 1: an edited copy of benchmark image 0: 0.80 to it, 0.55-0.60 to the other charts
    queries = [0, 0, 0, 0, 1, 1, 1, 1]
    rows = [0, 1, 2, 3, 0, 1, 2, 3]
    sims = [0.70, 0.69, 0.68, 0.68, 0.80, 0.60, 0.56, 0.55]
    kept = mask(queries, rows, sims, groups=[0, 1, 2, 3])
    assert kept.tolist() == [False, False, False, False, True, False, False, False]
    scores = standout_scores(
        np.array(queries), np.array(rows), np.array(sims, np.float32), np.arange(4), 0.95, 0.3, 3, 1
    )
    assert np.isclose(scores[4], 0.80 - (0.60 + 0.56 + 0.55) / 3)  # s - mean of the 3 other neighbours


def test_never_applied_at_or_above_the_threshold():
    # a pair at the threshold among equally close siblings (all >= 0.95) stays, whatever the margin
    kept = mask([0, 0, 0, 0, 1], [0, 1, 2, 3, 0], [0.95, 0.96, 0.97, 0.95, 0.99], [0, 1, 2, 3], margin=0.5)
    assert kept.all()
    scores = standout_scores(np.array([0]), np.array([0]), np.array([0.95], np.float32), np.array([0]), 0.95, 0.3, 3, 1)
    assert scores.tolist() == [np.inf]


def test_re_encodings_of_one_image_are_not_background_to_each_other():
    # benchmark rows 0-4 are one photograph re-encoded into five items (one copy group); an edited copy
    # at 0.80 to each of them stands out from the rest of the benchmark (0.40), so all five pairs stay
    queries, rows = [0] * 6, [0, 1, 2, 3, 4, 5]
    sims = [0.80, 0.80, 0.79, 0.80, 0.80, 0.40]
    assert mask(queries, rows, sims, groups=[0, 0, 0, 0, 0, 5]).tolist() == [True] * 5 + [False]
    # without the groups they would be each other's background, and all rejected
    assert not mask(queries, rows, sims, groups=[0, 1, 2, 3, 4, 5])[:5].any()


def test_missing_background_counts_as_the_floor():
    # nothing else >= the floor: the background is the floor itself (0.3), so 0.36 - 0.3 stands out
    assert mask([0], [0], [0.36], [0]).tolist() == [True]
    assert mask([0], [0], [0.33], [0]).tolist() == [False]


def test_copy_groups_link_near_duplicates_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16)).astype(np.float32)
    near = base[0] + 0.05 * rng.normal(size=16).astype(np.float32)  # a re-encoding of row 0
    vectors = np.vstack([base, near])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert copy_groups(vectors, 0.95).tolist() == [0, 1, 2, 0]
    assert copy_groups(np.zeros((0, 16), np.float32), 0.95).tolist() == []
