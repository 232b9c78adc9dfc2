"""The `gui_trajectory` adapter and the synthetic GUI subset, on real files in tmp_path."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from etl.config import ConfigError, IngestConfig, SourceSpec, load_source_spec
from etl.samples.gui import write_gui_subset
from etl.sources.base import RawSample, ReadContext, Reason, Rejected, Shard
from etl.sources.files import ArrowFiles
from etl.sources.gui_trajectory import NEXT_STEP_PROMPT, action_counts, read_gui_trajectory


def png(path: Path, size=(80, 60), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def context(root: Path, **options) -> ReadContext:
    spec = SourceSpec(
        name="gui_test",
        format="gui_trajectory",
        location="gui.jsonl",
        image_root=str(root),
        subset="gui_test",
        category="Grounding & Counting",
        options=options,
    )
    return ReadContext(spec, ArrowFiles(), IngestConfig(), image_root=str(root))


def read(root: Path, lines: list, **options) -> tuple[list, ReadContext]:
    path = root / "gui.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    ctx = context(root, **options)
    return list(read_gui_trajectory(ctx, Shard(str(path)))), ctx


@pytest.fixture
def shots(tmp_path: Path) -> dict[str, bytes]:
    return {
        "s/0.png": png(tmp_path / "s/0.png", colour=(255, 0, 0)),
        "s/1.png": png(tmp_path / "s/1.png", colour=(0, 255, 0)),
        "s/2.png": png(tmp_path / "s/2.png", colour=(0, 0, 255)),
    }


DESKTOP = {
    "id": "t1",
    "instruction": "<image>Rename the file to 'budget' and save it.",
    "screen": {"width": 800, "height": 600},
    "steps": [
        {"screenshot": "s/0.png", "action": "pyautogui.click(400, 150)\npyautogui.write(message='budget')"},
        {"screenshot": "s/1.png", "action": "pyautogui.hotkey('ctrl', 's')"},
        {"screenshot": "s/2.png", "action": "pyautogui.moveTo(100, 150)\npyautogui.dragTo(500, 450)"},
    ],
}
PYAUTOGUI = {"dialect": "pyautogui", "coordinates": "pixels"}


def test_pyautogui_trajectory_becomes_one_sample(tmp_path, shots):
    records, ctx = read(tmp_path, [DESKTOP], **PYAUTOGUI)
    assert len(records) == 1 and isinstance(records[0], RawSample)
    sample = records[0]
    assert sample.images == [
        (shots["s/0.png"], "s/0.png"),
        (shots["s/1.png"], "s/1.png"),
        (shots["s/2.png"], "s/2.png"),
    ]
    assert sample.texts == [
        ("Rename the file to 'budget' and save it.", "click(x=0.5, y=0.25)\ntype('budget')"),
        (NEXT_STEP_PROMPT, "press(keys=['ctrl', 's'])"),
        (NEXT_STEP_PROMPT, "drag(from_coord=[0.125, 0.25], to_coord=[0.625, 0.75])"),
    ]
    assert sample.ref.row == 0
    assert ctx.stats == {}


def test_mobile_web_and_unified_dialects(tmp_path, shots):
    mobile = {
        "instruction": "Open Clock and go back",
        "steps": [
            {"screenshot": "s/0.png", "action": {"action_type": "open_app", "app_name": "Clock"}},
            {"screenshot": "s/1.png", "action": '{"action_type": "click", "x": 250, "y": 750}'},
            {
                "screenshot": "s/1.png",
                "action": {"action_type": "DUAL_POINT", "touch_point": [900, 500], "lift_point": [100, 500]},
            },
            {"screenshot": "s/2.png", "action": "mobile.back()"},
        ],
    }
    [sample], _ = read(tmp_path, [mobile], dialect="mobile", coordinates="grid1000")
    assert [a for _, a in sample.texts] == [
        "open_app('Clock')",
        "click(x=0.25, y=0.75)",
        "swipe(from_coord=[0.5, 0.9], to_coord=[0.5, 0.1])",
        "navigate_back()",
    ]
    assert [p for _, p in sample.images] == ["s/0.png", "s/1.png", "s/1.png", "s/2.png"]

    web = {
        "instruction": "Search flights to Paris",
        "screen": {"width": 800, "height": 600},
        "steps": [
            {"screenshot": "s/0.png", "action": {"operation": "TYPE", "value": "Paris", "bbox": [300, 100, 200, 50]}}
        ],
    }
    [sample], _ = read(tmp_path, [web], dialect="web", coordinates="pixels", bbox="xywh")
    assert sample.texts == [("Search flights to Paris", "click(x=0.5, y=0.2083)\ntype('Paris')")]
    web["steps"][0]["action"]["bbox"] = [300, 100, 500, 150]  # the same box as [left, top, right, bottom]
    [sample], _ = read(tmp_path, [web], dialect="web", coordinates="pixels", bbox="xyxy")
    assert sample.texts == [("Search flights to Paris", "click(x=0.5, y=0.2083)\ntype('Paris')")]

    unified = {"instruction": "Go home", "steps": [{"screenshot": "s/2.png", "action": "navigate_home()"}]}
    [sample], _ = read(tmp_path, [unified], dialect="unified", coordinates="fraction")
    assert sample.texts == [("Go home", "navigate_home()")]
    assert sample.images == [(shots["s/2.png"], "s/2.png")]


def with_steps(*actions) -> dict:
    return {**DESKTOP, "steps": [{"screenshot": f"s/{i}.png", "action": a} for i, a in enumerate(actions)]}


def test_quarantine_policy_rejects_the_whole_trajectory(tmp_path, shots):
    line = with_steps("pyautogui.click(400, 150)", "pyautogui.screenshot()", "pyautogui.click(900, 10)")
    [record], ctx = read(tmp_path, [line], **PYAUTOGUI, unsupported="quarantine")
    assert isinstance(record, Rejected)
    assert record.reason == Reason.UNSUPPORTED_ACTION
    assert record.detail == "unsupported_action: step 1: pyautogui.screenshot() (+1 more steps)"
    assert '"pyautogui.screenshot()"' in record.raw
    assert ctx.stats == {}


def test_out_of_range_is_quarantined_with_its_reason(tmp_path, shots):
    [record], _ = read(tmp_path, [with_steps("pyautogui.click(801, 10)")], **PYAUTOGUI)
    assert record.reason == Reason.UNSUPPORTED_ACTION
    assert record.detail.startswith("out_of_range: step 0: click.x=801 (pixels) is outside the screen")


def test_keep_policy_drops_only_bad_steps_and_counts_them(tmp_path, shots):
    line = with_steps("pyautogui.screenshot()", "pyautogui.press('enter')", "pyautogui.click(900, 10)")
    [sample], ctx = read(tmp_path, [line], **PYAUTOGUI, unsupported="keep")
    assert sample.texts == [("Rename the file to 'budget' and save it.", "press(keys='enter')")]
    assert sample.images == [(shots["s/1.png"], "s/1.png")]
    assert ctx.stats == {
        "unsupported_action": 2,
        "unsupported_action.unsupported_action": 1,
        "unsupported_action.out_of_range": 1,
    }


def test_keep_policy_with_nothing_left_is_quarantined(tmp_path, shots):
    [record], ctx = read(tmp_path, [with_steps("pyautogui.screenshot()")], **PYAUTOGUI, unsupported="keep")
    assert record.reason == Reason.UNSUPPORTED_ACTION
    assert record.detail == "no supported step left; first: unsupported_action: step 0: pyautogui.screenshot()"
    assert ctx.stats["unsupported_action"] == 1


def test_bad_records_are_rejected_and_reading_goes_on(tmp_path, shots):
    no_screen = {k: v for k, v in DESKTOP.items() if k != "screen"}
    lines = [
        "{not json",
        ["a", "list"],
        {"instruction": "x", "screen": {"width": 800, "height": 600}},
        {**DESKTOP, "steps": "pyautogui.click(1, 1)"},
        {**DESKTOP, "steps": []},
        {**DESKTOP, "instruction": "<image>"},
        {**DESKTOP, "steps": [{"screenshot": "s/0.png"}]},
        no_screen,
        {**DESKTOP, "screen": {"width": 0, "height": 600}},
        {**DESKTOP, "steps": [{"screenshot": "s/missing.png", "action": "pyautogui.press('a')"}]},
        {**DESKTOP, "steps": [{"screenshot": "../outside.png", "action": "pyautogui.press('a')"}]},
        {**DESKTOP, "steps": [{"screenshot": 3, "action": "pyautogui.press('a')"}]},
        "",
        DESKTOP,
    ]
    records, _ = read(tmp_path, lines, **PYAUTOGUI)
    reasons = [r.reason if isinstance(r, Rejected) else "sample" for r in records]
    assert reasons == [
        Reason.INVALID_JSON,
        Reason.WRONG_TYPE,
        Reason.MISSING_FIELD,
        Reason.WRONG_TYPE,
        Reason.NO_TURNS,
        Reason.MISSING_FIELD,
        Reason.MISSING_FIELD,
        Reason.MISSING_FIELD,
        Reason.WRONG_TYPE,
        Reason.MISSING_IMAGE,
        Reason.UNSAFE_PATH,
        Reason.WRONG_TYPE,
        "sample",
    ]
    assert records[-1].ref.row == 13


@pytest.mark.parametrize(
    "options, message",
    [
        ({"coordinates": "pixels"}, "options: dialect is required by format gui_trajectory"),
        ({"dialect": "pyautogui"}, "options: coordinates is required by format gui_trajectory"),
        ({"dialect": "selenium", "coordinates": "pixels"}, "options: dialect: Input should be 'pyautogui', 'mobile'"),
        ({"dialect": "web", "coordinates": "pixels", "bbox": "cxcywh"}, "options: bbox: Input should be 'xywh' or"),
        ({"dialect": "web", "coordinates": "pixels", "unsupported": "guess"}, "options: unsupported: Input should be"),
        (
            {"dialect": "web", "coordinates": "pixels", "bboxes": "xywh"},
            "options: 'bboxes' is not an option of format gui_trajectory",
        ),
    ],
)
def test_bad_options_fail_when_the_spec_loads(tmp_path, options, message):
    path = tmp_path / "gui.yaml"
    spec = {"name": "g", "format": "gui_trajectory", "location": "g.jsonl", "subset": "g", "options": options}
    path.write_text(yaml.safe_dump({**spec, "category": "Grounding & Counting"}))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")) as caught:
        load_source_spec(path)
    assert "\n" not in str(caught.value)


def test_action_counts_of_assistant_turns():
    texts = [
        ("Do it", "click(x=0.5, y=0.5)\ntype(text='a')"),
        {"user": "", "assistant": "click(x=0.1, y=0.1)"},
        ("", "press(keys=['enter'])"),
        ("", "I think I should click the button"),
        ("", ""),
    ]
    assert action_counts(texts) == Counter({"click": 2, "type": 1, "press": 1, "unparsed": 2})


def test_synthetic_gui_subset_goes_through_the_adapter(tmp_path):
    out = tmp_path / "gui"
    specs = write_gui_subset(out, n_trajectories=12, seed=0, location_prefix="samples/gui")
    assert [s["name"] for s in specs] == ["gui_desktop", "gui_mobile", "gui_web", "gui_unified"]
    assert specs[0]["location"] == "samples/gui/desktop_pyautogui.jsonl"
    assert all(s["image_root"] == "samples/gui" and s["format"] == "gui_trajectory" for s in specs)
    results = {}
    for raw_spec in specs:
        spec = SourceSpec.model_validate(raw_spec)
        ctx = ReadContext(spec, ArrowFiles(), IngestConfig(), image_root=str(out))
        records = list(read_gui_trajectory(ctx, Shard(str(out / Path(spec.location).name))))
        results[spec.name] = (records, ctx.stats)

    desktop, _ = results["gui_desktop"]
    assert [type(r).__name__ for r in desktop] == ["RawSample", "Rejected", "RawSample"]
    assert desktop[1].detail.startswith("unsupported_action: step 1: pyautogui.screenshot()")
    mobile, mobile_stats = results["gui_mobile"]
    assert all(isinstance(r, RawSample) for r in mobile) and len(mobile) == 3
    assert mobile_stats == {"unsupported_action": 1, "unsupported_action.unsupported_action": 1}
    assert all(len(r.images) == len(r.texts) == 7 for r in mobile)
    for name in ("gui_web", "gui_unified"):
        assert [type(r).__name__ for r in results[name][0]] == ["RawSample"] * 3

    first_web = results["gui_web"][0][0]
    assert Image.open(io.BytesIO(first_web.images[0][0])).size == (800, 600)
    assert Image.open(io.BytesIO(mobile[0].images[0][0])).size == (360, 640)
    assert first_web.texts[0][1].startswith("click(") and "\ntype('" in first_web.texts[0][1]
    totals = sum(
        (action_counts(r.texts) for rs, _ in results.values() for r in rs if isinstance(r, RawSample)), Counter()
    )
    assert {"click", "type", "open_app", "swipe", "final_answer", "navigate_back"} <= set(totals)
    assert "unparsed" not in totals


def test_synthetic_gui_subset_is_deterministic(tmp_path):
    write_gui_subset(tmp_path / "a", n_trajectories=8, seed=3)
    write_gui_subset(tmp_path / "b", n_trajectories=8, seed=3)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
