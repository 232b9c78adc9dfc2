"""Benchmark catalogues (`conf/benchmarks/*.yaml`): which test sets decontamination checks against.

A catalogue lists Hub benchmark units (`units`: a dataset id, a config, a split and how its
columns map onto a benchmark item) and/or names of source specs in `conf/sources/` that already
describe a local benchmark (`sources`):

- `conf/benchmarks/lmms_eval.yaml`: FineVision's 66 lmms-lab units plus MMStar and OCRBench;
- `conf/benchmarks/samples.yaml`: the local demo's benchmark source specs;
- `conf/benchmarks/gui.yaml`: ScreenSpot-V2, GUI grounding scored by `click_accuracy` (docs/gui.md).

A unit's parquet files live under a location in the Hub's own layout, `<location>/<hub_id>/
<data_files>` (what `finevision benchmarks pull` downloads, or a copy of the Hub repos on a
volume); `write_specs` turns every unit into an `hf_parquet` source spec (layout `benchmark`,
read by `etl.sources.hf_parquet`) that `finevision ingest` reads into `benchmark_items`:

    catalogue = load_catalogue(catalogue_path("lmms_eval"))
    write_specs(catalogue, "/Volumes/main/bench/lmms", Path("conf/benchmark_sources"))

Errors are one line naming the key, as in `etl.config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from etl.config import CONF_DIR, IDENTIFIER, ConfigError, SourceSpec, Strict, _one_line, _read_yaml

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_CATEGORY = "General VQA"


class BenchmarkUnit(Strict):
    """One benchmark unit: `load_dataset(hub_id, config, split=split)` and how a row becomes an item.

    A null column name means the dataset has no such column. An item's question is the context
    (a hint), the question and the lettered options (`A. ...` lines), as evaluation prompts them;
    its answers are one turn each (lists of reference answers or captions kept, repeats dropped);
    an answer that is an index or letter into the options becomes that option's text.
    """

    name: str = Field(description="identifier, unique in the catalogue: benchmark, subset and spec name")
    hub_id: str = Field(description="`owner/dataset` on the Hugging Face Hub")
    config: str | None = Field(None, description="dataset config; null = the default one")
    split: str = "test"
    data_files: str | None = Field(
        None, description="glob of the split's parquet files in the repo; null = data/<split>-* or <config>/<split>-*"
    )
    image_field: str | None = None
    images: Literal["single", "list", "numbered"] = Field(
        "single", description="one image, a list of images, or numbered columns from image_field on (image_1, image_2)"
    )
    question_field: str | None = None
    context_field: str | None = Field(None, description="a hint or context shown before the question")
    options_field: str | list[str] | None = Field(
        None, description="a column holding the options (a list, or a list written as text), or one column per option"
    )
    answer_field: str | None = None
    answer_format: Literal["text", "index", "letter"] = Field(
        "text", description="index (0-based) or letter (A-based) into the options: resolved to the option's text"
    )
    answer_key: str | None = Field(None, description="answers are a list of structs: the key holding the text")
    id_field: str | None = None
    group_field: str | None = Field(
        None,
        description="the benchmark's own category column its official aggregate groups by (MME's category, MMStar's "
        "l2_category; etl/train/aggregates.py): the item id becomes `<group>/<id>`; needs id_field",
    )
    bbox_field: str | None = Field(
        None,
        description="GUI grounding (ScreenSpot-V2): the element's box column; the answer is the box normalised to the "
        "screenshot with its platform and element type (etl.sources.gui.screenspot), scored by click_accuracy",
    )
    bbox_format: Literal["xywh", "xyxy"] = Field(
        "xywh", description="the box's form: [left, top, width, height] or [left, top, right, bottom]"
    )
    bbox_units: Literal["pixels", "fraction"] = Field(
        "pixels", description="the box's units: pixels of the screenshot, or fractions of its width and height"
    )
    platform_field: str | None = Field(
        None, description="with bbox_field: the platform column (ScreenSpot's data_source)"
    )
    element_type_field: str | None = Field(None, description="with bbox_field: the element type column (text, icon)")
    category: str | None = Field(None, description=f"FineVision category of its source spec; null = {DEFAULT_CATEGORY}")
    checked: str = Field("", description="where the column names and types were checked")

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

    @field_validator(
        "split",
        "config",
        "data_files",
        "image_field",
        "question_field",
        "context_field",
        "answer_field",
        "answer_key",
        "id_field",
        "group_field",
        "bbox_field",
        "platform_field",
        "element_type_field",
    )
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (use null)")
        return value

    @field_validator("data_files")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/") or "://" in value):
            raise ValueError(f"{value!r} must be a glob relative to the dataset repo")
        return value

    @field_validator("options_field")
    @classmethod
    def _options(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value or []
        if any(not name.strip() for name in names) or (isinstance(value, list) and len(set(value)) != len(value)):
            raise ValueError("option columns must be distinct, non-empty names")
        return value

    @model_validator(mode="after")
    def _group_with_id(self) -> BenchmarkUnit:
        if self.group_field is not None and self.id_field is None:
            raise ValueError("group_field needs id_field (the item id is <group>/<id>)")
        return self

    @model_validator(mode="after")
    def _grounding(self) -> BenchmarkUnit:
        if self.bbox_field is None:
            if self.platform_field or self.element_type_field:
                raise ValueError("platform_field and element_type_field go with bbox_field")
            return self
        if self.platform_field is None or self.element_type_field is None:
            raise ValueError("bbox_field needs platform_field and element_type_field (the scores are reported by both)")
        if self.answer_field is not None or self.options_field is not None:
            raise ValueError("bbox_field is the answer: answer_field and options_field must be null")
        return self

    @property
    def files_glob(self) -> str:
        """The split's parquet files relative to the repo root (the Hub's `push_to_hub` layout by default)."""
        if self.data_files:
            return self.data_files
        return f"{self.config or 'data'}/{self.split}-*.parquet"

    def fields(self) -> dict[str, str]:
        """Logical field -> column, as a source spec's `fields`."""
        named = {
            "image": self.image_field,
            "question": self.question_field,
            "context": self.context_field,
            "answer": self.answer_field,
            "id": self.id_field,
            "group": self.group_field,
            "options": self.options_field if isinstance(self.options_field, str) else None,
            "bbox": self.bbox_field,
            "platform": self.platform_field,
            "element_type": self.element_type_field,
        }
        return {key: column for key, column in named.items() if column is not None}


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


def catalogue_path(name_or_path: str) -> Path:
    """A catalogue by name (`lmms_eval` -> conf/benchmarks/lmms_eval.yaml) or by path."""
    if IDENTIFIER.match(name_or_path):
        return CONF_DIR / "benchmarks" / f"{name_or_path}.yaml"
    return Path(name_or_path)


def unit_location(unit: BenchmarkUnit, root: str) -> str:
    """Where a unit's parquet files are under `root`: `<root>/<hub_id>/<data_files>`."""
    if not root:
        raise ConfigError(f"units.{unit.name}: location is empty")
    return f"{root.rstrip('/')}/{unit.hub_id}/{unit.files_glob}"


def unit_files(unit: BenchmarkUnit, root: str) -> list[str]:
    """The unit's parquet files present under `root` (none when the folder does not exist)."""
    from etl.sources.files import list_files

    try:
        return list_files(unit_location(unit, root), (".parquet",))
    except FileNotFoundError:
        return []


def to_source_spec(unit: BenchmarkUnit, location: str, category: str | None = None) -> SourceSpec:
    """An `hf_parquet` source spec (layout `benchmark`, `benchmark` = the unit's name) for the unit's
    parquet files at `location` (a file, folder or glob; relative to data_root unless absolute or a
    URI). A unit without an image column is a one-line ConfigError naming it."""
    origin = f"units.{unit.name}"
    if unit.image_field is None:
        raise ConfigError(f"{origin}.image_field: is null; a benchmark unit needs its image column")
    if not location:
        raise ConfigError(f"{origin}: location is empty")
    options: dict[str, object] = {"layout": "benchmark"}
    if unit.images != "single":
        options["images"] = unit.images
    if isinstance(unit.options_field, list):
        options["option_columns"] = list(unit.options_field)
    if unit.answer_format != "text":
        options["answer_format"] = unit.answer_format
    if unit.answer_key is not None:
        options["answer_key"] = unit.answer_key
    if unit.bbox_field is not None:
        options["bbox_format"] = unit.bbox_format
        options["bbox_units"] = unit.bbox_units
    try:
        return SourceSpec(
            name=unit.name,
            format="hf_parquet",
            location=location,
            subset=unit.name,
            category=category or unit.category or DEFAULT_CATEGORY,
            benchmark=unit.name,
            fields=unit.fields(),
            options=options,
        )
    except ValidationError as exc:
        raise _one_line(exc, origin) from None


def write_specs(catalogue: BenchmarkCatalogue, root: str, out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """One source spec file per unit (or per named unit), pointing at `root`'s Hub layout; a local
    relative `root` is made absolute so the specs do not depend on data_root. Works offline."""
    if "://" not in root and not Path(root).is_absolute():
        root = str(Path(root).resolve())
    units = [catalogue.unit(n) for n in names] if names else catalogue.units
    specs = [to_source_spec(unit, unit_location(unit, root)) for unit in units]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs:
        path = out_dir / f"{spec.name}.yaml"
        header = f"# Generated by `finevision benchmarks specs` from the {spec.name} unit of a benchmark catalogue.\n"
        path.write_text(header + yaml.safe_dump(spec.model_dump(exclude_defaults=True), sort_keys=False))
        written.append(path)
    return written
