"""The core program parser and printer (cimc.runtime.program): every instruction, directives,
labels and errors."""

from __future__ import annotations

import math

import pytest

from cimc.errors import ArtifactError
from cimc.runtime.instructions import INSTRUCTIONS
from cimc.runtime.program import format_instr, parse_program

EXAMPLE = """
.core 3 chip=0
.xbar 0 rows=200 cols=32 layer="conv2" tile=[0, 1]
.const c0 name="conv2/bias"
  recv    a0, from=2
  im2col  a1, a0, kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2], dilations=[1, 1]
  slice   a2, a1, start=0, stop=200
  mvm     p0, a2, xbar=0, dac_bits=8, dac_range=3.5, adc_bits=8, adc_range=41.0
  recv    p1, from=4
  dop     p2, p0, p1, op="nn.add"
  dop     a3, p2, c0, op="nn.add"
  send    a3, to=5
  halt
"""


def test_parses_the_isa_doc_example():
    prog = parse_program(EXAMPLE, "core_003.s")
    assert (prog.core, prog.chip) == (3, 0)
    x = prog.xbars[0]
    assert (x.rows, x.cols, x.layer, x.tile) == (200, 32, "conv2", (0, 1))
    assert prog.consts["c0"].name == "conv2/bias"
    kinds = [i.mnemonic for i in prog.instrs]
    assert kinds == ["recv", "im2col", "slice", "mvm", "recv", "dop", "dop", "send", "halt"]
    mvm = prog.instrs[3]
    assert mvm.dsts == ("p0",) and mvm.srcs == ("a2",)
    assert mvm.kwargs == {"xbar": 0, "dac_bits": 8, "dac_range": 3.5, "adc_bits": 8,
                          "adc_range": 41.0}
    assert prog.instrs[1].kwargs["pads"] == [2, 2, 2, 2]
    assert prog.instrs[5].srcs == ("p0", "p1") and prog.instrs[5].kwargs == {"op": "nn.add"}
    assert prog.instrs[0].kwargs == {"from": 2} and prog.instrs[7].kwargs == {"to": 5}
    assert mvm.line == 8 and mvm.where == "core_003.s:8"


def test_every_mnemonic_is_covered_by_the_example_or_here():
    prog = parse_program(
        """
        .core 0
        .xbar 1 rows=2 cols=2
          input  a0, name="x"
          dop    a1, a2, a0, op="nn.split", results=2, axis=1, sizes=[2, 2]
          dop    a3, a1, op="nn.clip", min=-Infinity, max=6.0, note="a; b"  ; comment
        top:
          mvm    a4, a3, xbar=1, dac_bits=0, adc_bits=0
          time   t0
          dop    c, t0, op="nn.relu"
          branch c, label="top"
          jump   label="end"
        end:
          cellw  t0, c, rows=4
          cellr  g
          stat   g, name="h", append=true
          trap   c, g, message="stopped at t = {}"
          output a4, name="y"
          halt
        """,
        "core_000.s",
    )
    split = prog.instrs[1]
    assert split.dsts == ("a1", "a2") and split.srcs == ("a0",)
    assert split.kwargs == {"op": "nn.split", "results": 2, "axis": 1, "sizes": [2, 2]}
    clip = prog.instrs[2]
    assert clip.kwargs["min"] == -math.inf and clip.kwargs["note"] == "a; b"
    assert prog.chip == 0
    seen = {i.mnemonic for i in prog.instrs} | {
        i.mnemonic for i in parse_program(EXAMPLE, "x.s").instrs}
    assert seen == set(INSTRUCTIONS)
    assert prog.labels == {"top": 3, "end": 8}


def test_unsigned_dac_flag():
    prog = parse_program(".core 0\n.xbar 0 rows=2 cols=2\n input a, name=\"x\"\n"
                         " mvm b, a, xbar=0, dac_bits=4, dac_range=1.0, dac_signed=false, "
                         "adc_bits=0\n halt\n", "c.s")
    assert prog.instrs[1].kwargs["dac_signed"] is False


def _err(text: str) -> str:
    with pytest.raises(ArtifactError) as e:
        parse_program(text, "core_003.s")
    return str(e.value)


HEAD = ".core 3 chip=0\n.xbar 0 rows=4 cols=2\n"


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("  frob a0, a1\n  halt\n", 3, "unknown instruction 'frob'"),
        ("  input a0\n  halt\n", 3, "missing argument 'name'"),
        ("  input a0, name=\"x\"\n  mvm p0, a0, xbar=0, dac_bits=8, adc_bits=0\n  halt\n", 4,
         "missing argument 'dac_range'"),
        ("  input a0, name=\"x\"\n  mvm p0, a0, dac_bits=0, adc_bits=0\n  halt\n", 4,
         "missing argument 'xbar'"),
        ("  recv a0, from=two\n  halt\n", 3, "not valid JSON"),
        ("  recv a0, from=\"2\"\n  halt\n", 3, "'from' must be an integer"),
        ("  recv a0, a1, from=2\n  halt\n", 3, "takes 1 buffer operand(s), got 2"),
        ("  recv a0, from=2, to=3\n  halt\n", 3, "unknown argument(s) 'to'"),
        ("  recv a0, from=2, from=3\n  halt\n", 3, "given twice"),
        ("  recv 0a, from=2\n  halt\n", 3, "not a buffer name"),
        ("  send a0, to=1\n  halt\n", 3, "reads buffer 'a0' before"),
        ("  recv a0, from=2\n  mvm p0, a0, xbar=5, dac_bits=0, adc_bits=0\n  halt\n", 4,
         "crossbar 5, which no .xbar directive declares"),
        ("  recv a0, from=2\n  halt\n  recv a1, from=2\n", 5, "after 'halt'"),
        ("  recv a0, from=2\n.const c0 name=\"b\"\n  halt\n", 4, "directives must come before"),
        ("  recv a0, from=2\n  slice a1, a0, start=3, stop=1\n  halt\n", 4, "start <= stop"),
        (("  recv a0, from=2\n  im2col a1, a0, kernel_shape=[3], strides=[1], pads=[0], "
         "dilations=[1]\n  halt\n"), 4, "pads of length 2n"),
        (("  recv a0, from=2\n  im2col a1, a0, kernel_shape=[3], strides=[1], pads=[0, 0], "
         "dilations=[1], rows=[2, 2]\n  halt\n"), 4, "rows must be [A, B] with 0 <= A < B"),
        (("  recv a0, from=2\n  mvm p0, a0, xbar=0, dac_bits=1, dac_range=1, adc_bits=0\n"
         "  halt\n"), 4, "dac_bits must be 0"),
        ("  recv a0, from=2\n  dop p0, a0, op=\"nn.split\", results=0\n  halt\n", 4,
         "'results' must be >= 1"),
        ("  input a0, name=\"x\", a1\n  halt\n", 3, "after keyword arguments"),
        ("  jump label=\"nowhere\"\n  halt\n", 3, "names label 'nowhere', which the program"),
        ("x:\n  input a0, name=\"x\"\nx:\n  halt\n", 5, "label 'x' defined twice"),
        ("  input a0, name=\"x\"\n  branch a0\n  halt\n", 4, "missing argument 'label'"),
        ("  input a0, name=\"x\"\n  dop p0, a0, op=\"nn.frob\"\n  halt\n", 4,
         "unknown digital op 'nn.frob'"),
        ("  input a0, name=\"x\"\n  dop p0, a0, op=\"nn.transpose\"\n  halt\n", 4,
         "nn.transpose needs attribute(s) perm"),
    ],
)
def test_errors_name_file_line_and_expectation(body, line, needle):
    msg = _err(HEAD + body)
    assert msg.startswith(f"core_003.s:{line}: "), msg
    assert needle in msg


def test_directive_errors():
    assert "expected '.core ID chip=C' before" in _err("  halt\n")
    assert "core_003.s:1:" in _err(".xbar 0 rows=1 cols=1\n")
    assert "a second .core" in _err(".core 1\n.core 2\n halt\n")
    assert "unknown directive '.tile'" in _err(".core 1\n.tile 0\n halt\n")
    assert "missing argument 'cols'" in _err(".core 1\n.xbar 0 rows=3\n halt\n")
    assert "declared twice" in _err(".core 1\n.xbar 0 rows=3 cols=1\n.xbar 0 rows=3 cols=1\n")
    assert "unknown argument(s) 'bank'" in _err(".core 1 chip=0 bank=2\n halt\n")
    assert "does not end with 'halt'" in _err(".core 1\n.const c0 name=\"w\"\n")
    assert "empty program" in _err("; nothing\n\n")
    assert "writes 'c0', a constant" in _err(
        ".core 1\n.const c0 name=\"w\"\n recv c0, from=0\n halt\n")


def test_constants_count_as_defined():
    prog = parse_program(".core 1\n.const c0 name=\"w\"\n send c0, to=0\n halt\n", "c.s")
    assert prog.instrs[0].srcs == ("c0",)


def test_a_label_before_halt_and_several_labels_on_one_instruction():
    prog = parse_program(".core 0\n a:\n b:\n jump label=\"c\"\nc:\n halt\n", "c.s")
    assert prog.labels == {"a": 0, "b": 0, "c": 1}


@pytest.mark.parametrize("mnemonic", list(INSTRUCTIONS))
def test_printed_instructions_parse_back(mnemonic):
    op = INSTRUCTIONS[mnemonic]
    samples = {
        "input": ([ "a"], [], {"name": "x"}),
        "output": ([], ["a"], {"name": "y"}),
        "send": ([], ["a"], {"to": 1}),
        "recv": (["a"], [], {"from": 1}),
        "slice": (["b"], ["a"], {"start": 1, "stop": 3}),
        "im2col": (["b"], ["a"], {"kernel_shape": [3], "strides": [1], "pads": [1, 1],
                                  "dilations": [1], "groups": 2}),
        "mvm": (["b"], ["a"], {"xbar": 0, "dac_bits": 4, "dac_range": 1.5, "dac_signed": False,
                               "adc_bits": 6, "adc_range": 2.0}),
        "dop": (["b", "c"], ["a"], {"op": "nn.split", "axis": 1, "sizes": [1, 1]}),
        "jump": ([], [], {"label": "top"}),
        "branch": ([], ["a"], {"label": "top"}),
        "time": (["b"], [], {}),
        "cellw": ([], ["a", "a"], {"rows": 16}),
        "cellr": (["b"], [], {}),
        "stat": ([], ["a"], {"name": "steps", "append": True}),
        "trap": ([], ["a", "a"], {"message": "at t = {}"}),
        "halt": ([], [], {}),
    }
    dsts, srcs, kwargs = samples[mnemonic]
    line = format_instr(mnemonic, dsts, srcs, kwargs)
    body = "" if mnemonic in ("input", "recv", "time", "cellr") else "  input a, name=\"x\"\n"
    text = f".core 0\n.xbar 0 rows=4 cols=2\ntop:\n{body}  {line}\n"
    if mnemonic != "halt":
        text += "  halt\n"
    prog = parse_program(text, "c.s")
    ins = prog.instrs[-2] if mnemonic != "halt" else prog.instrs[-1]
    assert ins.op is op and list(ins.dsts) == dsts and list(ins.srcs) == srcs
    assert dict(ins.kwargs) == {**kwargs, **({"results": 2} if len(dsts) > 1 else {})}
