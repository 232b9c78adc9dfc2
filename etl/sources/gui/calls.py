"""Call text -> calls, by inspecting the syntax tree, and the per-step state the call dialects share.

Safety. Call text is read with `ast.parse` and only literal arguments (numbers, strings, lists of
them) are accepted by inspecting the nodes: nothing is evaluated.
"""

from __future__ import annotations

import ast
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from etl.sources.gui.actions import MAX_CALLS, MAX_CHARS, Action, ActionError, _answer
from etl.sources.gui.coordinates import Frame

DEFAULT_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Call:
    prefix: str | None  # `pyautogui` in `pyautogui.click(...)`, None for a bare name
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(hash=False)


def _check_length(text: str) -> None:
    if len(text) > MAX_CHARS:
        raise ActionError("too_long", f"{len(text)} characters, limit {MAX_CHARS}")


def _literal(node: ast.AST, depth: int = 0) -> Any:
    """The value of a literal argument node: numbers, strings, None, booleans, lists of them."""
    if isinstance(node, ast.Constant) and (node.value is None or type(node.value) in (str, int, float, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = node.operand
        if (
            isinstance(operand, ast.Constant)
            and isinstance(operand.value, (int, float))
            and type(operand.value) is not bool
        ):
            return -operand.value if isinstance(node.op, ast.USub) else operand.value
    if isinstance(node, (ast.List, ast.Tuple)) and depth < 2:
        return [_literal(element, depth + 1) for element in node.elts]
    raise ActionError("bad_arguments", f"arguments must be literals, got a {type(node).__name__} expression")


def _call(node: ast.Call) -> Call:
    func = node.func
    if isinstance(func, ast.Name):
        prefix, name = None, func.id
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        prefix, name = func.value.id, func.attr
    else:
        raise ActionError("syntax", "a call must be `name(...)` or `module.name(...)`")
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise ActionError("bad_arguments", f"{name}: *arguments are not accepted")
        args.append(_literal(arg))
    kwargs = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ActionError("bad_arguments", f"{name}: **arguments are not accepted")
        kwargs[keyword.arg] = _literal(keyword.value)
    return Call(prefix, name, tuple(args), kwargs)


def parse_calls(text: str) -> list[Call]:
    """Call text (calls separated by newlines or `;`) -> its calls, with literal arguments."""
    if not isinstance(text, str):
        raise ActionError("syntax", f"expected call text, got {type(text).__name__}")
    _check_length(text)
    source = text.strip()
    if not source:
        raise ActionError("empty", "no action")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "\d" inside a string
            tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ActionError("syntax", f"not call text: {type(exc).__name__}") from None
    if not tree.body:
        raise ActionError("empty", "no action")
    if len(tree.body) > MAX_CALLS:
        raise ActionError("too_many_calls", f"{len(tree.body)} statements, limit {MAX_CALLS}")
    calls = []
    for statement in tree.body:
        if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
            raise ActionError("syntax", f"expected only function calls, got {type(statement).__name__}")
        calls.append(_call(statement.value))
    return calls


def _bind(function: Callable, call_name: str, args: tuple, kwargs: dict[str, Any]) -> inspect.BoundArguments:
    try:
        return inspect.signature(function).bind(*args, **kwargs)
    except TypeError as exc:
        raise ActionError("bad_arguments", f"{call_name}: {exc}") from None


@dataclass
class _Step:
    frame: Frame
    position: tuple[float, float] | None = None  # where the mouse is after the previous call

    def at(self, x: Any, y: Any, what: str) -> tuple[float, float]:
        """A pointer position; pyautogui also accepts the pair as the first argument."""
        if y is None and isinstance(x, (list, tuple)):
            return self.moved(self.frame.pair(x, what))
        if x is None or y is None:
            raise ActionError("bad_arguments", f"{what} needs both x and y")
        return self.moved(self.frame.point(x, y, what))

    def moved(self, point: tuple[float, float]) -> tuple[float, float]:
        self.position = point
        return point


def _xy(name: str, point: tuple[float, float]) -> Action:
    return Action.of(name, x=point[0], y=point[1])


def _final(answer: Any, what: str) -> Action:
    return Action.of("final_answer", answer=_answer(answer, what))


def _wait(seconds: Any) -> Action:
    return Action.of("wait", seconds=DEFAULT_WAIT_SECONDS if seconds is None else seconds)


# Calls both call dialects (pyautogui, mobile) accept.
def _terminate(s: _Step, status):
    return [_final(status, "terminate.status")]


def _answer_call(s: _Step, text):
    return [_final(text, "answer.text")]
