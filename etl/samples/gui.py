"""A small synthetic GUI-agent subset: drawn screenshots and trajectories in four action dialects.

`write_gui_subset` draws desktop (800x600), web (800x600) and mobile (360x640) screens with PIL:
windows, buttons with labels, text fields, list rows. Each trajectory's actions target the
centres of the drawn elements, so the converted calls can be checked against the pictures. One
JSONL file per dialect (the `gui_trajectory` format):

| file                     | dialect   | coordinates | unsupported | shapes                                  |
|--------------------------|-----------|-------------|-------------|-----------------------------------------|
| `desktop_pyautogui.jsonl`| pyautogui | pixels      | quarantine  | click, write, hotkey, doubleClick, scroll|
| `mobile_android.jsonl`   | mobile    | grid1000    | keep        | AndroidControl JSON, one AITW DUAL_POINT |
| `web_mind2web.jsonl`     | web       | pixels      | quarantine  | CLICK / TYPE / SELECT with xywh boxes    |
| `unified.jsonl`          | unified   | fraction    | quarantine  | unified calls                           |

The second desktop trajectory contains `pyautogui.screenshot()` (unsupported: the trajectory is
quarantined) and the second mobile trajectory an `unknown_gesture` step (dropped under `keep`).
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

CATEGORY = "Grounding & Counting"
DESKTOP = (800, 600)
MOBILE = (360, 640)
WORDS = ("report", "budget", "holiday", "invoice", "paris", "meeting", "groceries", "train")
APPS = ("Clock", "Notes", "Maps", "Mail", "Camera", "Files")
BUTTONS = ("Save", "Open", "Cancel", "Search", "Apply", "Next")


@dataclass(frozen=True)
class Element:
    label: str
    kind: str  # "button" | "field" | "row" | "icon" | "select"
    box: tuple[int, int, int, int]  # left, top, width, height in pixels

    @property
    def centre(self) -> tuple[int, int]:
        left, top, width, height = self.box
        return left + width // 2, top + height // 2


@dataclass(frozen=True)
class Screen:
    size: tuple[int, int]
    title: str
    elements: tuple[Element, ...]

    def find(self, label: str) -> Element:
        return next(e for e in self.elements if e.label == label)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_png(screen: Screen, typed: dict[str, str] | None = None) -> bytes:
    """The screen as PNG bytes; `typed` holds text shown inside fields (label -> text)."""
    typed = typed or {}
    width, height = screen.size
    image = Image.new("RGB", screen.size, (226, 232, 240))
    draw = ImageDraw.Draw(image)
    font = _font(13)
    draw.rectangle((0, 0, width, 28), fill=(40, 64, 110))
    draw.text((10, 7), screen.title, fill="white", font=font)
    for element in screen.elements:
        left, top, w, h = element.box
        box = (left, top, left + w, top + h)
        if element.kind == "button":
            draw.rounded_rectangle(box, radius=6, fill=(59, 130, 246), outline=(30, 64, 175))
            draw.text((left + 10, top + h // 2 - 7), element.label, fill="white", font=font)
        elif element.kind in ("field", "select"):
            draw.text((left, top - 17), element.label, fill=(30, 30, 30), font=font)
            draw.rectangle(box, fill="white", outline=(100, 116, 139))
            shown = typed.get(element.label, "")
            draw.text((left + 6, top + h // 2 - 7), shown, fill=(15, 23, 42), font=font)
            if element.kind == "select":
                draw.polygon(
                    [(left + w - 18, top + 10), (left + w - 8, top + 10), (left + w - 13, top + 17)], fill=(60, 60, 60)
                )
        elif element.kind == "row":
            draw.rectangle(box, fill=(248, 250, 252), outline=(203, 213, 225))
            draw.text((left + 12, top + h // 2 - 7), element.label, fill=(15, 23, 42), font=font)
        else:  # icon
            draw.rounded_rectangle(box, radius=10, fill=(16, 185, 129))
            draw.text((left, top + h + 3), element.label, fill=(15, 23, 42), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _desktop_screen(rng: random.Random) -> Screen:
    left, top = rng.randint(20, 120), rng.randint(40, 90)
    buttons = rng.sample(BUTTONS, 3)
    elements = [Element("Name", "field", (left + 20, top + 50, 300, 28))]
    elements += [Element(label, "button", (left + 20 + i * 110, top + 300, 90, 32)) for i, label in enumerate(buttons)]
    elements.append(Element("report.txt", "icon", (left + 420, top + 60, 48, 48)))
    return Screen(DESKTOP, "Editor", tuple(elements))


def _web_screen(rng: random.Random) -> Screen:
    top = rng.randint(80, 140)
    return Screen(
        DESKTOP,
        "travel.example - Flights",
        (
            Element("To", "field", (60, top, 320, 32)),
            Element("Class", "select", (420, top, 180, 32)),
            Element("Search", "button", (640, top, 100, 32)),
        ),
    )


def _mobile_home(rng: random.Random) -> Screen:
    apps = rng.sample(APPS, 4)
    return Screen(
        MOBILE,
        "Home",
        tuple(Element(a, "icon", (30 + (i % 3) * 110, 80 + (i // 3) * 110, 64, 64)) for i, a in enumerate(apps)),
    )


def _mobile_app(name: str, rng: random.Random) -> Screen:
    rows = rng.sample(WORDS, 5)
    elements = [Element("Search", "field", (16, 44, 328, 36))]
    elements += [Element(r, "row", (0, 100 + i * 60, 360, 56)) for i, r in enumerate(rows)]
    return Screen(MOBILE, name, tuple(elements))


def _grid(value: int, size: int) -> int:
    return round(value * 1000 / size)


def _fraction(value: int, size: int) -> float:
    return round(value / size, 3)


class _Writer:
    """Writes screenshots under `out_dir/screens/` and remembers their relative paths."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        (out_dir / "screens").mkdir(parents=True, exist_ok=True)

    def shot(self, name: str, screen: Screen, typed: dict[str, str] | None = None) -> str:
        relative = f"screens/{name}.png"
        (self.out_dir / relative).write_bytes(draw_png(screen, typed))
        return relative


def _desktop(w: _Writer, index: int, rng: random.Random) -> dict[str, Any]:
    screen = _desktop_screen(rng)
    word = rng.choice(WORDS)
    fx, fy = screen.find("Name").centre
    button = next(e for e in screen.elements if e.kind == "button")
    bx, by = button.centre
    ix, iy = screen.find("report.txt").centre
    name = f"desktop_{index:03d}"
    steps = [
        {
            "screenshot": w.shot(f"{name}_0", screen),
            "action": f"pyautogui.click({fx}, {fy})\npyautogui.write(message={word!r})",
        },
        {"screenshot": w.shot(f"{name}_1", screen, {"Name": word}), "action": f"pyautogui.click(x={bx}, y={by})"},
    ]
    variant = index % 3
    if variant == 0:
        steps.append({"screenshot": steps[1]["screenshot"], "action": "pyautogui.hotkey('ctrl', 's')"})
    elif variant == 1:
        steps.append({"screenshot": steps[1]["screenshot"], "action": f"pyautogui.doubleClick({ix}, {iy})"})
    else:
        steps.append({"screenshot": steps[1]["screenshot"], "action": "pyautogui.scroll(-5)"})
    if index == 1:
        steps.insert(1, {"screenshot": steps[0]["screenshot"], "action": "pyautogui.screenshot()"})
    instruction = f"Type '{word}' in the Name field, then press {button.label}."
    return {
        "id": name,
        "instruction": instruction,
        "screen": {"width": DESKTOP[0], "height": DESKTOP[1]},
        "steps": steps,
    }


def _mobile(w: _Writer, index: int, rng: random.Random) -> dict[str, Any]:
    home = _mobile_home(rng)
    app = next(e for e in home.elements).label
    screen = _mobile_app(app, rng)
    row = screen.elements[1 + rng.randrange(3)]
    rx, ry = row.centre
    sx, sy = screen.find("Search").centre
    word = rng.choice(WORDS)
    name = f"mobile_{index:03d}"
    app_shot = w.shot(f"{name}_1", screen)
    tap: dict[str, Any] = {"action_type": "click", "x": _grid(rx, MOBILE[0]), "y": _grid(ry, MOBILE[1])}
    if index % 3 == 2:  # AITW shape: [y, x] points, a tap when touch == lift
        point = [_grid(ry, MOBILE[1]), _grid(rx, MOBILE[0])]
        tap = {"action_type": "DUAL_POINT", "touch_point": point, "lift_point": point}
    steps = [
        {"screenshot": w.shot(f"{name}_0", home), "action": {"action_type": "open_app", "app_name": app}},
        {"screenshot": app_shot, "action": {"action_type": "scroll", "direction": "down"}},
        {"screenshot": app_shot, "action": tap},
        {
            "screenshot": app_shot,
            "action": {"action_type": "click", "x": _grid(sx, MOBILE[0]), "y": _grid(sy, MOBILE[1])},
        },
        {
            "screenshot": w.shot(f"{name}_2", screen, {"Search": word}),
            "action": {"action_type": "input_text", "text": word},
        },
        {"screenshot": app_shot, "action": {"action_type": "navigate_back"}},
        {"screenshot": w.shot(f"{name}_3", home), "action": {"action_type": "status", "goal_status": "complete"}},
    ]
    if index == 1:
        steps.insert(2, {"screenshot": app_shot, "action": {"action_type": "unknown_gesture"}})
    instruction = f"In {app}, open '{row.label}' and search for '{word}'."
    return {"id": name, "instruction": instruction, "screen": {"width": MOBILE[0], "height": MOBILE[1]}, "steps": steps}


def _web(w: _Writer, index: int, rng: random.Random) -> dict[str, Any]:
    screen = _web_screen(rng)
    city = rng.choice(("Paris", "Lisbon", "Oslo", "Kyoto", "Lima"))
    travel_class = rng.choice(("Economy", "Business"))
    name = f"web_{index:03d}"
    click: dict[str, Any] = {"operation": "CLICK", "value": "", "bbox": list(screen.find("Search").box)}
    if index % 2:  # Multimodal-Mind2Web shape: nested operation, box as a "x,y,w,h" string
        click = {
            "operation": {"op": "CLICK", "original_op": "CLICK", "value": ""},
            "bbox": ",".join(map(str, screen.find("Search").box)),
        }
    steps = [
        {
            "screenshot": w.shot(f"{name}_0", screen),
            "action": {"operation": "TYPE", "value": city, "bbox": list(screen.find("To").box)},
        },
        {
            "screenshot": w.shot(f"{name}_1", screen, {"To": city}),
            "action": {"operation": "SELECT", "value": travel_class, "bbox": list(screen.find("Class").box)},
        },
        {"screenshot": w.shot(f"{name}_2", screen, {"To": city, "Class": travel_class}), "action": click},
    ]
    instruction = f"Search {travel_class.lower()} flights to {city}."
    return {
        "id": name,
        "instruction": instruction,
        "screen": {"width": DESKTOP[0], "height": DESKTOP[1]},
        "steps": steps,
    }


def _unified(w: _Writer, index: int, rng: random.Random) -> dict[str, Any]:
    name = f"unified_{index:03d}"
    if index % 2 == 0:
        screen = _desktop_screen(rng)
        word = rng.choice(WORDS)
        fx, fy = screen.find("Name").centre
        typed = w.shot(f"{name}_1", screen, {"Name": word})
        steps = [
            {
                "screenshot": w.shot(f"{name}_0", screen),
                "action": f"click(x={_fraction(fx, 800)}, y={_fraction(fy, 600)})\ntype(text={word!r})",
            },
            {"screenshot": typed, "action": "press(keys=['enter'])"},
            {"screenshot": typed, "action": f"final_answer(answer={word!r})"},
        ]
        instruction, size = f"Enter the name '{word}' and report what you entered.", DESKTOP
    else:
        screen = _mobile_app(rng.choice(APPS), rng)
        row = screen.elements[2]
        rx, ry = row.centre
        shot = w.shot(f"{name}_0", screen)
        steps = [
            {"screenshot": shot, "action": "swipe(from_coord=[0.5, 0.8], to_coord=[0.5, 0.3])"},
            {"screenshot": shot, "action": f"long_press(x={_fraction(rx, 360)}, y={_fraction(ry, 640)})"},
            {"screenshot": shot, "action": "wait(seconds=2.0)\nnavigate_home()"},
        ]
        instruction, size = f"Long-press '{row.label}' in {screen.title}, then go home.", MOBILE
    return {"id": name, "instruction": instruction, "screen": {"width": size[0], "height": size[1]}, "steps": steps}


SUBSETS = (
    # subset, file, builder, options
    (
        "gui_desktop",
        "desktop_pyautogui.jsonl",
        _desktop,
        {"dialect": "pyautogui", "coordinates": "pixels", "unsupported": "quarantine"},
    ),
    (
        "gui_mobile",
        "mobile_android.jsonl",
        _mobile,
        {"dialect": "mobile", "coordinates": "grid1000", "unsupported": "keep"},
    ),
    (
        "gui_web",
        "web_mind2web.jsonl",
        _web,
        {"dialect": "web", "coordinates": "pixels", "unsupported": "quarantine", "bbox": "xywh"},
    ),
    (
        "gui_unified",
        "unified.jsonl",
        _unified,
        {"dialect": "unified", "coordinates": "fraction", "unsupported": "quarantine"},
    ),
)


def write_gui_subset(
    out_dir: Path, n_trajectories: int = 12, seed: int = 0, location_prefix: str = "gui"
) -> list[dict[str, Any]]:
    """Write the GUI subset under `out_dir` and return one source spec dict per dialect file.

    `n_trajectories` are spread over the four dialects (the first ones get the remainder).
    `location_prefix` is `out_dir` as seen from the pipeline's data root: spec locations are
    `<prefix>/<file>.jsonl` and the image root is `<prefix>`.
    """
    out_dir = Path(out_dir)
    writer = _Writer(out_dir)
    specs = []
    for position, (subset, file, build, options) in enumerate(SUBSETS):
        rng = random.Random(f"{seed}:{subset}")  # one stream per subset: sizes do not shift content
        count = n_trajectories // len(SUBSETS) + (1 if position < n_trajectories % len(SUBSETS) else 0)
        lines = [json.dumps(build(writer, index, rng), ensure_ascii=False) for index in range(count)]
        (out_dir / file).write_text("".join(f"{line}\n" for line in lines))
        specs.append(
            {
                "name": subset,
                "format": "gui_trajectory",
                "location": f"{location_prefix}/{file}",
                "image_root": location_prefix,
                "subset": subset,
                "category": CATEGORY,
                "options": dict(options),
            }
        )
    return specs
