"""Reasoning around a step (`<think>`/`<code>`), the render option, and the platform prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from etl.sources.base import RawSample, Rejected
from etl.sources.gui import SIGNATURES, ActionError
from etl.sources.gui.reasoning import split_reasoning
from etl.sources.gui_trajectory import action_counts
from tests.test_gui_trajectory import DESKTOP, PYAUTOGUI, read, shots  # noqa: F401 - the fixture

THOUGHT = "The file name box is selected, so I type the new name."
REASONED = {
    **DESKTOP,
    "steps": [
        {
            "screenshot": "s/0.png",
            "action": f"<think>\n{THOUGHT}\n</think>\n<code>\npyautogui.write(message='budget')\n</code>",
        },
        {"screenshot": "s/1.png", "action": "<code>\npyautogui.hotkey(keys=['ctrl', 's'])\n</code>"},
        {"screenshot": "s/2.png", "action": "pyautogui.doubleClick()"},
    ],
}
CONF = Path(__file__).resolve().parents[1] / "conf" / "prompts" / "gui"


def test_a_step_keeps_its_think_and_code(tmp_path, shots):  # noqa: F811
    [sample], _ = read(tmp_path, [REASONED], **PYAUTOGUI)
    assert isinstance(sample, RawSample)
    assert [a for _, a in sample.texts] == [
        f"<think>\n{THOUGHT}\n</think>\n<code>\ntype('budget')\n</code>",
        "<code>\npress(keys=['ctrl', 's'])\n</code>",
        "double_click()",
    ]
    # the kept reasoning does not hide the actions from the statistics
    assert action_counts(sample.texts) == {"type": 1, "press": 1, "double_click": 1}


def test_reasoning_drop_and_unified_render_options(tmp_path, shots):  # noqa: F811
    [sample], _ = read(tmp_path, [REASONED], **PYAUTOGUI, reasoning="drop", render="unified")
    assert [a for _, a in sample.texts] == ["type(text='budget')", "press(keys=['ctrl', 's'])", "double_click()"]


def test_bad_reasoning_is_quarantined_with_a_reason(tmp_path, shots):  # noqa: F811
    line = {**REASONED, "steps": [{"screenshot": "s/0.png", "action": "<think>hm</think><code>click()"}]}
    [record], _ = read(tmp_path, [line], **PYAUTOGUI)
    assert isinstance(record, Rejected)
    assert record.detail.startswith("syntax: step 0: an unclosed <think> or <code> tag")


@pytest.mark.parametrize(
    "text",
    ["<think>a</think><think>b</think>click()", "<code>click()</code> click()", "</think>click()", "x" * 10_001],
)
def test_malformed_reasoning_is_an_action_error(text):
    with pytest.raises(ActionError):
        split_reasoning(text)


def test_platform_prompts_list_their_functions_and_each_gui_source_has_one():
    desktop, mobile = (CONF / "desktop.md").read_text(), (CONF / "mobile.md").read_text()
    mobile_only = {"open_app", "swipe", "long_press", "navigate_home"}
    desktop_only = {"double_click", "right_click", "move_mouse", "drag", "scroll"}
    for name in SIGNATURES:
        assert (f"\n{name}(" in desktop) == (name not in mobile_only), name
        assert (f"\n{name}(" in mobile) == (name not in desktop_only), name
    assert "<think></think>" in desktop and "<code></code>" in mobile
    named = yaml.safe_load((CONF / "sources.yaml").read_text())
    sample_sources = {p.stem for p in (CONF.parents[1] / "sources").glob("gui_*.yaml")}
    assert set(named) == sample_sources and set(named.values()) == {"desktop", "mobile"}
