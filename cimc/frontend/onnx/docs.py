"""Writes docs/supported_ops.md from the converter registry: ``python -m cimc.frontend.onnx.docs``."""

from __future__ import annotations

import sys
from pathlib import Path

from cimc.frontend.onnx.registry import supported_ops_markdown

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/supported_ops.md")
    out.write_text(supported_ops_markdown())
    print(f"wrote {out}")
