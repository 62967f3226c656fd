"""Pen-stroke templates of the ten digits, for synthetic handwriting.

Each digit is a few strokes (polylines) in a unit box (x to the right, y
down), with two or three writing variants (a 4 with an open or closed top, a
7 with or without a crossbar, a 1 with or without flag and base, a 9 with a
straight or a hooked tail). Every call perturbs the template: arc centres,
radii and end angles, and line end points are jittered, so no two strokes
are the same. `synthetic_digits` draws the strokes with a thick round pen and
distorts them further.
"""

import numpy as np

STROKE_JITTER = 0.04


def _arc(rng, cx, cy, rx, ry, start, stop, jitter, points=40):
    """Points of a jittered elliptic arc from angle `start` to `stop` (degrees,
    clockwise on screen because y points down)."""
    cx += rng.normal(0.0, jitter)
    cy += rng.normal(0.0, jitter)
    rx *= rng.uniform(0.85, 1.15)
    ry *= rng.uniform(0.85, 1.15)
    start += rng.normal(0.0, 12.0)
    stop += rng.normal(0.0, 12.0)
    t = np.deg2rad(np.linspace(start, stop, points))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _line(rng, points, jitter):
    """The polyline through `points`, each jittered."""
    return [(x + rng.normal(0.0, jitter), y + rng.normal(0.0, jitter)) for x, y in points]


def digit_strokes(digit, rng, jitter=STROKE_JITTER):
    """A randomly perturbed pen-stroke drawing of `digit`.

    Args:
        digit: int in 0..9.
        rng: a `numpy.random.Generator`.
        jitter: standard deviation of the control-point jitter, as a fraction
            of the box side.

    Returns:
        A list of strokes; each a list of `(x, y)` points in the unit box
        (they may stray slightly outside it).

    Example:
    >>> import numpy as np
    >>> strokes = digit_strokes(8, np.random.default_rng(0))
    >>> len(strokes), all(len(s) >= 2 for s in strokes)
    (2, True)
    """
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"`digit` must be an int in 0..9; received {digit!r}.")
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or jitter < 0:
        raise ValueError(f"`jitter` must be a number >= 0; received {jitter!r}.")
    j = float(jitter)
    variant = int(rng.integers(3))
    if digit == 0:
        return [_arc(rng, 0.5, 0.5, 0.33, 0.45, -90, 275 + 15 * variant, j)]
    if digit == 1:
        strokes = [_line(rng, [(0.55, 0.05), (0.5, 0.95)], j)]
        if variant >= 1:
            strokes.append(_line(rng, [(0.3, 0.3), (0.55, 0.05)], j))
        if variant == 2:
            strokes.append(_line(rng, [(0.3, 0.95), (0.75, 0.95)], j))
        return strokes
    if digit == 2:
        top = _arc(rng, 0.5, 0.3, 0.32, 0.25, 190, 390, j)
        base = [(0.15, 0.95), (0.85, 0.95)] if variant else [(0.2, 0.9), (0.35, 0.85), (0.85, 0.95)]
        return [top + _line(rng, base, j)]
    if digit == 3:
        return [_arc(rng, 0.5, 0.27, 0.3, 0.22, 200, 450, j) + _arc(rng, 0.5, 0.7, 0.33, 0.25, 270, 510, j)]
    if digit == 4:
        if variant == 0:
            return [_line(rng, [(0.65, 0.95), (0.65, 0.05), (0.12, 0.65), (0.88, 0.65)], j)]
        return [_line(rng, [(0.3, 0.05), (0.15, 0.6), (0.85, 0.6)], j), _line(rng, [(0.65, 0.2), (0.65, 0.95)], j)]
    if digit == 5:
        top = _line(rng, [(0.8, 0.05), (0.3, 0.05), (0.25, 0.45)], j)
        return [top + _arc(rng, 0.5, 0.68, 0.3, 0.26, 215, 500, j)]
    if digit == 6:
        stem = _line(rng, [(0.7, 0.05), (0.45, 0.2), (0.27, 0.45), (0.22, 0.72)], j)
        return [stem + _arc(rng, 0.5, 0.7, 0.28, 0.25, 180, 540, j)]
    if digit == 7:
        strokes = [_line(rng, [(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)], j)]
        if variant == 2:
            strokes.append(_line(rng, [(0.35, 0.5), (0.75, 0.5)], j))
        return strokes
    if digit == 8:
        return [_arc(rng, 0.5, 0.27, 0.25, 0.22, 90, 450, j), _arc(rng, 0.5, 0.72, 0.32, 0.25, -90, 270, j)]
    loop = _arc(rng, 0.5, 0.3, 0.3, 0.25, 0, 360, j)
    tail = [(0.8, 0.3), (0.72, 0.95)] if variant == 2 else [(0.8, 0.3), (0.76, 0.7), (0.55, 0.95), (0.3, 0.88)]
    return [loop, _line(rng, tail, j)]
