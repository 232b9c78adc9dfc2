"""Connected components of an undirected graph given as an edge frame, entirely in Spark: the
driver sees one count a round, never the edges."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etl.schema import require_columns


def _neighbourhoods(edges: DataFrame) -> DataFrame:
    """(src, dst): every edge in both directions plus a self loop on every node, repeats
    dropped, so that grouping by dst gathers each node's neighbours and itself."""
    forward = edges.select("src", "dst").filter(F.col("src").isNotNull() & F.col("dst").isNotNull())
    return (
        forward.unionByName(forward.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
        .unionByName(forward.select("src", F.col("src").alias("dst")))
        .unionByName(forward.select(F.col("dst").alias("src"), "dst"))
        .distinct()
    )


def _initial_labels(neighbourhoods: DataFrame) -> DataFrame:
    """(node, component): every node labelled with itself."""
    return neighbourhoods.filter(F.col("src") == F.col("dst")).select(
        F.col("src").alias("node"), F.col("src").alias("component")
    )


def _propagate_once(labels: DataFrame, neighbourhoods: DataFrame) -> DataFrame:
    """One round: every node, and every node used as a label (the root of the nodes carrying
    it), takes the smallest label seen across its edges (itself included); then each node takes
    the label of its new label (pointer jumping). Returns (node, component, previous).

    Hooking roots as well as nodes merges whole label trees at once, and jumping halves the
    trees' depth, so rounds grow about logarithmically with a component's diameter instead of
    linearly (chains in random id order: 200 nodes in 7 rounds instead of over 50 with plain
    propagation plus jumping; 3,000 nodes in 12; checked against union-find).
    """
    src_labels = labels.select(F.col("node").alias("src"), F.col("component").alias("src_label"))
    dst_labels = labels.select(F.col("node").alias("dst"), F.col("component").alias("dst_label"))
    labelled = neighbourhoods.join(src_labels, "src").join(dst_labels, "dst")
    candidates = labelled.select(
        F.col("dst").alias("node"),
        F.col("src_label").alias("candidate"),
        (F.col("src") == F.col("dst")).alias("own"),
    ).unionByName(
        labelled.select(
            F.col("dst_label").alias("node"), F.col("src_label").alias("candidate"), F.lit(False).alias("own")
        )
    )
    hooked = candidates.groupBy("node").agg(
        F.min("candidate").alias("hooked"), F.max(F.when(F.col("own"), F.col("candidate"))).alias("previous")
    )
    # Every label is a node of the same component, so this inner join keeps every row.
    label_of_label = hooked.select(F.col("node").alias("label"), F.col("hooked").alias("jumped"))
    return hooked.join(label_of_label, F.col("hooked") == F.col("label")).select(
        "node", F.col("jumped").alias("component"), "previous"
    )


def connected_components(
    edges: DataFrame, max_iterations: int = 50, cut: Callable[[DataFrame], DataFrame] | None = None
) -> DataFrame:
    """(node, component) for every node of the undirected graph `edges` (src, dst), component =
    the smallest node id of its connected component.

    Min-label propagation with root hooking and pointer jumping, entirely in Spark (see
    `_propagate_once`): each round is two joins of the edges with the labels, one aggregation
    and a join of the labels with themselves, then a count of the labels that changed (the
    only thing the driver sees); it stops at the first round where none did. Every round's labels are cut from their
    lineage with `localCheckpoint`, materialised by that count (merely persisting them made
    each round re-plan all the earlier ones: 1.9 s a round growing to 12 s by the 4th on a toy
    graph, against a flat ~1.5 s, on a busy 2-core machine). Where checkpoints are refused
    (Databricks serverless) the caller passes `cut`, which computes a frame and returns one
    reading the result (etl.reuse.Scratch.keep: a scratch Delta table); without any cut each round
    would recompute every earlier one, twice over. Raises RuntimeError if labels still change
    after `max_iterations` rounds.
    """
    require_columns(edges, ["src", "dst"], "connected_components")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")

    def materialise(frame: DataFrame, eager: bool) -> DataFrame:
        return frame.localCheckpoint(eager) if cut is None else cut(frame)

    neighbourhoods = materialise(_neighbourhoods(edges), eager=True)
    labels = _initial_labels(neighbourhoods)
    for _ in range(max_iterations):
        step = materialise(_propagate_once(labels, neighbourhoods), eager=False)
        # This count computes the round, and so materialises the checkpoint, in the same job.
        changed = step.filter(F.col("component") != F.col("previous")).count()
        labels = step.select("node", "component")
        if changed == 0:
            return labels
    raise RuntimeError(
        f"connected_components did not converge in {max_iterations} iterations "
        f"({changed} labels still changed in the last one); raise max_iterations"
    )
