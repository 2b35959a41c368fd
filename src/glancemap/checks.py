"""Range checks for numbers from users, shared by the configs and the command-line flags,
so a bad value is refused with the same message wherever it comes from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """Allowed values: ``minimum``/``maximum`` inclusive, ``above``/``below`` exclusive; ``integer`` for counts."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    integer: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else "a number"
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.below is not None:
            parts.append(f"< {self.below:g}")
        return f"{what} {' and '.join(parts)}" if parts else what

    def allows(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.integer and v != int(v):
            return False
        return not (
            (self.minimum is not None and v < self.minimum)
            or (self.above is not None and v <= self.above)
            or (self.maximum is not None and v > self.maximum)
            or (self.below is not None and v >= self.below)
        )

    def check(self, name: str, value: Any) -> None:
        """Raises ValueError naming ``name`` and the allowed range unless every value is allowed
        (``value`` may be a number, a list or tuple of numbers, or None)."""
        if value is None:
            return
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(self.allows(v) for v in values):
            each = "each " if isinstance(value, (list, tuple)) else ""
            raise ValueError(f"{name} must be {each}{self.describe()}, got {value}")


COUNT = Range(minimum=1, integer=True)  # batch sizes, steps, images
COUNT_OR_ZERO = Range(minimum=0, integer=True)
POSITIVE = Range(above=0)
NON_NEGATIVE = Range(minimum=0)
FRACTION = Range(above=0, below=1)  # strictly inside (0, 1)
SIDE = Range(minimum=16, maximum=4096, integer=True)  # image sides in pixels
