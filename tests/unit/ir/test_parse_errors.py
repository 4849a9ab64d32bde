"""Parse and verify errors name file:line:col and what was expected."""

from __future__ import annotations

import pytest

from cimc.errors import ParseError, VerifyError
from cimc.ir import parse_module
from cimc.ir.verify import verify

GOOD = """module attributes {stage = "nn"} {
  func @main(%x: tensor<1x4xf32>) -> (tensor<1x4xf32>) attributes {input_names = ["x"], output_names = ["y"]} {
    %a = nn.relu(%x) : tensor<1x4xf32>
    return(%a)
  }
}
"""


def _parse(text):
    return parse_module(text, filename="t.cir")


def test_good_module_parses_and_verifies():
    verify(_parse(GOOD))


@pytest.mark.parametrize(
    "old, new, pattern",
    [
        ("nn.relu(%x)", "nn.relu(%q)", r"^t\.cir:3:18: use of undefined value %q"),
        ("%a = nn.relu", "%x = nn.relu", r"^t\.cir:3:5: value %x is defined twice"),
        (": tensor<1x4xf32>\n    return", "tensor<1x4xf32>\n    return", r"^t\.cir:3:28: unexpected '<'; expected '\('"),
        ("tensor<1x4xf32>) ->", "tensor<1x4xq32>) ->", r"^t\.cir:2:"),
        ("return(%a)\n  }", "return(%a)\n", r"^t\.cir:.*unexpected end of input|^t\.cir"),
        ("-> (tensor<1x4xf32>)", "-> (tensor<1x5xf32>)", r"^t\.cir:2:8: function @main declares results"),
        ("stage = \"nn\"", "stage = nn", r"^t\.cir:1:28: unexpected"),
        ("%a = nn.relu(%x) : tensor<1x4xf32>", "%a = nn.relu(%x)", r"^t\.cir:3:10: nn\.relu defines 1 results but lists 0 types"),
    ],
)
def test_parse_errors_name_location(old, new, pattern):
    assert old in GOOD
    with pytest.raises(ParseError, match=pattern):
        _parse(GOOD.replace(old, new))


@pytest.mark.parametrize(
    "old, new, pattern",
    [
        ("return(%a)", "%b = nn.relu(%x) : tensor<1x5xf32>\n    return(%a)", r"t\.cir:4:10: nn\.relu result types \(tensor<1x5xf32>\) do not match the inferred \(tensor<1x4xf32>\)"),
        ("nn.relu(%x)", "nn.nosuch(%x)", r"t\.cir:3:10: unknown op 'nn\.nosuch'"),
        ("nn.relu(%x)", "nn.relu(%x, %x)", r"t\.cir:3:10: nn\.relu takes 1 operands, got 2"),
        ("nn.relu(%x)", "nn.relu(%x) {alpha = 1.0}", r"t\.cir:3:10: nn\.relu has unknown attribute\(s\) alpha"),
        ('stage = "nn"', 'stage = "bogus"', r"unknown stage 'bogus'"),
        ('stage = "nn"', "stage = [1]", r"module: attribute 'stage' must be a string, got \[1\]"),
        ('input_names = ["x"]', "input_names = 3", r"@main: attribute 'input_names' must be a list"),
        ("nn.relu(%x)", 'nn.relu(%x) {core = "a"}', r"t\.cir:3:10: nn\.relu: attribute 'core' must be"),
        ("nn.relu(%x)", "nn.reshape(%x) {shape = 4}", r"t\.cir:3:10: nn\.reshape: .*'shape'"),
        ("%a = nn.relu(%x) : tensor<1x4xf32>",
         "%a = nn.reshape(%x) {shape = [99999999999999999999, 256]} : tensor<1x4xf32>",
         r"t\.cir:3:10: nn\.reshape: .*too large"),
    ],
)
def test_verify_errors_name_location(old, new, pattern):
    with pytest.raises(VerifyError, match=pattern):
        verify(_parse(GOOD.replace(old, new)))


def test_an_infer_function_tripping_over_an_attribute_is_a_verify_error():
    """Whichever op's type inference raises on an attribute of the wrong kind (here a number
    where max_pool reads a list), the verifier reports it for that op."""
    text = GOOD.replace("tensor<1x4xf32>", "tensor<1x1x4x4xf32>").replace(
        "nn.relu(%x) : tensor<1x1x4x4xf32>",
        "nn.max_pool(%x) {ceil_mode = false, dilations = 2, kernel_shape = [2, 2], "
        "pads = [0, 0, 0, 0], strides = [1, 1]} : tensor<1x1x3x3xf32>").replace(
        "-> (tensor<1x1x4x4xf32>)", "-> (tensor<1x1x3x3xf32>)")
    with pytest.raises(VerifyError, match=r"t\.cir:3:10: nn\.max_pool: its attributes or operand "
                       r"types are not valid for it \(TypeError: "):
        verify(_parse(text))


def test_a_control_character_in_a_string_is_a_parse_error():
    with pytest.raises(ParseError, match=r"^t\.cir:1:28: malformed string '\"n\\x07n\"': Invalid control"):
        _parse(GOOD.replace('"nn"', '"n\x07n"', 1))


def test_a_file_that_is_not_utf8_is_a_parse_error(tmp_path):
    from cimc.ir import read_module

    path = tmp_path / "bad.cir"
    path.write_bytes(GOOD.encode().replace(b"relu", b"r\xe9lu"))
    with pytest.raises(ParseError, match=rf"^{path}:3:14: byte 0xe9 is not UTF-8 text"):
        read_module(path)


def test_huge_dimensions_are_refused_where_they_are_written():
    with pytest.raises(ParseError, match=r"^t\.cir:2:.*too large"):
        _parse(GOOD.replace("tensor<1x4xf32>) ->", "tensor<99999999999999999999x4xf32>) ->"))


def test_cim_op_is_illegal_at_nn_stage():
    text = GOOD.replace("%a = nn.relu(%x) : tensor<1x4xf32>",
                        '%w = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<4x1xf32>>} : tensor<4x1xf32>\n'
                        "    %a = cim.mvm(%x, %w) : tensor<1x1xf32>").replace("(tensor<1x4xf32>) attributes", "(tensor<1x1xf32>) attributes")
    with pytest.raises(VerifyError, match=r"t\.cir:4:10: cim\.mvm is not legal at stage 'nn'"):
        verify(_parse(text))
    verify(_parse(text.replace('stage = "nn"', 'stage = "cim"')))
