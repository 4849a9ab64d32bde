"""Pass "quantize": crossbar weights to conductance levels, DAC/ADC ranges from calibration data.

Weights. Each tile's float weights become signed integer levels, per column:
``scale[c] = r * max|W[:, c]| / L`` and ``levels = clip(rint(W / scale), -L, L)`` where ``L`` is
the target's ``max_level`` (its levels per device pair, or the grid its weight bits allow; with
bit slicing the full integer, which the runtime splits into base-``levels`` digits over
``slices`` device pairs). With ``weight_scale=max``, ``r = 1``: the largest weight of every
column lands on the top level. With ``weight_scale=mse`` (the default), ``r`` in [0.5, 1] is
chosen per column to minimise the squared weight error, clipping a few outliers to the top level
so the bulk of the weights gets finer steps (on the MNIST example with NeuRRAM's 4-bit weights
this is worth about a point of accuracy; with 8-bit weights it changes little). A column of zeros
keeps scale 1. Targets with continuous conductances (``max_level == 0``, e.g. ``ideal``) keep the
exact float weights.

Converters. When the target has DACs and/or ADCs (``dac_bits``/``adc_bits`` > 0), the pass runs
the module (the same numpy semantics as the interpreter) on calibration inputs and records, at
every tile, ``|x|`` of its input and ``|y|`` of its (float, pre-ADC) output. The DAC range of a tile
is the ``dac_percentile`` percentile of ``|x|`` and its ADC range the ``adc_percentile`` percentile
of ``|y|`` (defaults from the target's ``converters`` section, e.g. 99.99): values beyond are
clipped, which trades rare outliers for resolution. Tiles that read the same input value get the
same DAC range. Percentiles are taken over a seeded random subsample of at most
``SAMPLES_PER_BATCH`` values per tensor and batch (all values for smaller tensors), so memory stays
bounded on large models; a range of 0 (an input that was always zero) becomes the tensor's max,
or 1.0.

Calibration inputs come from ``ctx.calib`` (``--calib FILE.npz``: one array per model input,
batch first, any number of samples, at most ``calib_samples`` of them used). They run
``calib_batch`` samples at a time when every op follows the batch size (reshapes that spell out
the compiled batch are adjusted, every result's shape is checked), else one compiled batch at a
time. Without calibration data the pass uses ONE batch of seeded standard-normal inputs of the
model's input shapes (``ctx.seed``) and says so in a warning and in
``ctx.quantization.calibration``: real data usually calibrates better.

The result has exact noise-free semantics in the interpreter (``cim.xbar_mvm``: DAC quantise ->
``levels * scale`` -> ADC clip/quantise), so it can be compared with the IR before this pass:
equal for the ideal target, within quantisation error otherwise.

Stage: cim (tiled) -> cim (quantised). Test: tests/passes/test_quantize.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.core import Block, Func, Module, Op, Value
from cimc.ir.interpreter import run_block
from cimc.ops import registry
from cimc.passes.base import Pass, PassContext
from cimc.passes.tile import Tile

SAMPLES_PER_BATCH = 1 << 15


# Clip ratios tried by the "mse" weight scaling: column scale = ratio * max|W| / max_level.
CLIP_RATIOS = np.linspace(0.5, 1.0, 21, dtype=np.float32)
WEIGHT_SCALINGS = ("mse", "max")


def check_weight_scale(method: str) -> None:
    if method not in WEIGHT_SCALINGS:
        raise CimcError(f"quantize: weight_scale={method!r}; expected one of "
                        f"{', '.join(WEIGHT_SCALINGS)}")


def quantize_weights(
    w: np.ndarray, max_level: int, method: str = "mse"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column symmetric quantisation: ``(levels, scale)`` with ``w ~ levels * scale``.

    ``method="max"``: ``scale = max|W[:, c]| / max_level``, the largest weight on the top level.
    ``method="mse"``: ``scale = r * max|W[:, c]| / max_level`` with the ratio ``r`` of
    :data:`CLIP_RATIOS` (0.5 .. 1, ``r = 1`` being "max") that minimises the column's squared
    weight error: the few largest weights are clipped to the top level so the many small ones
    get finer steps (worth about a point of accuracy with 4-bit weights).
    ``max_level == 0``: float weights, unit scale (continuous conductances)."""
    w = np.asarray(w, dtype=np.float32)
    if max_level <= 0:
        return w.copy(), np.ones(w.shape[1], dtype=np.float32)
    check_weight_scale(method)
    peak = np.abs(w).max(axis=0) if w.shape[0] else np.zeros(w.shape[1], np.float32)
    ratio = _best_clip_ratio(w, peak, max_level) if method == "mse" else np.float32(1.0)
    scale = np.where(peak > 0, peak * ratio / np.float32(max_level), np.float32(1.0))
    scale = scale.astype(np.float32)
    levels = np.clip(np.rint(w / scale[None, :]), -max_level, max_level)
    return levels.astype(level_dtype(max_level)), scale


def _best_clip_ratio(w: np.ndarray, peak: np.ndarray, max_level: int) -> np.ndarray:
    """Per column, the ratio of CLIP_RATIOS with the least squared quantisation error."""
    safe = np.where(peak > 0, peak, np.float32(1.0)).astype(np.float32)
    best_err = np.full(w.shape[1], np.inf, dtype=np.float32)
    best = np.ones(w.shape[1], dtype=np.float32)
    for r in CLIP_RATIOS[::-1]:  # from 1 down, so ties keep the larger ratio
        step = safe * (r / np.float32(max_level))
        err = np.clip(np.rint(w / step), -max_level, max_level)
        err *= step
        err -= w
        np.square(err, out=err)
        total = err.sum(axis=0)
        better = total < best_err
        best_err = np.where(better, total, best_err)
        best = np.where(better, r, best)
    return best


def level_dtype(max_level: int) -> np.dtype:
    if max_level <= 127:
        return np.dtype(np.int8)
    if max_level <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


# ----------------------------------------------------------------------------- input signs

# Ops whose results are >= 0 whatever their inputs (booleans count as 0 and 1).
_NONNEG_OPS = {"nn.relu", "nn.sigmoid", "nn.softmax", "nn.hard_sigmoid", "nn.exp", "nn.sqrt",
               "nn.equal", "nn.less", "nn.less_equal", "nn.greater", "nn.greater_equal",
               "nn.not", "nn.and", "nn.or", "nn.xor"}
# Ops whose results are >= 0 when all their (non-constant) inputs are: they only move, pick,
# average or take maxima of values (zero padding adds zeros).
_SIGN_KEEPING_OPS = {
    "nn.slice", "cim.im2col", "cim.transfer", "nn.reshape", "nn.transpose", "nn.max_pool",
    "nn.avg_pool", "nn.global_avg_pool", "nn.global_max_pool", "nn.concat", "nn.split",
    "nn.identity", "nn.gather", "nn.reduce_mean", "nn.reduce_sum", "nn.add", "nn.mul",
    "nn.expand", "nn.tile", "nn.reduce_max", "nn.reduce_min", "nn.max", "nn.min", "nn.reciprocal",
    "nn.where",
}


def _is_nonneg_const(v: Value) -> bool:
    op = v.op
    return op is not None and op.name == "nn.constant" and bool(np.all(op.attrs["value"] >= 0))


def nonnegative_values(func: Func) -> set[Value]:
    """Values that are >= 0 for every input, by construction (relu outputs and what is moved,
    pooled or padded from them). Tiles reading such a value use an unsigned DAC."""
    nonneg: set[Value] = set()
    for op in func.body.ops:
        ok = False
        if op.name in _NONNEG_OPS:
            ok = True
        elif op.name == "nn.clip":
            ok = float(op.attrs.get("min", -np.inf)) >= 0
        elif op.name == "nn.pad":
            ok = op.operands[0] in nonneg and float(op.attrs.get("value", 0.0)) >= 0
        elif op.name == "nn.resize":
            ok = op.operands[0] in nonneg and op.attrs.get("mode") != "cubic"
        elif op.name in _SIGN_KEEPING_OPS and op.operands:
            ok = all(v in nonneg or _is_nonneg_const(v) for v in op.operands)
        if ok:
            nonneg.update(op.results)
    return nonneg


# ----------------------------------------------------------------------------- calibration


@dataclass
class _Stats:
    """Seeded subsample of |values| and the running max, per tensor."""

    rng: np.random.Generator
    samples: dict[Any, list[np.ndarray]] = field(default_factory=dict)
    peak: dict[Any, float] = field(default_factory=dict)

    def add(self, key: Any, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float32)
        if value.size == 0:
            return
        peak = max(float(value.max()), -float(value.min()))
        self.peak[key] = max(self.peak.get(key, 0.0), peak)
        if value.size > SAMPLES_PER_BATCH:
            picked = np.take(value, self.rng.integers(0, value.size, SAMPLES_PER_BATCH))
        else:
            picked = value.reshape(-1)
        self.samples.setdefault(key, []).append(np.abs(picked))

    def range(self, key: Any, percentile: float) -> float:
        if key not in self.samples:
            return 1.0
        r = float(np.percentile(np.concatenate(self.samples[key]), percentile))
        if not r > 0:
            r = self.peak.get(key, 0.0)
        return r if r > 0 and math.isfinite(r) else 1.0


def _region_runner(region: Block, env: dict[Value, np.ndarray]) -> Callable[[list], list]:
    def runner(xs: list) -> list:
        return run_block(region, xs, env)

    return runner


class BatchMismatch(Exception):
    """A value's shape does not follow the calibration batch: run at the compiled batch."""


def _batched_attrs(op: Op, attrs: dict[str, Any], batch: int, compiled: int) -> dict[str, Any]:
    """Attributes that spell out the compiled batch size, rewritten for ``batch``."""
    key = {"nn.reshape": "shape", "nn.resize": "sizes"}.get(op.name)
    if key is None or not op.operands or op.operands[0].type.rank == 0:
        return attrs
    val = attrs.get(key)
    if isinstance(val, list) and val and val[0] == compiled == op.operands[0].type.shape[0]:
        return {**attrs, key: [batch, *val[1:]]}
    return attrs


def evaluate_at_batch(
    op: Op, inputs: list[np.ndarray], env: dict[Value, np.ndarray], batch: int, compiled: int
) -> list[np.ndarray]:
    """One op with the interpreter's semantics (results cast to their IR dtype), run on a batch
    of ``batch`` samples when the module was compiled for ``compiled``."""
    opdef = registry.lookup(op.name)
    attrs = opdef.with_defaults(op.attrs)
    if batch != compiled:
        attrs = _batched_attrs(op, attrs, batch, compiled)
    if op.regions:
        runners = [_region_runner(r, env) for r in op.regions]
        out = opdef.evaluate(attrs, *inputs, regions=runners)
    else:
        out = opdef.evaluate(attrs, *inputs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    results = []
    for a, v in zip(outs, op.results):
        a = np.asarray(a).astype(v.type.np_dtype, copy=False)
        if batch != compiled:
            shape = v.type.shape
            want = (batch, *shape[1:]) if shape and shape[0] == compiled else shape
            if a.shape != want:
                raise BatchMismatch(op.name)
        results.append(a)
    return results


def _observe(
    func: Func, args: list[np.ndarray], tiles: set[Op], stats: _Stats, compiled: int
) -> None:
    """Run ``func`` on ``args``, feeding every tile's input and output to ``stats``."""
    batch = args[0].shape[0] if args and args[0].ndim else compiled
    last: dict[Value, int] = {}
    for i, op in enumerate(func.body.ops):
        for inner in op.walk():
            for v in inner.operands:
                last[v] = i
    env: dict[Value, np.ndarray] = dict(zip(func.args, args))
    seen_inputs: set[Value] = set()
    for i, op in enumerate(func.body.ops):
        if op.name == "return":
            break
        inputs = [env[v] for v in op.operands]
        try:
            outs = evaluate_at_batch(op, inputs, env, batch, compiled)
        except (CimcError, BatchMismatch):
            raise
        except Exception as e:
            if batch != compiled:
                raise BatchMismatch(op.name) from e
            raise CimcError(f"quantize: calibration run failed at {op.name}: {e}") from e
        if op in tiles:
            x = op.operands[0]
            if x not in seen_inputs:
                stats.add(x, inputs[0])
                seen_inputs.add(x)
            stats.add(op, outs[0])
        env.update(zip(op.results, outs))
        for v in op.operands:
            if last.get(v) == i:
                env.pop(v, None)


@dataclass
class Calibration:
    """Calibration inputs: one array per function argument (``samples`` along the first axis, a
    multiple of the compiled batch ``batch``) and a sentence saying where they came from."""

    arrays: list[np.ndarray]
    batch: int
    samples: int
    description: str

    def batches(self, size: int) -> list[list[np.ndarray]]:
        return [[a[k:k + size] for a in self.arrays] for k in range(0, self.samples, size)]


def calibration_inputs(
    func: Func, calib: Mapping[str, np.ndarray] | None, max_samples: int, seed: int,
    who: str = "quantize",
) -> Calibration:
    """The calibration inputs for ``func``: ``calib`` checked against the arguments, or the
    documented default (one seeded standard-normal batch). Errors name the pass ``who``."""
    names, types = func.input_names, [a.type for a in func.args]
    batch = types[0].shape[0] if types and types[0].rank else 1
    if calib is None:
        rng = np.random.default_rng(seed)
        arrays = []
        for t in types:
            if t.dtype.startswith("f"):
                arrays.append(rng.standard_normal(t.shape).astype(t.np_dtype))
            else:
                arrays.append(np.zeros(t.shape, dtype=t.np_dtype))
        return Calibration(arrays, batch, batch, (
            f"default: one batch of seeded (seed {seed}) standard-normal inputs of the model's "
            "input shapes; pass calibration data (--calib FILE.npz) for ranges that fit real inputs"
        ))
    missing = [n for n in names if n not in calib]
    if missing:
        raise CimcError(
            f"{who}: calibration data lacks input(s) {', '.join(missing)}; it has "
            f"{', '.join(sorted(calib)) or 'nothing'}. Give one array per model input "
            f"({', '.join(names)}), batch first"
        )
    counts = []
    arrays = []
    for name, t in zip(names, types):
        a = np.asarray(calib[name])
        if t.rank == 0 or a.ndim != t.rank or tuple(a.shape[1:]) != t.shape[1:]:
            raise CimcError(
                f"{who}: calibration array {name!r} has shape {list(a.shape)}; expected "
                f"[N, {', '.join(map(str, t.shape[1:]))}] (any N, the model takes {list(t.shape)})"
            )
        if t.shape[0] != batch or a.shape[0] < batch:
            raise CimcError(
                f"{who}: calibration array {name!r} has {a.shape[0]} sample(s); the model's "
                f"batch is {t.shape[0]}, so give at least that many"
            )
        counts.append(a.shape[0] // batch)
        arrays.append(a.astype(t.np_dtype, copy=False))
    n = min(min(counts), max(1, math.ceil(max_samples / max(batch, 1))))
    samples = n * batch
    return Calibration([a[:samples] for a in arrays], batch, samples,
                       f"calibration data: {samples} sample(s)")


# ----------------------------------------------------------------------------- the pass


@dataclass(frozen=True)
class _Settings:
    max_level: int
    dac_bits: int
    adc_bits: int
    dac_percentile: float
    adc_percentile: float
    slices: int
    weight_scale: str


@dataclass(frozen=True)
class QuantizeSummary:
    """What the quantize pass did: the level grid and converters, how the converters were
    calibrated, and the largest weight error it made (relative to a tile's max |W|)."""

    max_level: int
    dac_bits: int
    adc_bits: int
    slices: int
    tiles: int
    calibration: str
    max_weight_error: float
    unsigned_dac_tiles: int


@dataclass
class Quantize(Pass):
    """Map tile weights to the target's conductance levels; set DAC/ADC ranges from calibration.

    ``weight_scale``: ``mse`` (default; per-column clip ratio with the least squared weight error)
    or ``max`` (max|W| of each column on the top level). Options override the target
    (``-1``/``0``: the target's value): ``max_level`` (0 = float weights), ``dac_bits``,
    ``adc_bits``, ``dac_percentile``, ``adc_percentile``;
    ``calib_samples`` caps the calibration samples used, ``calib_batch`` how many run at once.
    Calibration data: ``ctx.calib``, else one
    seeded standard-normal batch (with a warning). Writes ``ctx.quantization`` (a
    :class:`QuantizeSummary`).

    Stage: cim (tiled) -> cim (quantised). Test: tests/passes/test_quantize.py.
    """

    name = "quantize"
    requires = (Tile,)
    max_level: int = -1
    dac_bits: int = -1
    adc_bits: int = -1
    dac_percentile: float = 0.0
    adc_percentile: float = 0.0
    calib_samples: int = 64
    calib_batch: int = 16
    weight_scale: str = "mse"

    def settings(self, target: Any) -> _Settings:
        if target is None and min(self.max_level, self.dac_bits, self.adc_bits) < 0:
            raise CimcError(
                "pass 'quantize' needs a target (compile with --target, or `cimc opt --target "
                "NAME`) or explicit options, e.g. quantize{max_level=7,dac_bits=8,adc_bits=8}"
            )
        conv = target.converters if target is not None else None

        def percentile(own: float, key: str) -> float:
            return float(own) if own > 0 else float(getattr(conv, key)) if conv else 99.99

        return _Settings(
            max_level=self.max_level if self.max_level >= 0 else int(target.max_level),
            dac_bits=self.dac_bits if self.dac_bits >= 0 else int(conv.dac_bits),
            adc_bits=self.adc_bits if self.adc_bits >= 0 else int(conv.adc_bits),
            dac_percentile=percentile(self.dac_percentile, "dac_percentile"),
            adc_percentile=percentile(self.adc_percentile, "adc_percentile"),
            slices=int(target.slices) if target is not None else 1,
            weight_scale=self.weight_scale,
        )

    def run(self, module: Module, ctx: PassContext) -> None:
        s = self.settings(ctx.target)
        for name, p in (("dac_percentile", s.dac_percentile), ("adc_percentile", s.adc_percentile)):
            if not 0 < p <= 100:
                raise CimcError(f"quantize: {name}={p}; expected a percentile in (0, 100]")
        check_weight_scale(s.weight_scale)  # on every target, with or without tiles
        func = module.main
        tiles = [op for op in func.walk() if op.name == "cim.xbar_mvm"]
        ranges: dict[Op, tuple[float, float]] = {}
        if tiles and (s.dac_bits > 0 or s.adc_bits > 0):
            ranges, calibration = self._calibrate(func, tiles, s, ctx)
        else:
            calibration = "none needed (no DAC/ADC quantisation)"
        nonneg = nonnegative_values(func)
        errors = []
        for op in tiles:
            errors.append(self._quantize_tile(op, s))
            if s.dac_bits > 0 and op.operands[0] in nonneg:
                op.attrs["dac_signed"] = False
            else:
                op.attrs.pop("dac_signed", None)
            if op in ranges:
                dac, adc = ranges[op]
                op.attrs["dac_bits"] = s.dac_bits
                op.attrs["dac_range"] = dac if s.dac_bits else 0.0
                op.attrs["adc_bits"] = s.adc_bits
                op.attrs["adc_range"] = adc if s.adc_bits else 0.0
        ctx.quantization = QuantizeSummary(
            max_level=s.max_level, dac_bits=s.dac_bits, adc_bits=s.adc_bits, slices=s.slices,
            tiles=len(tiles), calibration=calibration,
            max_weight_error=max(errors, default=0.0),
            unsigned_dac_tiles=sum(1 for op in tiles if op.attrs.get("dac_signed") is False))

    @staticmethod
    def _quantize_tile(op: Op, s: _Settings) -> float:
        """Quantise one tile's weights in place; returns the largest |weight error| / max|W|."""
        levels = op.attrs["levels"]
        if s.max_level <= 0 or levels.dtype.kind != "f":
            return 0.0
        w = levels.astype(np.float32) * op.attrs["scale"][None, :]
        new, scale = quantize_weights(w, s.max_level, s.weight_scale)
        op.attrs["levels"], op.attrs["scale"] = new, scale
        if s.slices > 1:
            op.attrs["slices"] = s.slices
        peak = float(np.abs(w).max()) if w.size else 0.0
        err = float(np.abs(new.astype(np.float32) * scale[None, :] - w).max()) if w.size else 0.0
        return err / peak if peak > 0 else 0.0

    def _calibrate(
        self, func: Func, tiles: list[Op], s: _Settings, ctx: PassContext
    ) -> tuple[dict[Op, tuple[float, float]], str]:
        cal = calibration_inputs(func, ctx.calib, self.calib_samples, ctx.seed)
        if ctx.calib is None:
            warnings.warn(f"quantize: no calibration data; {cal.description}", stacklevel=2)
        top = {op for op in tiles if op.parent is func.body}
        stats = self._collect(func, cal, top, ctx.seed)
        ranges = {}
        for op in tiles:
            if op in top:
                dac = stats.range(op.operands[0], s.dac_percentile)
                adc = stats.range(op, s.adc_percentile)
            else:  # inside a region: not observed; the widest ranges seen elsewhere
                dac = max((stats.range(t.operands[0], 100.0) for t in top), default=1.0)
                adc = max((stats.range(t, 100.0) for t in top), default=1.0)
            ranges[op] = (dac, adc)
        return ranges, cal.description

    def _collect(self, func: Func, cal: Calibration, top: set[Op], seed: int) -> _Stats:
        """Run the calibration samples, ``calib_batch`` at a time when the module's ops follow
        the batch size (at the compiled batch otherwise)."""
        size = cal.batch * max(1, self.calib_batch // max(cal.batch, 1))
        if size > cal.batch and cal.samples > cal.batch:
            stats = _Stats(np.random.default_rng(seed))
            try:
                for args in cal.batches(size):
                    _observe(func, args, top, stats, cal.batch)
                return stats
            except BatchMismatch:
                pass  # some op pins the batch size: run at the compiled batch
        stats = _Stats(np.random.default_rng(seed))
        for args in cal.batches(cal.batch):
            _observe(func, args, top, stats, cal.batch)
        return stats
