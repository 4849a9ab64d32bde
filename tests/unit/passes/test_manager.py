"""Pass manager: verification after each pass, error naming, instruments, pipeline specs."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from cimc.errors import CimcError, PassError
from cimc.ir import parse_module, read_module, to_text
from cimc.passes import PASSES, PassContext, PassManager, parse_pipeline, pipeline_spec
from cimc.passes.base import DumpDir, Pass, PrintAfter, TimePasses
from cimc.passes.dce import DCE

SRC = """module {
  func @main(%x: tensor<2xf32>) -> (tensor<2xf32>) {
    %a = nn.relu(%x) : tensor<2xf32>
    %b = nn.relu(%x) : tensor<2xf32>
    return(%b)
  }
}
"""


@dataclass
class BreakTypes(Pass):
    """Test pass: gives the first op a wrong result type."""

    name = "break-types"
    bogus: int = 0

    def run(self, module, ctx):
        from cimc.ir import TensorType

        module.main.body.ops[0].results[0].type = TensorType((3,), "f32")


@dataclass
class Crash(Pass):
    """Test pass: raises a user-facing error."""

    name = "crash"

    def run(self, module, ctx):
        raise CimcError("something the user can fix")


def test_verify_after_each_pass_names_failing_pass_and_previous_ones():
    m = parse_module(SRC)
    with pytest.raises(PassError, match=r"pass 'break-types' produced invalid IR: .*\n  passes before it: dce"):
        PassManager([DCE(), BreakTypes()]).run(m, PassContext())


def test_pass_error_names_pass():
    with pytest.raises(PassError, match=r"pass 'crash' failed: something the user can fix\n  passes before it: none"):
        PassManager([Crash()]).run(parse_module(SRC))


def test_instruments_print_time_and_dump(tmp_path):
    out, times = io.StringIO(), io.StringIO()
    dump = DumpDir(tmp_path / "d")
    m = parse_module(SRC)
    PassManager([DCE(), DCE()], [PrintAfter(None, out), TimePasses(times), dump]).run(m)
    assert out.getvalue().count("IR after dce") == 2
    assert "total" in times.getvalue() and times.getvalue().count("dce") == 2
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["000_input.cir", "001_dce.cir", "002_dce.cir"]
    for p in dump.written:
        text = p.read_text()
        assert to_text(read_module(p)) == text
    assert "nn.relu(%0)" in (tmp_path / "d" / "001_dce.cir").read_text()
    assert (tmp_path / "d" / "000_input.cir").read_text().count("nn.relu") == 2


def test_print_after_selected_passes_only():
    out = io.StringIO()
    PassManager([DCE()], [PrintAfter({"nosuch"}, out)]).run(parse_module(SRC))
    assert out.getvalue() == ""


def test_pipeline_spec_round_trip_and_errors():
    avail = {"dce": DCE, "break-types": BreakTypes}
    passes = parse_pipeline("dce, break-types{bogus=3},dce", avail)
    assert pipeline_spec(passes) == "dce,break-types{bogus=3},dce"
    assert pipeline_spec(parse_pipeline(pipeline_spec(passes), avail)) == pipeline_spec(passes)
    with pytest.raises(CimcError, match=r"unknown pass 'nope'; available passes: break-types, dce"):
        parse_pipeline("dce,nope", avail)
    with pytest.raises(CimcError, match=r"pass 'break-types' has no option 'x'; its options: bogus"):
        parse_pipeline("break-types{x=1}", avail)
    with pytest.raises(CimcError, match=r"option bogus='a' is not a valid int"):
        parse_pipeline("break-types{bogus=a}", avail)
    with pytest.raises(CimcError, match="unbalanced braces"):
        parse_pipeline("break-types{bogus=1", avail)


def test_every_registered_pass_has_docstring_and_test_file():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for p in PASSES:
        assert p.__doc__ and p.summary(), f"pass {p.name} has no docstring"
        assert "Stage" in p.__doc__, f"pass {p.name}'s docstring must say its stage"
        test = root / "passes" / f"test_{p.name.replace('-', '_')}.py"
        assert test.is_file(), f"pass {p.name} has no test file {test}"
        assert p.name == p.name.lower() and " " not in p.name


MLP = """module {
  func @main(%x: tensor<2x4xf32>) -> (tensor<2x3xf32>) {
    %w = nn.constant() {value = dense<[1.0, 0.0, 2.0, 0.5, -1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0, -1.0] : tensor<4x3xf32>>} : tensor<4x3xf32>
    %y = nn.matmul(%x, %w) : tensor<2x3xf32>
    return(%y)
  }
}
"""


def test_a_pass_before_the_ones_it_needs_is_refused_before_anything_runs():
    from cimc.passes.registry import available_passes

    module = parse_module(MLP)
    before = to_text(module)
    for spec, missing in (("lower-to-mvm,place{cores=2,crossbars_per_core=1}", "tile"),
                          ("lower-to-mvm,tile{rows=4,cols=4},schedule", "place"),
                          ("tile{rows=4,cols=4}", "lower-to-mvm")):
        passes = parse_pipeline(spec, available_passes())
        with pytest.raises(PassError, match=f"needs '{missing}' to run before it"):
            PassManager(passes).run(module, PassContext())
        assert to_text(module) == before  # nothing ran
    # a module that shows the earlier passes (a dump read back) needs only the rest
    PassManager(parse_pipeline("lower-to-mvm,tile{rows=4,cols=4},place{cores=2,"
                               "crossbars_per_core=1}", available_passes())).run(module)
    ctx = PassContext()
    PassManager(parse_pipeline("schedule", available_passes())).run(
        parse_module(to_text(module)), ctx)
    assert ctx.schedule is not None


def test_every_requirement_is_a_registered_pass():
    names = {p.name for p in PASSES}
    for p in PASSES:
        assert {r.name for r in p.requires} <= names, p.name
