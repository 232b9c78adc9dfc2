"""The `finevision` command line: one entry point for laptops, spark-submit, Databricks and EMR."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from etl.benchmarks_cli import benchmarks_app
from etl.config import ConfigError, PipelineConfig, load_config
from etl.release_cli import release_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="FineVision ETL: curate vision-language data on Spark + Delta Lake.",
)
log = logging.getLogger("finevision")
app.add_typer(benchmarks_app, name="benchmarks")
assets_app = typer.Typer(no_args_is_help=True, help="Files the executors open, prepared once for a cluster.")
app.add_typer(assets_app, name="assets")
app.add_typer(release_app, name="release")


@dataclass
class Options:
    config: PipelineConfig
    profile: str
    dry_run: bool
    verbose: bool = False
    parent_run: str | None = None


def _options(ctx: typer.Context) -> Options:
    return ctx.obj


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="pipeline YAML (default conf/pipeline.yaml)")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a config key: --set clean.max_side=1024")
    ] = None,
    lakehouse: Annotated[str | None, typer.Option(help="root folder or URI of the Delta tables")] = None,
    profile: Annotated[
        str, typer.Option(help="Spark profile in conf/profiles (local, databricks, serverless, emr, ...) or a YAML")
    ] = "local",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and write nothing")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    parent_run: Annotated[
        str | None,
        typer.Option(
            "--parent-run",
            help="key of the pipeline run this command is part of: every command given the key records its "
            "stages under one MLflow parent run (the bundle passes the Databricks job run id)",
        ),
    ] = None,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "httpx", "filelock", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        ctx.obj = Options(load_config(config, overrides or [], lakehouse), profile, dry_run, verbose, parent_run)
    except ConfigError as exc:
        _fail(str(exc))


def _require_extra(extra: str, modules: tuple[str, ...]) -> None:
    from udfs.extras import require

    try:
        for module in modules:
            require(module, extra)
    except ImportError as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def spark_error_line(exc: Exception) -> str:
    """A Spark error as one line that says what went wrong and, where known, what to do."""
    text = str(exc).strip()
    line = text.splitlines()[0].split(" SQLSTATE:")[0].strip() if text else type(exc).__name__
    condition = exc.getCondition() if hasattr(exc, "getCondition") else None
    if condition == "TABLE_OR_VIEW_NOT_FOUND":
        line += " (a view exists once the stages writing its tables ran: `finevision tables` lists them)"
    elif condition == "UNSUPPORTED_DATASOURCE_FOR_DIRECT_QUERY" or "is not a Delta table" in line:
        line += " (check the path: delta.`<lakehouse>/<table>`)"
    return line


def _run_stages(options: Options, stages: tuple[str, ...], command: str) -> None:
    from etl.jobs import STAGES_BY_NAME
    from etl.progress import spark_progress
    from etl.runs import PipelineRun
    from etl.session import build_session

    try:
        specs = options.config.source_specs() if "ingest" in stages else []  # fail fast on a bad spec
        spark = build_session(options.profile, {"spark.sql.shuffle.partitions": str(options.config.shuffle_partitions)})
        if options.dry_run:
            _print_plan(spark, options.config, stages, specs)
            return
        run = PipelineRun(spark, options.config, command, options.parent_run)
        failed = True
        try:
            for stage in stages:
                with spark_progress(spark, stage):
                    STAGES_BY_NAME[stage].runner()(run)
            failed = False
        finally:
            run.close(failed)
        typer.echo(f"run {run.run_id} done (mlflow run {run.mlflow_run_id})")
    except ConfigError as exc:
        _fail(str(exc))
    except Exception as exc:  # one line for the user; --verbose keeps the whole trace
        if options.verbose:
            raise
        typer.echo(f"error: {command}: {spark_error_line(exc)} (--verbose shows the trace)", err=True)
        raise typer.Exit(1) from None


def _print_plan(spark, config: PipelineConfig, stages, specs) -> None:
    from etl import tables
    from etl.jobs import STAGES_BY_NAME
    from etl.jobs.ingest import plan_tasks

    typer.echo(f"plan (dry run, nothing is written); config hash {config.config_hash()}")
    typer.echo(f"  lakehouse: {config.catalog or config.lakehouse}")
    for stage in stages:
        typer.echo(f"  stage {stage}")
        for name in STAGES_BY_NAME[stage].reads:
            version = tables.current_version(spark, tables.TableRef.of(config, name))
            typer.echo(f"    reads  {name} @ version {version if version is not None else '(not yet written)'}")
        for name in STAGES_BY_NAME[stage].writes:
            typer.echo(f"    writes {name} ({tables.TableRef.of(config, name)})")
        if stage == "ingest":
            tasks = plan_tasks(config, specs)
            typer.echo(f"    {len(tasks)} shard(s) from {len(specs)} source(s): {', '.join(s.name for s in specs)}")


@app.command()
def samples(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="output folder (default: samples.out_dir)")] = None,
    scale: Annotated[int | None, typer.Option(help="multiply the generated subsets")] = None,
) -> None:
    """Build the embedded sample corpus (offline, deterministic) that conf/sources points at."""
    from etl.samples.build import build_samples

    config = _options(ctx).config
    out_dir = out or Path(config.samples.out_dir)
    if _options(ctx).dry_run:
        typer.echo(f"would build the sample corpus into {out_dir} at scale {scale or config.samples.scale}")
        return
    summary = build_samples(out_dir, scale=scale or config.samples.scale, seed=config.samples.seed)
    typer.echo(f"sample corpus in {out_dir}: {summary.get('records', summary)}")


@app.command()
def ingest(
    ctx: typer.Context,
    source: Annotated[list[str] | None, typer.Option(help="only these source names (repeatable)")] = None,
) -> None:
    """Read every source spec's files into bronze_samples, benchmark_items and quarantine."""
    options = _options(ctx)
    if source:
        options.config.sources = list(source)
    _run_stages(options, ("ingest",), "ingest")


@app.command()
def clean(ctx: typer.Context) -> None:
    """Validate, downscale and normalise bronze_samples into silver_samples."""
    _run_stages(_options(ctx), ("clean",), "clean")


@app.command()
def embed(ctx: typer.Context) -> None:
    """SSCD embeddings of every distinct silver and benchmark image not embedded yet."""
    _run_stages(_options(ctx), ("embed",), "embed")


@app.command()
def decontaminate(ctx: typer.Context) -> None:
    """Image (SSCD + FAISS) and text (n-gram) hits against the benchmarks."""
    _run_stages(_options(ctx), ("decontaminate",), "decontaminate")


@app.command()
def dedup(ctx: typer.Context) -> None:
    """Exact and near-duplicate images (SSCD kNN self-join, connected components)."""
    _run_stages(_options(ctx), ("dedup",), "dedup")


@app.command()
def rate(ctx: typer.Context) -> None:
    """Score every turn 1-5 on four axes with the configured LLM/VLM judges (resumable)."""
    options = _options(ctx)
    _run_stages(options, ("rate",), "rate")
    if not options.dry_run:
        from etl.jobs.rate import distribution_summary
        from etl.session import build_session

        typer.echo(distribution_summary(build_session(options.profile), options.config))


@app.command()
def export(ctx: typer.Context) -> None:
    """gold_samples (Delta) and the release folder: parquet per subset and a dataset card."""
    _run_stages(_options(ctx), ("export",), "export")


@app.command()
def analyze(ctx: typer.Context) -> None:
    """Analytics tables: subset_stats, diversity_metrics, action_stats (GUI action distribution)."""
    _run_stages(_options(ctx), ("analyze",), "analyze")


@app.command()
def run(
    ctx: typer.Context,
    stages: Annotated[list[str] | None, typer.Option("--stage", help="only these stages, in pipeline order")] = None,
) -> None:
    """Run every pipeline stage in order (the main job)."""
    from etl.jobs import STAGES

    unknown = set(stages or []) - {s.name for s in STAGES}
    if unknown:
        _fail(f"--stage: unknown {sorted(unknown)}; stages are {[s.name for s in STAGES]}")
    chosen = tuple(s.name for s in STAGES if not stages or s.name in stages)
    _run_stages(_options(ctx), chosen, "run")


@app.command()
def train(
    ctx: typer.Context,
    config: Annotated[str, typer.Option("--train-config", help="conf/train/<name>.yaml or a YAML path")] = "tiny",
    overrides: Annotated[
        list[str] | None, typer.Option("--train-set", help="override a training key: --train-set max_steps=50")
    ] = None,
    mixture: Annotated[str | None, typer.Option(help="mixture spec in conf/mixtures (name or path)")] = None,
    version: Annotated[int | None, typer.Option(help="gold_samples version to pin (default: the latest)")] = None,
    table: Annotated[
        str | None, typer.Option(help="gold table: a path, a name under the lakehouse or catalog.schema.table")
    ] = None,
) -> None:
    """Train SmolVLM on a pinned gold_samples version, tracked in MLflow (not part of `run`)."""
    _require_extra("train", ("torch", "transformers"))
    from etl.train.config import load_train_config
    from etl.train.run import train as train_model

    options = _options(ctx)
    try:
        sets = (
            list(overrides or [])
            + ([f"data.mixture={mixture}"] if mixture else [])
            + ([f"data.table={table}"] if table else [])
            + ([f"data.version={version}"] if version is not None else [])
        )
        train_config = load_train_config(config, sets)
        from etl.session import build_session

        spark = build_session(options.profile)  # gold is read through Spark; TorchDistributor runs on it
        if options.dry_run:
            from etl.train.run import resolve_source

            source, rows = resolve_source(train_config, options.config, spark)
            typer.echo(f"would train {train_config.name} on {source}: {rows} rows")
            return
        result = train_model(train_config, options.config, spark)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc).splitlines()[0])
    typer.echo(
        f"trained {train_config.name}: {len(result.losses)} steps, loss {result.losses[0]:.3f} -> "
        f"{result.losses[-1]:.3f} on {result.rows} rows of {result.source.table} @ version {result.source.version}"
    )
    typer.echo(
        f"mlflow run {result.mlflow_run_id}; model {result.model_uri}"
        + (f" (registered version {result.registered_version})" if result.registered_version else "")
    )
    typer.echo(f"final model folder: {result.final_dir}")
    typer.echo(f"open the MLflow UI: .venv/bin/mlflow ui --backend-store-uri {options.config.mlflow.tracking_uri}")


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="a saved model folder every node reads, or an MLflow model URI (runs:/..., models:/...)")
    ],
    eval_config: Annotated[Path | None, typer.Option("--eval-config", help="default conf/eval.yaml")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--eval-set", help="override an eval key: --eval-set limit=50")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="MLflow run to log into (default: the model's run)")] = None,
) -> None:
    """Score a model on benchmark_items on the executors, split into contaminated and clean items (MLflow, eval_predictions)."""
    _require_extra("train", ("torch", "transformers"))
    from etl.train.evaluate import evaluate as evaluate_model
    from etl.train.evaluate import format_scores, load_eval_config, run_id_of

    options = _options(ctx)
    try:
        config = load_eval_config(eval_config, overrides or [])
        target = run_id or run_id_of(model, options.config.mlflow.tracking_uri)
        from etl.session import build_session

        scores = evaluate_model(model, options.config, config, build_session(options.profile), target)
    except (ConfigError, ValueError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
    typer.echo(format_scores(scores))


@app.command()
def demo(ctx: typer.Context) -> None:
    """Every step of `make demo` in one process and one Spark session: samples, run, tables, both
    review pages, report, the tiny model's training and evaluation."""
    from etl.demo import run_demo

    run_demo(ctx)


@app.command()
def preview(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="source name (a spec in sources_dir)")],
    n: Annotated[int, typer.Option("-n", help="how many records")] = 24,
    out: Annotated[Path | None, typer.Option(help="HTML file to write")] = None,
) -> None:
    """Write an HTML page of converted records to audit a source mapping before ingesting."""
    from etl.preview import write_preview

    config = _options(ctx).config
    try:
        config.sources = [source]
        spec = config.source_specs()[0]
        path = write_preview(config, spec, n, out or Path("reports") / f"preview_{spec.name}.html")
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"preview of {spec.name}: {path}")


@app.command()
def review(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="contamination | duplicates")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write")] = None,
    limit: Annotated[int, typer.Option(help="most hits or clusters shown")] = 200,
) -> None:
    """HTML review pages: contamination hits side by side, near-duplicate clusters as grids."""
    from etl.review import write_contamination_review, write_duplicate_review
    from etl.session import build_session

    writers: dict[str, Callable[..., Path]] = {
        "contamination": write_contamination_review,
        "duplicates": write_duplicate_review,
    }
    if what not in writers:
        _fail(f"review: unknown page {what!r}; choose from {sorted(writers)}")
    options = _options(ctx)
    spark = build_session(options.profile)
    try:
        path = writers[what](spark, options.config, out or Path("reports") / f"review_{what}.html", limit)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{what} review: {path}")


@app.command()
def report(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="folder to write (index.html + review pages)")] = None,
) -> None:
    """Static HTML report: headline numbers, categories, per-subset table, contamination, duplicates,
    ratings, diversity and lineage (run `finevision analyze` first)."""
    from etl.report import write_report
    from etl.session import build_session

    options = _options(ctx)
    spark = build_session(options.profile)
    try:
        path = write_report(spark, options.config, out or Path("reports") / "report")
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"report: {path.resolve()}")


@app.command()
def views(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Option(help="a SQL query to run over the views, printed as a table")] = None,
    rows: Annotated[int, typer.Option(help="most rows printed for --query")] = 50,
) -> None:
    """Register the analytics SQL views (v_subset_stats, v_contamination_by_benchmark, ...)."""
    from etl.session import build_session
    from etl.views import VIEWS, register_views

    options = _options(ctx)
    spark = build_session(options.profile)
    registered, skipped = register_views(spark, options.config)
    about = {v.name: v.about for v in VIEWS}
    kind = "views" if options.config.catalog else "temporary views (this session)"
    typer.echo(f"registered {len(registered)} {kind}:")
    for name in registered:
        typer.echo(f"  {name:<30} {about[name]}")
    for name, why in skipped.items():
        typer.echo(f"  {name:<30} skipped: {why}")
    if query:
        from pyspark.errors import PySparkException

        from etl.views import run_query

        try:
            frame = run_query(spark, query)
            typer.echo(frame._show_string(rows, truncate=40))
        except PySparkException as exc:
            _fail(f"--query: {spark_error_line(exc)}")


@app.command()
def maintain(
    ctx: typer.Context,
    table: Annotated[list[str] | None, typer.Option(help="only this table (repeatable); default: every table")] = None,
) -> None:
    """OPTIMIZE (z-ordered by the column each table is read by) and VACUUM (by each table's retention,
    gold's never below maintain.gold_retention_days) every table; --dry-run lists what it would do."""
    from etl.maintain import maintain as upkeep_of
    from etl.session import build_session

    options = _options(ctx)
    try:
        done = upkeep_of(build_session(options.profile), options.config, table, dry_run=options.dry_run)
    except ValueError as exc:
        _fail(str(exc))
    for upkeep in done:
        typer.echo(upkeep.line())
    if not done:
        typer.echo("no table written yet")


@app.command("tables")
def show_tables(ctx: typer.Context) -> None:
    """Print each table's location, version and row count."""
    from etl.session import build_session
    from etl.summary import table_summary

    options = _options(ctx)
    spark = build_session(options.profile)
    typer.echo(table_summary(spark, options.config))


@assets_app.command("prepare")
def prepare_assets(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="folder, volume (/Volumes/...) or URI (s3://...) to write")],
) -> None:
    """Write the tokenizer, judge checkpoints, prompts and SSCD model the configuration uses into
    one folder every node reads; then set `assets.dir` to it."""
    from etl.assets import prepare

    options = _options(ctx)
    if options.dry_run:
        typer.echo(f"would write the tokenizer, judge prompts and checkpoints and SSCD model to {out}")
        return
    try:
        manifest = prepare(options.config, out)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        _fail(f"assets prepare: {exc}")
    total = sum(f["bytes"] for f in manifest["files"])
    for kind, relative in sorted(manifest["assets"].items()):
        typer.echo(f"  {kind:<24} {relative}")
    typer.echo(f"{len(manifest['files'])} files, {total / 1e6:.1f} MB in {out}; set assets.dir: {out}")


if __name__ == "__main__":
    sys.exit(app())
