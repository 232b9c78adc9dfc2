"""smol2operator's AGUVIS forms (a cited fixture) and the canonical text: parse, render, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.sources.gui import FRACTION, SIGNATURES, Action, ActionError, parse_step, parse_unified, render, render_step
from etl.sources.gui.actions import DIRECTIONS, MAX_KEYS, MAX_SCROLL_AMOUNT, OPTIONAL_POINT, RENDER_STYLES

FIXTURE = yaml.safe_load((Path(__file__).parent / "fixtures" / "smol2operator_actions.yaml").read_text())
A = Action.of


@pytest.mark.parametrize("case", FIXTURE["parsed"], ids=lambda c: c["input"])
def test_every_form_smol2operators_conversion_accepts_parses_to_its_text(case):
    actions = parse_step(case["input"], dialect=case["dialect"], frame=FRACTION)
    assert render_step(actions) == case["expected"]
    # smol2operator's output is itself unified text that reads back to the same actions.
    assert parse_step(case["expected"], dialect="unified") == actions


@pytest.mark.parametrize("case", FIXTURE["quarantined"], ids=lambda c: c["input"])
def test_other_forms_are_still_refused_with_a_reason(case):
    with pytest.raises(ActionError) as caught:
        parse_step(case["input"], dialect=case["dialect"], frame=FRACTION)
    assert caught.value.reason == case["reason"]


def test_forms_without_coordinates_are_the_action_without_coordinates():
    assert parse_step("pyautogui.doubleClick()", dialect="pyautogui", frame=FRACTION) == [A("double_click")]
    assert parse_step("pyautogui.hotkey(keys=['ctrl', 'c'])", dialect="pyautogui") == [A("press", keys=["ctrl", "c"])]
    assert parse_step("answer('42')", dialect="pyautogui") == [A("final_answer", answer="42")]
    assert A("click").args == ()
    with pytest.raises(ActionError):
        A("long_press")  # only the clicks have optional coordinates


def test_smol2operator_text_next_to_the_unified_text():
    cases = [
        (A("type", text="hello"), "type('hello')", "type(text='hello')"),
        (A("final_answer", answer="done"), "final_answer('done')", "final_answer(answer='done')"),
        (A("open_app", app_name="Maps"), "open_app('Maps')", "open_app(app_name='Maps')"),
        (A("press", keys=["enter"]), "press(keys='enter')", "press(keys=['enter'])"),
        (A("press", keys=["ctrl", "c"]), "press(keys=['ctrl', 'c'])", "press(keys=['ctrl', 'c'])"),
        (A("wait", seconds=3), "wait(seconds=3)", "wait(seconds=3.0)"),
        (A("wait", seconds=1.5), "wait(seconds=1.5)", "wait(seconds=1.5)"),
        (A("click", x=0.81024, y=0.9463), "click(x=0.8102, y=0.9463)", "click(x=0.81, y=0.946)"),
        (A("double_click"), "double_click()", "double_click()"),
    ]
    for action, smol, unified in cases:
        assert render(action) == smol
        assert render(action, "smol2operator") == smol
        assert render(action, "unified") == unified
    with pytest.raises(ValueError):
        render(A("navigate_home"), "json")


coords = st.floats(0, 1, allow_nan=False)
points = st.tuples(coords, coords)
texts = st.text(min_size=1, max_size=60).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t))
KEY = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=9)


def _xy(name):
    return st.one_of(st.builds(lambda x, y: A(name, x=x, y=y), coords, coords), st.just(A(name)))


ACTIONS = {
    "click": _xy("click"),
    "double_click": _xy("double_click"),
    "right_click": _xy("right_click"),
    "move_mouse": st.builds(lambda x, y: A("move_mouse", x=x, y=y), coords, coords),
    "long_press": st.builds(lambda x, y: A("long_press", x=x, y=y), coords, coords),
    "type": st.builds(lambda t: A("type", text=t), texts),
    "open_app": st.builds(lambda t: A("open_app", app_name=t), texts),
    "final_answer": st.builds(
        lambda t: A("final_answer", answer=t),
        st.text(max_size=60).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
    ),
    "press": st.builds(lambda k: A("press", keys=k), st.lists(KEY, min_size=1, max_size=MAX_KEYS)),
    "drag": st.builds(lambda a, b: A("drag", from_coord=a, to_coord=b), points, points),
    "swipe": st.builds(lambda a, b: A("swipe", from_coord=a, to_coord=b), points, points),
    "scroll": st.builds(
        lambda d, n: A("scroll", direction=d, amount=n),
        st.sampled_from(DIRECTIONS),
        st.integers(0, MAX_SCROLL_AMOUNT),
    ),
    "wait": st.builds(lambda s: A("wait", seconds=s), st.floats(0, 3600, allow_nan=False) | st.integers(0, 3600)),
    "navigate_back": st.just(A("navigate_back")),
    "navigate_home": st.just(A("navigate_home")),
}


def test_the_property_covers_every_action_type():
    assert set(ACTIONS) == set(SIGNATURES)
    assert OPTIONAL_POINT <= set(ACTIONS)


@settings(deadline=None, max_examples=400)
@given(action=st.one_of(*ACTIONS.values()), style=st.sampled_from(RENDER_STYLES))
def test_render_parse_render_gives_the_same_text(action, style):
    text = render(action, style)
    again = parse_unified(text)
    assert render_step(again, style) == text
    if style == "smol2operator":  # the default keeps every digit the action holds
        assert again == [action]
