"""The cluster path, for real: the built wheel, installed into a fresh venv, submitted with
`spark-submit entrypoint.py run ...` to a Spark standalone master with two workers on loopback.

Nothing here runs inside the test's own Python: the driver is spark-submit's process, executors
are the workers' JVMs running the throwaway venv's Python, so the run proves the pipeline does not
depend on the driver's process, the checkout or the project venv. The workers share nothing with
the driver but what a cluster shares: they run as another Unix user, with their own work
directory, HOME and temporary folders, and cannot read the checkout, the driver's working
directory or its HOME (where the driver converts models). What they open comes from the installed
wheel (the cluster's Python environment), from spark-submit, or from "storage", one world-writable
folder holding the corpus, the lakehouse and the assets `finevision assets prepare` wrote.
Each worker offers one fake GPU (a discovery script), so the embed stage's stage-level scheduling
(`etl/resources.py`) is exercised too. The Delta tables are then checked against the sample corpus
manifest (written by the corpus builder, not by the stages), and the Spark event log shows which
executors ran what.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from etl.config import PROJECT_ROOT
from etl.session import ivy_path, load_profile
from tests.conftest import missing_prerequisite

# The whole run (venv, corpus, pipeline) takes minutes; more on a machine shared with other work.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

# uv as the Makefile finds it: on the PATH, else the copy `make` installs into .tools/
UV = shutil.which("uv") or next(
    (str(p) for p in (PROJECT_ROOT / ".tools" / "bin" / "uv", Path.home() / ".local" / "bin" / "uv") if p.exists()),
    "uv",
)
SOURCES = ["charts", "chartqa_local", "photos", "photo_vqa", "gui_mobile"]
DELTA_PACKAGE = "io.delta:delta-spark_4.1_2.13:4.4.0"
WORKERS = 2
SUBMIT_TIMEOUT_S = 2700
FAKE_GPU_SCRIPT = '#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0"]}\'\n'
WORKER_USER = "fvworker"
# Files the workers write (Delta data files, release shards) land in folders the driver made, and
# the other way round: both sides create files and folders open to all, as on a shared bucket.
OPEN_PERMISSIONS = "spark.hadoop.fs.permissions.umask-mode=000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def _as_worker(*cmd) -> list[str]:
    return ["runuser", "-u", WORKER_USER, "--", *map(str, cmd)]


def _worker_can_read(path: Path) -> bool:
    return subprocess.run(_as_worker("test", "-r", path), capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def worker_user() -> str:
    """The Unix user the workers run as (created when missing); not the driver's. Without root the
    tier skips, except under CI, where it fails."""
    if os.geteuid() != 0:
        missing_prerequisite("isolated workers run as another Unix user: this test needs root (useradd, runuser)")
    if subprocess.run(["id", "-u", WORKER_USER], capture_output=True).returncode != 0:
        _run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", WORKER_USER])
    return WORKER_USER


@pytest.fixture(scope="module")
def shared(worker_user):
    """What the cluster's nodes share: the installed Python environment (read-only to workers) and
    `storage` (corpus, lakehouse, assets). The driver's own files stay in pytest's tmp folders,
    which only root reads; the checkout and HOME are closed to the workers while the test runs."""
    root = Path(tempfile.mkdtemp(prefix="finevision-cluster-"))
    root.chmod(0o755)
    (root / "storage").mkdir(mode=0o777)
    (root / "storage").chmod(0o777)
    opened = []
    try:
        for private in (PROJECT_ROOT, Path.home()):
            if _worker_can_read(private):
                mode = private.stat().st_mode & 0o7777
                private.chmod(mode & ~0o007)
                opened.append((private, mode))
        yield root
    finally:
        for private, mode in opened:
            private.chmod(mode)
        shutil.rmtree(root, ignore_errors=True)


def _worker_python(shared: Path) -> Path:
    """An interpreter the workers can run: this one where the worker user can run it, else a copy
    of its installation in the shared folder (a pyenv or uv Python lives under root's HOME)."""
    base = Path(sys.base_prefix)
    interpreter = base / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if subprocess.run(_as_worker(interpreter, "-c", "pass"), capture_output=True).returncode == 0:
        return interpreter
    copy = shared / "python"
    shutil.copytree(base, copy, symlinks=True, ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
    return copy / "bin" / interpreter.name


def _library_path(shared: Path) -> str:
    """LD_LIBRARY_PATH for a copied interpreter: its RUNPATH names the original folder, which
    the workers cannot read."""
    return str(shared / "python" / "lib") if (shared / "python").exists() else ""


@pytest.fixture(scope="module")
def wheel_venv(shared, tmp_path_factory) -> Path:
    """A fresh venv with only the built wheel and its locked dependencies (spark, local-models and the
    models of embed and rate), in the shared folder: the cluster's Python environment, which the
    workers run but do not write."""
    root = tmp_path_factory.mktemp("wheel")
    _run([UV, "build", "--wheel", "--out-dir", root / "dist", PROJECT_ROOT], cwd=PROJECT_ROOT)
    wheel = next((root / "dist").glob("finevision_etl-*.whl"))
    requirements = root / "requirements.txt"
    _run(
        [
            UV,
            "export",
            "--frozen",
            "--no-dev",
            "--extra",
            "spark",
            "--extra",
            "local-models",
            "--extra",
            "embed",
            "--extra",
            "rate",
            "--no-emit-project",
            "--no-hashes",
            "-q",
            "-o",
            requirements,
        ],
        cwd=PROJECT_ROOT,
    )
    venv = shared / "venv"
    interpreter = _worker_python(shared)
    _run([UV, "venv", "-q", venv, "--python", interpreter])
    # --no-deps: the exported lock is the complete, resolved set (as `uv sync` installs it).
    _run([UV, "pip", "install", "-q", "--python", venv / "bin" / "python", "--no-deps", "-r", requirements, wheel])
    return venv


class LoopbackCluster:
    """A standalone master and workers bound to 127.0.0.1, each worker with one core and one fake GPU.

    The master runs as the test's user; each worker JVM (and so its executors and their Python
    workers) runs as WORKER_USER with a clean environment: its own HOME, temporary and work folders."""

    def __init__(self, venv: Path, logs: Path, shared: Path, workers: int):
        self.spark_home = next((venv / "lib").glob("python3*/site-packages/pyspark"))
        self.root, self.shared, self.workers = logs, shared, workers
        self.port = _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.gpu_script = shared / "fake_gpu.sh"
        self.gpu_script.write_text(FAKE_GPU_SCRIPT)
        self.gpu_script.chmod(0o755)

    def work_dir(self, i: int) -> Path:
        return self.shared / "workers" / f"worker{i}" / "work"

    def _start(self, name: str, args: list, as_worker: bool = False) -> None:
        log = open(self.root / f"{name}.log", "w")
        spark_env = {"SPARK_HOME": str(self.spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        command = [str(self.spark_home / "bin" / "spark-class"), *map(str, args)]
        if as_worker:
            own = self.work_dir(int(name.removeprefix("worker"))).parent
            worker_env = {
                **spark_env,
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": str(own / "home"),
                "TMPDIR": str(own / "tmp"),
                "SPARK_LOCAL_DIRS": str(own / "tmp"),
                "LD_LIBRARY_PATH": _library_path(self.shared),
            }
            umask_then_run = ["bash", "-c", 'umask 0000 && exec "$@"', name, *command]
            command = _as_worker("env", "-i", *(f"{k}={v}" for k, v in worker_env.items()), *umask_then_run)
            env = dict(os.environ)
        else:
            env = {**os.environ, **spark_env}
        self.processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        )

    def start(self) -> None:
        self._start(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                self.port,
                "--webui-port",
                _free_port(),
            ],
        )
        self._wait_for("master.log", "I have been elected leader")
        for i in range(self.workers):
            own = self.work_dir(i).parent
            for folder in (own, own / "home", own / "tmp", own / "work"):
                folder.mkdir(parents=True, mode=0o700)
                shutil.chown(folder, WORKER_USER, WORKER_USER)
            properties = self.shared / f"worker{i}.properties"
            properties.write_text(
                f"spark.worker.resource.gpu.amount 1\nspark.worker.resource.gpu.discoveryScript {self.gpu_script}\n"
            )
            self._start(
                f"worker{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    self.url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    1,
                    "--memory",
                    "3g",
                    "--webui-port",
                    _free_port(),
                    "--work-dir",
                    self.work_dir(i),
                    "--properties-file",
                    properties,
                ],
                as_worker=True,
            )
        for i in range(self.workers):
            self._wait_for(f"worker{i}.log", "Successfully registered with master")

    def _wait_for(self, log: str, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (self.root / log).read_text(errors="replace"):
                return
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        raise AssertionError(f"{log} never said {text!r}\n{self.logs()}")

    def logs(self) -> str:
        """The master's and workers' logs and every executor's stderr, tails only."""
        parts = []
        for log in sorted(self.root.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        for stderr in sorted((self.shared / "workers").glob("worker*/work/*/*/stderr")):
            parts.append(f"--- {stderr.relative_to(self.shared)}\n{stderr.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Workers first, then the master; each in its own process group with its executors."""
        for process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)  # executors and Python workers left behind


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster(wheel_venv, shared, tmp_path_factory):
    cluster = LoopbackCluster(wheel_venv, tmp_path_factory.mktemp("cluster"), shared, WORKERS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def submitted(cluster, wheel_venv, shared, tmp_path_factory):
    """Build the sample corpus with the wheel's console script, prepare the assets, then
    spark-submit the pipeline. Returns the driver's folder, the storage folder (corpus, lakehouse),
    spark-submit's result and the event log."""
    root = tmp_path_factory.mktemp("submit")  # the driver's working directory: closed to the workers
    storage = shared / "storage"
    python, bin_dir = wheel_venv / "bin" / "python", wheel_venv / "bin"
    # Launch from a folder with only the shim in it: `etl` must come from the installed wheel.
    shutil.copy(PROJECT_ROOT / "entrypoint.py", root / "entrypoint.py")
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV")}
    env |= {"SPARK_HOME": str(cluster.spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "PATH": f"{bin_dir}:{env['PATH']}"}
    # The console script, with the configuration packaged in the wheel (no conf/ in this folder).
    assert (
        "would build the sample corpus"
        in _run([bin_dir / "finevision", "--dry-run", "samples"], cwd=root, env=env).stdout
    )
    # The corpus and its source specs, both generated by the wheel's own code.
    _run(
        [python, "-m", "etl.samples.build", storage / "data" / "samples", "--sources-dir", root / "sources"],
        cwd=root,
        env=env,
    )
    config = root / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lakehouse": str(storage / "lake"),
                "data_root": str(storage / "data"),
                "sources_dir": str(root / "sources"),
                "sources": SOURCES,
                "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "cluster-test"},
                "clean": {"tokenizer": {"cache_dir": str(root / "tokenizer")}},
                # the CPU judge on 1-core workers: one turn per subset keeps the stage short
                "rate": {"max_turns_per_subset": 1},
                "assets": {"dir": str(storage / "assets")},
            }
        )
    )
    prepared = _run(
        [bin_dir / "finevision", "--config", config, "assets", "prepare", "--out", storage / "assets"],
        cwd=root,
        env=env,
    )
    assert "judge:smollm2_135m" in prepared.stdout, prepared.stdout
    events = root / "events"
    events.mkdir()
    submit = [
        bin_dir / "spark-submit",
        "--master",
        cluster.url,
        "--deploy-mode",
        "client",
        "--packages",
        DELTA_PACKAGE,
        "--conf",
        f"spark.jars.ivy={ivy_path(load_profile('local'))}",
        "--driver-memory",
        "2g",
        "--executor-memory",
        "2g",
        "--conf",
        "spark.executor.cores=1",
        "--conf",
        f"spark.cores.max={WORKERS}",
        "--conf",
        f"spark.pyspark.python={python}",
        "--conf",
        f"spark.pyspark.driver.python={python}",
        "--conf",
        "spark.executor.resource.gpu.amount=1",
        "--conf",
        f"spark.executor.resource.gpu.discoveryScript={cluster.gpu_script}",
        "--conf",
        "spark.eventLog.enabled=true",
        "--conf",
        f"spark.eventLog.dir=file://{events}",
        "--conf",
        "spark.eventLog.rolling.enabled=false",
        "--conf",
        "spark.eventLog.compress=false",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        OPEN_PERMISSIONS,
        "--conf",
        f"spark.executorEnv.LD_LIBRARY_PATH={_library_path(shared)}",
        # sized for a sample corpus on a 2-core machine (Delta's default of 50 is for big tables)
        "--conf",
        "spark.databricks.delta.snapshotPartitions=2",
        "--conf",
        "spark.default.parallelism=4",
        root / "entrypoint.py",
        "run",
        "--config",
        config,
        "--profile",
        "standalone",
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        [str(c) for c in submit],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: os.umask(0),  # folders the driver makes in storage are the workers' too
    )
    try:
        stdout, stderr = process.communicate(timeout=SUBMIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # spark-submit's JVM and the Python driver it started
        stdout, stderr = process.communicate()
    result = subprocess.CompletedProcess(submit, process.returncode, stdout, stderr)
    if result.returncode != 0:
        raise AssertionError(
            f"spark-submit failed ({result.returncode}) after {time.monotonic() - started:.0f}s:\n"
            f"{stdout[-4000:]}\n{stderr[-8000:]}\n{cluster.logs()}"
        )
    event_log = next(events.iterdir())
    return root, storage, result, [json.loads(line) for line in event_log.read_text().splitlines() if line.strip()]


def _delta_rows(path: Path) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def test_submitted_pipeline_writes_the_delta_tables_the_manifest_expects(submitted):
    _, storage, result, _ = submitted
    assert "done (mlflow run" in result.stdout, result.stdout[-2000:]
    lake, manifest = storage / "lake", json.loads((storage / "data" / "samples" / "manifest.json").read_text())
    expected = manifest["expected"]["default_config"]

    silver: dict[str, int] = {}
    for row in _delta_rows(lake / "silver_samples"):
        silver[row["subset"]] = silver.get(row["subset"], 0) + 1
    for subset in (s for s in SOURCES if s in expected):
        assert silver.get(subset, 0) == expected[subset]["silver"], subset

    found = {
        (h["image_id"], h["benchmark"], h["benchmark_item_id"])
        for h in _delta_rows(lake / "contamination_hits")
        if h["image_id"] is not None  # image hits, of whichever method is configured
    }
    must_find = {
        (c["training"]["image_sha256"], c["benchmark"], c["item_id"])
        for c in manifest["contamination"]
        if c["must_find"] and c["training"]["subset"] in SOURCES and c["benchmark"] in SOURCES
    }
    assert must_find and must_find <= found

    cluster_of = {r["image_id"]: r["cluster_id"] for r in _delta_rows(lake / "near_duplicate_clusters")}
    pairs = [
        (p["a"]["image_sha256"], p["b"]["image_sha256"])
        for p in manifest["near_duplicates"]
        if p["must_find"] and p["a"]["subset"] in SOURCES and p["b"]["subset"] in SOURCES
    ]
    assert pairs and all(a in cluster_of and cluster_of[a] == cluster_of.get(b) for a, b in pairs)

    embedded = {r["image_id"] for r in _delta_rows(lake / "image_embeddings")}
    assert {h[0] for h in found} <= embedded and all(
        len(r["embedding"]) == 512 for r in _delta_rows(lake / "image_embeddings")[:5]
    )
    assert {r["subset"] for r in _delta_rows(lake / "action_stats")} == {"gui_mobile"}
    runs = [r for r in _delta_rows(lake / "pipeline_runs")]
    assert {r["stage"] for r in runs} == {
        "ingest",
        "clean",
        "embed",
        "decontaminate",
        "dedup",
        "rate",
        "export",
        "analyze",
    }
    assert all(r["status"] == "succeeded" for r in runs)


def _executor_workers(cluster: LoopbackCluster) -> dict[str, int]:
    """executor id -> worker index, from the workers' own work dirs (<work>/<app>/<executor>/)."""
    owner = {}
    for i in range(cluster.workers):
        for executor_dir in cluster.work_dir(i).glob("app-*/*"):
            owner[executor_dir.name] = i
    return owner


def test_executors_on_both_workers_ran_tasks(cluster, submitted):
    *_, events = submitted
    owner = _executor_workers(cluster)
    tasks_per_worker: dict[int, int] = {}
    for event in events:
        if event["Event"] == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
            worker = owner[event["Task Info"]["Executor ID"]]
            tasks_per_worker[worker] = tasks_per_worker.get(worker, 0) + 1
    assert set(tasks_per_worker) == set(range(WORKERS)), (tasks_per_worker, cluster.logs())
    assert all(count >= 5 for count in tasks_per_worker.values()), tasks_per_worker


def test_embed_stage_ran_under_a_gpu_resource_profile(submitted):
    *_, events = submitted
    gpu_profiles = {
        e["Resource Profile Id"]
        for e in events
        if e["Event"] == "SparkListenerResourceProfileAdded"
        and e["Task Resource Requests"].get("gpu", {}).get("Amount") == 1.0
    }
    assert gpu_profiles, "no resource profile asked for a GPU per task"
    gpu_stages = {
        e["Stage Info"]["Stage ID"]
        for e in events
        if e["Event"] == "SparkListenerStageSubmitted" and e["Stage Info"]["Resource Profile Id"] in gpu_profiles
    }
    gpu_tasks = [
        e
        for e in events
        if e["Event"] == "SparkListenerTaskEnd"
        and e["Stage ID"] in gpu_stages
        and e["Task End Reason"]["Reason"] == "Success"
    ]
    assert gpu_tasks, "no task ran under the GPU profile"
    executors = [e["Executor Info"] for e in events if e["Event"] == "SparkListenerExecutorAdded"]
    assert executors and all(info["Resources"]["gpu"]["addresses"] == ["0"] for info in executors)


def test_workers_share_nothing_with_the_driver(cluster, submitted):
    """The executors ran as the worker user (they own the data files they wrote), which cannot read
    the checkout, the driver's working directory and HOME, or the driver's converted models."""
    driver_dir, storage, _, _ = submitted
    worker_uid = int(_run(["id", "-u", WORKER_USER]).stdout)
    data_files = list((storage / "lake" / "silver_samples").glob("*.parquet"))
    assert data_files and all(f.stat().st_uid == worker_uid for f in data_files)
    assert all(f.stat().st_uid == worker_uid for f in cluster.work_dir(0).glob("app-*/*/stderr"))
    # the tokenizer was converted in the driver's folder (the config names it), the judge in the
    # driver user's cache (the default `~/.cache/finevision/models/...`)
    converted = (driver_dir / "tokenizer", Path.home() / ".cache" / "finevision" / "models" / "smollm2-135m-instruct")
    for private in (PROJECT_ROOT / "pyproject.toml", Path.home(), *converted):
        assert private.exists() and not _worker_can_read(private), private
