"""Progress of long Spark work on the terminal: a Rich bar fed by Spark's status tracker.

    with spark_progress(spark, "clean"):
        clean.run(run)

It shows the running Spark stages' tasks done of total (and how many jobs ran so far) while the
block runs, polled twice a second. It is off when stderr is not a terminal (logs, CI, spark-submit
on a cluster), under pytest, with `FINEVISION_PROGRESS=0`, and under Spark Connect, whose sessions
have no SparkContext and so no status tracker: there the block simply runs without a bar.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

POLL_S = 0.5


def progress_wanted() -> bool:
    if os.environ.get("FINEVISION_PROGRESS", "").lower() in ("0", "false", "no"):
        return False
    return sys.stderr.isatty() and "PYTEST_CURRENT_TEST" not in os.environ


def status_tracker(spark):
    """Spark's status tracker, or None where there is none (Spark Connect has no SparkContext)."""
    try:
        return spark.sparkContext.statusTracker()
    except Exception:  # noqa: BLE001 - Connect raises its own error types for any SparkContext access
        return None


def task_counts(tracker) -> tuple[int, int, int]:
    """(tasks done, tasks in total, active jobs) over the stages running now."""
    done = total = 0
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            done += info.numCompletedTasks
            total += info.numTasks
    return done, total, len(tracker.getActiveJobsIds())


@contextmanager
def spark_progress(spark, label: str, enabled: bool | None = None) -> Iterator[None]:
    tracker = status_tracker(spark) if (progress_wanted() if enabled is None else enabled) else None
    if tracker is None:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    stop = threading.Event()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(label, total=None)

        def poll() -> None:
            while not stop.wait(POLL_S):
                try:
                    done, total, jobs = task_counts(tracker)
                except Exception:  # noqa: BLE001 - the session went away under us: stop showing progress
                    return
                description = f"{label} ({jobs} Spark job{'s' if jobs != 1 else ''} running)" if jobs else label
                progress.update(bar, completed=done, total=total or None, description=description)

        thread = threading.Thread(target=poll, daemon=True, name="spark-progress")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
