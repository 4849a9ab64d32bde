"""Generated docs are current: docs/supported_ops.md and docs/isa.md's instruction table are what
the registries and the instruction definitions produce."""

from __future__ import annotations

import shutil
from pathlib import Path

from cimc import docs
from cimc.frontend.onnx.registry import all_converters
from cimc.ops.registry import all_ops
from cimc.runtime.instructions import INSTRUCTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_generated_docs_are_current():
    for path, text in docs.generated(ROOT).items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: regenerate it with `python -m cimc.docs`")


def test_supported_ops_doc_lists_every_converter_and_op():
    text = docs.supported_ops_markdown()
    for op_type, convs in all_converters().items():
        for c in convs:
            assert f"| {op_type} | {c.since} |" in text
    for name in all_ops():
        assert f"| `{name}` |" in text


def test_the_isa_doc_has_a_row_for_every_instruction():
    table = docs.instructions_markdown()
    for op in INSTRUCTIONS.values():
        assert f"| `{op.usage}` |" in table.replace("\\|", "|")
        assert op.semantics and op.cost_doc


def test_docs_script_writes_the_files(tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / docs.ISA, tmp_path / docs.ISA)
    (tmp_path / docs.ISA).write_text((tmp_path / docs.ISA).read_text().replace(
        docs.instructions_markdown(), docs.BEGIN + "\nstale\n" + docs.END))
    docs.write(tmp_path)
    for path, text in docs.generated(tmp_path).items():
        assert path.read_text() == text
    assert "stale" not in (tmp_path / docs.ISA).read_text()
