"""Generated docs are current: docs/supported_ops.md is what the registries produce."""

from __future__ import annotations

from pathlib import Path

from cimc.frontend.onnx import docs
from cimc.frontend.onnx.registry import all_converters
from cimc.ops.registry import all_ops

ROOT = Path(__file__).resolve().parents[2]


def test_supported_ops_doc_is_current():
    committed = (ROOT / docs.DOC).read_text()
    assert committed == docs.supported_ops_markdown(), (
        f"{docs.DOC} is stale: regenerate it with `python -m cimc.frontend.onnx.docs`")


def test_supported_ops_doc_lists_every_converter_and_op():
    text = docs.supported_ops_markdown()
    for op_type, convs in all_converters().items():
        for c in convs:
            assert f"| {op_type} | {c.since} |" in text
    for name in all_ops():
        assert f"| `{name}` |" in text


def test_docs_script_writes_the_file(tmp_path):
    out = docs.write(tmp_path / "ops.md")
    assert out.read_text() == docs.supported_ops_markdown()
