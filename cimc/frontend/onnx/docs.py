"""The text of docs/supported_ops.md, generated from the converter registry and the op library
(``python -m cimc.docs`` writes it; ``tests/unit/test_docs.py`` keeps it current)."""

from __future__ import annotations

from typing import Any

from cimc.frontend.onnx.registry import all_converters
from cimc.ops.registry import OpDef, all_ops
from cimc.passes.lower_to_mvm import LOWERED_OPS

def _operands(opdef: OpDef) -> str:
    lo, hi = opdef.operands
    if hi is None:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def _attrs(opdef: OpDef) -> str:
    names = [f"`{a}`" for a in opdef.attrs]
    names += [f"`{k}` = {_show(v)}" for k, v in opdef.optional.items()]
    return ", ".join(names)


# Where an op that is not an ordinary digital nn.* op runs.
_RUNS_ON = {
    "nn.constant": "(data)",
    "return": "(structure)",
    "yield": "(structure)",
    "cim.mvm": "crossbars (cut into tiles by `tile`)",
    "cim.xbar_mvm": "a crossbar",
    "cim.transfer": "the links between cores",
    **{name: "crossbars when its weights are constants, else digital" for name in LOWERED_OPS},
}


def supported_ops_markdown() -> str:
    """The text of docs/supported_ops.md."""
    lines = [
        "# Supported operators",
        "",
        ("Generated from the converter registry and the op library by "
         "`python -m cimc.docs`; do not edit (a test checks the file is current)."),
        "",
        "## ONNX operators",
        "",
        "A converter registered *since* opset N handles every schema version from N up to the next",
        "converter of the same op. Any op not listed here is reported, with every other unsupported",
        "op of the model, in one error before anything is converted.",
        "",
        "| ONNX op | since opset | converter |",
        "|---|---|---|",
    ]
    for op_type, convs in all_converters().items():
        for c in convs:
            lines.append(f"| {op_type} | {c.since} | {c.doc} |")
    lines += [
        "",
        "## IR ops (the op library, `cimc/ops`)",
        "",
        "Each op's numpy semantics serve both the IR interpreter and the runtime's digital `dop`",
        "instruction. *Runs on* says where the compiled program executes it: `lower-to-mvm` puts",
        "the products with constant weights on crossbars (as `cim.im2col` + `cim.mvm`, then",
        "`cim.xbar_mvm` tiles); every other `nn.*` op runs on a core's digital unit.",
        "",
        "| op | operands | attributes (optional = default) | stages | runs on | semantics |",
        "|---|---|---|---|---|---|",
    ]
    for name, opdef in all_ops().items():
        stages = ", ".join(sorted(opdef.stages))
        lines.append(f"| `{name}` | {_operands(opdef)} | {_attrs(opdef)} | {stages} | "
                     f"{_RUNS_ON.get(name, 'digital')} | {opdef.summary} |")
    return "\n".join(lines) + "\n"
