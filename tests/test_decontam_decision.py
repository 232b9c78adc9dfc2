"""The verified method's decision and candidate cut, as pure functions (no Spark): its hits include
the threshold method's on any pairs, and candidate_k never cuts a pair at or above the threshold."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.config import CONF_DIR
from etl.stages.decontaminate import candidate_mask
from udfs.verify import FEATURES, THRESHOLD, VERIFIED, VerifierRule, decide

PACKAGED = VerifierRule.from_file(CONF_DIR / "decontaminate" / "verifier.yaml")
ACCEPT_ALL = VerifierRule({"sscd_whole": 1.0}, 20.0, 0.5)
VETO_ALL = VerifierRule({"sscd_whole": 1.0}, 20.0, 0.5, {"sscd_whole": {"below": 2.0}})

feature_value = st.one_of(st.floats(0.0, 300.0, allow_nan=False, width=32), st.just(float("nan")))
pairs = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.0, 1.0, width=32), min_size=n, max_size=n),
        st.fixed_dictionaries({name: st.lists(feature_value, min_size=n, max_size=n) for name in FEATURES}),
    )
)


@settings(max_examples=100, deadline=None)
@given(
    pairs=pairs,
    threshold=st.sampled_from([0.5, 0.9, 0.95, 0.99]),
    rule=st.sampled_from([PACKAGED, ACCEPT_ALL, VETO_ALL]),
)
def test_verified_hits_include_the_threshold_methods(pairs, threshold, rule):
    similarity, raw = pairs
    features = {name: np.array(values, np.float32) for name, values in raw.items()}
    similarity = np.array(similarity, np.float32)
    decided = decide(similarity, rule.score(features), threshold, rule.decision)
    threshold_hits = similarity >= np.float32(threshold)
    verified_hits = np.array([d is not None for d in decided])
    assert not (threshold_hits & ~verified_hits).any()  # never less than FineVision's rule
    assert all(d == THRESHOLD for d in decided[threshold_hits])
    assert all(d in (None, VERIFIED) for d in decided[~threshold_hits])  # below it only the verifier adds


def test_decide_vetoes_and_nan_only_below_the_threshold():
    similarity = np.array([1.0, 0.95, 0.9499, 0.6], np.float32)
    features = {name: np.full(4, 0.5, np.float32) for name in FEATURES}
    assert list(decide(similarity, VETO_ALL.score(features), 0.95, 0.5)) == [THRESHOLD, THRESHOLD, None, None]
    assert list(decide(similarity, ACCEPT_ALL.score(features), 0.95, 0.5)) == [THRESHOLD, THRESHOLD, VERIFIED, VERIFIED]
    nan = np.full(4, np.nan, np.float32)
    assert list(decide(similarity, nan, 0.95, 0.5)) == [THRESHOLD, THRESHOLD, None, None]


@settings(max_examples=100, deadline=None)
@given(
    hits=st.lists(st.tuples(st.integers(0, 5), st.floats(0.25, 1.0, width=32)), max_size=60),
    k=st.integers(1, 4),
)
def test_candidate_k_cuts_only_below_the_threshold(hits, k):
    queries = np.array([q for q, _ in hits], np.int64)
    similarity = np.array([s for _, s in hits], np.float32)
    keep = candidate_mask(queries, similarity, 0.95, k)
    above = similarity >= np.float32(0.95)
    assert keep[above].all()
    for query in set(queries.tolist()):
        below = (queries == query) & ~above
        assert keep[below].sum() == min(k, below.sum())
        if below.sum() > k:  # the kept ones are the most similar
            assert similarity[below & keep].min() >= similarity[below & ~keep].max()


def test_a_knn_index_loses_no_pair_at_the_threshold_to_its_k():
    """HNSW searches k neighbours: a training image near 40 benchmark images (one photograph
    re-encoded into many items) gets all 40, searched again with a larger k."""
    from etl.stages.decontaminate import search_complete
    from udfs.knn import build_index, search_threshold_arrays

    rng = np.random.default_rng(0)
    base = rng.standard_normal(512).astype(np.float32)
    near = base + 0.05 * rng.standard_normal((40, 512)).astype(np.float32)
    far = rng.standard_normal((200, 512)).astype(np.float32)
    vectors = np.concatenate([near, far])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = (base / np.linalg.norm(base))[None, :]
    index = build_index(vectors, kind="hnsw")
    assert len(search_threshold_arrays(index, query, tau=0.9, k=4).query_rows) == 4  # the bound bites
    hits = search_complete(index, query, 0.9, 4)
    assert sorted(hits.index_rows.tolist()) == list(range(40))
    assert (hits.similarities >= np.float32(0.9)).all()
