"""Pass, PassContext, PassManager and its instruments; pass-spec strings.

A pass is a dataclass whose fields are its typed options, with a kebab-case ``name`` (its
command-line name) and a docstring whose first line is its summary; the docstring also says which
IR it takes and gives and where its test lives. ``run`` rewrites the module in place.

Pass specs: ``"canonicalize,tile{rows=128,cols=128},dce"``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from cimc.errors import CimcError, PassError
from cimc.ir.core import Module
from cimc.ir.printer import is_ir_file, is_sidecar, to_text, write_module
from cimc.ir.verify import verify

if TYPE_CHECKING:
    from cimc.passes.encrypt import EncryptSummary
    from cimc.passes.ode_unroll import OdeInfo
    from cimc.passes.place import Placement
    from cimc.passes.prune_similar import PruneSummary
    from cimc.passes.quantize import QuantizeSummary
    from cimc.passes.replicate import ReplicateSummary
    from cimc.passes.schedule import ScheduleSummary
    from cimc.passes.tile import TileSummary
    from cimc.targets.schema import Target


@dataclass
class PassContext:
    """What passes share: the target description, calibration data and a seed; and the typed
    records passes leave for later passes, the emitter and the user (each pass's own).
    ``encrypt_data``: the samples the 'encrypt' pass scores keys on (inputs and ``labels``)."""

    target: Target | None = None
    calib: dict[str, Any] | None = None
    encrypt_data: dict[str, Any] | None = None
    seed: int = 0
    progress: Any = None
    pruning: PruneSummary | None = None  # prune-similar: what it removed
    tiling: TileSummary | None = None  # tile: crossbar geometry, per-layer stats
    placement: Placement | None = None  # place: chips, cores, crossbars used
    quantization: QuantizeSummary | None = None  # quantize: levels, converters, calibration
    schedule: ScheduleSummary | None = None  # schedule: transfers
    encryption: EncryptSummary | None = None  # encrypt: the flipped bits, accuracy left
    ode: OdeInfo | None = None  # ode-unroll, drift-step-schedule: the solve, its schedule
    replication: ReplicateSummary | None = None  # replicate: the copies it made


@dataclass
class Pass:
    name: ClassVar[str] = ""
    # The stage the module is at after this pass (None: unchanged).
    produces_stage: ClassVar[str | None] = None
    # Passes that must have run before this one (earlier in the pipeline, or on the module
    # already: see applied_to); a pipeline without them is refused before anything runs.
    requires: ClassVar[tuple[type[Pass], ...]] = ()

    @classmethod
    def applied_to(cls, module: Module) -> bool:
        """Whether ``module`` shows that this pass has run on it (e.g. a dump read back)."""
        return False

    def run(self, module: Module, ctx: PassContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def option_fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def spec(self) -> str:
        """This pass as a spec string, showing options that differ from their defaults."""
        opts = []
        for name, f in self.option_fields().items():
            value = getattr(self, name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if value != default:
                opts.append(f"{name}={_format_option(value)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def _format_option(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _convert_option(pass_name: str, key: str, text: str, typ: Any) -> Any:
    typ = typ if isinstance(typ, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(
        str(typ).replace(" | None", ""), str
    )
    try:
        if typ is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return typ(text)
    except ValueError:
        raise CimcError(f"pass '{pass_name}': option {key}={text!r} is not a valid {typ.__name__}") from None


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside braces."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_pipeline(spec: str, available: dict[str, type[Pass]]) -> list[Pass]:
    """``"a,b{opt=1}"`` -> pass instances. Errors name the pass or option and list what exists."""
    if spec.count("{") != spec.count("}"):
        raise CimcError(f"pass pipeline {spec!r}: unbalanced braces")
    passes = []
    for item in split_top_level(spec):
        name, _, rest = item.partition("{")
        name = name.strip()
        if name not in available:
            raise CimcError(f"unknown pass '{name}'; available passes: {', '.join(sorted(available))}")
        cls = available[name]
        fields = cls.option_fields()
        kwargs = {}
        if rest:
            if not rest.endswith("}"):
                raise CimcError(f"pass '{name}': options must be written as {name}{{key=value,...}}")
            for kv in split_top_level(rest[:-1]):
                key, eq, val = kv.partition("=")
                key = key.strip()
                if not eq:
                    raise CimcError(f"pass '{name}': option {kv!r} must be key=value")
                if key not in fields:
                    known = ", ".join(fields) or "none"
                    raise CimcError(f"pass '{name}' has no option '{key}'; its options: {known}")
                kwargs[key] = _convert_option(name, key, val.strip(), fields[key].type)
        passes.append(cls(**kwargs))
    return passes


def pipeline_spec(passes: Sequence[Pass]) -> str:
    return ",".join(p.spec() for p in passes)


# ----------------------------------------------------------------------------- instruments


class Instrument:
    def before_pipeline(self, module: Module) -> None: ...

    def after_pass(self, index: int, p: Pass, module: Module, seconds: float) -> None: ...

    def after_pipeline(self, module: Module) -> None: ...


@dataclass
class PrintAfter(Instrument):
    """Print the IR after the named passes (``names=None``: after every pass)."""

    names: set[str] | None = None
    out: TextIO = sys.stderr

    def after_pass(self, index: int, p: Pass, module: Module, seconds: float) -> None:
        if self.names is None or p.name in self.names:
            self.out.write(f"// ----- IR after {p.name} ({index}) ----- //\n{to_text(module)}")
            self.out.flush()


@dataclass
class TimePasses(Instrument):
    """Print the wall time of each pass after the pipeline."""

    out: TextIO = sys.stderr
    times: list[tuple[str, float]] = field(default_factory=list)

    def after_pass(self, index: int, p: Pass, module: Module, seconds: float) -> None:
        self.times.append((p.name, seconds))

    def after_pipeline(self, module: Module) -> None:
        total = sum(t for _, t in self.times) or 1e-12
        self.out.write("===  pass timing  ===\n")
        for name, t in self.times:
            self.out.write(f"{t * 1e3:10.1f} ms  {100 * t / total:5.1f}%  {name}\n")
        self.out.write(f"{total * 1e3:10.1f} ms  100.0%  total\n")


@dataclass
class DumpDir(Instrument):
    """Write ``DIR/000_input.cir`` and then ``DIR/NNN_<pass>.cir`` after each pass (each with its
    ``.npz`` sidecar when it has large constants): one parseable file per pass, in order."""

    directory: Path = Path("dumps")
    written: list[Path] = field(default_factory=list)
    force: bool = False  # write over files of the dump's names that cimc did not write

    FILE: ClassVar[re.Pattern[str]] = re.compile(r"\d{3}_[\w.-]+\.(cir|npz)")

    @classmethod
    def is_dump(cls, directory: Path) -> bool:
        """``directory`` holds only the files of an earlier dump (which a new dump replaces)."""
        return Path(directory).is_dir() and all(
            cls.FILE.fullmatch(p.name) for p in Path(directory).iterdir())

    def before_pipeline(self, module: Module) -> None:
        from cimc.atomic import check_output

        check_output(self.directory, "a dump of the IR", ours=self.is_dump, force=self.force,
                     option="--dump-dir")
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        for old in Path(self.directory).iterdir():  # an earlier dump's files, and only those
            if self.FILE.fullmatch(old.name) and (is_ir_file(old) or is_sidecar(old)):
                old.unlink()
        self._write("000_input.cir", module)

    def after_pass(self, index: int, p: Pass, module: Module, seconds: float) -> None:
        self._write(f"{index:03d}_{p.name}.cir", module)

    def _write(self, fname: str, module: Module) -> None:
        path = Path(self.directory) / fname
        write_module(module, path, force=self.force)
        self.written.append(path)


@dataclass
class Progress(Instrument):
    """A progress bar over the passes (on a terminal; silent otherwise)."""

    total: int = 0
    enabled: bool | None = None
    bar: Any = None

    def before_pipeline(self, module: Module) -> None:
        from cimc.progress import progress_bar

        self.bar = progress_bar(self.total, "compiling", self.enabled)

    def after_pass(self, index: int, p: Pass, module: Module, seconds: float) -> None:
        self.bar.set_postfix_str(p.name)
        self.bar.update(1)

    def after_pipeline(self, module: Module) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- manager


def check_order(passes: Sequence[Pass], module: Module) -> None:
    """Refuse a pipeline in which a pass runs before one it requires (and the module does not
    show that one applied already), naming both."""
    for i, p in enumerate(passes):
        for req in p.requires:
            if any(isinstance(q, req) for q in passes[:i]) or req.applied_to(module):
                continue
            earlier = ", ".join(q.name for q in passes[:i]) or "none"
            raise PassError(f"pass '{p.name}' needs '{req.name}' to run before it, and the "
                            f"pipeline does not run it first (passes before it: {earlier}); "
                            f"add '{req.name}' before '{p.name}'")


class PassManager:
    """Runs passes in order, verifying after each one; errors name the failing pass and the
    passes that ran before it."""

    def __init__(
        self, passes: Sequence[Pass], instruments: Sequence[Instrument] = (), verify_each: bool = True
    ) -> None:
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.verify_each = verify_each

    def run(self, module: Module, ctx: PassContext | None = None) -> Module:
        ctx = ctx or PassContext()
        check_order(self.passes, module)
        for ins in self.instruments:
            ins.before_pipeline(module)
        done: list[str] = []
        for i, p in enumerate(self.passes, start=1):
            before = ", ".join(done) if done else "none"
            start = time.perf_counter()
            try:
                p.run(module, ctx)
            except CimcError as e:
                raise PassError(f"pass '{p.name}' failed: {e}\n  passes before it: {before}") from e
            except Exception as e:
                raise PassError(
                    f"pass '{p.name}' crashed ({type(e).__name__}: {e}); this is a cimc bug\n"
                    f"  passes before it: {before}"
                ) from e
            if p.produces_stage is not None:
                module.attrs["stage"] = p.produces_stage
            seconds = time.perf_counter() - start
            if self.verify_each:
                try:
                    verify(module)
                except CimcError as e:
                    raise PassError(
                        f"pass '{p.name}' produced invalid IR: {e}\n  passes before it: {before}"
                    ) from e
            done.append(p.name)
            for ins in self.instruments:
                ins.after_pass(i, p, module, seconds)
        for ins in self.instruments:
            ins.after_pipeline(module)
        return module
