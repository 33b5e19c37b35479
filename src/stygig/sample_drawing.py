"""Packshot-style drawings of garments for the sample catalogue, with Pillow and NumPy only.

Each kind of garment is a few polygons in a 100 x 100 design space (centre at 50, 50; y points
down), placed in the frame by the :class:`Garment`'s scale, offset and tilt. Pictures are drawn at
twice the output size and reduced, which antialiases every edge without another dependency; a
soft edge falloff, a light gradient, fold strokes and a faint drop shadow give the flat shapes
some volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["BACKGROUND", "KINDS", "PATTERNS", "SIZE", "Garment", "draw_garment"]

RGB = tuple[int, int, int]
Point = tuple[float, float]
FloatArray = npt.NDArray[np.float32]

SIZE = 224
"""Side of a finished picture, in pixels."""
BACKGROUND: RGB = (247, 247, 245)
"""The near-white studio background of catalogue pictures."""
PATTERNS = ("solid", "stripes", "checks", "dots")

_SS = 2  # supersampling factor
_S = SIZE * _SS
_UNIT = _S * 0.0092  # canvas pixels per design unit at scale 1: ~87 units span the frame
_WHITE: RGB = (250, 250, 248)
_METAL: RGB = (196, 198, 204)
_BRASS: RGB = (205, 170, 92)


@dataclass(frozen=True)
class Garment:
    """What to draw: a kind of garment, its colours and where it sits in the frame.

    ``variant`` picks a sub-style (t-shirt or long sleeves, blazer or bomber, cap or fedora...);
    ``dx``/``dy`` are in output pixels and ``tilt`` in degrees, clockwise.
    """

    kind: str
    rgb: RGB
    pattern: str = "solid"
    accent: RGB = (244, 242, 236)
    variant: int = 0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    tilt: float = 0.0
    background: RGB = BACKGROUND


def draw_garment(garment: Garment) -> Image.Image:
    """Draw one garment on its background; a ``SIZE`` x ``SIZE`` RGB picture."""
    if garment.kind not in _DRAWERS:
        raise ValueError(f"unknown garment kind {garment.kind!r}; expected one of {KINDS}")
    if garment.pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {garment.pattern!r}; expected one of {PATTERNS}")
    canvas = _Canvas(garment)
    _DRAWERS[garment.kind](canvas)
    return canvas.render()


# -- colour and geometry ----------------------------------------------------------------------


def _shade(c: RGB, f: float) -> RGB:
    return (min(255, round(c[0] * f)), min(255, round(c[1] * f)), min(255, round(c[2] * f)))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _edge(c: RGB) -> RGB:
    """Outline colour: darker than the fill, a little lighter for near-black fills."""
    return _mix(c, (90, 90, 96), 0.35) if sum(c) < 120 else _shade(c, 0.62)


def _bez(p0: Point, p1: Point, p2: Point, n: int = 10) -> list[Point]:
    """Quadratic Bezier from p0 to p2 pulled towards p1."""
    out = []
    for i in range(n + 1):
        t = i / n
        u = 1 - t
        out.append(
            (
                u * u * p0[0] + 2 * u * t * p1[0] + t * t * p2[0],
                u * u * p0[1] + 2 * u * t * p1[1] + t * t * p2[1],
            )
        )
    return out


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list[Point]:
    n = max(6, int(abs(a1 - a0) / 8))
    angles = (math.radians(a0 + (a1 - a0) * i / n) for i in range(n + 1))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _mirror(pts: Sequence[Point]) -> list[Point]:
    return [(100 - x, y) for x, y in reversed(pts)]


def _lerp(p: Point, q: Point, t: float) -> Point:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


@cache
def _light() -> FloatArray:
    """Studio light from the top left: a gentle diagonal gradient over the frame."""
    ramp = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
    return (1.08 - 0.14 * (ramp[None, :] + ramp[:, None]) / 2).astype(np.float32)


def _pattern(g: Garment) -> Image.Image:
    """The garment's fabric over the whole canvas: base colour with stripes, checks or dots."""
    base = np.array(g.rgb, np.uint8)
    acc = np.array(g.accent, np.uint8)
    period = max(6, round(6.5 * _UNIT * g.scale))
    idx = np.arange(_S)
    if g.pattern == "dots":
        img = Image.new("RGB", (_S, _S), g.rgb)
        draw = ImageDraw.Draw(img)
        r = period * 0.2
        for row, y in enumerate(range(0, _S + period, period)):
            for x in range((row % 2) * period // 2, _S + period, period):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=g.accent)
        return img
    if g.pattern == "stripes":
        band = (idx % period) < period * 0.38
        arr = np.where(band[:, None, None], acc, base) * np.ones((1, _S, 1), np.uint8)
        return Image.fromarray(arr.astype(np.uint8))
    on_x = (idx % period) < period // 2
    on_y = on_x
    both = on_y[:, None] & on_x[None, :]
    one = on_y[:, None] ^ on_x[None, :]
    half = np.array(_mix(g.rgb, g.accent, 0.45), np.uint8)
    arr = np.where(both[..., None], acc, np.where(one[..., None], half, base))
    return Image.fromarray(arr.astype(np.uint8))


# -- canvas -----------------------------------------------------------------------------------


class _Canvas:
    """A supersampled drawing surface working in design units; ``render`` finishes the picture."""

    def __init__(self, g: Garment) -> None:
        self.g = g
        self.layer = Image.new("RGB", (_S, _S), g.rgb)
        self.alpha = Image.new("L", (_S, _S), 0)
        self.folds = Image.new("L", (_S, _S), 128)  # below 128 darkens, above lightens
        self._d = ImageDraw.Draw(self.layer)
        self._a = ImageDraw.Draw(self.alpha)
        self._f = ImageDraw.Draw(self.folds)
        k = _UNIT * g.scale
        angle = math.radians(g.tilt)
        self._cos, self._sin = k * math.cos(angle), k * math.sin(angle)
        self._ox, self._oy = _S / 2 + g.dx * _SS, _S / 2 + g.dy * _SS
        self._fabric = None if g.pattern == "solid" else _pattern(g)

    def xy(self, pts: Sequence[Point]) -> list[Point]:
        c, s = self._cos, self._sin
        return [
            (self._ox + c * (x - 50) - s * (y - 50), self._oy + s * (x - 50) + c * (y - 50))
            for x, y in pts
        ]

    def px(self, width: float) -> int:
        return max(1, round(width * _UNIT * self.g.scale))

    def fabric(self, pts: Sequence[Point], *, edge: bool = True) -> None:
        """A piece of the garment's own fabric, patterned when the garment is."""
        xy = self.xy(pts)
        if self._fabric is None:
            self._d.polygon(xy, fill=self.g.rgb)
        else:
            mask = Image.new("L", (_S, _S), 0)
            ImageDraw.Draw(mask).polygon(xy, fill=255)
            self.layer.paste(self._fabric, (0, 0), mask)
        self._a.polygon(xy, fill=255)
        if edge:
            self.line([*pts, pts[0]], _edge(self.g.rgb), 0.55)

    def shape(self, pts: Sequence[Point], fill: RGB, edge: RGB | None = None) -> None:
        """A plain-coloured polygon with an outline darker than its fill."""
        xy = self.xy(pts)
        self._d.polygon(xy, fill=fill)
        self._a.polygon(xy, fill=255)
        self.line([*pts, pts[0]], edge or _edge(fill), 0.5)

    def panel(self, pts: Sequence[Point], fill: RGB, within: Sequence[Point]) -> None:
        """A polygon clipped to another shape, as an overlaid leather panel on a shoe."""
        clip = Image.new("L", (_S, _S), 0)
        ImageDraw.Draw(clip).polygon(self.xy(within), fill=255)
        body, rim = Image.new("L", (_S, _S), 0), Image.new("L", (_S, _S), 0)
        xy = self.xy(pts)
        ImageDraw.Draw(body).polygon(xy, fill=255)
        ImageDraw.Draw(rim).line([*xy, xy[0]], fill=255, width=self.px(0.5), joint="curve")
        self.layer.paste(fill, (0, 0), ImageChops.multiply(body, clip))
        self.layer.paste(_edge(fill), (0, 0), ImageChops.multiply(rim, clip))

    def line(self, pts: Sequence[Point], fill: RGB, width: float) -> None:
        xy = self.xy(pts)
        w = self.px(width)
        self._d.line(xy, fill=fill, width=w, joint="curve")
        self._a.line(xy, fill=255, width=w, joint="curve")

    def dashed(self, pts: Sequence[Point], fill: RGB, width: float = 0.35) -> None:
        """A stitch line: dashes of 1.6 units every 2.7 units along a polyline."""
        for p, q in itertools.pairwise(pts):
            length = math.dist(p, q)
            start = 0.0
            while start < length:
                end = min(length, start + 1.6)
                self.line([_lerp(p, q, start / length), _lerp(p, q, end / length)], fill, width)
                start += 2.7

    def dot(self, x: float, y: float, r: float, fill: RGB, edge: RGB | None = None) -> None:
        self.shape(_arc(x, y, r, r, 0, 360), fill, edge)

    def fold(self, pts: Sequence[Point], width: float, depth: int) -> None:
        """A soft crease (depth > 0) or highlight (depth < 0), blurred at render time."""
        self._f.line(self.xy(pts), fill=128 - depth, width=self.px(width), joint="curve")

    def render(self) -> Image.Image:
        # Reduce first, then light: coverage and premultiplied colour average correctly, and the
        # smooth fields (edge falloff, folds, shadow) need no more than output resolution.
        rgba = Image.merge("RGB", (self.alpha, self.alpha, self.alpha))
        premul = _array(ImageChops.multiply(self.layer, rgba).reduce(_SS))
        small = self.alpha.reduce(_SS)
        alpha = _array(small) / 255
        soft = _array(small.filter(ImageFilter.GaussianBlur(5))) / 255
        folds = _array(self.folds.reduce(_SS).filter(ImageFilter.GaussianBlur(2.5))) - 128
        shade = (0.8 + 0.2 * soft) * _light() * (1 + 0.0043 * folds)

        drop = Image.new("L", (SIZE, SIZE), 0)
        drop.paste(small, (0, 5))
        shadow = _array(drop.filter(ImageFilter.GaussianBlur(7))) / 255
        back = np.array(self.g.background, np.float32) * (1 - 0.13 * shadow)[..., None]

        out = back * (1 - alpha)[..., None] + premul * shade[..., None]
        return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _array(img: Image.Image) -> FloatArray:
    return np.asarray(img, np.float32)


# -- garments ---------------------------------------------------------------------------------


def _top(c: _Canvas) -> None:
    rgb, v = c.g.rgb, c.g.variant % 3
    if v == 2:  # long sleeves
        sleeve = [(33, 18), (15, 74), (23, 77), (32, 38)]
    else:
        sleeve = [(33, 18), (16, 34), (24, 43), (32, 36)]
    for s in (sleeve, _mirror(sleeve)):
        c.fabric(s)
    neck = [(42, 14), (50, 28), (58, 14)] if v == 1 else _bez((42, 14), (50, 23), (58, 14))
    c.fabric([(31, 19), *neck, (69, 19), (70, 37), (70, 86), (50, 87), (30, 86), (30, 37)])
    c.shape([*_bez((42, 14), (50, 9), (58, 14)), *reversed(neck)], _shade(rgb, 0.7))
    c.line(neck, _shade(rgb, 0.88), 1.4)
    stitch = _shade(rgb, 0.78)
    c.dashed([(31, 83.5), (69, 83.5)], stitch)
    if v == 2:
        c.line([(16.5, 71), (24.5, 74)], _shade(rgb, 0.85), 0.8)
        c.line([(83.5, 71), (75.5, 74)], _shade(rgb, 0.85), 0.8)
    else:
        c.dashed([(18, 36), (25.5, 41.5)], stitch)
        c.dashed([(82, 36), (74.5, 41.5)], stitch)
    c.fold([(40, 45), (43, 80)], 3, 18)
    c.fold([(60, 24), (62, 60)], 4, -22)


def _shirt(c: _Canvas) -> None:
    rgb, short = c.g.rgb, c.g.variant % 2 == 1
    if short:
        sleeve = [(32, 18), (17, 37), (25, 45), (32, 38)]
    else:
        sleeve = [(32, 18), (14, 74), (23, 78), (32, 40)]
    cuff = [
        _lerp(sleeve[0], sleeve[1], 0.86),
        sleeve[1],
        sleeve[2],
        _lerp(sleeve[3], sleeve[2], 0.86),
    ]
    for s in (sleeve, _mirror(sleeve)):
        c.fabric(s)
    if not short:
        c.fabric(cuff)
        c.fabric(_mirror(cuff))
    hem = [*_bez((70, 82), (69, 92), (50, 90)), *_bez((50, 90), (31, 92), (30, 82))[1:]]
    c.fabric([(31, 18), (42, 12), (58, 12), (69, 18), (70, 38), *hem, (30, 38)])
    c.shape([(42, 12), (50, 8.5), (58, 12), (50, 15)], _shade(rgb, 0.72))
    c.line([(48.6, 19), (48.6, 89.5)], _edge(rgb), 0.35)
    c.line([(51.4, 19), (51.4, 89.5)], _edge(rgb), 0.35)
    button = _mix(rgb, _WHITE, 0.55) if sum(rgb) < 600 else (214, 210, 200)
    for y in (25, 37, 49, 61, 73, 85):
        c.dot(50, y, 1.1, button)
    leaf = [(42.5, 11), (50, 19), (43.5, 26), (37.5, 15.5)]
    c.fabric(leaf)
    c.fabric(_mirror(leaf))
    c.line([(55, 31), (63, 31), (63, 40), (59, 42), (55, 40), (55, 31)], _edge(rgb), 0.4)
    c.fold([(39, 40), (41, 84)], 3, 16)
    c.fold([(60, 22), (62, 70)], 4, -20)
    if not short:
        c.fold([(27, 30), (19, 66)], 2.5, -20)


def _jacket(c: _Canvas) -> None:
    rgb = c.g.rgb
    if c.g.variant % 2 == 1:
        _bomber(c)
        return
    sleeve = [(32, 16), (13, 79), (22, 83), (33, 40)]
    for s in (sleeve, _mirror(sleeve)):
        c.fabric(s)
    for x in (17.0, 83.0):
        c.dot(x, 76, 0.9, _shade(rgb, 0.6))
    body = [(31, 17), (43, 11), (57, 11), (69, 17), (70, 40), (69, 85), (31, 85), (30, 40)]
    c.fabric(body)
    c.shape([(43, 11), (57, 11), (50, 48)], (238, 238, 234))
    c.shape([(46.5, 11), (53.5, 11), (51.5, 16), (48.5, 16)], (220, 220, 216))
    lapel = [(43, 10.5), (35.5, 24), (39, 26.5), (37, 29), (49.5, 49.5)]
    c.fabric(lapel)
    c.fabric(_mirror(lapel))
    c.line([(50, 49), (50, 78), *_bez((50, 78), (50, 84), (44, 85))], _edge(rgb), 0.55)
    for y in (56.0, 67.0):
        c.dot(50.8, y, 1.3, _shade(rgb, 0.55))
    for x0 in (33.0, 55.0):
        c.fabric([(x0, 63), (x0 + 12, 63), (x0 + 12, 66.5), (x0, 66.5)])
    c.line([(56, 31), (64, 30)], _edge(rgb), 0.7)
    c.fold([(26, 30), (18, 72)], 3, -22)
    c.fold([(39, 50), (41, 82)], 3, 15)
    c.fold([(61, 40), (62, 80)], 4, -15)


def _bomber(c: _Canvas) -> None:
    rgb = c.g.rgb
    rib = _shade(rgb, 0.8)
    sleeve = [(31, 17), (12, 74), (22, 78), (33, 40)]
    for s in (sleeve, _mirror(sleeve)):
        c.fabric(s)
    c.shape([(12.5, 73), (11, 79), (21, 83), (22.5, 77)], rib)
    c.shape(_mirror([(12.5, 73), (11, 79), (21, 83), (22.5, 77)]), rib)
    c.fabric([(30, 17), (42, 12), (58, 12), (70, 17), (72, 45), (70, 80), (30, 80), (28, 45)])
    c.shape([(31, 79), (69, 79), (68, 87), (32, 87)], rib)
    c.shape([*_bez((41, 12), (50, 20), (59, 12)), *_bez((62, 13), (50, 24), (38, 13))], rib)
    for x in range(33, 68, 2):
        c.line([(x, 80), (x, 86)], _shade(rib, 0.85), 0.2)
    c.line([(50, 20), (50, 87)], _METAL, 0.8)
    c.dashed([(50, 21), (50, 86)], _shade(_METAL, 0.6), 0.3)
    c.dot(50, 23, 1.1, _METAL)
    c.line([(36, 50), (40, 64)], _edge(rgb), 0.8)
    c.line([(64, 50), (60, 64)], _edge(rgb), 0.8)
    c.fold([(40, 30), (42, 76)], 4, 16)
    c.fold([(62, 25), (60, 70)], 4, -20)
    c.fold([(24, 30), (17, 66)], 3, -20)


def _legs(c: _Canvas, hem_w: float, seat: float) -> None:
    """Both trouser legs from the waistband down, hems ``hem_w`` wide."""
    left: list[Point] = [(33, 15), (seat, 40), (48 - hem_w, 92), (48, 92), (50, 38)]
    c.fabric([*left, *_mirror(left)[1:]])


def _trousers(c: _Canvas) -> None:
    rgb = c.g.rgb
    _legs(c, 15.5, 31.5)
    c.fabric([(33, 9), (67, 9), (67, 15), (33, 15)])
    for x in (36.0, 44.0, 56.0, 64.0):
        c.shape([(x - 0.8, 8.5), (x + 0.8, 8.5), (x + 0.8, 15.5), (x - 0.8, 15.5)], rgb)
    c.dot(50, 12, 1.0, _shade(rgb, 0.6))
    c.line([(35, 15), (40, 27)], _edge(rgb), 0.4)
    c.line([(65, 15), (60, 27)], _edge(rgb), 0.4)
    c.line([(50, 15), *_bez((53, 15), (53, 33), (50, 36))], _edge(rgb), 0.35)
    for x0, x1 in ((41.0, 40.5), (59.0, 59.5)):
        c.fold([(x0, 17), (x1, 91)], 1.2, -30)
        c.line([(x0, 30), (x1, 90)], _shade(rgb, 0.92), 0.25)
    c.fold([(46, 40), (47, 70)], 3, 18)


def _jeans(c: _Canvas) -> None:
    rgb = c.g.rgb
    thread = _mix(rgb, (214, 150, 60), 0.75)
    _legs(c, 13, 32)
    c.fabric([(33, 9), (67, 9), (67, 15), (33, 15)])
    for x in (36.0, 44.0, 56.0, 64.0):
        c.shape([(x - 0.8, 8.5), (x + 0.8, 8.5), (x + 0.8, 16), (x - 0.8, 16)], rgb)
    c.dot(50, 12, 1.1, _METAL)
    c.dashed([(33.5, 14.3), (66.5, 14.3)], thread)
    c.dashed([(33.5, 9.7), (66.5, 9.7)], thread)
    pocket = _bez((34, 15), (42, 16), (42, 25))
    c.line(pocket, _edge(rgb), 0.4)
    c.line(_mirror(pocket), _edge(rgb), 0.4)
    c.dashed([(p[0] + 0.9, p[1]) for p in pocket], thread)
    c.dashed([(p[0] - 0.9, p[1]) for p in _mirror(pocket)], thread)
    c.dashed([(52.5, 15), (52.5, 31), *_bez((52.5, 31), (52.5, 35), (49.5, 36))], thread)
    c.dashed([(33.5, 18), (32.6, 40), (34.8, 91)], thread)
    c.dashed([(66.5, 18), (67.4, 40), (65.2, 91)], thread)
    c.dashed([(35, 89.5), (47.6, 89.5)], thread)
    c.dashed([(52.4, 89.5), (65, 89.5)], thread)
    for x, y in ((42.0, 25.0), (58.0, 25.0), (34.3, 15.5), (65.7, 15.5)):
        c.dot(x, y, 0.7, (184, 120, 70))
    for x in (41.0, 59.0):
        c.fold([(x, 22), (x + (0.5 if x < 50 else -0.5), 56)], 5, -22)
    for y in (38.0, 41.0, 44.0):
        c.fold([(44, y), (48, y - 1.5)], 0.9, -30)
        c.fold([(56, y), (52, y - 1.5)], 0.9, -30)
    c.fold([(40, 74), (46, 76)], 1.2, 22)
    c.fold([(60, 74), (54, 76)], 1.2, 22)


def _skirt(c: _Canvas) -> None:
    rgb, v = c.g.rgb, c.g.variant % 3
    body: list[Point]
    if v == 2:  # pencil
        body = [(37.5, 23), (35, 50), (36, 80), (64, 80), (65, 50), (62.5, 23)]
    else:
        body = [(38, 23), *_bez((23, 80), (50, 85), (77, 80)), (62, 23)]
    c.fabric(body)
    c.fabric([(37.5, 17), (62.5, 17), (62.5, 23), (37.5, 23)])
    c.dot(59, 20, 0.9, _shade(rgb, 0.6))
    if v == 1:  # pleats fan out from the waistband
        for i in range(1, 8):
            t = i / 8
            top, hem = 38 + 24 * t, 23 + 54 * t
            c.line([(top, 23.5), (hem, 81 + 3 * math.sin(math.pi * t))], _edge(rgb), 0.3)
            c.fold([(top + 1, 24), (hem + 2, 80)], 1.5, 20)
    elif v == 2:
        c.line([(50, 72), (50, 80)], _edge(rgb), 0.4)
        c.fold([(42, 30), (41, 76)], 3, -18)
    else:
        c.fold([(35, 55), (30, 78)], 3, 18)
        c.fold([(60, 50), (66, 78)], 3, 16)
        c.fold([(45, 28), (44, 76)], 4, -18)


def _dress(c: _Canvas) -> None:
    rgb, v = c.g.rgb, c.g.variant % 2
    skirt = [(40.5, 42), *_bez((22, 90), (50, 96), (78, 90)), (59.5, 42)]
    if v == 0:  # slip dress on thin straps
        for x0, x1 in ((41.0, 42.5), (59.0, 57.5)):
            c.line([(x0, 6), (x1, 23)], _shade(rgb, 0.85), 0.9)
        neck = _bez((40, 22), (50, 32), (60, 22))
        bodice = [*neck, (61, 24), (59.5, 42), (40.5, 42), (39, 24)]
    else:  # short-sleeved tea dress
        sleeve = [(37, 10), (29, 19), (34, 24), (38.5, 20)]
        c.fabric(sleeve)
        c.fabric(_mirror(sleeve))
        neck = _bez((43, 8), (50, 20), (57, 8))
        bodice = [*neck, (63, 10), (61.5, 24), (59.5, 42), (40.5, 42), (38.5, 24), (37, 10)]
    c.fabric(skirt)
    c.fabric(bodice)
    if v == 1:
        c.shape([*_bez((43, 8), (50, 5), (57, 8)), *reversed(neck)], _shade(rgb, 0.7))
    c.shape([(40.3, 40), (59.7, 40), (59.7, 43.5), (40.3, 43.5)], _shade(rgb, 0.85))
    c.fold([(44, 48), (36, 88)], 3, 18)
    c.fold([(56, 48), (64, 88)], 3, 18)
    c.fold([(50, 50), (50, 90)], 5, -18)
    c.fold([(45, 26), (46, 38)], 3, -18)


def _shoe_upper(heel: float, tongue: float, toe: float) -> list[Point]:
    """Side view of a shoe's upper, toe to the right, standing on y = 64."""
    return [
        *_bez((15, 64), (10.5, 52), (16.5, heel)),
        *_bez((16.5, heel), (28, heel + 6), (37, heel + 4.5))[1:],
        (41.5, tongue + 1.2),
        (44, tongue - 0.4),
        *_bez((47, tongue - 0.6), (66, tongue + 2.5), (80, toe)),
        *_bez((80, toe), (92, toe + 3), (90, 64))[1:],
    ]


def _casual_shoes(c: _Canvas) -> None:
    rgb = c.g.rgb
    sole = (62, 44, 32) if sum(rgb) > 180 else (30, 28, 28)
    loafer = c.g.variant % 2 == 1
    upper = _shoe_upper(42, 40 if loafer else 34.5, 50)
    c.shape([(14, 63), (89, 63), *_bez((91, 64), (90, 67), (86, 67)), (14, 67)], sole)
    c.shape([(14, 65), (30, 65), (29.5, 71), (14.5, 71)], _shade(sole, 0.8))
    c.fabric(upper)
    c.line(_bez((17, 43.4), (28, 46.5), (38, 47)), _shade(rgb, 0.4), 1.0)
    if loafer:  # moc-toe seam and a horsebit
        c.line(_bez((46, 44), (68, 40), (85, 54)), _edge(rgb), 0.5)
        c.dashed(_bez((46, 45.5), (68, 41.5), (84, 55.5)), _mix(rgb, _WHITE, 0.3))
        c.line([(44.5, 45.5), (53.5, 43.5)], _BRASS, 0.9)
        for x, y in ((44.5, 45.5), (53.5, 43.5)):
            c.dot(x, y, 1.3, _BRASS, _shade(_BRASS, 0.6))
            c.dot(x, y, 0.55, _shade(rgb, 0.8), _shade(_BRASS, 0.6))
    else:  # derby: an open lacing quarter with eyelets and laces
        quarter = [(0, 20), (47.5, 20), *_bez((47.5, 36), (52, 50), (44, 66)), (44, 75), (0, 75)]
        c.panel(quarter, _shade(rgb, 0.97), upper)
        for t in (0.12, 0.37, 0.62, 0.87):
            x, y = _lerp((43, 43.5), (49, 36.5), t)
            c.dot(x, y, 0.6, (40, 36, 34))
            c.line([(x, y), (x + 3, y + 1.2)], _shade(rgb, 0.55), 0.6)
    counter = [(0, 40), (24, 40), *_bez((24, 45), (23, 57), (31, 66)), (0, 70)]
    c.panel(counter, _shade(rgb, 0.94), upper)
    c.dashed([(17, 61.8), (87, 61.8)], _mix(sole, _WHITE, 0.5), 0.3)
    c.fold(_bez((58, 40), (76, 44), (86, 52)), 2.5, -40)
    c.fold([(20, 48), (24, 58)], 3, -20)


def _sports_shoes(c: _Canvas) -> None:
    rgb, acc = c.g.rgb, c.g.accent
    upper = _shoe_upper(38, 31, 49)
    c.fabric(upper)
    c.panel(
        [(70, 70), *_bez((71, 54), (78, 48), (96, 46)), (96, 70)], _mix(rgb, _WHITE, 0.3), upper
    )
    eyestay = [(40, 30), (48, 30), (64, 40), *_bez((66, 45), (60, 48), (56, 47)), (41, 42)]
    c.panel(eyestay, _shade(rgb, 0.84), upper)
    c.panel([(31, 62), (49, 40), (54, 42), (38, 62)], acc, upper)
    c.panel([(40, 62), (53, 46), (56, 48), (45, 62)], acc, upper)
    c.panel([(0, 25), (20.5, 25), *_bez((21, 40), (18, 50), (19.5, 57)), (0, 57)], acc, upper)
    c.panel([(0, 58.5), (100, 58.5), (100, 70), (0, 70)], _mix(acc, rgb, 0.4), upper)
    c.line(_bez((17, 39.4), (28, 43), (38, 43)), _shade(rgb, 0.45), 1.2)
    for t in (0.08, 0.3, 0.52, 0.74, 0.96):
        x, y = _lerp((44.5, 34.5), (60.5, 43.5), t)
        c.dot(x - 1.4, y + 1.8, 0.5, _shade(rgb, 0.4))
        c.line([(x - 1.4, y + 1.8), (x + 1.8, y - 1.2)], _WHITE, 0.9)
    sole = [(12, 61), (90, 60), *_bez((93.5, 60.5), (93, 69), (87, 70)), (16, 70), (11, 66)]
    c.shape(sole, (246, 246, 243), (170, 170, 166))
    c.line([(15, 69.6), (87, 69.6)], (142, 142, 140), 1.0)
    c.dashed([(16, 64.5), (89, 63.5)], (188, 188, 184), 0.3)
    c.fold(_bez((58, 39), (76, 44), (86, 51)), 2.5, -32)
    c.fold([(26, 42), (28, 56)], 3, 16)


def _handbag(c: _Canvas) -> None:
    rgb = c.g.rgb
    trim = _BRASS if c.g.variant % 2 == 0 else _METAL
    if c.g.variant % 2 == 0:  # tote: two handles behind a trapezoid body
        c.line(_bez((40, 42), (50, 8), (60, 42)), _shade(rgb, 0.7), 3.0)
        c.line(_bez((36, 42), (46, 12), (56, 42)), rgb, 3.0)
        body = [(29, 40), (71, 40), (76, 80), *_bez((76, 84), (76, 85), (72, 85)), (28, 85)]
        c.fabric([*body, *_bez((24, 85), (24, 84), (24, 80))])
        c.dashed([(30.5, 43), (69.5, 43)], _shade(rgb, 1.4))
        for x in (36.0, 56.0):
            c.dot(x, 44, 1.0, trim)
        c.fold([(40, 48), (36, 80)], 4, -18)
        c.fold([(66, 46), (70, 80)], 3, 16)
    else:  # structured top-handle bag with a flap and clasp
        c.line(_bez((37, 46), (50, 14), (63, 46)), rgb, 2.6)
        c.line(_bez((37, 46), (50, 14), (63, 46)), _shade(rgb, 0.78), 0.5)
        c.fabric([(27, 44), (73, 44), (75, 82), *_bez((75, 84), (74, 84), (70, 84)), (30, 84)])
        c.fabric([(27, 44), (73, 44), (74, 58), *_bez((62, 66), (50, 66), (38, 66))[1:], (26, 58)])
        c.shape([(47.5, 61), (52.5, 61), (52.5, 66.5), (47.5, 66.5)], trim)
        c.dot(50, 63.8, 1.0, _shade(trim, 0.8))
        c.dashed([(28.5, 46.5), (71.5, 46.5)], _shade(rgb, 1.4))
        c.fold([(35, 50), (34, 80)], 4, -18)
        c.fold([(66, 70), (70, 82)], 3, 16)


def _belt(c: _Canvas) -> None:
    rgb = c.g.rgb
    trim = _BRASS if c.g.variant % 2 == 0 else _METAL
    c.fabric([(20, 44), (83, 44), (90, 50), (83, 56), (20, 56)])
    c.dashed([(24, 45.6), (82.5, 45.6)], _shade(rgb, 1.5))
    c.dashed([(24, 54.4), (82.5, 54.4)], _shade(rgb, 1.5))
    for x in (64.0, 68.0, 72.0, 76.0, 80.0):
        c.dot(x, 50, 0.9, (30, 26, 24))
    c.shape([(29, 42.5), (33, 42.5), (33, 57.5), (29, 57.5)], rgb)
    frame = [(9, 41), (22, 41), (22, 59), (9, 59)]
    c.shape(frame, trim, _shade(trim, 0.6))
    c.shape([(11.5, 43.5), (19.5, 43.5), (19.5, 56.5), (11.5, 56.5)], c.g.background)
    c.fabric([(15.5, 44), (23, 44), (23, 56), (15.5, 56)])
    c.line([(12, 50), (22, 50)], trim, 1.0)
    c.fold([(26, 47), (88, 47)], 2, -30)


def _hat(c: _Canvas) -> None:
    rgb = c.g.rgb
    if c.g.variant % 2 == 0:  # baseball cap seen from the side, peak to the right
        c.fabric([(57, 59), *_bez((75, 55), (86, 58), (91, 63)), (85, 67), (57, 64)])
        c.line(_bez((60, 60.5), (80, 58), (88, 63)), _shade(rgb, 0.8), 0.4)
        c.fabric(_arc(46, 62, 28, 32, 180, 360))
        c.line(_bez((46, 30.5), (36, 45), (35, 62)), _edge(rgb), 0.4)
        c.line(_bez((46, 30.5), (58, 45), (62, 62)), _edge(rgb), 0.4)
        c.dot(46, 30.5, 1.8, rgb)
        c.dot(40, 44, 0.7, _shade(rgb, 0.6))
        c.dashed([(19.5, 59.5), (72.5, 59.5)], _shade(rgb, 0.75))
        c.fold(_bez((30, 50), (34, 40), (42, 34)), 4, -26)
        c.fold([(66, 44), (70, 58)], 4, 14)
    else:  # brimmed fedora with a band
        c.fabric(_arc(50, 66, 32, 8, 0, 360))
        crown = [(32, 65), (33, 42), *_bez((35, 32), (44, 30), (50, 34)), (54, 30), (63, 32)]
        c.fabric([*crown, (67, 42), (68, 65)])
        band = c.g.accent if c.g.accent != c.g.rgb else _shade(rgb, 0.5)
        c.shape([(32.4, 56), (67.6, 56), (68, 64), (32, 64)], band)
        c.line([(50, 34), (50, 46)], _edge(rgb), 0.5)
        c.fold([(38, 38), (37, 54)], 4, -24)
        c.fold([(62, 38), (64, 54)], 3, 16)


_DRAWERS: dict[str, Callable[[_Canvas], None]] = {
    "top": _top,
    "shirt": _shirt,
    "trousers": _trousers,
    "jeans": _jeans,
    "skirt": _skirt,
    "dress": _dress,
    "jacket": _jacket,
    "casual-shoes": _casual_shoes,
    "sports-shoes": _sports_shoes,
    "handbag": _handbag,
    "belt": _belt,
    "hat": _hat,
}

KINDS = tuple(_DRAWERS)
"""The kinds :func:`draw_garment` knows, named by their StyGig category."""
