"""Width, depth and resolution scaling: the rounding rules and compound scaling.

Pure Python, no TensorFlow. The rounding functions reproduce keras.applications exactly:

- `make_divisible` is MobileNetV2's `_make_divisible` and EfficientNet's `round_filters`.
- `round_filters` applies a width multiplier with one of three rules: ``divisible``
  (EfficientNet; MobileNetV2's first conv), ``truncate_divisible`` (MobileNetV2's blocks:
  ``make_divisible(int(f * w))``), ``truncate`` (MobileNet V1: ``int(f * w)``).
- `round_repeats` is EfficientNet's ``ceil(d * repeats)``.
- `round_resolution` rounds ``r * base`` to the nearest multiple of a divisor (default 8).

Applying these to a whole spec (compound scaling, presets, sweeps) is `archspec.resolving.compound`'s.
"""

from __future__ import annotations

import math


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never below 90% of it.

    >>> make_divisible(32 * 1.1)
    32
    >>> make_divisible(11.2)
    16
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be > 0 (got divisor={divisor})")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def round_filters(filters: int, width: float, divisor: int = 8, rounding: str = "divisible",
                  min_filters: int | None = None) -> int:
    """A channel count after a width multiplier, by the given rounding rule."""
    if rounding == "divisible":
        out = make_divisible(filters * width, divisor)
    elif rounding == "truncate_divisible":
        out = make_divisible(int(filters * width), divisor)
    elif rounding == "truncate":
        out = max(1, int(filters * width))
    else:
        raise ValueError(f"unknown rounding {rounding!r}; valid: divisible, truncate_divisible, truncate")
    return max(out, min_filters) if min_filters else out


def expanded_width(cin: int, ratio) -> int:
    """The expanded width of an inverted residual: ``cin * ratio`` for an integer ratio
    (keras MobileNetV2, EfficientNet), ``make_divisible(cin * ratio, 8)`` for any other
    (keras MobileNetV3's ``_depth(infilters * expansion)``)."""
    if isinstance(ratio, int) or float(ratio).is_integer():
        return int(cin * ratio)
    return make_divisible(cin * ratio, 8)


def round_repeats(repeats: int, depth: float) -> int:
    """Repeats after a depth multiplier: always rounded up (EfficientNet)."""
    return int(math.ceil(depth * repeats))


def round_resolution(resolution: float, divisor: int = 8) -> int:
    """Nearest multiple of `divisor` (ties go up), at least `divisor`."""
    return max(divisor, int(math.floor(resolution / divisor + 0.5)) * divisor)


def compound(alpha: float, beta: float, gamma: float, phi: float) -> tuple[float, float, float]:
    """The paper's compound scaling: d = alpha**phi, w = beta**phi, r = gamma**phi."""
    return alpha ** phi, beta ** phi, gamma ** phi


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """alpha * beta**2 * gamma**2: how much one step of phi multiplies the FLOPs (~2)."""
    return alpha * beta ** 2 * gamma ** 2
