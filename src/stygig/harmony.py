"""Colours as values, not pixels: colour spaces, families, names, and which colours go together.

* Colour spaces: :func:`rgb_to_hsl` / :func:`hsl_to_rgb` (exactly :mod:`colorsys`, vectorised)
  and :func:`rgb_to_lab` (CIELAB, D65), where perceptual distances and families are measured.
* Families: :func:`color_family` / :func:`color_families` apply the ordered CIELAB rules of
  ``data/color_families.yaml`` (12 families: black, white, grey, beige, brown, red, pink,
  purple, blue, green, yellow, orange); :func:`describe_color` refines a family into a short
  name ("navy", "burgundy", "camel", ...) for the recommender's reasons.
* Harmony: :func:`harmony` scores candidate colours against a query colour, vectorised. Each
  (query, candidate) pair of HSL colours gets the score of the first rule that applies
  (``HARMONY_RULE_NAMES`` gives the index of each):

  =====  =============  ===========================================================  =======
  index  rule           applies when                                                 default
  =====  =============  ===========================================================  =======
  0      neutral        either colour is a neutral (below)                           0.90
  1      monochrome     hues at most ``monochrome_deg`` (15) apart, any lightness    0.85
  2      analogous      hues at most ``analogous_deg`` (45) apart                    0.80
  3      complementary  hues 180 +/- ``complementary_tolerance_deg`` (30) apart      0.70
  4      triadic        hues 120 +/- ``triadic_tolerance_deg`` (15) apart            0.60
  5      clash          anything else (e.g. hues 60-105 degrees apart)               0.20
  =====  =============  ===========================================================  =======

  A colour is *neutral* when it has little colour (S < ``neutral_max_saturation`` 0.15: greys),
  is very dark (L < ``neutral_max_dark`` 0.15: black) or very light (L >= ``neutral_min_light``
  0.9: white, cream), navy-like (H in ``navy_hue`` 200-255 and L < ``navy_max_lightness`` 0.3)
  or beige-like (H in ``beige_hue`` 20-65, S <= ``beige_max_saturation`` 0.6 and
  L >= ``beige_min_lightness`` 0.55: beige, khaki, camel, sand). Neutrals go with anything, so
  that rule comes first. Hue distances go round the wheel: 350 and 10 are 20 degrees apart.

Pure NumPy; :mod:`stygig.color` builds on this module to find the colours of a photo.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from stygig.errors import ConfigError, InvalidOptionsError, config_read_problem, validate_config
from stygig.unique_keys import load_yaml

__all__ = [
    "HARMONY_PHRASES",
    "HARMONY_RULE_NAMES",
    "NEUTRAL_RGB",
    "FamilyRule",
    "FamilyTable",
    "HarmonyRules",
    "color_families",
    "color_family",
    "describe_color",
    "describe_colors",
    "harmony",
    "harmony_reason",
    "hsl_to_rgb",
    "lab_to_lch",
    "load_family_table",
    "neutral_colors",
    "rgb_array",
    "rgb_to_hsl",
    "rgb_to_lab",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The colour given to an item or photo without one (mid grey).
NEUTRAL_RGB = (128, 128, 128)


def rgb_array(colors: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
    """The ``rgb`` of colour summaries as a ``(n, 3)`` float32 array (``NEUTRAL_RGB`` if none)."""
    return np.array([c.get("rgb", NEUTRAL_RGB) for c in colors], np.float32).reshape(-1, 3)


# --- colour spaces ---------------------------------------------------------------------------

_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)  # fmt: skip
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_hsl(rgb: npt.ArrayLike) -> FloatArray:
    """Convert RGB (0-255, any shape ``(..., 3)``) to HSL: H in degrees [0, 360), S and L in [0, 1].

    The same arithmetic as :func:`colorsys.rgb_to_hls` (Python 3.11.5 and later), vectorised
    (and in H, S, L order). One colour (shape ``(3,)``, a query's) is computed on Python floats
    by :func:`_one_hsl`, the same operations in the same order: the ~25 array operations cost
    ~35 us on three numbers, floats ~3 us.
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    if c.shape == (3,) and np.isfinite(c).all():
        return _one_hsl(*c.tolist())
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    maxc, minc = c.max(axis=-1), c.min(axis=-1)
    sumc, rangec = maxc + minc, maxc - minc
    light = sumc / 2.0
    grey = rangec == 0.0
    safe_range = np.where(grey, 1.0, rangec)
    sat_dark = rangec / np.where(sumc == 0.0, 1.0, sumc)
    sat_light = rangec / np.where(2.0 - maxc - minc == 0.0, 1.0, 2.0 - maxc - minc)
    sat = np.where(grey, 0.0, np.where(light <= 0.5, sat_dark, sat_light))
    rc, gc, bc = (maxc - r) / safe_range, (maxc - g) / safe_range, (maxc - b) / safe_range
    hue = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = np.where(grey, 0.0, (hue / 6.0) % 1.0) * 360.0
    hue = np.where(hue >= 360.0, hue - 360.0, hue)
    return np.stack([hue, sat, light], axis=-1)


def _one_hsl(r: float, g: float, b: float) -> FloatArray:
    """:func:`rgb_to_hsl` of one colour (0-1 floats), operation for operation: the same bits."""
    maxc, minc = max(r, g, b), min(r, g, b)
    sumc, rangec = maxc + minc, maxc - minc
    light = sumc / 2.0
    if rangec == 0.0:
        return np.array([0.0, 0.0, light])
    if light <= 0.5:
        sat = rangec / (sumc if sumc != 0.0 else 1.0)
    else:
        low = 2.0 - maxc - minc
        sat = rangec / (low if low != 0.0 else 1.0)
    rc, gc, bc = (maxc - r) / rangec, (maxc - g) / rangec, (maxc - b) / rangec
    if r == maxc:
        hue = bc - gc
    elif g == maxc:
        hue = 2.0 + rc - bc
    else:
        hue = 4.0 + gc - rc
    hue = (hue / 6.0) % 1.0 * 360.0
    return np.array([hue - 360.0 if hue >= 360.0 else hue, sat, light])


def hsl_to_rgb(hsl: npt.ArrayLike) -> FloatArray:
    """Convert HSL (H in degrees, S and L in [0, 1], shape ``(..., 3)``) to float RGB in 0-255.

    The inverse of :func:`rgb_to_hsl`; round the result to get uint8 pixels back.
    """
    x = np.asarray(hsl, dtype=np.float64)
    h, s, light = (x[..., 0] / 360.0) % 1.0, x[..., 1], x[..., 2]
    m2 = np.where(light <= 0.5, light * (1.0 + s), light + s - light * s)
    m1 = 2.0 * light - m2

    def channel(hue: FloatArray) -> FloatArray:
        hue = hue % 1.0
        up, down = m1 + (m2 - m1) * hue * 6.0, m1 + (m2 - m1) * (2.0 / 3.0 - hue) * 6.0
        return np.select([hue < 1 / 6, hue < 0.5, hue < 2 / 3], [up, m2, down], m1)

    out = np.stack([channel(h + 1.0 / 3.0), channel(h), channel(h - 1.0 / 3.0)], axis=-1)
    grey = (s == 0.0)[..., None]
    return np.where(grey, light[..., None], out) * 255.0


def rgb_to_lab(rgb: npt.ArrayLike) -> FloatArray:
    """Convert sRGB (0-255, shape ``(..., 3)``) to CIELAB (D65): L* in [0, 100], a*, b*."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    return _linear_to_lab(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4))


# Linear RGB -> XYZ scaled by the white point, and f(X, Y, Z) -> (L*, a*, b*): both linear, so
# one matrix product each (a handful of NumPy calls however many colours: the colour step
# converts a few colours per photo).
_LINEAR_TO_XYZ_WHITE = (_SRGB_TO_XYZ / _D65_WHITE[:, None]).T
_F_TO_LAB = np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]])
_LAB_OFFSET = np.array([-16.0, 0.0, 0.0])


def _linear_to_lab(linear: FloatArray) -> FloatArray:
    t = linear @ _LINEAR_TO_XYZ_WHITE
    f = np.where(t > 216 / 24389, np.cbrt(t), (24389 / 27 * t + 16) / 116)
    lab: FloatArray = f @ _F_TO_LAB + _LAB_OFFSET
    return lab


def lab_to_lch(lab: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Lightness L*, chroma C* and hue angle h (degrees, [0, 360)) of CIELAB colours."""
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return lab[..., 0], np.hypot(lab[..., 1], lab[..., 2]), hue


# --- colour families -------------------------------------------------------------------------

_UNBOUNDED = (-np.inf, np.inf)


@dataclass(frozen=True)
class FamilyRule:
    """One rule of the family table: CIELAB ranges ``[low, high)``; a hue range may wrap past 360."""

    family: str
    lightness: tuple[float, float] = _UNBOUNDED
    chroma: tuple[float, float] = _UNBOUNDED
    hue: tuple[float, float] = _UNBOUNDED


# --- the family table's file, as pydantic checks it (strict: "12" is not a number) ------------

_Bound = Annotated[float, Field(strict=True, allow_inf_nan=False)] | None
_HueBound = Annotated[float, Field(strict=True, ge=0.0, le=360.0)] | None
_Name = Annotated[str, Field(strict=True, min_length=1)]


def _ordered(band: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    low, high = band
    if low is not None and high is not None and low > high:
        raise ValueError(f"low {low:g} is above high {high:g}")
    return band


# [low, high), a null bound is open; only a hue range may wrap (low > high: through 0).
_Range = Annotated[tuple[_Bound, _Bound], AfterValidator(_ordered)]
_HueRange = tuple[_HueBound, _HueBound]


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: _Name
    L: _Range | None = None
    C: _Range | None = None
    h: _HueRange | None = None

    def rule(self) -> FamilyRule:
        def bounds(band: tuple[float | None, float | None] | None) -> tuple[float, float]:
            low, high = band or (None, None)
            return (-np.inf if low is None else low, np.inf if high is None else high)

        return FamilyRule(self.family, bounds(self.L), bounds(self.C), bounds(self.h))


class _DatasetFold(BaseModel):
    """How one dataset's colour labels compare with the families (see ``color_families.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_column: _Name
    labels: dict[str, _Name]  # label -> a family, or a group of ``families`` below
    families: dict[str, _Name] | None = None  # family -> the dataset's group, if coarser
    excluded: list[str] = []  # labels that are not one colour family

    def problems(self, families: set[str]) -> list[str]:
        """What is inconsistent: each label must reach a target it can meet."""
        out = []
        if self.families is not None and set(self.families) - families:
            out.append(f"families: unknown families {sorted(set(self.families) - families)}")
        targets = set(self.families.values()) if self.families is not None else families
        if stray := set(self.labels.values()) - targets:
            out.append(f"labels: {sorted(stray)} are neither families nor the dataset's groups")
        if both := set(self.labels) & set(self.excluded):
            out.append(f"labels: {sorted(both)} are also excluded")
        return out


class _FamilyTableFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    families: Annotated[list[_Name], Field(min_length=1)]
    default: _Name
    rules: list[_RuleFile]
    datasets: dict[str, _DatasetFold] = {}

    @model_validator(mode="after")
    def _names_are_families(self) -> _FamilyTableFile:
        known = set(self.families)
        twice = sorted({f for f in self.families if self.families.count(f) > 1})
        unknown = ({r.family for r in self.rules} | {self.default}) - known
        problems = [f"families listed twice: {twice}"] if twice else []
        if unknown:
            problems.append(f"colour rules name unknown families: {sorted(unknown)}")
        for name, fold in self.datasets.items():
            problems += [f"datasets.{name}.{p}" for p in fold.problems(known)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


@functools.cache
def _family_table_adapter() -> TypeAdapter[_FamilyTableFile]:
    return TypeAdapter(_FamilyTableFile)


@dataclass(frozen=True)
class FamilyTable:
    """The colour families, the ordered rules that assign them and the datasets' label folds."""

    families: tuple[str, ...]
    rules: tuple[FamilyRule, ...]
    default: str
    datasets: dict[str, dict[str, Any]]  # name -> its fold, as in the file

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> FamilyTable:
        """Build from the parsed YAML document, validated whole by pydantic.

        :class:`ConfigError` names every field that is wrong, and ``source`` (the file) if given:
        unknown keys, a non-number bound, a range that is not ``[low, high]``, a rule, default or
        dataset fold naming an unknown family.
        """
        what = f"colour family table {source}" if source else "colour family table"
        doc = validate_config(_family_table_adapter(), data, what)
        rules = tuple(r.rule() for r in doc.rules)
        folds = {name: f.model_dump(exclude_none=True) for name, f in doc.datasets.items()}
        return cls(tuple(doc.families), rules, doc.default, folds)

    def classify_lab(self, lab: FloatArray) -> npt.NDArray[np.intp]:
        """Family index (into :attr:`families`) of each CIELAB colour in ``(..., 3)``.

        Every colour meets every rule at once (broadcast against the rules' bounds, a fixed
        number of NumPy calls however many rules) and the first rule that matches wins.
        """
        low, high, wraps, family = self._rule_arrays
        lightness, chroma, hue = (
            x[..., None] for x in lab_to_lch(np.asarray(lab, dtype=np.float64))
        )
        hit = (lightness >= low[:, 0]) & (lightness < high[:, 0])
        hit &= (chroma >= low[:, 1]) & (chroma < high[:, 1])
        above, below = hue >= low[:, 2], hue < high[:, 2]
        hit &= np.where(wraps, above | below, above & below)
        first = np.where(hit.any(axis=-1), hit.argmax(axis=-1), len(self.rules))
        index: npt.NDArray[np.intp] = family[first]
        return index

    @functools.cached_property
    def _rule_arrays(
        self,
    ) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
        """The rules' ``[low, high)`` bounds as ``(rules, 3)`` arrays (L*, C*, h), which hue
        ranges wrap through 0, and each rule's family index, the default's appended."""
        bounds = np.array([(r.lightness, r.chroma, r.hue) for r in self.rules]).reshape(-1, 3, 2)
        low, high = bounds[..., 0], bounds[..., 1]
        names = [r.family for r in self.rules] + [self.default]
        family = np.array([self.families.index(name) for name in names], dtype=np.intp)
        return low, high, low[:, 2] > high[:, 2], family


@functools.lru_cache(maxsize=8)
def load_family_table(path: str | Path | None = None) -> FamilyTable:
    """Load a colour family table (default: the packaged ``data/color_families.yaml``)."""
    source = path or "color_families.yaml (packaged)"
    try:
        if path is None:
            text = resources.files("stygig").joinpath("data/color_families.yaml").read_text()
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = load_yaml(text)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(
            f"cannot read colour family table {source}: {config_read_problem(e)}"
        ) from e
    return FamilyTable.from_dict(data, source)


def color_families(rgb: npt.ArrayLike, table: FamilyTable | None = None) -> npt.NDArray[np.str_]:
    """Family names of RGB colours ``(n, 3)`` (0-255), vectorised; navy gives ``"blue"``."""
    table = table or load_family_table()
    index = table.classify_lab(rgb_to_lab(np.asarray(rgb, dtype=np.float64).reshape(-1, 3)))
    return np.asarray(table.families)[index]


def color_family(rgb: npt.ArrayLike, table: FamilyTable | None = None) -> str:
    """The family name (``"black"``, ``"blue"``, ``"beige"``, ...) of one RGB colour (0-255)."""
    return str(color_families(np.asarray(rgb).reshape(1, 3), table)[0])


# --- harmony ---------------------------------------------------------------------------------

HARMONY_RULE_NAMES: tuple[str, ...] = (
    "neutral",
    "monochrome",
    "analogous",
    "complementary",
    "triadic",
    "clash",
)
HARMONY_PHRASES = (  # how a reason names each rule, in the same order
    "neutral pairing",
    "monochrome",
    "analogous colours",
    "complementary colours",
    "triadic colours",
    "clashing colours",
)


_Score = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]
_Degrees = Annotated[float, Field(strict=True, ge=0.0, le=180.0)]
_Share = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]
_Hue = Annotated[float, Field(strict=True, ge=0.0, le=360.0)]
# A hue band [low, high] for the neutral tests, which do not wrap through 0.
_HueBand = Annotated[tuple[_Hue, _Hue], AfterValidator(_ordered)]


@dataclass(frozen=True)
class HarmonyRules:
    """Scores per rule and the bands that define the rules; see the module docstring.

    Settings from a file go through :meth:`from_dict`, validated by pydantic against these
    annotations, strictly: scores and lightness/saturation limits in [0, 1], angles in
    [0, 180] degrees, hue bands ``[low, high]`` within [0, 360], numbers not strings, and no
    unknown keys. Constructing the class directly (code, not configuration) is not checked, so
    :func:`harmony`'s default costs nothing.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    neutral: _Score = 0.9
    monochrome: _Score = 0.85
    analogous: _Score = 0.8
    complementary: _Score = 0.7
    triadic: _Score = 0.6
    clash: _Score = 0.2
    monochrome_deg: _Degrees = 15.0
    analogous_deg: _Degrees = 45.0
    complementary_tolerance_deg: _Degrees = 30.0
    triadic_tolerance_deg: _Degrees = 15.0
    neutral_max_saturation: _Share = 0.15
    neutral_max_dark: _Share = 0.15
    neutral_min_light: _Share = 0.9
    navy_hue: _HueBand = (200.0, 255.0)
    navy_max_lightness: _Share = 0.3
    beige_hue: _HueBand = (20.0, 65.0)
    beige_max_saturation: _Share = 0.6
    beige_min_lightness: _Share = 0.55

    @property
    def scores(self) -> npt.NDArray[np.float32]:
        """The score of each rule, in ``HARMONY_RULE_NAMES`` order."""
        return np.array([getattr(self, n) for n in HARMONY_RULE_NAMES], dtype=np.float32)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> HarmonyRules:
        """Build rules from a mapping of settings (e.g. ``scoring.yaml``'s ``harmony`` section).

        :class:`ConfigError` names every field that is wrong, and ``source`` (the file) if given.
        """
        what = f"harmony settings in {source}" if source else "harmony settings"
        return validate_config(_harmony_adapter(), data, what)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (hue ranges as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@functools.cache
def _harmony_adapter() -> TypeAdapter[HarmonyRules]:
    return TypeAdapter(HarmonyRules)


def _neutral(hsl: npt.NDArray[np.float64], r: HarmonyRules) -> npt.NDArray[np.bool_]:
    h, s, light = hsl[..., 0], hsl[..., 1], hsl[..., 2]
    navy = (h >= r.navy_hue[0]) & (h <= r.navy_hue[1]) & (light < r.navy_max_lightness)
    beige = (h >= r.beige_hue[0]) & (h <= r.beige_hue[1]) & (s <= r.beige_max_saturation)
    beige &= light >= r.beige_min_lightness
    return (
        (s < r.neutral_max_saturation)
        | (light < r.neutral_max_dark)
        | (light >= r.neutral_min_light)
        | navy
        | beige
    )


def harmony(
    query_hsl: npt.ArrayLike,
    cand_hsl: npt.ArrayLike,
    rules: HarmonyRules | None = None,
    *,
    cand_neutral: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Score how well each candidate colour goes with the query colour.

    Args:
        query_hsl: the query's HSL colour, shape ``(3,)``.
        cand_hsl: the candidates' HSL colours, shape ``(n, 3)``.
        rules: scores and bands; the defaults are in the module docstring.
        cand_neutral: :func:`neutral_colors` of ``cand_hsl`` under ``rules``, when the caller
            keeps it (a catalogue's colours do not change between requests).

    Returns:
        ``(scores, rule_index)``: float32 scores in [0, 1] and the index into
        ``HARMONY_RULE_NAMES`` of the rule that decided each pair, both of shape ``(n,)``.
    """
    r = rules or HarmonyRules()
    query = np.asarray(query_hsl, dtype=np.float64)
    cand = np.asarray(cand_hsl)
    if query.shape != (3,) or cand.ndim != 2 or cand.shape[1] != 3:
        raise InvalidOptionsError(
            f"harmony needs a (3,) query and (n, 3) candidates, got {query.shape} and {cand.shape}"
        )
    gap = np.abs(query[0] - cand[:, 0].astype(np.float64)) % 360.0
    np.minimum(gap, 360.0 - gap, out=gap)
    # The first rule that holds decides: written from the last to the first, each overwriting.
    rule = np.full(len(gap), 5, np.intp)
    rule[np.abs(gap - 120.0) <= r.triadic_tolerance_deg] = 4
    rule[np.abs(gap - 180.0) <= r.complementary_tolerance_deg] = 3
    rule[gap <= r.analogous_deg] = 2
    rule[gap <= r.monochrome_deg] = 1
    if _neutral(query, r):
        rule[:] = 0
    else:
        rule[neutral_colors(cand, r) if cand_neutral is None else cand_neutral] = 0
    return r.scores[rule], rule


def neutral_colors(hsl: npt.ArrayLike, rules: HarmonyRules | None = None) -> npt.NDArray[np.bool_]:
    """Which HSL colours ``(n, 3)`` are neutral under ``rules`` (they pair with anything)."""
    return _neutral(np.asarray(hsl, np.float64), rules or HarmonyRules())


#: The names that refine a family, first match wins: ``(name, test)``, where ``test(is_family,
#: light, chroma, hue)`` reads CIELAB lightness L*, chroma C* and hue angle h (degrees) and
#: ``is_family(f)`` whether the colour is of family ``f``. The same tests run on arrays (many
#: colours, ``&`` and ``|`` elementwise) and on Python floats and bools (one colour).
_NAME_RULES: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("charcoal", lambda f, light, chroma, hue: f("grey") & (light < 35)),
    ("light grey", lambda f, light, chroma, hue: f("grey") & (light > 70)),
    ("navy", lambda f, light, chroma, hue: f("blue") & (light < 35)),
    ("light blue", lambda f, light, chroma, hue: f("blue") & (light > 75)),
    ("teal", lambda f, light, chroma, hue: f("green") & (hue >= 180) & (light < 60)),
    ("turquoise", lambda f, light, chroma, hue: f("green") & (hue >= 180)),
    # Yellow-greens: lime is bright and vivid; dull ones are olive (dark) or khaki.
    (
        "olive",
        lambda f, light, chroma, hue: f("green") & (hue < 125) & (chroma < 35) & (light < 60),
    ),
    ("khaki", lambda f, light, chroma, hue: f("green") & (hue < 125) & (chroma < 35)),
    ("lime", lambda f, light, chroma, hue: f("green") & (hue < 125)),
    ("olive", lambda f, light, chroma, hue: f("brown") & (hue >= 90)),
    ("tan", lambda f, light, chroma, hue: f("brown") & (light >= 50)),
    ("burgundy", lambda f, light, chroma, hue: f("red") & (light < 35)),
    (
        "lavender",
        lambda f, light, chroma, hue: (
            (f("purple") | f("pink")) & (light > 65) & (hue >= 290) & (hue < 335)
        ),
    ),
    ("camel", lambda f, light, chroma, hue: f("yellow") & (chroma < 35) & (light < 75)),
    ("cream", lambda f, light, chroma, hue: f("white") & (chroma >= 5)),
)


def describe_colors(
    rgb: npt.ArrayLike, families: Sequence[str] | None = None
) -> npt.NDArray[np.str_]:
    """Short human names for RGB colours (0-255), vectorised over ``(n, 3)``.

    The name refines the colour's family by lightness and hue (:data:`_NAME_RULES`): "navy",
    "charcoal", "burgundy", "teal", "olive", "tan", "camel", "cream", "lavender", ... for
    reasons such as "navy + grey: neutral pairing"; a colour no rule names is called by its
    family. The family is ``families`` when given (a photo's family comes from its whole
    histogram, :func:`stygig.color.dominant_colors`, and its name must agree with it), else the
    colour's own (:func:`color_families`).
    """
    lab = rgb_to_lab(np.asarray(rgb, dtype=np.float64).reshape(-1, 3))
    table = load_family_table()
    if families is None:
        family = np.asarray(table.families)[table.classify_lab(lab)].astype(object)
    else:
        family = np.asarray(families, dtype=object)
    light, chroma, hue = lab_to_lch(lab)
    is_: dict[str, npt.NDArray[np.bool_]] = {}

    def of(name: str) -> npt.NDArray[np.bool_]:
        if name not in is_:
            is_[name] = family == name
        return is_[name]

    tests = [test(of, light, chroma, hue) for _, test in _NAME_RULES]
    names = np.select(tests, [name for name, _ in _NAME_RULES], default="")
    out: npt.NDArray[np.str_] = np.where(names == "", family, names).astype(np.str_)
    return out


def describe_color(rgb: npt.ArrayLike, family: str | None = None) -> str:
    """A short human name for one RGB colour (0-255), of ``family`` when given; see
    :func:`describe_colors`. The same numbers (CIELAB and its L*, C*, h by the same NumPy
    calls) and the same tests, on Python floats: a photo's colour is named per request, and
    the tests' ~30 array operations cost ~0.2 ms on one colour."""
    lab = rgb_to_lab(np.asarray(rgb, dtype=np.float64).reshape(1, 3))
    if family is None:
        table = load_family_table()
        family = str(table.families[int(table.classify_lab(lab)[0])])
    light, chroma, hue = (float(v[0]) for v in lab_to_lch(lab))
    of = family.__eq__
    for name, test in _NAME_RULES:
        if test(of, light, chroma, hue):
            return name
    return family


def harmony_reason(query_rgb: npt.ArrayLike, cand_rgb: npt.ArrayLike, rule_index: int) -> str:
    """A one-line reason for a pair, e.g. ``"navy + grey: neutral pairing"``."""
    return (
        f"{describe_color(query_rgb)} + {describe_color(cand_rgb)}: {HARMONY_PHRASES[rule_index]}"
    )
