# FineVision ETL. Two commands: `make demo` (the main job on the embedded sample corpus) and
# `make test`. Both create .venv with Python 3.12 from uv.lock and resolve the Delta jars first.
SHELL := /bin/bash
PYTHON_BOOT ?= python3.12
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
CLI := $(PY) -m etl.cli

.PHONY: setup jars demo test test-fast test-spark test-compat lint format bench bench-train bench-analyze bench-scale delta-jars-offline clean-outputs wheel chromium

.tools/bin/uv:
	$(PYTHON_BOOT) -m venv .tools
	.tools/bin/pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON_BOOT)
	touch $@

setup: .venv/.synced

# Resolves the Delta Lake jars through Spark's Ivy resolver into ~/.cache/finevision/ivy (once per
# user and machine, shared by every clone; afterwards a check without a JVM).
jars: setup
	$(PY) -m etl.session

# One process, one Spark session for every step (`finevision demo`): samples, run, tables, review
# contamination, review duplicates, report, train --train-config tiny, evaluate --model models/tiny/final.
# Its session resolves the Delta jars on a fresh clone (no separate JVM for `jars`).
demo: setup
	$(CLI) demo

# Test tiers (markers come from the fixtures a test uses, see tests/conftest.py):
#   test-fast   no Spark, no browser, no cluster, nothing slow: the loop for everyday work (< 3 min)
#   test-spark  adds the Spark unit tests (one local[2] session)
#   test        everything, as CI runs it: + the sample pipeline, Chromium, the standalone cluster
# Every tier runs on two pytest-xdist workers: the sample lakehouse is built once for both, the tests of
# a multi-minute fixture each worker builds stay on one worker, and the longest groups start first
# (tests/conftest.py).
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder
test-fast: setup
	$(PYTEST) $(XDIST) -m "not spark and not pipeline and not browser and not cluster and not slow"

test-spark: setup jars
	$(PYTEST) $(XDIST) -m "not pipeline and not browser and not cluster and not slow"

# The Spark tier against the EMR 8.0 line (pyspark 4.0 + delta-spark 4.0) in its own venv
# (.venv-compat: the locked set with only those two replaced). Not part of `make test`.
COMPAT := .venv-compat
COMPAT_SPARK := "pyspark[connect]==4.0.1" "delta-spark==4.0.0"
$(COMPAT)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) venv -q --allow-existing $(COMPAT) --python $(PYTHON_BOOT)
	$(UV) export --frozen --all-extras --no-hashes --no-emit-project -q | grep -v '^pyspark=\|^delta-spark=' > $(COMPAT)/locked.txt
	$(UV) pip install -q --python $(COMPAT)/bin/python -r $(COMPAT)/locked.txt $(COMPAT_SPARK)
	$(UV) pip install -q --python $(COMPAT)/bin/python --no-deps -e .
	touch $@

test-compat: $(COMPAT)/.synced
	$(COMPAT)/bin/python -m etl.session
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider $(XDIST) -m "not pipeline and not browser and not cluster and not slow"

# Every run prints its 25 slowest tests (setup included).
test: setup jars chromium
	$(PYTEST) $(XDIST) --durations=25

# ruff (format and lint) and mypy, configured in pyproject.toml; `make format` applies the fixes. The docs/
# reference builds without a warning (broken links and anchors fail it) into site/ (git-ignored).
lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m mkdocs build --strict --quiet --site-dir site

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Headless Chromium for the report's browser test (Debian's package; playwright drives it).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

bench: setup jars
	$(PY) bench/clean_throughput.py

# The wheel clusters install (Databricks library, EMR venv archive, standalone workers): dist/*.whl
wheel: | $(UV)
	$(UV) build --wheel --out-dir dist

bench-train: setup
	$(PY) bench/train_throughput.py

bench-analyze: setup jars
	$(PY) bench/analyze_scaling.py

# Every stage on a synthetic corpus at 10k, 100k and 1M samples (SIZES=2000,8000 to try it small).
SIZES ?= 10000,100000,1000000
bench-scale: setup jars
	$(PY) bench/scale.py --sizes $(SIZES)

# Fallback when Spark's resolver cannot reach Maven Central but Maven can (see docs/index.md).
delta-jars-offline:
	mvn -q dependency:copy-dependencies -f conf/delta-jars-pom.xml -DoutputDirectory=$(CURDIR)/.cache/delta-jars

clean-outputs:
	rm -rf lakehouse mlflow.db mlartifacts reports spark-warehouse data/samples models
