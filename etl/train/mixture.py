"""Mixtures: which gold rows a training run sees, as one SQL predicate over a pinned gold version.

A spec (`conf/mixtures/<name>.yaml`) names subsets with weights (below 1: the share of the
subset's samples kept, chosen by `sample_id`, which is a sha256 and so uniform; above 1: every
sample that many times, the fraction again chosen by `sample_id`), minimum ratings per axis of the
sample or of each turn, and whether contaminated samples are included:

    name: clean_rated
    subsets: {easyvqa: 1.0, charts: 0.5, geo: 2.5}   # empty = every subset, all of it, once
    min_ratings: {relevance: 3}            # <axis>_min >= 3
    min_turn_ratings: {formatting: 3}      # a turn below 3 leaves the sample; the sample stays if a turn remains
    keep_unrated: true                     # samples (turns) without a rating on that axis pass
    include_contaminated: false

`mixture_predicate(spec)` and `mixture_repeats(spec)` are plain SQL that Spark SQL and DataFusion
(the training reader) both run; the training reader applies `min_turn_ratings` per row.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from etl.config import PROJECT_ROOT, SUBSET_NAME, ConfigError, Strict, _one_line, _read_yaml
from etl.schema import GOLD_RATING_AXES

MIXTURES_DIR = PROJECT_ROOT / "conf" / "mixtures"


class MixtureSpec(Strict):
    name: str
    subsets: dict[str, float] = Field(
        default_factory=dict, description="subset -> weight: below 1 the share kept, above 1 upsampled; empty = all"
    )
    min_ratings: dict[str, int] = Field(default_factory=dict, description="axis -> minimum of <axis>_min (1-5)")
    min_turn_ratings: dict[str, int] = Field(
        default_factory=dict, description="axis -> minimum score of a turn (1-5); lower turns leave their sample"
    )
    turn_weights: dict[str, dict[int, float]] = Field(
        default_factory=dict,
        description="axis -> {score: loss weight} of a turn's answer tokens (scores not listed weigh 1; axes multiply)",
    )
    order_by: str | None = Field(
        None,
        description="curriculum: `<axis>_min` or `<axis>_min desc` orders each process's rows by score "
        "(unrated last); set data.shuffle_buffer to 1 to keep the order",
    )
    keep_unrated: bool = Field(True, description="samples with no rating on a thresholded axis pass")
    include_contaminated: bool = False

    @field_validator("subsets")
    @classmethod
    def _subsets(cls, value: dict[str, float]) -> dict[str, float]:
        for subset, weight in value.items():
            if not SUBSET_NAME.match(subset):
                raise ValueError(f"subset {subset!r}: letters, digits and _ . ( ) - only")
            if not 0 < weight <= 100:
                raise ValueError(f"weight of {subset} must be in (0, 100], got {weight}")
        return value

    @field_validator("order_by")
    @classmethod
    def _order(cls, value: str | None) -> str | None:
        if value is not None:
            column, *direction = value.split()
            axes = [f"{a}_min" for a in GOLD_RATING_AXES]
            if column not in axes or direction not in ([], ["asc"], ["desc"]):
                raise ValueError(f"order_by {value!r}: one of {axes}, optionally followed by asc or desc")
        return value

    @field_validator("turn_weights")
    @classmethod
    def _weights(cls, value: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
        for axis, by_score in value.items():
            if axis not in GOLD_RATING_AXES:
                raise ValueError(f"unknown rating axis {axis!r}; axes are {list(GOLD_RATING_AXES)}")
            if any(not 1 <= s <= 5 or w < 0 for s, w in by_score.items()):
                raise ValueError(f"turn_weights of {axis}: scores 1-5 with weights >= 0, got {by_score}")
        return value

    @field_validator("min_ratings", "min_turn_ratings")
    @classmethod
    def _ratings(cls, value: dict[str, int]) -> dict[str, int]:
        for axis, minimum in value.items():
            if axis not in GOLD_RATING_AXES:
                raise ValueError(f"unknown rating axis {axis!r}; axes are {list(GOLD_RATING_AXES)}")
            if not 1 <= minimum <= 5:
                raise ValueError(f"minimum rating of {axis} must be 1-5, got {minimum}")
        return value


def load_mixture(name_or_path: str | Path) -> MixtureSpec:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = MIXTURES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in MIXTURES_DIR.glob("*.yaml"))
        raise ConfigError(f"mixture {name_or_path!r} not found; known: {known}")
    try:
        return MixtureSpec.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise _one_line(exc, str(path)) from None


def share_bound(weight: float) -> str:
    """The sample_id bound below which a `weight` share of uniformly random hex ids falls."""
    return f"{min(int(weight * 16**8), 16**8 - 1):08x}"


def mixture_predicate(spec: MixtureSpec) -> str | None:
    """The spec as a SQL predicate over gold columns; None when it keeps everything."""
    clauses = []
    if spec.subsets:
        parts = []
        for subset, weight in sorted(spec.subsets.items()):
            part = f"subset = '{subset}'"  # SUBSET_NAME (validated, no quote): safe inside quotes
            if weight < 1:
                part += f" AND sample_id < '{share_bound(weight)}'"
            parts.append(f"({part})")
        clauses.append("(" + " OR ".join(parts) + ")")
    for axis, minimum in sorted(spec.min_ratings.items()):
        column = f"{axis}_min"
        clauses.append(
            f"({column} >= {int(minimum)} OR {column} IS NULL)" if spec.keep_unrated else f"{column} >= {int(minimum)}"
        )
    if not spec.include_contaminated:
        clauses.append("NOT contaminated")
    return " AND ".join(clauses) if clauses else None


def mixture_repeats(spec: MixtureSpec) -> str | None:
    """SQL: how many times the training reader yields a row (subsets weighted above 1); None when
    every row comes once. Weight 2.5: every sample twice, and the half of them with the lower
    `sample_id` a third time."""
    cases = []
    for subset, weight in sorted(spec.subsets.items()):
        if weight <= 1:
            continue
        whole, fraction = int(weight), weight - int(weight)
        extra = f" + CASE WHEN sample_id < '{share_bound(fraction)}' THEN 1 ELSE 0 END" if fraction else ""
        cases.append(f"WHEN subset = '{subset}' THEN {whole}{extra}")
    return f"CASE {' '.join(cases)} ELSE 1 END" if cases else None


def mixture_order(spec: MixtureSpec) -> str | None:
    """SQL ORDER BY of the curriculum (`order_by`), unrated rows last, ties by sample_id; None = unordered."""
    if spec.order_by is None:
        return None
    column, *direction = spec.order_by.split()
    return f"{column} {(direction or ['asc'])[0].upper()} NULLS LAST, sample_id"
