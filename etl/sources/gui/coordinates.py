"""Coordinates. The caller states the source's unit once, in a `Frame`: `pixels` (divided by the
screen's width and height), `grid1000` (divided by 1000) or `fraction` (taken as is). A value is
never guessed per call. After conversion every coordinate must lie in [0, 1], else the step is an
`out_of_range` error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etl.sources.gui.actions import COORD_DECIMALS, UNITS, ActionError, _finite


@dataclass(frozen=True)
class Frame:
    """The unit a source gives coordinates in, and the screen size when that unit is pixels."""

    units: str = "fraction"
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise ActionError("bad_screen", f"units must be one of {list(UNITS)}, got {self.units!r}")
        if self.units == "pixels":
            for size in (self.width, self.height):
                if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                    raise ActionError(
                        "bad_screen", f"pixel coordinates need a positive screen size, got {self.width}x{self.height}"
                    )

    def fraction(self, value: Any, axis: str, what: str) -> float:
        """One coordinate as a fraction of the screen along `axis` ('x' or 'y')."""
        number = _finite(value, what)
        if self.units == "pixels":
            size = self.width if axis == "x" else self.height
            assert size is not None  # checked positive in __post_init__ for pixel units
            number /= size
        elif self.units == "grid1000":
            number /= 1000.0
        if not 0.0 <= number <= 1.0:
            raise ActionError("out_of_range", f"{what}={value!r} ({self.units}) is outside the screen")
        return round(number, COORD_DECIMALS)

    def point(self, x: Any, y: Any, what: str) -> tuple[float, float]:
        return (self.fraction(x, "x", f"{what}.x"), self.fraction(y, "y", f"{what}.y"))

    def pair(self, value: Any, what: str) -> tuple[float, float]:
        """An `[x, y]` pair in the frame's unit."""
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ActionError("bad_arguments", f"{what} must be a pair [x, y]")
        return self.point(value[0], value[1], what)


FRACTION = Frame("fraction")
