"""Benchmark catalogues (`conf/benchmarks/*.yaml`): which test sets decontamination checks against.

A catalogue lists Hub benchmark units (`units`: a dataset id, a config, a split and the column
names to read) and/or names of source specs in `conf/sources/` that already describe a local
benchmark (`sources`):

- `conf/benchmarks/lmms_eval.yaml`: FineVision's 66 lmms-lab units plus MMStar and OCRBench, for
  clusters that can reach the Hub;
- `conf/benchmarks/samples.yaml`: the local demo's benchmark source specs.

    catalogue = load_catalogue("conf/benchmarks/lmms_eval.yaml")
    spec = to_source_spec(catalogue.unit("chartqa"), "s3://bucket/benchmarks/chartqa/")

`to_source_spec` turns a unit whose parquet export was downloaded to `location` into an
`hf_parquet` source spec (layout `columns`) with `benchmark` set; dump it with
`spec.model_dump(exclude_defaults=True)` into `conf/sources/<name>.yaml`. Errors are one line
naming the key, as in `etl.config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from etl.config import IDENTIFIER, ConfigError, SourceSpec, Strict, _one_line, _read_yaml

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_CATEGORY = "General VQA"


class BenchmarkUnit(Strict):
    """One benchmark unit: `load_dataset(hub_id, config, split=split)` and its column names.

    A null field name means "no such column" or "not known yet" (the catalogue's comments say
    which); `images` says how `image_field` holds images: one image, a list, or numbered columns
    starting at `image_field` (image_0 / image_1, image_2, ...).
    """

    name: str = Field(description="identifier, unique in the catalogue: benchmark, subset and spec name")
    hub_id: str = Field(description="`owner/dataset` on the Hugging Face Hub")
    config: str | None = Field(None, description="dataset config; null = the default one")
    split: str = "test"
    image_field: str | None = None
    images: Literal["single", "list", "numbered"] = "single"
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    category: str | None = Field(None, description=f"FineVision category of its source spec; null = {DEFAULT_CATEGORY}")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not an identifier (letters, digits, underscore)")
        return value

    @field_validator("hub_id")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        if not HUB_ID.match(value):
            raise ValueError(f"{value!r} is not a Hub dataset id `owner/name`")
        return value

    @field_validator("split", "config", "image_field", "question_field", "answer_field", "id_field")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (use null)")
        return value


class BenchmarkCatalogue(Strict):
    """Hub units to download and/or names of benchmark source specs in `conf/sources/`."""

    units: list[BenchmarkUnit] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="source specs with `benchmark:` set")

    @field_validator("units")
    @classmethod
    def _unique_units(cls, units: list[BenchmarkUnit]) -> list[BenchmarkUnit]:
        seen: set[str] = set()
        for unit in units:
            if unit.name in seen:
                raise ValueError(f"duplicate unit name {unit.name!r}")
            seen.add(unit.name)
        return units

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: list[str]) -> list[str]:
        for name in sources:
            if not IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not an identifier (letters, digits, underscore)")
        if len(set(sources)) != len(sources):
            raise ValueError("duplicate source names")
        return sources

    def unit(self, name: str) -> BenchmarkUnit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise ConfigError(f"units: no unit named {name!r}")

    def source_specs(self, specs: list[SourceSpec]) -> list[SourceSpec]:
        """The specs (e.g. `PipelineConfig.source_specs()`) that `sources` names, in its order;
        a name that is missing or not a benchmark spec is an error."""
        by_name = {spec.name: spec for spec in specs}
        unknown = [n for n in self.sources if n not in by_name]
        if unknown:
            raise ConfigError(f"sources: unknown source spec {unknown}; known: {sorted(by_name)}")
        not_benchmarks = [n for n in self.sources if by_name[n].benchmark is None]
        if not_benchmarks:
            raise ConfigError(f"sources: {not_benchmarks} are not benchmark specs (no `benchmark:` set)")
        return [by_name[n] for n in self.sources]


def load_catalogue(path: str | Path) -> BenchmarkCatalogue:
    path = Path(path)
    try:
        return BenchmarkCatalogue.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise _one_line(exc, str(path)) from None


def to_source_spec(unit: BenchmarkUnit, location: str, category: str | None = None) -> SourceSpec:
    """An `hf_parquet` source spec (layout `columns`, `benchmark` = the unit's name) for the unit's
    parquet export downloaded to `location` (a file, folder or glob; relative to data_root unless
    absolute or a URI).

    The columns layout reads one image and one question/answer pair per row, so the unit needs
    `image_field`, `question_field` and `answer_field`, and a single image per row; otherwise
    this is a one-line ConfigError naming the unit and the key to fill in.
    """
    origin = f"units.{unit.name}"
    for key in ("image_field", "question_field", "answer_field"):
        if getattr(unit, key) is None:
            raise ConfigError(f"{origin}.{key}: is null; the columns layout needs it (set it from the dataset's columns)")
    if unit.images != "single":
        raise ConfigError(
            f"{origin}.images: {unit.images!r} images per row; the columns layout reads one image column"
        )
    if not location:
        raise ConfigError(f"{origin}: location is empty")
    fields = {"image": unit.image_field, "question": unit.question_field, "answer": unit.answer_field}
    if unit.id_field is not None:
        fields["id"] = unit.id_field
    try:
        return SourceSpec(
            name=unit.name,
            format="hf_parquet",
            location=location,
            subset=unit.name,
            category=category or unit.category or DEFAULT_CATEGORY,
            benchmark=unit.name,
            fields=fields,
            options={"layout": "columns"},
        )
    except ValidationError as exc:
        raise _one_line(exc, origin) from None
