"""The artifact emitter: a placed, scheduled module -> ``NAME.cimc/`` (docs/isa.md).

``emit_artifact(module, target, path)`` writes, atomically (a temporary directory renamed into
place; nothing half-written on error):

- ``core_NNN.s``: one program per core that has work: ``core.s.j2`` (in
  ``cimc/targets/templates``) lays the program out, and every instruction is printed by its
  definition (``cimc.runtime.program.format_instr``, docs/isa.md). The ops of ``@main`` are visited in body order; each becomes instructions on
  its core: ``cim.xbar_mvm`` -> ``mvm`` (and a ``.xbar`` directive), ``cim.im2col`` -> ``im2col``,
  a last-axis unit-step ``nn.slice`` -> ``slice``, ``cim.transfer`` -> ``send`` on its source
  core and ``recv`` on its destination, every other ``nn.*`` op -> ``dop`` with its attributes,
  graph inputs -> ``input`` on their ``input_cores``, graph outputs -> ``output`` on the core that
  holds them; an ``ode.loop`` -> a label, its body, copies of the carried values and a
  ``branch`` on every core that takes part (:mod:`cimc.targets.emit_ode`), and the other
  ``ode.*`` ops -> ``time``, ``cellw``, ``cellr``, ``trap``, ``stat``. An ``nn.reshape`` that keeps the leading (batch) dimension is written with ``-1``
  there, so a program runs for any batch size (the kernel is numpy's reshape). Constants become
  ``.const`` directives (one per core that uses them) backed by ``const/<name>`` arrays.
- ``weights.npz``: ``xbar/<core>/<x>/levels`` and ``.../scale`` for every tile, ``const/<name>``
  for every constant (``np.savez``: plain arrays, no pickled objects).
- ``manifest.json``: format, version, the resolved target (``Target.to_dict()``), inputs and
  outputs, chips, cores, per-layer stats, the compiler version and pipeline, a mapping summary,
  and the sha256 of every other file.
- For a module the ``encrypt`` pass encrypted (tiles with ``flip``): the levels are written with
  those signs flipped, the manifest's ``key`` says so, and the key (the flip masks,
  ``cimc/runtime/key.py``) is written beside the artifact as ``NAME.cimc.key``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from cimc import __version__
from cimc.atomic import atomic_path
from cimc.errors import CimcError
from cimc.ir.core import Func, Module, Op, Value
from cimc.ops.registry import COMMON_ATTRS
from cimc.ops.shape import last_axis_range
from cimc.runtime.artifact import content_hash
from cimc.passes.base import PassContext
from cimc.passes.place import Placement
from cimc.passes.tile import layer_stats, target_geometry
from cimc.runtime.device import slice_levels
from cimc.runtime.key import flipped_bits, is_key, key_path, mask_name, write_key
from cimc.runtime.program import format_instr
from cimc.targets.batching import analyze_batch
from cimc.targets.emit_ode import emit_ode
from cimc.targets.schema import Target

FORMAT = "cimc-artifact"
VERSION = 1


class EmitError(CimcError):
    """A module that cannot be turned into core programs (not tiled, placed or scheduled)."""


@dataclass
class _Core:
    id: int
    chip: int
    xbars: list[dict[str, Any]] = field(default_factory=list)
    consts: list[dict[str, str]] = field(default_factory=list)
    instrs: list[dict[str, Any]] = field(default_factory=list)
    buffers: dict[Value, str] = field(default_factory=dict)
    const_buffers: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, mnemonic: str, dsts: list[str], srcs: list[str], comment: str = "",
            args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Append one instruction (keyword arguments ``args`` and ``kwargs``), printed by its
        definition (docs/isa.md)."""
        text = format_instr(mnemonic, dsts, srcs, {**(args or {}), **kwargs})
        self.instrs.append({"text": text, "comment": comment})

    def new(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        return f"{prefix}{n}"


def _where(op: Op) -> str:
    return f" at {op.loc}" if op.loc else ""


def _json_attr(op: Op, key: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_attr(op, key, v) for v in value]
    if isinstance(value, (int, float, str, bool)):
        return value
    raise EmitError(f"{op.name}{_where(op)}: attribute {key} of type {type(value).__name__} "
                    "cannot be written to a core program")


class _Emitter:
    def __init__(self, module: Module, target: Target) -> None:
        self.func = module.main
        self.module = module
        self.target = target
        self.slice_base = target.slice_base
        self.batch = analyze_batch(self.func)
        self.placement: Placement | None = None  # read once the module is known to be tiled
        self.cores: dict[int, _Core] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.flips: dict[str, np.ndarray] = {}  # the key: sign-flip mask per crossbar
        self.const_names: dict[Op, str] = {}
        self.tokens: set[Value] = set()  # values the chip keeps in place (an ODE's step cell)
        self.loops = 0

    # ---- helpers
    def core(self, core_id: int) -> _Core:
        if core_id not in self.cores:
            self.cores[core_id] = _Core(core_id, self.placement.chip_of(core_id))
        return self.cores[core_id]

    def op_core(self, op: Op) -> _Core:
        core = self.placement.core_of(op)
        if core is None:
            raise EmitError(f"{op.name}{_where(op)} has no core; run the 'place' and 'schedule' "
                            "passes before emitting an artifact")
        return self.core(core)

    def read(self, core: _Core, v: Value, user: Op) -> str:
        """The buffer holding ``v`` on ``core`` (declaring a constant there when needed)."""
        if v.op is not None and v.op.name == "nn.constant":
            name = self.const_names.get(v.op)
            if name is None:
                name = f"c{len(self.const_names)}"
                self.const_names[v.op] = name
                self.weights[f"const/{name}"] = np.asarray(v.op.attrs["value"], order="C")
            if name not in core.const_buffers:
                buf = core.new("c")
                core.const_buffers[name] = buf
                core.consts.append({"buffer": buf, "name": name})
            return core.const_buffers[name]
        buf = core.buffers.get(v)
        if buf is None:
            raise EmitError(
                f"{user.name}{_where(user)} on core {core.id} reads a value that lives on another "
                "core; run the 'schedule' pass (it inserts the transfers) before emitting"
            )
        return buf

    def define(self, core: _Core, v: Value, prefix: str = "a") -> str:
        buf = core.new(prefix)
        core.buffers[v] = buf
        return buf

    # ---- the walk
    def emit(self) -> None:
        f = self.func
        untiled = next((op for op in f.walk() if op.name == "cim.mvm"), None)
        if untiled is not None:
            raise EmitError(f"cim.mvm{_where(untiled)} is not tiled; run the mapping passes "
                            "(tile, quantize, place, schedule) before emitting")
        try:
            self.placement = Placement.read(self.module, target_geometry(self.target), "emit")
        except CimcError as e:
            raise EmitError(str(e)) from None
        for name, arg, core_id in zip(f.input_names, f.args, self.placement.input_cores):
            core = self.core(core_id)
            core.add("input", [self.define(core, arg)], [], name=name)
        for op in f.body.ops:
            self.op(op)

    def op(self, op: Op) -> None:
        """The instructions of one op (an ode.* op, an ``ode.loop`` with its body included:
        :mod:`cimc.targets.emit_ode`)."""
        if op.name.startswith("ode."):
            emit_ode(self, op)
            return
        if op.regions:
            raise EmitError(f"{op.name}{_where(op)} has regions; the emitter lowers only the "
                            "regions of ode.loop to core programs")
        if op.name == "nn.constant":
            return
        if op.name == "return":
            self.outputs(op)
        elif op.name == "cim.transfer":
            self.transfer(op)
        elif op.name == "cim.xbar_mvm":
            self.mvm(op)
        elif op.name == "cim.im2col":
            self.im2col(op)
        elif op.name == "nn.slice" and (
                cut := last_axis_range(op.attrs, op.operands[0].type.shape)) is not None:
            core = self.op_core(op)
            start, stop = cut
            src = self.read(core, op.operands[0], op)
            core.add("slice", [self.define(core, op.result)], [src], start=start, stop=stop)
        elif op.name.startswith("nn."):
            self.dop(op)
        else:
            raise EmitError(f"{op.name}{_where(op)} has no instruction in docs/isa.md")

    def outputs(self, op: Op) -> None:
        first = min(self.cores) if self.cores else 0
        for name, v in zip(self.func.output_names, op.operands):
            if v.op is not None and v.op.name == "nn.constant":
                core = self.core(first)
            elif v.op is None:
                core = self.core(self.placement.input_cores[v.index])
            else:
                core = self.op_core(v.op)
            core.add("output", [], [self.read(core, v, op)], name=name)

    def transfer(self, op: Op) -> None:
        src_core = self.core(op.attrs["from"])
        dst_core = self.op_core(op)
        if dst_core.id != op.attrs["to"]:
            raise EmitError(f"cim.transfer{_where(op)}: core {dst_core.id} != to {op.attrs['to']}")
        buf = self.read(src_core, op.operands[0], op)
        src_core.add("send", [], [buf], to=dst_core.id)
        dst_core.add("recv", [self.define(dst_core, op.result)], [], **{"from": src_core.id})

    def mvm(self, op: Op) -> None:
        core = self.op_core(op)
        a = op.attrs
        x = self.placement.xbar_of(op)
        if not isinstance(x, int) or x < 0:
            raise EmitError(f"cim.xbar_mvm{_where(op)} has no crossbar; run 'place' first")
        levels, scale = a["levels"], a["scale"]
        rows, cols = levels.shape
        layer = str(a.get("layer", ""))
        slices = int(a.get("slices", 1))
        decl = {"index": x, "rows": rows, "cols": cols, "layer": layer, "tile": list(a["tile"]),
                "slices": slices}
        if a.get("flip"):  # encrypted: store these signs flipped, the mask goes to the key
            mask = np.zeros((rows, cols), dtype=bool)
            mask[tuple(np.array(a["flip"]).T)] = True
            levels = np.where(mask, -levels, levels)
            self.flips[mask_name(core.id, x)] = mask
        if slices > 1:  # one digit per device pair, least significant first
            levels = slice_levels(levels, self.slice_base, slices)
        key = f"xbar/{core.id}/{x}"
        if any(d["index"] == x for d in core.xbars):  # a shared tile (place): the same weights
            if decl not in core.xbars or not (
                    np.array_equal(self.weights[f"{key}/levels"], _level_array(levels))
                    and np.array_equal(self.weights[f"{key}/scale"], scale)):
                raise EmitError(f"core {core.id}: crossbar {x} holds two tiles")
        else:
            core.xbars.append(decl)
            self.weights[f"{key}/levels"] = _level_array(levels)
            self.weights[f"{key}/scale"] = np.asarray(scale, dtype=np.float32)
        src = self.read(core, op.operands[0], op)
        core.add("mvm", [self.define(core, op.result, "p")], [src], xbar=x,
                 dac_bits=a["dac_bits"], dac_range=float(a["dac_range"]),
                 dac_signed=None if a.get("dac_signed", True) else False,
                 adc_bits=a["adc_bits"], adc_range=float(a["adc_range"]),
                 comment=f"{layer} tile {a['tile']}" if layer else "")

    def im2col(self, op: Op) -> None:
        core = self.op_core(op)
        src = self.read(core, op.operands[0], op)
        kw = {key: list(op.attrs[key]) for key in ("kernel_shape", "strides", "pads", "dilations")}
        groups = op.attrs.get("groups", 1)
        core.add("im2col", [self.define(core, op.result)], [src], **kw,
                 groups=groups if groups != 1 else None,
                 rows=list(op.attrs["rows"]) if op.attrs.get("rows") else None)

    def dop(self, op: Op) -> None:
        core = self.op_core(op)
        srcs = [self.read(core, v, op) for v in op.operands]
        attrs = [(k, _json_attr(op, k, v)) for k, v in sorted(op.attrs.items())
                 if k not in COMMON_ATTRS]
        if op.name == "nn.reshape" and op.result in self.batch.batched:
            # the runtime may vary the batch size: keep the batch dimension free
            attrs = [(k, [-1, *v[1:]] if k == "shape" else v) for k, v in attrs]
        reserved = {"op", "results"} & {k for k, _ in attrs}
        if reserved:
            raise EmitError(f"{op.name}{_where(op)}: attribute(s) {sorted(reserved)} clash with "
                            "the dop instruction's own keywords")
        dsts = [self.define(core, r) for r in op.results]
        core.add("dop", dsts, srcs, str(op.attrs.get("layer", "")),
                 {"op": op.name, **dict(attrs)})


def _level_array(levels: np.ndarray) -> np.ndarray:
    if levels.dtype.kind == "f":
        return np.asarray(levels, dtype=np.float32)
    if levels.dtype.itemsize > 2 and np.abs(levels).max(initial=0) <= 32767:
        return levels.astype(np.int16)
    return np.asarray(levels)


# ----------------------------------------------------------------------------- templates


@functools.cache
def _environment() -> jinja2.Environment:
    folder = resources.files("cimc.targets") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["j"] = lambda v: json.dumps(v)
    return env


def render_program(core: Mapping[str, Any], target_name: str, version: str) -> str:
    """One core program from ``core.s.j2``: ``core`` has id, chip, xbars, consts, instrs."""
    template = _environment().get_template("core.s.j2")
    return template.render(core=core, target=target_name, version=version)


# ----------------------------------------------------------------------------- manifest


def _tensor_specs(names: list[str], values: list[Value]) -> list[dict[str, Any]]:
    return [{"name": n, "shape": list(v.type.shape), "dtype": v.type.dtype}
            for n, v in zip(names, values)]


def _layers(func: Func, target: Target) -> list[dict[str, Any]]:
    """The manifest's ``layers``: :func:`cimc.passes.tile.layer_stats` of the placed module."""
    return [{"name": lay.name, "weight_shape": list(lay.weight_shape), "crossbars": lay.crossbars,
             "utilisation": lay.utilisation, "cores": list(lay.cores),
             "analytic_min": lay.analytic_min}
            for lay in layer_stats(func, target_geometry(target))]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mapping_summary(placement: Placement, ctx: PassContext | None) -> dict[str, Any]:
    """The manifest's ``mapping``: the compiler's summary (informational)."""
    out: dict[str, Any] = {
        "crossbars": placement.crossbars, "analytic_min": placement.analytic_min,
        "chips": placement.chips, "cores_used": placement.cores_used,
        "utilisation": placement.utilisation,
    }
    if ctx is not None and ctx.schedule is not None:
        out["transfers"] = ctx.schedule.transfers
        out["chip_transfers"] = ctx.schedule.chip_transfers
    if ctx is not None and ctx.quantization is not None:
        out["calibration"] = ctx.quantization.calibration
    return out


# ----------------------------------------------------------------------------- entry point


def emit_artifact(
    module: Module,
    target: Target,
    path: str | Path,
    *,
    pipeline: str = "",
    ctx: PassContext | None = None,
) -> Path:
    """Write the artifact directory for ``module`` (tiled, quantised, placed and scheduled for
    ``target``) at ``path``, atomically. Returns ``path``. ``ctx``, the pipeline's context, adds
    its passes' records to the manifest (``mapping``; prune-similar's ``pruning``; replicate's
    ``replication``; the ODE solve and its drift schedule, ``ode``)."""
    if not isinstance(target, Target):
        raise EmitError("emit_artifact needs the Target the module was compiled for")
    path = Path(path)
    func = module.main
    em = _Emitter(module, target)
    em.emit()
    assert em.placement is not None
    key = key_path(path)
    if em.flips and key.exists() and not is_key(key):
        raise EmitError(f"{key} exists and is not a cimc key; move it away (the key of "
                        f"{path.name} goes there)")
    cores = [em.cores[c] for c in sorted(em.cores)]
    for core in cores:
        core.xbars.sort(key=lambda d: d["index"])
    width = max(3, len(str(max(em.cores, default=0))))
    with atomic_path(path, directory=True) as tmp:
        files: dict[str, str] = {}
        core_list = []
        for core in cores:
            fname = f"core_{core.id:0{width}d}.s"
            text = render_program(core.__dict__, target.name, __version__)
            (tmp / fname).write_text(text, encoding="utf-8")
            core_list.append({"id": core.id, "chip": core.chip, "program": fname,
                              "xbars": len(core.xbars)})
        with open(tmp / "weights.npz", "wb") as fh:
            np.savez(fh, **em.weights)
        for p in sorted(tmp.iterdir()):
            files[p.name] = _sha256(p)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "target": target.to_dict(),
            "inputs": _tensor_specs(func.input_names, func.args),
            "outputs": _tensor_specs(func.output_names, func.outputs),
            # dimension 0 of every input and output is a batch of independent samples, the runtime
            # may vary and split it (null: run exactly the compiled shapes; batch_reason says why)
            "batch": em.batch.size,
            "batch_reason": em.batch.reason,
            "chips": em.placement.chips,
            "cores": core_list,
            "layers": _layers(func, target),
            "mapping": _mapping_summary(em.placement, ctx),
            "pruning": ctx.pruning.to_dict() if ctx is not None and ctx.pruning else None,
            "ode": ctx.ode.to_dict() if ctx is not None and ctx.ode else None,
            "replication": (ctx.replication.to_dict()
                            if ctx is not None and ctx.replication else None),
            "weights": "weights.npz",
            "key": None if not em.flips else {
                "required": True, "artifact_hash": content_hash(files),
                "bits": flipped_bits(em.flips, ((c.id, d["index"], d["layer"], d["tile"])
                                                for c in em.cores.values() for d in c.xbars))},
            "compiler": {"version": __version__, "pipeline": pipeline},
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if em.flips:  # outside the artifact; written first, so no artifact lacks its key
            with atomic_path(key) as key_tmp:
                write_key(key_tmp, em.flips, content_hash(files))
    if not em.flips and is_key(key):
        key.unlink()  # the key of the encrypted artifact this one replaced
    return path
