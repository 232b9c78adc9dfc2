"""`finevision benchmarks pull|specs|list`: a benchmark catalogue's units on disk and as source specs.

    finevision benchmarks pull  --catalogue lmms_eval --out DIR        # Hub -> DIR/<hub_id>/<data_files>
    finevision benchmarks specs --catalogue lmms_eval --location DIR --out SPECS_DIR
    finevision benchmarks list  --catalogue lmms_eval [--location DIR]

`specs` and `list` never touch the network; `pull` needs the Hub (huggingface_hub), and when the
Hub cannot be reached it says which folder layout to copy the files into instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from etl.benchmarks import BenchmarkCatalogue, BenchmarkUnit, catalogue_path, load_catalogue, unit_files, write_specs
from etl.config import ConfigError

benchmarks_app = typer.Typer(
    no_args_is_help=True, help="Benchmark catalogues: download units, write their source specs."
)

CatalogueOption = Annotated[
    str, typer.Option("--catalogue", help="conf/benchmarks/<name>.yaml or a catalogue YAML path")
]
UnitOption = Annotated[list[str] | None, typer.Option("--unit", help="only these units (repeatable)")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _units(catalogue: str, names: list[str] | None) -> tuple[BenchmarkCatalogue, list[BenchmarkUnit]]:
    try:
        loaded = load_catalogue(catalogue_path(catalogue))
        return loaded, [loaded.unit(n) for n in names] if names else loaded.units
    except ConfigError as exc:
        _fail(str(exc))


def layout_help(units: list[BenchmarkUnit], root: str) -> str:
    """How to lay out the files by hand (a mirror, a volume): one line per unit."""
    lines = [f"copy each unit's parquet files from its Hub dataset repo into {root}/<hub_id>/, keeping its paths:"]
    lines += [f"  {unit.name:<48} {root}/{unit.hub_id}/{unit.files_glob}" for unit in units]
    return "\n".join(lines)


@benchmarks_app.command("pull")
def pull(
    catalogue: CatalogueOption,
    out: Annotated[Path, typer.Option(help="folder to download into (the units' Hub layout)")],
    unit: UnitOption = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the Hub per request")] = 10.0,
) -> None:
    """Download each unit's parquet files from the Hugging Face Hub (resumable; present files are skipped)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    _, units = _units(catalogue, unit)
    root = str(out)
    failed: list[str] = []
    for chosen in units:
        try:
            snapshot_download(
                chosen.hub_id,
                repo_type="dataset",
                allow_patterns=[chosen.files_glob],
                local_dir=out / chosen.hub_id,
                etag_timeout=timeout,
            )
        except LocalEntryNotFoundError as exc:  # offline, or the Hub cannot be reached: no use trying the rest
            missing = [u for u in units if not unit_files(u, root)]
            cause = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
            typer.echo(
                f"error: the Hugging Face Hub cannot be reached ({cause}); "
                f"{len(units) - len(missing)} of {len(units)} unit(s) are present under {root}",
                err=True,
            )
            typer.echo(layout_help(missing, root), err=True)
            raise typer.Exit(2) from None
        except (HfHubHTTPError, OSError) as exc:
            failed.append(f"{chosen.name} ({chosen.hub_id}): {str(exc).splitlines()[0]}")
            continue
        files = unit_files(chosen, root)
        if not files:
            failed.append(f"{chosen.name} ({chosen.hub_id}): no file matches {chosen.files_glob} in the repo")
            continue
        typer.echo(f"{chosen.name}: {len(files)} file(s) in {out / chosen.hub_id}")
    if failed:
        _fail(f"{len(failed)} unit(s) not downloaded: " + "; ".join(failed))
    typer.echo(
        f"{len(units)} unit(s) under {root}; next: finevision benchmarks specs --catalogue {catalogue} "
        f"--location {root} --out SPECS_DIR"
    )


@benchmarks_app.command("specs")
def specs(
    catalogue: CatalogueOption,
    location: Annotated[str, typer.Option(help="folder or URI of the units in the Hub layout (need not exist yet)")],
    out: Annotated[Path, typer.Option(help="folder to write one source spec per unit into")],
    unit: UnitOption = None,
) -> None:
    """Write one hf_parquet source spec per unit, pointing at LOCATION/<hub_id>/<data_files> (offline)."""
    loaded, _ = _units(catalogue, unit)
    try:
        written = write_specs(loaded, location, out, unit)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(
        f"wrote {len(written)} source spec(s) to {out}; ingest them with: finevision --set sources_dir={out} ingest"
    )


@benchmarks_app.command("list")
def list_units(
    catalogue: CatalogueOption,
    location: Annotated[str | None, typer.Option(help="also say which units have files under this folder")] = None,
    unit: UnitOption = None,
) -> None:
    """Units, their Hub ids, image/question/answer columns and (with --location) whether they are present."""
    _, units = _units(catalogue, unit)
    present = 0
    for chosen in units:
        hub = f"{chosen.hub_id}" + (f" [{chosen.config}]" if chosen.config else "") + f" {chosen.split}"
        image = f"{chosen.image_field}" + ("" if chosen.images == "single" else f" ({chosen.images})")
        columns = chosen.options_field
        options = columns if isinstance(columns, str) else "/".join(columns or [])
        answer = f"{chosen.answer_field}" + ("" if chosen.answer_format == "text" else f" ({chosen.answer_format})")
        if chosen.bbox_field is not None:  # GUI grounding: the element's box, by platform and element type
            answer = (
                f"{chosen.bbox_field} (box {chosen.bbox_format} {chosen.bbox_units}; "
                f"{chosen.platform_field}, {chosen.element_type_field})"
            )
        line = f"{chosen.name:<48} {hub:<58} image={image} question={chosen.question_field}"
        line += f" options={options or None} answer={answer}"
        if location is not None:
            files = unit_files(chosen, location)
            present += bool(files)
            line += f"  {'present (' + str(len(files)) + ' file(s))' if files else 'missing'}"
        typer.echo(line)
    if location is not None:
        typer.echo(f"{present} of {len(units)} unit(s) present under {location}")
