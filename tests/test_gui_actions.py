"""The unified GUI action space: every dialect, the coordinate rules, errors, round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.sources.gui import (
    FRACTION,
    MAX_CALLS,
    MAX_CHARS,
    MOBILE_CALLS,
    PYAUTOGUI_CALLS,
    REASONS,
    SIGNATURES,
    SYSTEM_PROMPT,
    Action,
    ActionError,
    Frame,
    clean_assistant_text,
    clean_user_text,
    normalise_chat,
    parse_step,
    parse_unified,
    render,
    render_step,
)

A = Action.of
PX_800 = Frame("pixels", 800, 600)
PX_FHD = Frame("pixels", 1920, 1080)
PX_PHONE = Frame("pixels", 1080, 2400)
GRID = Frame("grid1000")


def reason_of(raw, **kwargs) -> str:
    with pytest.raises(ActionError) as caught:
        parse_step(raw, **kwargs)
    return caught.value.reason


# --- pyautogui ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, frame, expected",
    [
        ("pyautogui.click(960, 540)", PX_FHD, [A("click", x=0.5, y=0.5)]),
        ("pyautogui.click(x=0.3, y=0.5)", FRACTION, [A("click", x=0.3, y=0.5)]),  # AGUVIS
        ("pyautogui.click((400, 150))", PX_800, [A("click", x=0.5, y=0.25)]),
        ("pyautogui.click(400, 150, button='right')", PX_800, [A("right_click", x=0.5, y=0.25)]),
        ("pyautogui.click(400, 150, clicks=2, interval=0.1)", PX_800, [A("double_click", x=0.5, y=0.25)]),
        ("pyautogui.doubleClick(200, 300)", PX_800, [A("double_click", x=0.25, y=0.5)]),
        ("pyautogui.rightClick(x=600, y=450)", PX_800, [A("right_click", x=0.75, y=0.75)]),
        ("pyautogui.moveTo(80, 60, duration=0.25)", PX_800, [A("move_mouse", x=0.1, y=0.1)]),
        ("pyautogui.write('hello world', interval=0.05)", PX_800, [A("type", text="hello world")]),
        ('pyautogui.typewrite(message="it\'s")', PX_800, [A("type", text="it's")]),
        ("pyautogui.hotkey('ctrl', 'shift', 't')", PX_800, [A("press", keys=["ctrl", "shift", "t"])]),
        ("pyautogui.press('enter')", PX_800, [A("press", keys=["enter"])]),
        ("pyautogui.press(['tab', 'tab'])", PX_800, [A("press", keys=["tab"]), A("press", keys=["tab"])]),
        ("pyautogui.press('down', presses=3)", PX_800, [A("press", keys=["down"])] * 3),
        ("pyautogui.scroll(page=-0.5)", PX_800, [A("scroll", direction="up", amount=50)]),
        ("pyautogui.scroll(page=1.2)", PX_800, [A("scroll", direction="down", amount=120)]),
        ("pyautogui.scroll(-3)", PX_800, [A("scroll", direction="down", amount=3)]),
        (
            "pyautogui.scroll(5, x=400, y=300)",
            PX_800,
            [A("move_mouse", x=0.5, y=0.5), A("scroll", direction="up", amount=5)],
        ),
        ("pyautogui.hscroll(page=-1)", PX_800, [A("scroll", direction="left", amount=100)]),
        ("pyautogui.hscroll(2)", PX_800, [A("scroll", direction="right", amount=2)]),
        ("pyautogui.sleep(2)", PX_800, [A("wait", seconds=2.0)]),
        ("computer.terminate(status='success')", PX_800, [A("final_answer", answer="success")]),
        ("answer('The total is 42')", PX_800, [A("final_answer", answer="The total is 42")]),
    ],
)
def test_pyautogui_single_calls(text, frame, expected):
    assert parse_step(text, dialect="pyautogui", frame=frame) == expected


def test_pyautogui_several_calls_in_one_step_newlines_and_semicolons():
    text = "pyautogui.click(400, 300); pyautogui.write('hello world')\n# then submit\npyautogui.press('enter')"
    assert parse_step(text, dialect="pyautogui", frame=PX_800) == [
        A("click", x=0.5, y=0.5),
        A("type", text="hello world"),
        A("press", keys=["enter"]),
    ]


def test_drag_starts_where_the_step_left_the_mouse_and_folds_move_to():
    text = "pyautogui.moveTo(100, 150)\npyautogui.dragTo(500, 450, duration=0.5)"
    assert parse_step(text, dialect="pyautogui", frame=PX_800) == [
        A("drag", from_coord=[0.125, 0.25], to_coord=[0.625, 0.75])
    ]
    text = "pyautogui.click(100, 150)\npyautogui.dragTo(500, 450)"
    assert parse_step(text, dialect="pyautogui", frame=PX_800) == [
        A("click", x=0.125, y=0.25),
        A("drag", from_coord=[0.125, 0.25], to_coord=[0.625, 0.75]),
    ]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("pyautogui.screenshot()", "unsupported_action"),
        ("pyautogui.keyDown('shift')", "unsupported_action"),
        ("pyautogui.click(10, 10, button='middle')", "unsupported_action"),
        ("pyautogui.click(10, 10, clicks=3)", "unsupported_action"),
        ("os.system('rm -rf /')", "unsupported_action"),
        ("mobile.home()", "unsupported_action"),
        ("pyautogui.dragTo(500, 450)", "bad_arguments"),  # no known start
        ("pyautogui.click(1, 2, foo=3)", "bad_arguments"),
        ("pyautogui.click(x='left', y=2)", "bad_arguments"),
        ("pyautogui.scroll()", "bad_arguments"),
        ("pyautogui.click(x=eval('1'), y=2)", "bad_arguments"),
        ("pyautogui.click(*[1, 2])", "bad_arguments"),
        ("__import__('os').system('id')", "syntax"),
        ("x = 1", "syntax"),
        ("pyautogui.click(400, 300", "syntax"),
        ("pyautogui.click(801, 300)", "out_of_range"),
        ("pyautogui.click(-1, 300)", "out_of_range"),
    ],
)
def test_pyautogui_errors(text, reason):
    assert reason_of(text, dialect="pyautogui", frame=PX_800) == reason


def test_arguments_are_never_evaluated(capsys):
    assert reason_of("pyautogui.write(print('side effect'))", dialect="pyautogui", frame=PX_800) == "bad_arguments"
    assert reason_of("type(text=print('side effect'))", dialect="unified") == "bad_arguments"
    assert capsys.readouterr().out == ""


# --- mobile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, frame, expected",
    [
        # AndroidControl (pixels of a 1080x2400 phone)
        ({"action_type": "click", "x": 540, "y": 1200}, PX_PHONE, [A("click", x=0.5, y=0.5)]),
        (
            {"action_type": "long_press", "x": 270, "y": 600, "extra": "ignored"},
            PX_PHONE,
            [A("long_press", x=0.25, y=0.25)],
        ),
        (
            {"action_type": "scroll", "direction": "down"},
            PX_PHONE,
            [A("swipe", from_coord=[0.5, 0.8], to_coord=[0.5, 0.2])],
        ),
        (
            {"action_type": "scroll", "direction": "left"},
            PX_PHONE,
            [A("swipe", from_coord=[0.2, 0.5], to_coord=[0.8, 0.5])],
        ),
        ({"action_type": "input_text", "text": "coffee near me"}, PX_PHONE, [A("type", text="coffee near me")]),
        ({"action_type": "open_app", "app_name": "Google Maps"}, PX_PHONE, [A("open_app", app_name="Google Maps")]),
        ({"action_type": "navigate_home"}, PX_PHONE, [A("navigate_home")]),
        ({"action_type": "navigate_back"}, PX_PHONE, [A("navigate_back")]),
        ({"action_type": "wait"}, PX_PHONE, [A("wait", seconds=1.0)]),
        ('{"action_type": "click", "x": 1080, "y": 0}', PX_PHONE, [A("click", x=1.0, y=0.0)]),
        # android_world
        ({"action_type": "tap", "x": 500, "y": 250}, GRID, [A("click", x=0.5, y=0.25)]),
        ({"action_type": "swipe", "direction": "up"}, GRID, [A("swipe", from_coord=[0.5, 0.8], to_coord=[0.5, 0.2])]),
        ({"action_type": "keyboard_enter"}, GRID, [A("press", keys=["enter"])]),
        ({"action_type": "answer", "text": "It is 5 pm"}, GRID, [A("final_answer", answer="It is 5 pm")]),
        ({"action_type": "status", "goal_status": "infeasible"}, GRID, [A("final_answer", answer="infeasible")]),
        # AITW: points are [y, x] fractions
        (
            {"action_type": "DUAL_POINT", "touch_point": [0.8, 0.25], "lift_point": [0.81, 0.25]},
            FRACTION,
            [A("click", x=0.25, y=0.8)],
        ),
        (
            {"action_type": "DUAL_POINT", "touch_point": [0.8, 0.5], "lift_point": [0.2, 0.5]},
            FRACTION,
            [A("swipe", from_coord=[0.5, 0.8], to_coord=[0.5, 0.2])],
        ),
        ({"action_type": "TYPE", "typed_text": "weather"}, FRACTION, [A("type", text="weather")]),
        ({"action_type": "PRESS_HOME"}, FRACTION, [A("navigate_home")]),
        ({"action_type": "PRESS_BACK"}, FRACTION, [A("navigate_back")]),
        ({"action_type": "PRESS_ENTER"}, FRACTION, [A("press", keys=["enter"])]),
        ({"action_type": "STATUS_TASK_COMPLETE"}, FRACTION, [A("final_answer", answer="success")]),
        ({"action_type": 11}, FRACTION, [A("final_answer", answer="infeasible")]),
        ({"action_type": 6}, FRACTION, [A("navigate_home")]),
    ],
)
def test_mobile_json(raw, frame, expected):
    assert parse_step(raw, dialect="mobile", frame=frame) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "mobile.swipe(from_coord=[0.5, 0.9], to_coord=[0.5, 0.3])",
            [A("swipe", from_coord=[0.5, 0.9], to_coord=[0.5, 0.3])],
        ),
        ("mobile.long_press(x=0.8, y=0.9)", [A("long_press", x=0.8, y=0.9)]),
        ("mobile.home()", [A("navigate_home")]),
        ("mobile.back()", [A("navigate_back")]),
        ("mobile.open_app(app_name='Chrome')", [A("open_app", app_name="Chrome")]),
        ("mobile.wait(seconds=3)", [A("wait", seconds=3.0)]),
        ("mobile.terminate(status='success')", [A("final_answer", answer="success")]),
        ("answer('Tomorrow at 9')", [A("final_answer", answer="Tomorrow at 9")]),
        ("swipe(direction='left')", [A("swipe", from_coord=[0.8, 0.5], to_coord=[0.2, 0.5])]),
        ("tap(0.25, 0.75)", [A("click", x=0.25, y=0.75)]),
        (
            "pyautogui.click(x=0.3, y=0.5)\npyautogui.write(message='hi')",
            [A("click", x=0.3, y=0.5), A("type", text="hi")],
        ),
    ],
)
def test_mobile_calls_aguvis_style(text, expected):
    assert parse_step(text, dialect="mobile", frame=FRACTION) == expected


@pytest.mark.parametrize(
    "raw, reason",
    [
        ({"action_type": "unknown_gesture"}, "unsupported_action"),
        ({"action_type": "PINCH"}, "unsupported_action"),
        ({"action_type": 8}, "unsupported_action"),
        ("mobile.screenshot()", "unsupported_action"),
        ({"x": 1, "y": 2}, "bad_arguments"),
        ({"action_type": "click", "x": 540}, "bad_arguments"),
        ({"action_type": "scroll", "direction": "diagonal"}, "bad_arguments"),
        ({"action_type": "swipe"}, "bad_arguments"),
        ({"action_type": "TYPE"}, "bad_arguments"),
        ({"action_type": "click", "x": 540, "y": 2401}, "out_of_range"),
        ({"action_type": "click", "x": True, "y": 10}, "bad_arguments"),
        ('{"action_type": "click", "x": NaN, "y": 1}', "bad_arguments"),
        ('{"action_type": "click"', "syntax"),
        ("[1, 2]", "syntax"),
    ],
)
def test_mobile_errors(raw, reason):
    assert reason_of(raw, dialect="mobile", frame=PX_PHONE) == reason


# --- web ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, bbox, expected",
    [
        ({"operation": "CLICK", "value": "", "bbox": [350, 280, 100, 40]}, "xywh", [A("click", x=0.5, y=0.5)]),
        (
            {"operation": "TYPE", "value": "paris", "bbox": [350, 280, 100, 40]},
            "xywh",
            [A("click", x=0.5, y=0.5), A("type", text="paris")],
        ),
        (
            {"operation": {"op": "SELECT", "original_op": "SELECT", "value": "Economy"}, "bbox": "40,90,200,20"},
            "xywh",
            [A("click", x=0.175, y=0.1667), A("type", text="Economy")],
        ),
        ({"operation": "HOVER", "bbox": [0, 0, 800, 600]}, "xywh", [A("move_mouse", x=0.5, y=0.5)]),
        ({"operation": "CLICK", "bbox": [350, 280, 450, 320]}, "xyxy", [A("click", x=0.5, y=0.5)]),
        ('{"operation": "click", "bbox": [350, 280, 100, 40]}', "xywh", [A("click", x=0.5, y=0.5)]),
    ],
)
def test_web_actions_use_the_element_centre(raw, bbox, expected):
    assert parse_step(raw, dialect="web", frame=PX_800, bbox=bbox) == expected


def test_web_boxes_in_grid_and_fraction_units():
    assert parse_step({"operation": "CLICK", "bbox": [400, 200, 200, 100]}, dialect="web", frame=GRID) == [
        A("click", x=0.5, y=0.25)
    ]
    assert parse_step(
        {"operation": "CLICK", "bbox": [0.1, 0.2, 0.3, 0.4]}, dialect="web", frame=FRACTION, bbox="xyxy"
    ) == [A("click", x=0.2, y=0.3)]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ({"operation": "SCROLL", "bbox": [0, 0, 10, 10]}, "unsupported_action"),
        ({"operation": "CLICK"}, "bad_arguments"),
        ({"operation": "CLICK", "bbox": [0, 0, -10, 10]}, "bad_arguments"),
        ({"operation": "CLICK", "bbox": [0, 0, 10]}, "bad_arguments"),
        ({"operation": "CLICK", "bbox": "a,b,c,d"}, "bad_arguments"),
        ({"operation": "TYPE", "bbox": [0, 0, 10, 10]}, "bad_arguments"),  # no value
        ({"operation": "CLICK", "bbox": [100, 900, 50, 20]}, "out_of_range"),  # below the fold
        ("CLICK [1, 2, 3, 4]", "syntax"),
    ],
)
def test_web_errors(raw, reason):
    assert reason_of(raw, dialect="web", frame=PX_800) == reason


# --- unified form, coordinates, rendering ---------------------------------------------------


def test_unified_calls_with_positional_and_keyword_arguments():
    assert parse_step("click(0.5, y=0.25)\nscroll('down', 3)", dialect="unified") == [
        A("click", x=0.5, y=0.25),
        A("scroll", direction="down", amount=3),
    ]
    assert parse_step("press(keys='enter')", dialect="unified") == [A("press", keys=["enter"])]
    assert parse_step("click(x=400, y=300)", dialect="unified", frame=PX_800) == [A("click", x=0.5, y=0.5)]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("pyautogui.click(0.1, 0.2)", "unsupported_action"),
        ("select(x=0.1, y=0.2)", "unsupported_action"),
        ("click(x=0.1)", "bad_arguments"),
        ("click(x=0.1, y=0.2, z=1)", "bad_arguments"),
        ("scroll(direction='sideways', amount=1)", "bad_arguments"),
        ("scroll(direction='up', amount=1.5)", "bad_arguments"),
        ("type(text='')", "bad_arguments"),
        ("press(keys=[])", "bad_arguments"),
        ("click(x=1.2, y=0.5)", "out_of_range"),
        ("wait(seconds=-1)", "out_of_range"),
        ("", "empty"),
        ("# nothing to do", "empty"),
        ("click(x=0.1, y=0.2", "syntax"),
    ],
)
def test_unified_errors(text, reason):
    assert reason_of(text, dialect="unified") == reason


@pytest.mark.parametrize(
    "frame, x, y, expected",
    [
        (Frame("pixels", 1000, 500), 250, 125, (0.25, 0.25)),
        (Frame("pixels", 1000, 500), 1000, 500, (1.0, 1.0)),
        (GRID, 512, 300, (0.512, 0.3)),
        (GRID, 0, 1000, (0.0, 1.0)),
        (FRACTION, 0.512449, 0.51256, (0.5124, 0.5126)),
    ],
)
def test_coordinate_units(frame, x, y, expected):
    assert frame.point(x, y, "p") == expected


@pytest.mark.parametrize(
    "frame, x, y",
    [
        (Frame("pixels", 1000, 500), 1001, 10),
        (Frame("pixels", 1000, 500), 10, 501),
        (GRID, 1001, 0),
        (GRID, -1, 0),
        (FRACTION, 1.0001, 0.5),
    ],
)
def test_coordinates_outside_the_screen_are_out_of_range(frame, x, y):
    with pytest.raises(ActionError) as caught:
        frame.point(x, y, "p")
    assert caught.value.reason == "out_of_range"


@pytest.mark.parametrize("width, height", [(None, None), (0, 600), (800, -1), (800.0, 600), (True, 600)])
def test_pixels_need_a_screen_size(width, height):
    with pytest.raises(ActionError) as caught:
        Frame("pixels", width, height)
    assert caught.value.reason == "bad_screen"


def test_unknown_units_and_dialects_are_refused():
    with pytest.raises(ActionError):
        Frame("percent")
    assert reason_of("click(x=0.1, y=0.1)", dialect="excel") == "bad_arguments"


def test_render_fixed_text_unified_style():
    def render(action):
        return render_step([action], "unified")

    assert render(A("click", x=0.5124, y=0.3)) == "click(x=0.512, y=0.3)"
    assert (
        render(A("drag", from_coord=(0.1, 0.2), to_coord=[0.3, 0.4]))
        == "drag(from_coord=[0.1, 0.2], to_coord=[0.3, 0.4])"
    )
    assert render(A("press", keys=["ctrl", "c"])) == "press(keys=['ctrl', 'c'])"
    assert render(A("type", text='it\'s "here"\n')) == "type(text='it\\'s \"here\"\\n')"
    assert render(A("scroll", direction="down", amount=120)) == "scroll(direction='down', amount=120)"
    assert render(A("wait", seconds=2)) == "wait(seconds=2.0)"
    assert render(A("navigate_home")) == "navigate_home()"
    assert (
        render_step([A("open_app", app_name="Maps"), A("final_answer", answer="")], "unified")
        == "open_app(app_name='Maps')\nfinal_answer(answer='')"
    )


ALL_FUNCTIONS = [
    A("click", x=0.0, y=1.0),
    A("double_click", x=0.123, y=0.456),
    A("right_click", x=0.999, y=0.001),
    A("move_mouse", x=0.5, y=0.5),
    A("type", text="naïve café 東京\t\"quoted\" 'single'\n"),
    A("press", keys=["ctrl", "alt", "delete"]),
    A("drag", from_coord=[0.1, 0.2], to_coord=[0.9, 0.8]),
    A("scroll", direction="left", amount=0),
    A("wait", seconds=0.25),
    A("navigate_back"),
    A("navigate_home"),
    A("open_app", app_name="Settings"),
    A("swipe", from_coord=[0.5, 0.8], to_coord=[0.5, 0.2]),
    A("long_press", x=0.33, y=0.66),
    A("final_answer", answer="The flight leaves at 9:05."),
]


def test_every_unified_function_is_covered_and_round_trips():
    assert {a.name for a in ALL_FUNCTIONS} == set(SIGNATURES)
    for action in ALL_FUNCTIONS:
        assert parse_unified(render(action)) == [action]
    assert parse_unified(render_step(ALL_FUNCTIONS)) == ALL_FUNCTIONS


# Any text but lone surrogates (category Cs), which are not text: `type` refuses them (below), so the
# strategy leaves them out rather than the test returning early and skipping the click and swipe checks.
TYPABLE_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=200)


@settings(deadline=None, max_examples=300)
@given(x=st.floats(0, 1, allow_nan=False), y=st.floats(0, 1, allow_nan=False), text=TYPABLE_TEXT)
def test_round_trip_property(x, y, text):
    for action in (A("click", x=x, y=y), A("swipe", from_coord=[x, y], to_coord=[y, x]), A("type", text=text)):
        assert parse_unified(render(action)) == [action]


def test_type_refuses_a_lone_surrogate():
    with pytest.raises(ActionError, match="not valid Unicode text"):
        A("type", text="ok \ud800")


def test_system_prompt_lists_every_signature():
    for signature in SIGNATURES.values():
        assert signature in SYSTEM_PROMPT
    assert "click(x: float, y: float)" in SYSTEM_PROMPT


# --- bounds and hostile input ---------------------------------------------------------------


def test_bounded_input_size_and_number_of_calls():
    assert reason_of("click(x=0.1, y=0.1)" + " " * MAX_CHARS, dialect="unified") == "too_long"
    assert reason_of(";".join(["navigate_home()"] * (MAX_CALLS + 1)), dialect="unified") == "too_many_calls"
    assert reason_of("pyautogui.press('a', presses=1000)", dialect="pyautogui", frame=PX_800) == "bad_arguments"
    assert len(parse_step(";".join(["navigate_home()"] * MAX_CALLS), dialect="unified")) == MAX_CALLS


@pytest.mark.parametrize(
    "text",
    [
        "-" * 9990 + "1",
        "[" * 5000 + "]" * 4990,
        "(" * 9999,
        "click(" + "[" * 3000 + "]" * 3000 + ")",
        "1" * 9999,
        "f()" + "()" * 4998,
        "not " * 2400 + "x",
        "\x00",
        '{"action_type": ' + "[" * 9000,
    ],
)
def test_pathological_input_is_an_action_error(text):
    for dialect in ("pyautogui", "mobile", "web", "unified"):
        with pytest.raises(ActionError):
            parse_step(text, dialect=dialect, frame=PX_800)


def test_error_is_a_value_error_with_a_documented_reason():
    with pytest.raises(ValueError) as caught:
        parse_step("pyautogui.screenshot()", dialect="pyautogui", frame=PX_800)
    assert isinstance(caught.value, ActionError)
    assert caught.value.reason in REASONS
    assert str(caught.value) == "unsupported_action: pyautogui.screenshot()"


# Names each dialect knows (with a prefix it accepts), plus some it does not.
DIALECT_NAMES = {
    "pyautogui": [("pyautogui.", n) for n in PYAUTOGUI_CALLS] + [("os.", "system"), ("pyautogui.", "screenshot")],
    "mobile": [("mobile.", n) for n in MOBILE_CALLS] + [("pyautogui.", "click"), ("", "pinch")],
    "unified": [("", n) for n in SIGNATURES] + [("pyautogui.", "click"), ("", "select")],
}
KEYWORDS = [
    "x",
    "y",
    "clicks",
    "button",
    "page",
    "presses",
    "keys",
    "message",
    "text",
    "direction",
    "amount",
    "seconds",
    "from_coord",
    "to_coord",
    "app_name",
    "status",
    "goal_status",
    "answer",
    "mouseDownUp",
]
PLAUSIBLE = (
    st.floats(-0.1, 1.1)
    | st.integers(-3, 5)
    | st.sampled_from(["left", "right", "up", "down", "middle", "enter", "ctrl", "success", ""])
    | st.lists(st.floats(-0.1, 1.1), min_size=2, max_size=2)
)
LITERALS = PLAUSIBLE | st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


@st.composite
def call_texts(draw, dialect: str) -> str:
    """Call-shaped text: names the dialect knows, known keywords, arbitrary literal arguments."""
    calls = []
    for _ in range(draw(st.integers(1, 2))):
        prefix, name = draw(st.sampled_from(DIALECT_NAMES[dialect]))
        args = [repr(v) for v in draw(st.lists(LITERALS, max_size=2))]
        args += [
            f"{k}={v!r}" for k, v in draw(st.dictionaries(st.sampled_from(KEYWORDS), LITERALS, max_size=2)).items()
        ]
        calls.append(f"{prefix}{name}({', '.join(args)})")
    return draw(st.sampled_from(["\n", "; "])).join(calls)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ACTION_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "action_type": st.sampled_from(
            ["click", "tap", "scroll", "swipe", "DUAL_POINT", "TYPE", "status", "wait", 4, 6, 99, "x"]
        )
        | JSON_VALUES,
        "operation": st.sampled_from(["CLICK", "TYPE", "SELECT", "HOVER"])
        | st.fixed_dictionaries({"op": JSON_VALUES, "value": JSON_VALUES})
        | JSON_VALUES,
        "x": PLAUSIBLE | JSON_VALUES,
        "y": PLAUSIBLE | JSON_VALUES,
        "direction": PLAUSIBLE | JSON_VALUES,
        "text": JSON_VALUES,
        "value": JSON_VALUES,
        "bbox": st.lists(st.integers(-100, 2000) | st.floats(), min_size=3, max_size=5)
        | st.text(max_size=20)
        | JSON_VALUES,
        "touch_point": JSON_VALUES,
        "lift_point": JSON_VALUES,
        "from_coord": JSON_VALUES,
        "to_coord": JSON_VALUES,
        "typed_text": JSON_VALUES,
        "goal_status": JSON_VALUES,
        "seconds": JSON_VALUES,
        "app_name": JSON_VALUES,
    },
)
FRAMES = st.sampled_from([PX_800, GRID, FRACTION])
DIALECT = st.sampled_from(["pyautogui", "mobile", "web", "unified"])


def _converts_or_raises_action_error(raw, dialect, frame, bbox="xywh") -> None:
    try:
        actions = parse_step(raw, dialect=dialect, frame=frame, bbox=bbox)
    except ActionError as error:
        assert error.reason in REASONS
        return
    # Whatever converts is valid unified output: it renders and reads back unchanged.
    assert actions and all(isinstance(a, Action) for a in actions)
    assert parse_unified(render_step(actions)) == actions


# No deadlines: speed on a busy machine is not a correctness property (pytest-timeout catches a hang).
FUZZ = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=st.text(max_size=400), dialect=DIALECT, frame=FRAMES)
def test_arbitrary_strings_raise_only_action_error(text, dialect, frame):
    _converts_or_raises_action_error(text, dialect, frame)


@FUZZ
@given(
    text=st.text(alphabet="()[]{},.=;:'\"\n\\ -+0123456789eEjxyclickpyautogumobe_#*", max_size=300),
    dialect=DIALECT,
    frame=FRAMES,
)
def test_arbitrary_code_like_strings_raise_only_action_error(text, dialect, frame):
    _converts_or_raises_action_error(text, dialect, frame)


@FUZZ
@given(data=st.data(), dialect=st.sampled_from(sorted(DIALECT_NAMES)), frame=FRAMES)
def test_arbitrary_calls_raise_only_action_error(data, dialect, frame):
    _converts_or_raises_action_error(data.draw(call_texts(dialect)), dialect, frame)


@FUZZ
@given(
    obj=ACTION_OBJECTS | JSON_VALUES,
    dialect=st.sampled_from(["mobile", "web"]),
    frame=FRAMES,
    bbox=st.sampled_from(["xywh", "xyxy"]),
)
def test_arbitrary_json_objects_raise_only_action_error(obj, dialect, frame, bbox):
    _converts_or_raises_action_error(obj, dialect, frame, bbox)
    _converts_or_raises_action_error(json.dumps(obj), dialect, frame, bbox)


# --- chat normalisation ---------------------------------------------------------------------


def test_user_text_loses_image_markers():
    assert clean_user_text("<image>\nOpen the settings app.") == "Open the settings app."
    assert clean_user_text("Compare <image> and <image>") == "Compare  and"


def test_assistant_text_loses_action_observation_thought_prefixes():
    text = "Thought: The search box is at the top.\nAction: click(x=0.5, y=0.1)"
    assert clean_assistant_text(text) == "The search box is at the top.\nclick(x=0.5, y=0.1)"
    assert clean_assistant_text("Observation:  the page loaded") == "the page loaded"
    assert clean_assistant_text("The Action: field stays") == "The Action: field stays"


def test_consecutive_same_role_messages_are_merged():
    messages = [
        ("system", "You are a GUI agent."),
        ("user", "<image>Find the cheapest flight."),
        ("user", "Use the search form."),
        ("assistant", "Thought: type the city first"),
        ("assistant", "Action: type(text='Paris')"),
        ("user", "<image>"),
        ("assistant", "Action: click(x=0.9, y=0.1)"),
    ]
    assert normalise_chat(messages) == [
        ("system", "You are a GUI agent."),
        ("user", "Find the cheapest flight.\nUse the search form."),
        ("assistant", "type the city first\ntype(text='Paris')"),
        ("user", ""),
        ("assistant", "click(x=0.9, y=0.1)"),
    ]
