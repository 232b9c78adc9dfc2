"""`finevision demo`: every step of `make demo` in one process, so one Spark session (one JVM)
serves them all: the sample corpus, every stage, the table summary, both review pages, the report,
the tiny model's training and its evaluation. Each step is the CLI command of the same name, called
with its defaults, so the demo prints and writes what the separate commands would."""

from __future__ import annotations

import time
from collections.abc import Callable

import typer

TINY_MODEL = "models/tiny/final"  # conf/train/tiny.yaml's output_dir + final/


def run_demo(ctx: typer.Context) -> None:
    from etl import cli

    steps: list[tuple[str, Callable[[], None]]] = [
        ("samples", lambda: cli.samples(ctx)),
        ("run", lambda: cli.run(ctx)),
        ("tables", lambda: cli.show_tables(ctx)),
        ("review contamination", lambda: cli.review(ctx, "contamination")),
        ("review duplicates", lambda: cli.review(ctx, "duplicates")),
        ("report", lambda: cli.report(ctx)),
        ("train --train-config tiny", lambda: cli.train(ctx)),
        (f"evaluate --model {TINY_MODEL}", lambda: cli.evaluate(ctx, model=TINY_MODEL)),
    ]
    started = time.monotonic()
    for name, step in steps:
        typer.echo(f"== finevision {name}")
        began = time.monotonic()
        step()
        typer.echo(f"== finevision {name}: {time.monotonic() - began:.0f} s")
    typer.echo(f"demo done in {time.monotonic() - started:.0f} s")
