"""Helpers for the notebooks in `notebooks/` (Databricks source format, also run in Jupyter).

In every notebook the first cell calls `notebook_context()`: on Databricks it takes the
notebook's `spark`; elsewhere it starts a local session. The lakehouse, catalog and MLflow store
come from environment variables (FINEVISION_LAKEHOUSE, FINEVISION_CATALOG, FINEVISION_MLFLOW_URI)
or the defaults of conf/pipeline.yaml; the SQL views are registered once.

    python -m etl.notebooks notebooks/explore_subset.py   # writes notebooks/explore_subset.ipynb
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from etl.config import PipelineConfig, load_config

COMMAND_SEPARATOR = "\n# COMMAND ----------\n"
HEADER = "# Databricks notebook source\n"


@dataclass
class NotebookContext:
    spark: object
    config: PipelineConfig
    views: list[str]


def notebook_context(spark=None) -> NotebookContext:
    from etl.session import build_session
    from etl.views import register_views

    overrides = []
    for variable, key in [
        ("FINEVISION_LAKEHOUSE", "lakehouse"),
        ("FINEVISION_CATALOG", "catalog"),
        ("FINEVISION_MLFLOW_URI", "mlflow.tracking_uri"),
    ]:
        if os.environ.get(variable):
            overrides.append(f"{key}={os.environ[variable]}")
    config = load_config(overrides=overrides)
    if spark is None:
        spark = build_session("local", {"spark.sql.shuffle.partitions": str(config.shuffle_partitions)})
    views, _ = register_views(spark, config)
    return NotebookContext(spark, config, views)


def databricks_to_notebook(source: str) -> nbformat.NotebookNode:
    """A Databricks source notebook (.py) -> a Jupyter notebook: `# MAGIC %md` cells become markdown."""
    if not source.startswith(HEADER):
        raise ValueError("not a Databricks source notebook: the first line must be '# Databricks notebook source'")
    cells = []
    for chunk in source[len(HEADER) :].split(COMMAND_SEPARATOR):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        lines = chunk.split("\n")
        if lines[0].startswith("# MAGIC %md"):
            text = "\n".join(line.removeprefix("# MAGIC").removeprefix(" ") for line in lines)
            cells.append(nbformat.v4.new_markdown_cell(text.removeprefix("%md").lstrip("\n")))
        else:
            cells.append(nbformat.v4.new_code_cell(chunk))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def main(paths: list[str]) -> None:
    for path in paths:
        out = Path(path).with_suffix(".ipynb")
        nbformat.write(databricks_to_notebook(Path(path).read_text(encoding="utf-8")), out)
        print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
