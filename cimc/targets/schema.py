"""Chip targets as data: frozen dataclasses loaded from TOML and validated.

A target is one TOML file (``cimc/targets/specs/NAME.toml`` for the bundled profiles, or any path
for a user's chip). Loading checks every key and type against the dataclasses below: an unknown
key, a missing required key, a wrong type or a number outside its physical range (every number
has one) is reported in a :class:`cimc.errors.TargetError` that names the file and the dotted
key, e.g. ``pcm40.toml: crossbar.rows: expected an integer, got 'abc'``; a file's every error at
once, one per line.

Passes and the runtime read numbers from a :class:`Target`; no code branches on a target's name.
``Target.to_dict()`` gives a plain JSON-able dict (the artifact manifest embeds it) and
``Target.from_dict(d)`` rebuilds and re-validates it without reading any TOML file.

Every field carries its documentation in ``metadata["doc"]``; :func:`targets_markdown` renders the
side-by-side table and the field reference that ``docs/targets.md`` embeds
(regenerate with ``sync_targets_doc("docs/targets.md")``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cimc.errors import TargetError

DEVICE_KINDS = ("ideal", "pcm", "rram")
INPUT_ENCODINGS = ("exact", "pwm", "pulse_count", "bit_serial", "voltage")


def _doc(
    doc: str,
    *,
    unit: str = "",
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
) -> Any:
    """Field metadata: its documentation and range checks."""
    return {
        "doc": doc,
        "unit": unit,
        "choices": choices,
        "min": minimum,
        "positive": positive,
        "max": maximum,
    }


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------

# Every number has a physical range (a test checks each field has both bounds); an array's
# bounds hold for each of its elements. The coefficients of a curve of g (drift exponents,
# noise amplitudes) are dimensionless numbers of order 0.01 to 10 in the published fits.
_COEFFICIENT: dict[str, float] = {"minimum": -1e3, "maximum": 1e3}


@dataclass(frozen=True, kw_only=True)
class Piece:
    """One piece of a piecewise function of the normalised conductance g = G/G_max.

    Exactly one of ``poly``, ``log_linear`` and ``power`` is given; ``clip`` bounds this piece.
    """

    from_g: float = field(default=0.0, metadata=_doc(
        "Start of this piece's g interval (the first piece starts at 0).", minimum=0.0,
        maximum=1.0))
    poly: tuple[float, ...] = field(default=(), metadata=_doc(
        "Polynomial coefficients c0, c1, ...: sum c_i g^i.", **_COEFFICIENT))
    log_linear: tuple[float, ...] = field(default=(), metadata=_doc(
        "[a, b]: a ln(g) + b.", **_COEFFICIENT))
    power: tuple[float, ...] = field(default=(), metadata=_doc("[c, p]: c g^p.", **_COEFFICIENT))
    clip: tuple[float, ...] = field(default=(), metadata=_doc(
        "[lo, hi]: clip the piece's value to this range.", **_COEFFICIENT))


Curve = tuple[Piece, ...]


@dataclass(frozen=True, kw_only=True)
class CrossbarSpec:
    """Geometry of one crossbar array and how a signed weight is stored in it."""

    rows: int = field(metadata=_doc(
        "Rows (word lines) of one array: the input length of one MVM.", minimum=1,
        maximum=65536))
    cols: int = field(metadata=_doc(
        "Columns (bit lines) of one array, in array columns.", minimum=1, maximum=65536))
    cols_per_weight: int = field(default=1, metadata=_doc(
        "Array columns one signed weight occupies (2 when G+ and G- sit on adjacent columns; 1 "
        "when a unit cell holds all of a weight's devices).", minimum=1, maximum=16))
    devices_per_weight: int = field(metadata=_doc(
        "Devices storing one signed weight: 1 = ideal signed cell, 2 = differential pair "
        "(G+, G-), 4 = two devices per polarity.", minimum=1, maximum=64))
    levels: int = field(metadata=_doc(
        "Programmable conductance levels per polarity, zero included (a differential pair then "
        "stores the integers -(levels-1)..levels-1); 0 = continuous (analog program-and-verify).",
        minimum=0, maximum=65536))
    weight_bits: int = field(metadata=_doc(
        "Signed weight precision (sign included) the target represents; 0 = float weights. With "
        "a level-limited device and no bit slicing the grid is min(levels-1, 2^(bits-1)-1).",
        minimum=0, maximum=16))
    bit_slicing: bool = field(default=False, metadata=_doc(
        "Slice weights needing more levels than a device has over several device pairs (base "
        "`levels` digits, least significant first), recombined digitally."))


@dataclass(frozen=True, kw_only=True)
class ChipSpec:
    """How many crossbars a chip has, how they are grouped into cores, area and clock."""

    cores: int = field(metadata=_doc("Cores per chip.", minimum=1, maximum=65536))
    crossbars_per_core: int = field(metadata=_doc(
        "Crossbar arrays per core.", minimum=1, maximum=4096))
    core_area_mm2: float = field(metadata=_doc(
        "Area of one core.", unit="mm²", positive=True, maximum=1000.0))
    clock_mhz: float = field(metadata=_doc(
        "Clock of the digital periphery.", unit="MHz", positive=True, maximum=100000.0))
    pipeline_stages: int = field(default=1, metadata=_doc(
        "Stages of the chip's pipeline per step (used to schedule iterative workloads).",
        minimum=1, maximum=1024))


@dataclass(frozen=True, kw_only=True)
class Converters:
    """Input DACs and output ADCs."""

    dac_bits: int = field(metadata=_doc(
        "Input precision; 0 = exact (no DAC quantisation).", minimum=0, maximum=16))
    adc_bits: int = field(metadata=_doc(
        "Output precision; 0 = exact (no ADC clipping or quantisation).", minimum=0,
        maximum=16))
    input_encoding: str = field(metadata=_doc(
        "How an input value is applied to a row.", choices=INPUT_ENCODINGS))
    dac_percentile: float = field(default=99.99, metadata=_doc(
        "Percentile of |input| in the calibration data that sets the DAC full-scale range.",
        positive=True, maximum=100.0))
    adc_percentile: float = field(default=99.99, metadata=_doc(
        "Percentile of |column output| in the calibration data that sets the ADC range.",
        positive=True, maximum=100.0))


@dataclass(frozen=True, kw_only=True)
class Costs:
    """Latency and energy of each kind of work, for the report."""

    mvm_ns: float = field(metadata=_doc(
        "Latency of one MVM: one input vector through one crossbar, DAC to ADC (the bundled "
        "chips have one crossbar per core, so this is the papers' per-core-MVM figure).",
        unit="ns", positive=True, maximum=1e9))
    mvm_nj: float = field(metadata=_doc(
        "Energy of one such MVM.", unit="nJ", minimum=0.0, maximum=1e9))
    digital_ns_per_element: float = field(metadata=_doc(
        "Latency of a digital vector op per element (add, scale, activation).", unit="ns",
        minimum=0.0, maximum=1e6))
    digital_pj_per_element: float = field(metadata=_doc(
        "Energy of a digital vector op per element.", unit="pJ", minimum=0.0, maximum=1e9))
    link_bytes_per_ns: float = field(metadata=_doc(
        "Bandwidth of a core-to-core transfer on a chip.", unit="B/ns", positive=True,
        maximum=1e6))
    link_pj_per_byte: float = field(metadata=_doc(
        "Energy per byte moved between cores.", unit="pJ/B", minimum=0.0, maximum=1e6))
    link_latency_ns: float = field(default=0.0, metadata=_doc(
        "Fixed latency of one core-to-core transfer.", unit="ns", minimum=0.0, maximum=1e9))
    chip_link_bytes_per_ns: float = field(metadata=_doc(
        "Bandwidth of a chip-to-chip transfer.", unit="B/ns", positive=True, maximum=1e6))
    chip_link_pj_per_byte: float = field(metadata=_doc(
        "Energy per byte moved between chips.", unit="pJ/B", minimum=0.0, maximum=1e6))
    chip_link_latency_ns: float = field(default=0.0, metadata=_doc(
        "Fixed latency of one chip-to-chip transfer.", unit="ns", minimum=0.0, maximum=1e9))


@dataclass(frozen=True, kw_only=True)
class ProgrammingNoise:
    """G_prog = max(G_T + sigma(g) xi, 0) with sigma(g) = sum c_i g^i (in µS at fit_g_max_us)."""

    coeffs_us: tuple[float, ...] = field(metadata=_doc(
        "Polynomial sigma(g) = sum c_i g^i, g = G_T/G_max, in µS.", unit="µS", minimum=-1e4,
        maximum=1e4))
    fit_g_max_us: float = field(metadata=_doc(
        "G_max the coefficients were fitted at; sigma scales by G_max/fit_g_max_us.",
        unit="µS", positive=True, maximum=1e6))


@dataclass(frozen=True, kw_only=True)
class Drift:
    """G(t) = G_prog ((t + t0)/t0)^-nu, nu = |mean(g) + std(g) xi| drawn once per device."""

    t0_s: float = field(metadata=_doc(
        "Time of the first read after programming (drift reference).", unit="s",
        positive=True, maximum=1e9))
    nu_mean: Curve = field(metadata=_doc("Mean drift exponent as a piecewise function of g."))
    nu_std: Curve = field(metadata=_doc(
        "Spread (standard deviation) of the drift exponent, function of g."))


@dataclass(frozen=True, kw_only=True)
class ReadNoise:
    """Read noise redrawn at every read: 1/f (PCM) and additive (RRAM)."""

    q_s: Curve = field(default=(), metadata=_doc(
        "1/f amplitude Q_s(g): relative sigma = Q_s sqrt(ln((t + t_read)/(2 t_read))) of the "
        "drifted conductance; empty = no 1/f noise."))
    t_read_s: float = field(default=250e-9, metadata=_doc(
        "Read duration in the 1/f formula.", unit="s", positive=True, maximum=1.0))
    additive_rel: float = field(default=0.0, metadata=_doc(
        "Additive Gaussian read noise, sigma as a fraction of G_max.", minimum=0.0, maximum=1.0))


@dataclass(frozen=True, kw_only=True)
class Device:
    """The memory device: kind, conductance range and its statistical models."""

    kind: str = field(metadata=_doc("Device technology.", choices=DEVICE_KINDS))
    g_max_us: float = field(metadata=_doc(
        "Maximum conductance of one polarity (all its devices together); max|W| maps here.",
        unit="µS", positive=True, maximum=1e6))
    fit_devices: int = field(default=1, metadata=_doc(
        "Devices the noise fits describe as one unit (2: fitted on two devices of a polarity "
        "programmed together). Each polarity holds devices_per_weight/2/fit_devices units.",
        minimum=1, maximum=64))
    drift_compensation: bool = field(default=False, metadata=_doc(
        "Global drift compensation on by default in the runtime."))
    programming_noise: ProgrammingNoise | None = field(default=None, metadata=_doc(
        "Programming noise; absent = none."))
    drift: Drift | None = field(default=None, metadata=_doc("Conductance drift; absent = none."))
    read_noise: ReadNoise | None = field(default=None, metadata=_doc(
        "Read noise; absent = none."))


Scalar = float | int | str | bool


@dataclass(frozen=True, kw_only=True)
class Target:
    """A chip: every number the passes and the runtime need."""

    name: str = field(metadata=_doc("Profile name (`--target NAME`)."))
    description: str = field(metadata=_doc("One line saying what the profile models."))
    reference: str = field(default="", metadata=_doc("Publication(s) the numbers come from."))
    crossbar: CrossbarSpec = field(metadata=_doc("Crossbar geometry and weight storage."))
    chip: ChipSpec = field(metadata=_doc("Cores, crossbars, area and clock."))
    converters: Converters = field(metadata=_doc("DACs and ADCs."))
    costs: Costs = field(metadata=_doc("Latency and energy."))
    device: Device = field(metadata=_doc("Device kind and its models."))
    reported: tuple[tuple[str, Scalar], ...] = field(default=(), metadata=_doc(
        "Figures the publication reports, for comparison (not used by passes)."))

    # ---- derived numbers the passes and the runtime use ------------------------------------

    @property
    def is_ideal(self) -> bool:
        return self.device.kind == "ideal"

    @property
    def weight_rows(self) -> int:
        """Weight matrix rows one crossbar holds."""
        return self.crossbar.rows

    @property
    def weight_cols(self) -> int:
        """Signed weight columns (one slice each) one crossbar holds."""
        return self.crossbar.cols // self.crossbar.cols_per_weight

    @property
    def crossbars_per_chip(self) -> int:
        return self.chip.cores * self.chip.crossbars_per_core

    @property
    def devices_per_polarity(self) -> int:
        return max(self.crossbar.devices_per_weight // 2, 1)

    @property
    def units_per_polarity(self) -> int:
        """Independently modelled units per polarity (devices_per_polarity / fit_devices)."""
        return max(self.devices_per_polarity // self.device.fit_devices, 1)

    @property
    def max_level(self) -> int:
        """Largest |integer| a quantised weight takes (w ~ q * step); 0 = float weights."""
        return _max_level(self.crossbar)

    @property
    def slices(self) -> int:
        """Device pairs one weight is sliced over (1 without bit slicing)."""
        return _slices(self.crossbar)

    @property
    def slice_max_level(self) -> int:
        """Largest |digit| stored in one slice (max_level when not sliced)."""
        cb = self.crossbar
        return cb.levels - 1 if cb.bit_slicing else self.max_level

    @property
    def slice_base(self) -> int:
        """What one slice is worth relative to the slice below it: a device pair stores the
        digits -(levels-1)..levels-1, so weights are written in balanced base 2*levels - 1
        (1 when not sliced)."""
        return 2 * self.crossbar.levels - 1 if self.crossbar.bit_slicing else 1

    @property
    def reported_dict(self) -> dict[str, Scalar]:
        return dict(self.reported)

    # ---- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (None sections omitted); ``from_dict`` inverts it."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "target") -> Target:
        """Validate ``data`` and build a Target; errors name ``source`` and the dotted key."""
        return _build_target(data, source)


def _max_level(cb: CrossbarSpec) -> int:
    grid = 2 ** (cb.weight_bits - 1) - 1 if cb.weight_bits >= 2 else 0
    if cb.bit_slicing or cb.levels == 0:
        return grid
    return min(cb.levels - 1, grid) if grid else cb.levels - 1


def _slices(cb: CrossbarSpec) -> int:
    """Digits of balanced base ``2*levels - 1`` that hold every level up to max_level: n digits
    reach ``((2*levels - 1)^n - 1) / 2``."""
    if not cb.bit_slicing:
        return 1
    q, n, base = _max_level(cb), 1, 2 * cb.levels - 1
    while (base**n - 1) // 2 < q:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


class _Err:
    """Builds TargetError messages that name the source file and the dotted key, and collects
    them: a file's every error is reported at once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[str] = []

    def __call__(self, path: str, msg: str) -> TargetError:
        where = f"{self.source}: {path}: " if path else f"{self.source}: "
        return TargetError(where + msg)

    def add(self, path: str, msg: str) -> None:
        self.found.append(str(self(path, msg)))

    def note(self, error: TargetError) -> None:
        if not isinstance(error, _Noted):
            self.found.append(str(error))


class _Noted(TargetError):
    """A table or array with errors, each already added to the _Err that collects them."""


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, int):
        return f"{value!r} (an integer)"
    return f"{value!r} (a {type(value).__name__})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, path: str, err: _Err) -> Any:
    """Build dataclass ``cls`` from a table, checking keys, types and ranges; every error in the
    table is collected by ``err`` (then _Noted is raised)."""
    if not isinstance(data, dict):
        raise err(path, f"expected a table, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    before = len(err.found)
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            err.add(_join(path, key), f"unknown key{hint}; expected one of: " + ", ".join(fields))
    kwargs = {}
    failed = False
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in data:
            if f.default is MISSING:
                err.add(sub, f"missing required key ({f.metadata['doc']})")
            continue
        try:
            kwargs[name] = _convert(_hints(cls)[name], data[name], sub, err)
            _check_range(f, kwargs[name], sub, err)
        except TargetError as e:
            err.note(e)
            failed = True
    if failed or len(err.found) > before:
        raise _Noted()
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str, err: _Err) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        if len(options) == 1:
            return _convert(options[0], value, path, err)
        return _convert_scalar_union(value, path, err)
    if origin is tuple:
        return _convert_tuple(args, value, path, err)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, err)
    return _convert_scalar(tp, value, path, err)


def _convert_scalar(tp: Any, value: Any, path: str, err: _Err) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise err(path, f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise err(path, f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise err(path, f"expected a finite number, got {value!r}")
            return float(value)
        raise err(path, f"expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise err(path, f"expected a string, got {_describe(value)}")
    raise TypeError(f"schema type {tp!r} not supported")  # pragma: no cover - schema bug


def _convert_scalar_union(value: Any, path: str, err: _Err) -> Any:
    if isinstance(value, bool | int | float | str) and not (
            isinstance(value, float) and not math.isfinite(value)):
        return value
    raise err(path, f"expected a number, string or boolean, got {_describe(value)}")


def _convert_tuple(args: tuple, value: Any, path: str, err: _Err) -> tuple:
    if typing.get_origin(args[0]) is tuple:  # tuple[tuple[str, Scalar], ...]: a table
        if not isinstance(value, dict):
            raise err(path, f"expected a table, got {_describe(value)}")
        scalar_types = typing.get_args(args[0])[1]
        return tuple((k, _convert(scalar_types, v, _join(path, k), err))
                     for k, v in value.items())
    if not isinstance(value, list | tuple):
        raise err(path, f"expected an array, got {_describe(value)}")
    out, failed = [], False
    for i, v in enumerate(value):
        try:
            out.append(_convert(args[0], v, f"{path}[{i}]", err))
        except TargetError as e:
            err.note(e)
            failed = True
    if failed:
        raise _Noted()
    return tuple(out)


def _check_range(f: dataclasses.Field, value: Any, path: str, err: _Err) -> None:
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise err(path, f"expected one of {', '.join(meta['choices'])}; got {value!r}")
    items = [(f"{path}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, tuple) else [
        (path, value)]
    for where, v in items:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        if meta.get("positive") and not v > 0:
            err.add(where, f"must be > 0, got {v!r}")
        elif meta.get("min") is not None and v < meta["min"]:
            err.add(where, f"must be >= {meta['min']:g}, got {v!r}")
        elif meta.get("max") is not None and v > meta["max"]:
            err.add(where, f"must be <= {meta['max']:g}, got {v!r}")


def _curve_error(curve: Curve, path: str) -> tuple[str, str] | None:
    """The first thing wrong with a curve's pieces, as (dotted key, message)."""
    if not curve:
        return path, "expected at least one piece"
    prev = -1.0
    for i, piece in enumerate(curve):
        where = f"{path}[{i}]"
        forms = [n for n in ("poly", "log_linear", "power") if getattr(piece, n)]
        if len(forms) != 1:
            return where, "give exactly one of poly, log_linear, power" + (
                f" (got {', '.join(forms)})" if forms else "")
        if forms[0] != "poly" and len(getattr(piece, forms[0])) != 2:
            return f"{where}.{forms[0]}", "expected two numbers"
        if piece.clip and (len(piece.clip) != 2 or piece.clip[0] > piece.clip[1]):
            return f"{where}.clip", "expected [lo, hi] with lo <= hi"
        if i == 0 and piece.from_g != 0.0:
            return f"{where}.from_g", "the first piece must start at 0"
        if piece.from_g <= prev:
            return f"{where}.from_g", "pieces must be in increasing order of from_g"
        prev = piece.from_g
    return None


def _check_target(t: Target, err: _Err) -> None:
    """Cross-field rules that single-field checks cannot express."""
    cb, dev = t.crossbar, t.device
    if not t.name:
        err.add("name", "must not be empty")
    if cb.cols % cb.cols_per_weight:
        err.add("crossbar.cols_per_weight",
                f"{cb.cols_per_weight} does not divide crossbar.cols = {cb.cols}")
    if dev.kind == "ideal":
        if dev.programming_noise or dev.drift or dev.read_noise:
            err.add("device", "an ideal device has no programming_noise, drift or read_noise; "
                    "remove them or use kind = \"pcm\" or \"rram\"")
    elif cb.devices_per_weight % 2:
        err.add("crossbar.devices_per_weight",
                f"a {dev.kind} weight needs an even number of devices (G+ and G-), got "
                f"{cb.devices_per_weight}")
    if t.devices_per_polarity % dev.fit_devices:
        err.add("device.fit_devices",
                f"{dev.fit_devices} does not divide the {t.devices_per_polarity} device(s) "
                "per polarity")
    if cb.levels == 1:
        err.add("crossbar.levels", "must be 0 (continuous) or at least 2")
    if cb.weight_bits == 1:
        err.add("crossbar.weight_bits", "must be 0 (float) or at least 2 (sign included)")
    if cb.bit_slicing and (cb.levels < 2 or cb.weight_bits < 2):
        err.add("crossbar.bit_slicing", "needs levels >= 2 and weight_bits >= 2")
    curves = {}
    if dev.drift is not None:
        curves["device.drift.nu_mean"] = dev.drift.nu_mean
        curves["device.drift.nu_std"] = dev.drift.nu_std
    if dev.read_noise is not None and dev.read_noise.q_s:
        curves["device.read_noise.q_s"] = dev.read_noise.q_s
    for path, curve in curves.items():
        if (problem := _curve_error(curve, path)) is not None:
            err.add(*problem)
    if dev.programming_noise is not None and not dev.programming_noise.coeffs_us:
        err.add("device.programming_noise.coeffs_us", "expected at least one coefficient")


def _build_target(data: Any, source: str) -> Target:
    err = _Err(source)
    try:
        target = _build(Target, data, "", err)
    except TargetError as e:
        err.note(e)
    else:
        _check_target(target, err)
    if err.found:
        raise TargetError("\n".join(err.found))
    return target


# --------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if f.name == "reported":
                out[f.name] = dict(value)
            else:
                out[f.name] = _to_plain(value)
        return out
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _specs_dir() -> Path:
    return Path(str(resources.files("cimc.targets") / "specs"))


def list_targets() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(p.stem for p in _specs_dir().glob("*.toml"))


def load_target(name_or_path: str | Path | Target) -> Target:
    """A bundled profile by name (``"pcm40"``) or a user's TOML file by path."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text \
        or "\\" in text
    if not looks_like_path and text in list_targets():
        return _load_bundled(text)
    path = Path(text)
    if path.is_file():
        return load_target_file(path)
    if looks_like_path:
        raise TargetError(f"target file '{text}' not found; pass an existing .toml file or one "
                          f"of the bundled profiles: {', '.join(list_targets())}")
    raise TargetError(f"unknown target '{text}': not a bundled profile "
                      f"({', '.join(list_targets())}) and no file of that name; pass a profile "
                      "name or a path to a .toml file (see docs/targets.md)")


@functools.cache
def _load_bundled(name: str) -> Target:
    return load_target_file(_specs_dir() / f"{name}.toml")


def load_target_file(path: str | Path) -> Target:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read target file '{path}': {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path.name}: invalid TOML: {exc}; fix the syntax") from None
    return _build_target(data, path.name)


# --------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------

REGENERATE = ("python -c \"from cimc.targets.schema import sync_targets_doc; "
              "sync_targets_doc('docs/targets.md')\"")
DOC_BEGIN = "<!-- BEGIN GENERATED by cimc.targets.schema.sync_targets_doc -->"
DOC_END = "<!-- END GENERATED -->"


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt_poly(coeffs: tuple[float, ...]) -> str:
    terms = []
    for i, c in enumerate(coeffs):
        mono = "" if i == 0 else ("·g" if i == 1 else f"·g^{i}")
        terms.append(f"{_fmt_num(abs(c))}{mono}" if terms else f"{_fmt_num(c)}{mono}")
        if len(terms) > 1:
            terms[-1] = ("- " if c < 0 else "+ ") + terms[-1]
    return " ".join(terms)


def _fmt_piece(p: Piece) -> str:
    if p.poly:
        body = _fmt_poly(p.poly)
    elif p.log_linear:
        a, b = p.log_linear
        body = f"{_fmt_num(a)}·ln g {'-' if b < 0 else '+'} {_fmt_num(abs(b))}"
    else:
        c, e = p.power
        body = f"{_fmt_num(c)}·g^{_fmt_num(e)}"
    if p.clip:
        body = f"clip({body}, {_fmt_num(p.clip[0])}, {_fmt_num(p.clip[1])})"
    return body


def format_curve(curve: Curve) -> str:
    """A readable formula, e.g. ``clip(-0.0155·ln g + 0.0244, 0.049, 0.1)``."""
    if len(curve) == 1:
        return _fmt_piece(curve[0])
    parts = []
    for i, p in enumerate(curve):
        hi = curve[i + 1].from_g if i + 1 < len(curve) else None
        rng = f"g < {_fmt_num(hi)}" if i == 0 else (
            f"g ≥ {_fmt_num(p.from_g)}" if hi is None else
            f"{_fmt_num(p.from_g)} ≤ g < {_fmt_num(hi)}")
        parts.append(f"{_fmt_piece(p)} ({rng})")
    return "; ".join(parts)


def _fmt_value(value: Any, hint: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _fmt_num(value)
    if isinstance(value, tuple):
        if value and isinstance(value[0], Piece):
            return format_curve(value)
        if not value:
            return "—"
        return _fmt_poly(value) if hint == "coeffs" else ", ".join(_fmt_num(v) for v in value)
    return str(value)


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) for every leaf field, descending into sections."""
    out = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        section = tp if dataclasses.is_dataclass(tp) else (
            options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None)
        if section is not None:
            out.extend(_leaf_fields(section, _join(prefix, f.name)))
        else:
            out.append((_join(prefix, f.name), f, tp))
    return out


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj


def _type_name(tp: Any) -> str:
    if tp is Curve or typing.get_args(tp)[:1] == (Piece,):
        return "curve"
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        return "table" if typing.get_origin(inner) is tuple else f"array of {_type_name(inner)}"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(tp, str(tp))


def targets_markdown(targets: list[Target] | None = None) -> str:
    """The generated part of docs/targets.md: profiles side by side, then the field reference."""
    targets = targets if targets is not None else [load_target(n) for n in list_targets()]
    skip = ("name", "description", "reference", "reported")
    leaves = [x for x in _leaf_fields(Target) if x[0] not in skip]
    lines = [f"- `{t.name}`: {t.description}. Source: {t.reference or '—'}." for t in targets]
    lines += ["", "| key | " + " | ".join(f"`{t.name}`" for t in targets) + " |",
              "|---|" + "---|" * len(targets)]
    for key, f, _ in leaves:
        unit = f" ({f.metadata['unit']})" if f.metadata.get("unit") else ""
        hint = "coeffs" if key.endswith("coeffs_us") else None
        cells = []
        for t in targets:
            value = _get(t, key)
            cells.append("—" if value is None else _cell(_fmt_value(value, hint)))
        lines.append(f"| `{key}`{unit} | " + " | ".join(cells) + " |")
    lines += ["", "Derived numbers (computed from the fields above):", "",
              "| derived | " + " | ".join(f"`{t.name}`" for t in targets) + " |",
              "|---|" + "---|" * len(targets)]
    for prop, doc in (("weight_rows", "weight rows per crossbar"),
                      ("weight_cols", "signed weight columns per crossbar"),
                      ("crossbars_per_chip", "crossbars per chip"),
                      ("max_level", "largest integer level of a weight (0 = float)"),
                      ("slices", "device pairs per weight (bit slices)"),
                      ("units_per_polarity", "modelled units per polarity")):
        lines.append(f"| {doc} | " + " | ".join(str(getattr(t, prop)) for t in targets) + " |")
    lines += ["", "Figures the publications report (not used by the compiler):", ""]
    for t in targets:
        if t.reported:
            items = "; ".join(f"{k} = {_fmt_value(v, None)}" for k, v in t.reported)
            lines.append(f"- `{t.name}`: {items}")
    lines += ["", "### Field reference", "", "| key | type | meaning |", "|---|---|---|"]
    for key, f, tp in _leaf_fields(Target):
        doc = f.metadata["doc"]
        if f.metadata.get("choices"):
            doc += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        if f.metadata.get("max") is not None:
            low = "> 0" if f.metadata.get("positive") else f"≥ {_fmt_num(f.metadata['min'])}"
            doc += f" Range: {low}, ≤ {_fmt_num(f.metadata['max'])}."
        if f.default is MISSING:
            doc += " Required."
        elif f.default not in (None, (), ""):
            doc += f" Default: `{_fmt_value(f.default, None)}`."
        unit = f" ({f.metadata['unit']})" if f.metadata.get("unit") else ""
        lines.append(f"| `{key}` | {_type_name(tp)}{unit} | {_cell(doc)} |")
    piece = [f"`{f.name}`: {f.metadata['doc'].rstrip('.')}" for f in dataclasses.fields(Piece)]
    lines += ["", "A *curve* is an array of pieces, each an inline table with "
              + "; ".join(piece) + ". Exactly one of `poly`, `log_linear`, `power` is given.",
              ""]
    return "\n".join(lines)


def render_targets_doc(text: str) -> str:
    """``text`` with the region between the generated markers replaced by targets_markdown()."""
    start, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if start < 0 or end < start:
        raise TargetError(f"the targets doc lacks the markers {DOC_BEGIN!r} ... {DOC_END!r}")
    return text[: start + len(DOC_BEGIN)] + "\n" + targets_markdown() + "\n" + text[end:]


def sync_targets_doc(path: str | Path) -> bool:
    """Regenerate the table in ``path``; True when the file changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = render_targets_doc(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old
