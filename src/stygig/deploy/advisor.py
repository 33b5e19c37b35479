"""Which instance, how many, and what it costs: pure arithmetic on the instance matrix.

The matrix (``stygig/data/instances.yaml``) gives, per instance type, its hourly price and, per
model, the latency (p50/p99 of one request) and the throughput one instance sustains, each
labelled ``measured``, ``scaled`` or ``estimate``. For a traffic level the advisor computes,
for every instance type::

    rps          = requests_per_hour / 3600
    count        = max(minimum, ceil(rps / (throughput * utilisation)))
    cost/month   = count * price_per_hour * hours_per_month * active_hours_per_day / 24
    cost/request = cost/month / (requests_per_hour * hours_per_month * active_hours_per_day / 24)

and recommends the cheapest whose p99 meets the latency target (sync only; async results wait
in S3, so latency is not a constraint unless one is given). Every step is hand-checkable.

One source: ``stygig advise`` and the CPU guard of ``stygig deploy sync`` both take the figures
of :func:`figures_for` (instance type x :func:`model_key` of the artifact's encoder) and word
them with :func:`describe_figures`. :func:`break_even` finds the request rates at which one
instance type becomes cheaper than another; :func:`with_prices` swaps in live prices.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from stygig.errors import ConfigError, InvalidOptionsError, config_read_problem, validate_config

__all__ = [
    "DEFAULT_MODEL",
    "Advice",
    "BreakEven",
    "Figures",
    "Instance",
    "Matrix",
    "Option",
    "advise",
    "break_even",
    "break_evens",
    "cost_per_month",
    "cost_per_request",
    "cpu_realtime_note",
    "describe_figures",
    "figures_for",
    "format_advice",
    "instances_needed",
    "is_gpu_instance",
    "load_matrix",
    "model_for_artifact",
    "model_key",
    "requests_per_minute",
    "resolve_model",
    "with_prices",
]

#: What ``stygig build`` builds by default (review, session 51: this was still
#: ``clip-vit-b-32``, whose figures a default build's deployment was sized by, 5.6x off).
DEFAULT_MODEL = "efficientnet-lite0"
#: The share of an instance's measured throughput the sizing plans to use.
UTILISATION = 0.7
MODES = ("sync", "async")


# Strict: "0.1" is not a price, 2.5 not a vCPU count.
_Positive = Annotated[float, Field(strict=True, gt=0.0, allow_inf_nan=False)]
_Count = Annotated[int, Field(strict=True, ge=1)]
_Text = Annotated[str, Field(strict=True)]


def _check_source(value: str) -> str:
    kind, _, how = value.partition(":")
    if value in ("measured", "scaled", "estimate") or (kind == "estimate" and how.strip()):
        return value
    raise ValueError(f"must be 'measured', 'scaled' or 'estimate: <how>', not {value!r}")


_Source = Annotated[str, Field(strict=True), AfterValidator(_check_source)]


@dataclass(frozen=True)
class Figures:
    """One model on one instance type: latency of a request and sustained throughput."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    p50_ms: _Positive
    p99_ms: _Positive
    rps: _Positive
    source: _Source  # measured | scaled | estimate | "estimate: <how it was guessed>"

    @property
    def kind(self) -> str:
        """``measured``, ``scaled`` or ``estimate`` (the source without its explanation)."""
        return self.source.partition(":")[0]


@dataclass(frozen=True)
class Instance:
    """An instance type with its price and per-model figures."""

    name: str
    vcpu: int
    memory_gib: float
    gpu: str | None
    price_per_hour: float
    models: dict[str, Figures]


@dataclass(frozen=True)
class Matrix:
    """The whole instance matrix and the assumptions it was written under."""

    instances: tuple[Instance, ...]
    hours_per_month: float = 730.0
    region: str = "us-east-1"
    date: str = ""
    guide_latency_ms: float | None = None
    guide_claimed_per_minute: float | None = None
    price_note: str = ""  # where the prices come from, when not the file's typed-in table

    def instance(self, name: str) -> Instance:
        """The named instance type; :class:`InvalidOptionsError` when it is not in the matrix."""
        for inst in self.instances:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in self.instances)
        raise InvalidOptionsError(f"instance type {name!r} is not in the matrix ({known})")


# --- instances.yaml, as pydantic checks it ---------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Pricing(_Strict):
    region: _Text = ""
    date: _Text = ""
    hours_per_month: Annotated[float, Field(strict=True, gt=0.0, le=744.0)] = 730.0
    source: _Text = ""


class _Guide(_Strict):
    cpu_latency_ms: _Positive | None = None
    claimed_requests_per_minute_per_worker: _Positive | None = None


class _InstanceSpec(_Strict):
    vcpu: _Count
    memory_gib: _Positive
    gpu: _Text | None
    price_per_hour: _Positive
    models: Annotated[dict[str, Figures], Field(min_length=1)]


class _MatrixFile(_Strict):
    pricing: _Pricing = _Pricing()
    guide: _Guide = _Guide()
    models: dict[str, _Text]  # model key -> what it is; every instance's figures name one
    instances: Annotated[dict[str, _InstanceSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _figures_make_sense(self) -> _MatrixFile:
        problems = []
        for name, spec in self.instances.items():
            for model, f in spec.models.items():
                where = f"instances.{name}.models.{model}"
                if model not in self.models:
                    problems.append(f"{where}: a model not declared under `models`")
                if f.p99_ms < f.p50_ms:
                    problems.append(f"{where}: p99_ms {f.p99_ms:g} is below p50_ms {f.p50_ms:g}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def matrix(self) -> Matrix:
        instances = tuple(
            Instance(name, s.vcpu, s.memory_gib, s.gpu, s.price_per_hour, dict(s.models))
            for name, s in self.instances.items()
        )
        return Matrix(
            instances=instances,
            hours_per_month=self.pricing.hours_per_month,
            region=self.pricing.region,
            date=self.pricing.date,
            guide_latency_ms=self.guide.cpu_latency_ms,
            guide_claimed_per_minute=self.guide.claimed_requests_per_minute_per_worker,
        )


@functools.cache
def _matrix_adapter() -> TypeAdapter[_MatrixFile]:
    return TypeAdapter(_MatrixFile)


def load_matrix(path: str | Path | None = None) -> Matrix:
    """Read the matrix from ``path`` (default: the packaged ``instances.yaml``).

    The file is validated whole by pydantic: a :class:`ConfigError` names the file and every
    field that is wrong (a price that is a string or not positive, a p99 below its p50, an
    unknown source or key, figures for a model the file does not declare).
    """
    import yaml

    from stygig.unique_keys import load_yaml

    source = path or "instances.yaml (packaged)"
    try:
        if path is None:
            text = resources.files("stygig").joinpath("data/instances.yaml").read_text("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = load_yaml(text)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read instance matrix {source}: {config_read_problem(e)}") from e
    return validate_config(_matrix_adapter(), data, f"instance matrix {source}").matrix()


def model_key(encoder: Mapping[str, Any]) -> str:
    """The matrix's model key for an artifact's encoder (its manifest's ``encoder`` block).

    The encoder's name, with ``-int8`` when it is quantised: ``clip-vit-b-32``,
    ``efficientnet-lite0-int8``.
    """
    name = encoder.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidOptionsError("the artifact's manifest names no encoder")
    return f"{name}-int8" if encoder.get("quantization") == "int8" else name


def model_for_artifact(artifact: str | Path) -> str:
    """The model key of a local artifact folder, read from its ``manifest.json`` only."""
    from stygig.artifact import read_manifest

    encoder = read_manifest(artifact).get("encoder")
    return model_key(encoder if isinstance(encoder, Mapping) else {})


def resolve_model(model: str | None, artifact: str | Path | None) -> tuple[str, str]:
    """(model key, why that one): the ``--artifact``'s encoder when one is given (what is
    deployed), else ``--encoder``/``--model``, else :data:`DEFAULT_MODEL` (what ``stygig
    build`` builds by default)."""
    if artifact:
        key = model_for_artifact(artifact)
        if model and model != key:
            return key, f"the artifact's encoder, not --encoder {model}"
        return key, "the artifact's encoder"
    if model:
        return model, "from --encoder"
    return DEFAULT_MODEL, "the default: name another with --encoder or --artifact"


def figures_for(matrix: Matrix, instance_type: str, model: str) -> Figures | None:
    """The matrix's figures for ``model`` on ``instance_type`` (``None`` when it has none)."""
    for inst in matrix.instances:
        if inst.name == instance_type:
            return inst.models.get(model)
    return None


def scaling_target(
    matrix: Matrix, instance_type: str, model: str | None
) -> tuple[float, str] | None:
    """The real-time autoscaling target ``advise`` prints for ``model`` on ``instance_type``
    (invocations per instance per minute at :data:`UTILISATION` of its throughput) and where
    it comes from; ``model=None``: the slowest model the matrix lists there (an unknown
    encoder is never sized for more than it serves). ``None`` when there are no figures."""
    found = [i.models for i in matrix.instances if i.name == instance_type]
    rows = found[0] if found else {}
    if model is None:
        if not rows:
            return None
        model = min(rows, key=lambda m: rows[m].rps)
    figures = rows.get(model)
    if figures is None:
        return None
    how = (
        f"{UTILISATION:.0%} of the {figures.rps:g} requests/s the advisor's matrix gives "
        f"{model} on {instance_type} ({figures.kind})"
    )
    return float(invocations_per_minute(figures.rps, UTILISATION)), how


def describe_figures(figures: Figures, model: str) -> str:
    """The one wording of a row's figures, used by ``advise`` and the ``deploy sync`` guard."""
    return (
        f"p50 {figures.p50_ms:g} ms, p99 {figures.p99_ms:g} ms, {figures.rps:g} requests/s "
        f"per instance for {model} ({figures.kind})"
    )


def with_prices(matrix: Matrix, prices: Mapping[str, float], note: str) -> Matrix:
    """The matrix with the hourly prices of ``prices`` (instance type -> USD/h) put in."""
    instances = tuple(
        dataclasses.replace(i, price_per_hour=prices[i.name]) if i.name in prices else i
        for i in matrix.instances
    )
    return dataclasses.replace(matrix, instances=instances, price_note=note)


@dataclass(frozen=True)
class BreakEven:
    """Where ``other`` costs less than ``base`` (both sized as :func:`advise` sizes them).

    Rates in requests/hour. ``below``: the highest load at or below ``at`` where ``other`` is
    cheaper; ``above``: the lowest load above ``at`` from which it is cheaper; ``stays``: the load
    above which it is cheaper at every rate (``None``: not within ``horizon``, or never).
    """

    base: str
    other: str
    at: float
    below: float | None
    above: float | None
    stays: float | None


_MAX_STEPS = 20_000  # breakpoints scanned per pair; bounds the work for near-equal rows


def _hourly(price: float, capacity: float, minimum: int, rate: float) -> float:
    return price * max(minimum, math.ceil(rate / capacity))


def break_even(
    base: tuple[float, float],
    other: tuple[float, float],
    *,
    at: float,
    minimum: int = 1,
    names: tuple[str, str] = ("base", "other"),
) -> BreakEven:
    """Where ``other`` is cheaper than ``base``; each is (USD per instance-hour, requests/hour
    one instance carries at the chosen utilisation).

    Both costs are steps (``price x max(minimum, ceil(rate / capacity))``) that change only at
    multiples of a capacity, so comparing them once between consecutive multiples is exact.
    Beyond ``p_o / (p_b/c_b - p_o/c_o)`` the asymptotically cheaper row wins at every rate (its
    cost is at most one instance above its linear cost), which bounds the scan.
    """
    (pb, cb), (po, co) = base, other
    per_b, per_o = pb / cb, po / co
    far = max(at, minimum * max(cb, co))
    if per_o < per_b * (1 - 1e-12):
        horizon = max(far, po / (per_b - per_o)) + max(cb, co)
    elif per_b < per_o * (1 - 1e-12):
        horizon = max(far, pb / (per_o - per_b)) + max(cb, co)
    else:  # the same price per request of capacity: the steps alone decide
        horizon = far * 4 + max(cb, co)
    capped = horizon > _MAX_STEPS / 2 * min(cb, co)
    horizon = min(horizon, _MAX_STEPS / 2 * min(cb, co))
    points = sorted(
        {0.0, round(horizon, 3)}
        | {round(k * cb, 3) for k in range(1, int(horizon / cb) + 1)}
        | {round(k * co, 3) for k in range(1, int(horizon / co) + 1)}
    )  # rounded: 0.7 x 180 x 3600 is 453599.99999999994 in floating point
    horizon = points[-1]
    bands: list[list[float]] = []
    for lo, hi in itertools.pairwise(points):
        mid = (lo + hi) / 2
        if _hourly(po, co, minimum, mid) < _hourly(pb, cb, minimum, mid) * (1 - 1e-9):
            if bands and bands[-1][1] == lo:
                bands[-1][1] = hi
            else:
                bands.append([lo, hi])
    below = max((min(hi, at) for lo, hi in bands if lo < at), default=None)
    above = min((lo for lo, _ in bands if lo >= at), default=None)
    settled = per_o < per_b and not capped
    stays = bands[-1][0] if settled and bands and bands[-1][1] == horizon else None
    return BreakEven(names[0], names[1], at, below, above, stays)


def invocations_per_minute(rps: float, utilisation: float) -> int:
    """The autoscaling target: invocations per instance per minute at ``utilisation`` of a
    throughput of ``rps`` requests a second."""
    return round(rps * 60 * utilisation)


def requests_per_minute(latency_ms: float, workers: int = 1) -> float:
    """Requests a minute that ``workers`` sequential workers serve at ``latency_ms`` each."""
    return workers * 60_000.0 / latency_ms


def instances_needed(
    requests_per_hour: float, rps_per_instance: float, utilisation: float, minimum: int
) -> int:
    """Instances that carry the load with each one at most ``utilisation`` of its throughput."""
    if rps_per_instance <= 0 or not 0 < utilisation <= 1:
        raise InvalidOptionsError("throughput must be > 0 and utilisation in (0, 1]")
    return max(minimum, math.ceil(requests_per_hour / 3600.0 / (rps_per_instance * utilisation)))


def cost_per_month(
    price_per_hour: float, count: int, hours_per_month: float, active_hours_per_day: float = 24
) -> float:
    """Dollars a month for ``count`` instances running ``active_hours_per_day``."""
    return price_per_hour * count * hours_per_month * active_hours_per_day / 24.0


def cost_per_request(
    monthly: float,
    requests_per_hour: float,
    hours_per_month: float,
    active_hours_per_day: float = 24,
) -> float:
    """Dollars per request: the month's cost over the month's requests."""
    requests = requests_per_hour * hours_per_month * active_hours_per_day / 24.0
    return monthly / requests if requests > 0 else math.inf


@dataclass(frozen=True)
class Option:
    """One instance type sized for the load."""

    instance: Instance
    count: int
    figures: Figures
    monthly: float
    per_request: float
    meets_latency: bool
    utilisation: float = UTILISATION

    @property
    def invocations_per_minute_target(self) -> int:
        """The autoscaling target (invocations per instance per minute) this sizing implies."""
        return invocations_per_minute(self.figures.rps, self.utilisation)


@dataclass(frozen=True)
class Advice:
    """The recommendation, every option considered (cheapest first) and the inputs."""

    mode: str
    model: str
    requests_per_hour: float
    latency_target_ms: float | None
    utilisation: float
    active_hours_per_day: float
    choice: Option | None
    options: list[Option] = field(default_factory=list)
    matrix: Matrix | None = None
    min_instances: int = 1


def advise(
    matrix: Matrix,
    *,
    mode: str,
    requests_per_hour: float,
    latency_target_ms: float | None = None,
    model: str = DEFAULT_MODEL,
    utilisation: float = UTILISATION,
    min_instances: int = 1,
    active_hours_per_day: float = 24.0,
) -> Advice:
    """Size every instance type for the load and pick the cheapest that meets the target.

    Args:
        mode: ``sync`` (real-time) or ``async``.
        requests_per_hour: the steady load.
        latency_target_ms: the p99 every request must meet (sync); ``None`` for no target.
        model: a model key of the matrix.
        utilisation: the share of measured throughput an instance may use (headroom).
        min_instances: the floor (1 for a real-time endpoint; 2 for zone redundancy).
        active_hours_per_day: hours a day the instances run (async scales to zero when idle).
    """
    if mode not in MODES:
        raise InvalidOptionsError(f"--mode must be sync or async, not {mode!r}")
    if requests_per_hour <= 0:
        raise InvalidOptionsError("--requests-per-hour must be > 0")
    if not 0 < active_hours_per_day <= 24:
        raise InvalidOptionsError("active hours per day must be in (0, 24]")
    options: list[Option] = []
    for inst in matrix.instances:
        figures = inst.models.get(model)
        if figures is None:
            continue
        count = instances_needed(requests_per_hour, figures.rps, utilisation, min_instances)
        monthly = cost_per_month(
            inst.price_per_hour, count, matrix.hours_per_month, active_hours_per_day
        )
        per_request = cost_per_request(
            monthly, requests_per_hour, matrix.hours_per_month, active_hours_per_day
        )
        meets = latency_target_ms is None or figures.p99_ms <= latency_target_ms
        options.append(Option(inst, count, figures, monthly, per_request, meets, utilisation))
    if not options:
        raise InvalidOptionsError(f"model {model!r} is not in the instance matrix")
    options.sort(key=lambda o: (o.monthly, o.figures.p99_ms))
    choice = next((o for o in options if o.meets_latency), None)
    return Advice(
        mode,
        model,
        requests_per_hour,
        latency_target_ms,
        utilisation,
        active_hours_per_day,
        choice,
        options,
        matrix,
        min_instances,
    )


def break_evens(advice: Advice) -> list[BreakEven]:
    """The recommended option against every other one that meets the latency target."""
    c = advice.choice
    if c is None:
        return []
    hours = advice.requests_per_hour

    def capacity(o: Option) -> float:
        return round(o.figures.rps * advice.utilisation * 3600.0, 3)

    return [
        break_even(
            (c.instance.price_per_hour, capacity(c)),
            (o.instance.price_per_hour, capacity(o)),
            at=hours,
            minimum=advice.min_instances,
            names=(c.instance.name, o.instance.name),
        )
        for o in advice.options
        if o.meets_latency and o.instance.name != c.instance.name
    ]


def _rate(per_hour: float) -> str:
    return f"{per_hour:,.0f}/h ({per_hour / 3600:,.1f}/s)"


def _break_even_lines(advice: Advice) -> list[str]:
    found = break_evens(advice)
    if not found or advice.choice is None:
        return []
    lines = [
        f"break-even: the load (requests/hour) at which another type costs less than "
        f"{advice.choice.instance.name} (each sized as above, {advice.min_instances} at least)"
    ]
    never = []
    for b in sorted(found, key=lambda b: (b.above is None, b.above or 0, b.other)):
        parts = []
        if b.below is not None:
            parts.append(f"cheaper up to {_rate(b.below)}")
        if b.above is not None:
            parts.append(f"cheaper from {_rate(b.above)}")
        if b.stays is not None and b.stays != b.above:
            parts.append(f"at every load above {_rate(b.stays)}")
        elif b.stays is not None:
            parts.append("and at every load above it")
        if parts:
            lines.append(f"  {b.other:<16} " + "; ".join(parts))
        else:
            never.append(b.other)
    if never:
        lines.append("  never cheaper: " + ", ".join(never))
    return lines


def _option_line(o: Option) -> str:
    return (
        f"{o.instance.name:<16} {o.count:>5} {o.figures.p50_ms:>7.1f} {o.figures.p99_ms:>7.1f} "
        f"{o.figures.kind:<9} {o.instance.price_per_hour:>7.3f} {o.monthly:>10.2f} "
        f"{o.per_request * 1e6:>10.2f}  {'yes' if o.meets_latency else 'no'}"
    )


def cpu_realtime_note(instance_type: str, figures: Figures | None, model: str) -> str:
    """What ``deploy sync`` on a CPU instance should expect: the guard's and advise's words."""
    expected = (
        describe_figures(figures, model)
        if figures is not None
        else f"no figures in the instance matrix for {model} on it"
    )
    return f"real-time on CPU ({instance_type}): expected latency {expected}"


def format_advice(advice: Advice) -> str:
    """The advice as the text ``stygig advise`` prints."""
    rps = advice.requests_per_hour / 3600
    target = f"p99 <= {advice.latency_target_ms:g} ms" if advice.latency_target_ms else "none"
    lines = [
        f"mode {advice.mode}, {advice.requests_per_hour:g} requests/hour ({rps:.2f}/s), "
        f"model {advice.model}, latency target: {target}",
        f"sizing: each instance at most {advice.utilisation:.0%} of its throughput"
        + (
            f", running {advice.active_hours_per_day:g} h/day"
            if advice.active_hours_per_day < 24
            else ""
        ),
    ]
    c = advice.choice
    if c is None:
        lines.append("recommended: none of the instance types meets the latency target")
    else:
        lines.append(
            f"recommended: {c.count} x {c.instance.name} ({c.instance.gpu or 'CPU only'}), "
            f"{describe_figures(c.figures, advice.model)}, "
            f"${c.monthly:,.2f}/month, ${c.per_request:.7f}/request "
            f"(${c.per_request * 1e6:,.2f} per million)"
        )
        if advice.mode == "sync":
            lines.append(
                f"autoscaling: --target-invocations {c.invocations_per_minute_target} "
                "(invocations per instance per minute at that utilisation)"
            )
        if advice.mode == "async":
            lines.append(
                "async scales to zero when idle: with --active-hours-per-day H the cost "
                "scales by H/24"
            )
        if advice.mode == "sync" and c.instance.gpu is None:
            lines.append(
                "real-time on a CPU instance: `stygig deploy sync` needs --allow-cpu "
                f"--instance-type {c.instance.name}; its guard quotes these same figures "
                f"for {advice.model} (docs/deploy.md, Sizing figures: one source)"
            )
    lines.append("")
    lines.append(
        f"{'instance':<16} {'count':>5} {'p50 ms':>7} {'p99 ms':>7} {'source':<9} "
        f"{'$/h':>7} {'$/month':>10} {'$/1M req':>10}  meets target"
    )
    lines.extend(_option_line(o) for o in advice.options)
    notes = {o.figures.source: o.instance.name for o in advice.options if ":" in o.figures.source}
    for how, first in notes.items():
        rows = [o.instance.name for o in advice.options if o.figures.source == how]
        lines.append(f"  {', '.join(rows) or first}: {how}")
    breaks = _break_even_lines(advice)
    if breaks:
        lines.append("")
        lines.extend(breaks)
    m = advice.matrix
    if m is not None:
        if m.guide_latency_ms:
            per_min = requests_per_minute(m.guide_latency_ms)
            lines.append(
                f"\nthe guide's figure: {m.guide_latency_ms:g} ms per request = "
                f"{per_min:.1f} requests/minute per worker"
                + (
                    f" (the guide says {m.guide_claimed_per_minute:g})"
                    if m.guide_claimed_per_minute
                    else ""
                )
            )
        prices = m.price_note or (f"{m.region} on-demand, {m.date}, copied by hand (assumption)")
        lines.append(
            f"prices: {prices}; sources: measured = benchmarks/bench_server.py on 2 vCPUs, "
            "2026-11-30 (the slower of two recorded VMs: src/stygig/data/instances.yaml), "
            "scaled = measured x vCPU/2, estimate = not measured (how: listed under the table)"
        )
    return "\n".join(lines)


def is_gpu_instance(instance_type: str) -> bool:
    """Whether a SageMaker instance type has a GPU (the ``ml.g*`` and ``ml.p*`` families)."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    return family[:1] in ("g", "p")
