"""The review page shows the verified method's evidence beside each of its hits."""

from __future__ import annotations

import re

from etl.review import render_contamination_page
from tests.test_review import config_for, hit_rows


def hit(method: str, evidence: dict | None) -> dict:
    return {
        "image_id": "cd" * 32,
        "sample_id": f"s-{method}",
        "subset": "train",
        "benchmark": "toy",
        "benchmark_item_id": "b2",
        "similarity": 0.81,
        "model_id": "sscd",
        "threshold": 0.9,
        "method": method,
        "run_id": "r",
        "evidence": evidence,
        "train_turns": [],
        "bench_turns": [],
        "train_thumbs": [],
        "bench_thumbs": [],
        "bench_image_count": 0,
    }


def test_verified_hits_show_their_evidence_and_threshold_hits_none(tmp_path):
    evidence = {
        "sscd_whole": 0.81,
        "sscd_views": 0.93,
        "inliers": 412.0,
        "inlier_area": 0.57,
        "aligned_ncc": 0.998,
        "aligned_ncc_low": 0.91,
        "text_overlap": None,
        "aligned_coverage": 1.0,
        "tiles_agree": 0.97,
        "tiles_occluded": 0.03,
        "tiles_changed": 0.0,
        "occluder_fill": 1.0,
        "occluder_scattered": 0.0,
        "residual_peak": 3.2,
        "tiles_textured": 0.41,
        "tiles_unexplained": 0.0,
        "frame_nesting": 1.0,
        "score": 0.9912,
        "decision": 0.9,
    }
    counts = [{"benchmark": "toy", "method": "sscd-verified", "hits": 2, "samples": 2}]
    page = render_contamination_page(
        [hit("sscd-verified", evidence), hit("sscd-faiss-exact", None)],
        counts,
        {"contamination_hits": 1},
        config_for(tmp_path),
        10,
    )
    assert page.count('<table class="evidence">') == 1
    rows = hit_rows(page)
    assert len(rows) == 2 and '<table class="evidence">' in rows[0] and "s-sscd-verified" in rows[0]
    table = re.search(r'<table class="evidence">(.*?)</table>', page).group(1)
    assert "ORB+RANSAC inliers</td><td>412<" in table and "SSCD, best view pair</td><td>0.930<" in table
    assert "text overlap</td><td>&mdash;<" in table and "0.991 (&ge; 0.900)" in table
    assert (
        "aligned tiles that agree</td><td>0.970<" in table
        and "aligned tiles with other content</td><td>0.000<" in table
        and "grey-level difference away from it</td><td>3<" in table
        and "agree on texture</td><td>0.410<" in table
        and "no one occluder explains</td><td>0.000<" in table
        and "inside the other&#39;s after alignment</td><td>1.000<" in table
    )
