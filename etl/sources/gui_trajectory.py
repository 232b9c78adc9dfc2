"""GUI agent trajectories (`format: gui_trajectory`): screenshots, an instruction and the actions
taken, rewritten into the unified action space of `etl.sources.gui`.

Input: JSONL, one trajectory per line:

    {"id": "traj-0001",                       # optional, only used to find the record again
     "instruction": "Open the settings",      # the task, becomes the first user turn
     "screen": {"width": 800, "height": 600}, # required when options.coordinates is `pixels`
     "steps": [{"screenshot": "screens/0001_0.png",   # relative to the spec's image_root
                "action": "pyautogui.click(412, 80)"}, # text or a JSON object, in the dialect
               ...]}

Source spec options (`options:` in the spec, `GuiOptions`, checked when the spec loads):
- `dialect` (required): `pyautogui` | `mobile` | `web` | `unified` (see `etl.sources.gui`).
- `coordinates` (required): `pixels` | `grid1000` | `fraction`, for every coordinate of the
  source; never guessed per call.
- `unsupported`: `quarantine` (default) sends a trajectory with any step that does not convert to
  quarantine (reason `unsupported_action`, detail `<ActionError reason>: step <i>: ...`);
  `keep` drops only those steps (and their screenshots), keeps the sample when a step is left,
  and counts the dropped steps in `ctx.stats["unsupported_action"]` and per error reason in
  `ctx.stats["unsupported_action.<reason>"]`.
- `bbox`: `xywh` (default) | `xyxy`, the element box convention of the `web` dialect.
- `render`: `smol2operator` (default) | `unified`, the call text of the assistant turns
  (`etl.sources.gui.actions.RENDER_STYLES`).
- `reasoning`: `keep` (default) | `drop`. A step whose action text holds smol2operator's
  `<think>...</think>` and `<code>...</code>` keeps them around the rendered calls (`keep`) or is
  written as the calls alone (`drop`).

Output: one sample per trajectory. Images are the kept steps' screenshots in step order; texts
one turn per kept step: the first user turn is the instruction, the later ones
`NEXT_STEP_PROMPT`; each assistant turn is the step's unified calls, one per line (inside its
reasoning when kept). `finevision export` can write one sample per step instead
(`export.gui_per_step`, etl/stages/gui_steps.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from etl.sources.base import (
    FormatOptions,
    RawSample,
    ReadContext,
    Reason,
    Record,
    Rejected,
    Shard,
    SourceRef,
    clean_text,
    item_id_of,
    iter_with_rejects,
)
from etl.sources.gui import (
    ActionError,
    Frame,
    clean_user_text,
    parse_step,
    parse_unified,
    render_step,
)
from etl.sources.gui.actions import BboxFormat, Dialect, RenderStyle, Units
from etl.sources.gui.reasoning import Reasoned, split_reasoning, with_reasoning
from etl.sources.records import iter_jsonl

NEXT_STEP_PROMPT = "What is the next action?"
UNPARSED = "unparsed"


class GuiOptions(FormatOptions):
    """`options:` of `gui_trajectory` (see the module docstring)."""

    dialect: Dialect
    coordinates: Units
    unsupported: Literal["quarantine", "keep"] = "quarantine"
    bbox: BboxFormat = "xywh"
    render: RenderStyle = "smol2operator"
    reasoning: Literal["keep", "drop"] = "keep"


def _frame(options: GuiOptions, record: dict) -> Frame:
    if options.coordinates != "pixels":
        return Frame(options.coordinates)
    screen = record["screen"]
    if not isinstance(screen, dict):
        raise TypeError("screen must be an object with width and height")
    try:
        return Frame("pixels", screen["width"], screen["height"])
    except ActionError as exc:
        raise TypeError(exc.detail) from None


def _steps(record: dict) -> list[tuple[str, Any]]:
    steps = record["steps"]
    if not isinstance(steps, list):
        raise TypeError(f"steps must be a list, got {type(steps).__name__}")
    out = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise TypeError(f"step {index} must be an object, got {type(step).__name__}")
        screenshot = step["screenshot"]
        if not isinstance(screenshot, str):
            raise TypeError(f"step {index}: screenshot must be a path, got {type(screenshot).__name__}")
        out.append((screenshot, step["action"]))
    return out


def _error_detail(index: int, error: ActionError) -> str:
    return f"{error.reason}: step {index}: {error.detail}"


def _assistant(options: GuiOptions, frame: Frame, raw_action: Any) -> str:
    """One step's assistant text: its rendered calls, inside its reasoning when kept."""
    reasoned = split_reasoning(raw_action) if isinstance(raw_action, str) else Reasoned(None, "", False)
    raw = reasoned.calls if reasoned.tagged else raw_action
    calls = render_step(parse_step(raw, dialect=options.dialect, frame=frame, bbox=options.bbox), options.render)
    return with_reasoning(reasoned, calls) if options.reasoning == "keep" else calls


def _convert(ctx: ReadContext, options: GuiOptions, record: Any, ref: SourceRef) -> Iterator[Record]:
    if not isinstance(record, dict):
        raise TypeError(f"expected an object per line, got {type(record).__name__}")
    instruction = clean_user_text(clean_text(record["instruction"]))
    steps = _steps(record)
    frame = _frame(options, record)
    if not instruction:
        yield Rejected(Reason.MISSING_FIELD, "instruction is empty", ref, ctx.preview(record))
        return
    if not steps:
        yield Rejected(Reason.NO_TURNS, "trajectory has no steps", ref, ctx.preview(record))
        return

    converted: list[tuple[str, str]] = []
    errors: list[tuple[int, ActionError]] = []
    for index, (screenshot, raw_action) in enumerate(steps):
        try:
            converted.append((screenshot, _assistant(options, frame, raw_action)))
        except ActionError as error:
            errors.append((index, error))

    if errors and options.unsupported == "quarantine":
        more = f" (+{len(errors) - 1} more steps)" if len(errors) > 1 else ""
        yield Rejected(Reason.UNSUPPORTED_ACTION, _error_detail(*errors[0]) + more, ref, ctx.preview(record))
        return
    for _, skipped in errors:
        ctx.stats["unsupported_action"] = ctx.stats.get("unsupported_action", 0) + 1
        key = f"unsupported_action.{skipped.reason}"
        ctx.stats[key] = ctx.stats.get(key, 0) + 1
    if not converted:
        detail = f"no supported step left; first: {_error_detail(*errors[0])}"
        yield Rejected(Reason.UNSUPPORTED_ACTION, detail, ref, ctx.preview(record))
        return

    image_bytes: dict[str, bytes] = {}  # a screenshot shared by several steps is read once
    images, texts = [], []
    for position, (screenshot, assistant) in enumerate(converted):
        if screenshot not in image_bytes:
            image_bytes[screenshot] = ctx.read_image(screenshot)
        images.append((image_bytes[screenshot], screenshot))
        texts.append((instruction if position == 0 else NEXT_STEP_PROMPT, assistant))
    yield RawSample(images, texts, ref, item_id_of(ctx.spec, record))


def read_gui_trajectory(ctx: ReadContext, shard: Shard) -> Iterator[Record]:
    """The reader: one sample (or one `Rejected`) per JSONL line of the shard."""
    options = GuiOptions.model_validate(ctx.spec.options)
    for item in iter_jsonl(ctx, shard):
        if isinstance(item, Rejected):
            yield item
            continue
        ref, record = item
        # Defaults bind this record; works whether the helper calls convert() or convert(raw).
        yield from iter_with_rejects(
            ctx, ref, record, lambda record=record, ref=ref: _convert(ctx, options, record, ref)
        )


def _assistant_text(turn: Any) -> str:
    if isinstance(turn, Mapping):
        return turn["assistant"]
    if hasattr(turn, "asDict"):  # a Spark Row
        return turn["assistant"]
    return turn[1]


def action_counts(texts: Iterable[Any]) -> Counter[str]:
    """How often each unified function occurs in a sample's assistant turns.

    `texts` holds (user, assistant) pairs, `{"user", "assistant"}` mappings or Spark Rows. A turn
    that is not unified call text (in either render style, inside `<think>`/`<code>` or not)
    counts once as `unparsed`.
    """
    counts: Counter[str] = Counter()
    for turn in texts:
        try:
            calls = split_reasoning(_assistant_text(turn) or "").calls
            counts.update(action.name for action in parse_unified(calls))
        except ActionError:
            counts[UNPARSED] += 1
    return counts
