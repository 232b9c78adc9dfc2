"""Shared fixtures. Tests that need Spark share one session-scoped local[2] session."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from etl.config import load_config

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from etl.session import build_session, load_profile

    profile = load_profile("local")
    profile.master = "local[2]"
    session = build_session(
        profile, {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2", "spark.driver.memory": "3g"}
    )
    yield session
    session.stop()


@pytest.fixture
def make_config(tmp_path):
    """A PipelineConfig whose lakehouse, MLflow store and data root live in tmp_path."""

    def make(sources_dir: Path | None = None, data_root: Path | None = None, **overrides):
        sets = [
            f"lakehouse={tmp_path / 'lakehouse'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"data_root={data_root or tmp_path}",
            f"sources_dir={sources_dir or tmp_path / 'sources'}",
        ]
        sets += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
        return load_config(overrides=sets)

    return make


def png_bytes(size=(32, 24), color=(200, 30, 30), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()
