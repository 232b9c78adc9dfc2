"""One sample per step of a GUI trajectory (`export.gui_per_step`), as smol2operator trains: the
step's screenshot, the instruction and the previous actions as text, the step's action as the answer.

A trajectory sample (the `gui_trajectory` adapter's output) has one screenshot and one turn per
step; with `max_images: 4` a longer trajectory is skipped in training, one sample per step never is.
A gold row is a trajectory when every assistant turn is unified call text (either render style,
inside `<think>`/`<code>` or not) and it has as many images as turns; other rows pass unchanged.

Step `i` of trajectory `s` becomes the row `s/step<i>` with
- `images`: `[images[i]]`;
- `texts`: one turn, `user` = the source's platform prompt (conf/prompts/gui/sources.yaml names
  it per subset; none for a subset not named), then `STEP_PROMPT` with the instruction (the first
  user turn) and the previous steps' calls (`Step j: call; call`, `None` at the first step),
  `assistant` = the step's assistant turn as it is (reasoning included);
- the `<axis>_ratings` of that turn alone (a one-element array) and `<axis>_min` = its score;
- `source`, `subset`, `category`, `contaminated`, `dup_cluster_id` of the trajectory: the release
  leaves a trajectory's steps out or keeps them together (`trajectory_id`, `release_exclusions`).
- `turn_sources`: `[(s, i)]`, the trajectory's turn the step answers (as `export.turns` rows say).

    steps = gui_step_samples(gold, prompts)      # DataFrame -> DataFrame, GOLD_SAMPLES columns
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pandas as pd
import yaml
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, StringType

from etl.config import CONF_DIR
from etl.schema import GOLD_RATING_AXES, GOLD_SAMPLES, require_columns
from etl.sources.gui import ActionError, parse_unified, render_step
from etl.sources.gui.reasoning import split_reasoning

GUI_PROMPTS_DIR = CONF_DIR / "prompts" / "gui"
STEP_PROMPT = (
    "Please generate the next action according to the screenshot, the instruction and the previous actions."
    "\n\nInstruction: {instruction}\n\nPrevious actions:\n{history}"
)
STEP_ID = re.compile(r"/step[0-9]+$")  # `<sample_id>/step<i>`: ingest's sample ids are hex digests


def step_id(sample_id: Column, pos: Column) -> Column:
    """The sample_id of step `pos` (0-based) of the trajectory `sample_id`."""
    return F.concat(sample_id, F.lit("/step"), pos.cast("string"))


def trajectory_id(sample_id: Column) -> Column:
    """The sample a row was made from: a step's trajectory (`step_id`'s inverse), else the row itself."""
    return F.regexp_replace(sample_id, STEP_ID.pattern, "")


@cache
def gui_prompts(folder: str | None = None) -> dict[str, str]:
    """subset -> its system prompt text, from `<folder>/sources.yaml` and `<folder>/<prompt>.md`."""
    root = Path(folder) if folder else GUI_PROMPTS_DIR
    named = yaml.safe_load((root / "sources.yaml").read_text(encoding="utf-8")) or {}
    return {subset: (root / f"{prompt}.md").read_text(encoding="utf-8").strip() for subset, prompt in named.items()}


def step_calls(assistant: str | None) -> str | None:
    """A step's calls in one line (`click(x=0.5, y=0.5); type('a')`), None if it is not call text."""
    try:
        calls = split_reasoning(assistant or "").calls
        actions = parse_unified(calls)
    except ActionError:
        return None
    style = "unified" if render_step(actions, "unified") == calls else "smol2operator"
    return render_step(actions, style).replace("\n", "; ")


@pandas_udf(ArrayType(StringType()))  # type: ignore[call-overload]
def _calls(assistants_json: pd.Series) -> pd.Series:
    """Per row: each turn's calls, or null when a turn is not call text (not a trajectory)."""

    def one(text: str) -> list[str] | None:
        calls = [step_calls(a) for a in json.loads(text)]
        return None if not calls or any(c is None for c in calls) else calls  # type: ignore[return-value]

    return assistants_json.map(one)


def _history(calls, pos):
    previous = F.slice(calls, 1, pos)
    numbered = F.transform(previous, lambda c, j: F.concat(F.lit("Step "), (j + 1).cast("string"), F.lit(": "), c))
    return F.when(pos == 0, F.lit("None")).otherwise(F.array_join(numbered, "\n"))


def gui_step_samples(gold: DataFrame, prompts: dict[str, str] | None = None) -> DataFrame:
    """`gold` with every GUI trajectory replaced by one row per step (see the module docstring)."""
    require_columns(gold, list(GOLD_SAMPLES.fieldNames()), "gui_step_samples")
    prompts = gui_prompts() if prompts is None else prompts
    marked = gold.withColumn("_calls", _calls(F.to_json("texts.assistant")))
    is_trajectory = F.col("_calls").isNotNull() & (F.size("images") == F.size("texts"))
    others = marked.filter(~is_trajectory).drop("_calls")

    steps = marked.filter(is_trajectory).select("*", F.posexplode("texts").alias("_pos", "_turn"))
    pos, at = F.col("_pos"), F.col("_pos") + 1
    instruction = F.col("texts")[0]["user"]
    user = F.format_string(
        STEP_PROMPT.replace("{instruction}", "%s").replace("{history}", "%s"), instruction, _history("_calls", pos)
    )
    prompt = F.create_map(*[F.lit(x) for kv in prompts.items() for x in kv])[F.col("subset")] if prompts else None
    if prompt is not None:
        user = F.when(prompt.isNull(), user).otherwise(F.concat(prompt, F.lit("\n\n"), user))
    columns = {
        "images": F.array(F.element_at("images", at)),
        "texts": F.array(F.struct(user.alias("user"), F.col("_turn")["assistant"].alias("assistant"))),
        "sample_id": step_id(F.col("sample_id"), pos),
        **{
            f"{a}_ratings": F.when(F.col(f"{a}_ratings").isNotNull(), F.array(F.col(f"{a}_ratings")[pos]))
            for a in GOLD_RATING_AXES
        },
        **{f"{a}_min": F.col(f"{a}_ratings")[pos] for a in GOLD_RATING_AXES},
        "turn_sources": F.array(F.struct(F.col("sample_id").alias("sample_id"), pos.cast("int").alias("turn_index"))),
    }
    per_step = steps.select(*[columns.get(name, F.col(name)).alias(name) for name in GOLD_SAMPLES.fieldNames()])
    return others.select(*GOLD_SAMPLES.fieldNames()).unionByName(per_step)
