"""The fixed-configuration frontier a controller is judged against (``harness compare``): pure
functions over ``(label, mean latency, score)`` points, no files.

- :func:`step_at`: the **step frontier** at latency ``x``: the best single configuration whose
  mean latency is at most ``x``. Ties on the score go to the lower latency, then to the earlier
  point. None when every configuration is slower than ``x``.
- :func:`upper_hull`: the **hull**: the upper convex hull of the points, accuracy against mean
  latency, kept non-decreasing (a point that a cheaper point matches or beats is not on it).
  Any point on a segment is reached by a per-sample coin between its two end configurations,
  so a trivial controller reaches the hull.
- :func:`hull_at`: the hull at ``x``, with the two configurations and the weight of the slower
  one. Left of the cheapest configuration and right of the slowest the value is clamped to the
  end point (and says so); between the best configuration and the slowest one the hull is flat
  (the best configuration, no clamping needed).
- :func:`gap_closed`: ``(policy - hull) / (oracle - hull)``, None with a reason when the oracle has
  no headroom over the hull.
- :func:`curve_area`: the area under a piecewise-linear accuracy-latency curve over ``[lo, hi]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

EPS = 1e-12


@dataclass(frozen=True)
class Point:
    label: str
    latency: float
    score: float


@dataclass(frozen=True)
class HullValue:
    """The hull at one latency: ``score = (1 - weight_hi) * lo.score + weight_hi * hi.score``."""

    latency: float
    score: float
    lo: Point
    hi: Point
    weight_hi: float  # share of samples given to ``hi`` (the slower configuration); 0 when lo == hi
    clamped: str | None  # None | "faster" (left of every config) | "slower" (right of every config)
    note: str | None

    @property
    def single(self) -> bool:
        return self.lo == self.hi or self.weight_hi in (0.0, 1.0)

    def to_dict(self) -> dict:
        return {"latency_ms": self.latency, "score": self.score, "lo": self.lo.label, "hi": self.hi.label,
                "lo_latency_ms": self.lo.latency, "hi_latency_ms": self.hi.latency, "lo_score": self.lo.score,
                "hi_score": self.hi.score, "weight_hi": self.weight_hi, "weight_lo": 1.0 - self.weight_hi,
                "clamped": self.clamped, "note": self.note}


def _le(a: float, b: float) -> bool:
    return a <= b + EPS * max(1.0, abs(b))


def step_at(points: Sequence[Point], x: float) -> Point | None:
    """Best score among points with latency <= x; ties: lower latency, then earlier point."""
    eligible = [(i, p) for i, p in enumerate(points) if _le(p.latency, x)]
    if not eligible:
        return None
    return min(eligible, key=lambda ip: (-ip[1].score, ip[1].latency, ip[0]))[1]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a.latency - o.latency) * (b.score - o.score) - (a.score - o.score) * (b.latency - o.latency)


def upper_hull(points: Sequence[Point]) -> list[Point]:
    """Vertices of the non-decreasing upper convex hull, by increasing latency. Points on a hull
    segment (collinear) stay as vertices, so the pair reported at a latency is the closest one.
    Of points with equal latency the best score stays (equal score too: the earlier point)."""
    order = sorted(range(len(points)), key=lambda i: (points[i].latency, -points[i].score, i))
    rising: list[Point] = []
    for i in order:  # keep points that beat every cheaper one (strictly higher score)
        p = points[i]
        if rising and (p.score <= rising[-1].score + EPS or _le(p.latency, rising[-1].latency)):
            continue
        rising.append(p)
    hull: list[Point] = []
    for p in rising:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) > EPS * max(1.0, abs(p.latency)):
            hull.pop()  # hull[-1] lies below the segment hull[-2] -> p: not concave
        hull.append(p)
    return hull


def hull_at(points: Sequence[Point], x: float) -> HullValue | None:
    """The hull of ``points`` at latency ``x`` (None without points)."""
    if not points:
        return None
    hull = upper_hull(points)
    first, last = hull[0], hull[-1]
    x_max = max(p.latency for p in points)
    if x < first.latency and not _le(first.latency, x):
        return HullValue(x, first.score, first, first, 0.0, "faster",
                         f"faster than every fixed configuration: the hull is clamped to its cheapest end ({first.label})")
    if _le(last.latency, x):
        if x > x_max and not _le(x, x_max):
            note = f"slower than every fixed configuration: the hull is clamped to its end ({last.label})"
            return HullValue(x, last.score, last, last, 0.0, "slower", note)
        note = None if abs(x - last.latency) <= EPS * max(1.0, abs(x)) else \
            f"beyond the best configuration's latency the hull is flat: {last.label}"
        return HullValue(x, last.score, last, last, 0.0, None, note)
    for a, b in zip(hull, hull[1:]):
        if _le(a.latency, x) and x < b.latency:
            if abs(x - a.latency) <= EPS * max(1.0, abs(x)):
                return HullValue(x, a.score, a, a, 0.0, None, None)
            w = (x - a.latency) / (b.latency - a.latency)
            return HullValue(x, (1.0 - w) * a.score + w * b.score, a, b, w, None, None)
    raise AssertionError("unreachable: x lies inside the hull's range")  # pragma: no cover


def gap_closed(policy: float, hull: float, oracle: float) -> tuple[float | None, str | None]:
    """``(policy - hull) / (oracle - hull)`` and None, or None and why it is undefined."""
    denom = oracle - hull
    if abs(denom) <= 1e-9:
        return None, "the oracle scores the same as the hull at the policy's latency: there is no headroom to close"
    if denom < 0:
        return None, (f"the oracle ({oracle:.3f}) scores below the hull ({hull:.3f}) at the policy's latency "
                      "(a graded metric whose correctness threshold the hull's mix beats): the share is undefined")
    return (policy - hull) / denom, None


def curve_area(xs: Sequence[float], ys: Sequence[float], lo: float, hi: float) -> float:
    """Area under the piecewise-linear curve through ``(xs, ys)`` (xs increasing) between ``lo`` and
    ``hi``, which must lie inside ``[xs[0], xs[-1]]``."""
    import numpy as np

    xs_a, ys_a = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    inner = xs_a[(xs_a > lo) & (xs_a < hi)]
    grid = np.concatenate([[lo], inner, [hi]])
    vals = np.interp(grid, xs_a, ys_a)
    return float(np.trapezoid(vals, grid)) if hasattr(np, "trapezoid") else float(np.trapz(vals, grid))


def upper_curve(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of the curve through points sorted by latency; at equal latency the best score."""
    best: dict[float, float] = {}
    for x, y in points:
        best[x] = max(y, best.get(x, y))
    xs = sorted(best)
    return xs, [best[x] for x in xs]


def hull_curve(points: Sequence[Point]) -> tuple[list[float], list[float]]:
    """The hull as a curve from the cheapest configuration to the slowest (flat after its last vertex)."""
    hull = upper_hull(points)
    xs, ys = [p.latency for p in hull], [p.score for p in hull]
    x_max = max(p.latency for p in points)
    if x_max > xs[-1]:
        xs.append(x_max)
        ys.append(ys[-1])
    return xs, ys
