"""Print onnxruntime's top-1 accuracy of an example model on its test split.

Usage: python examples/check_onnx.py MODEL.onnx TEST.npz [--batch B]

TEST.npz holds x (float32, the model's input layout) and y (int64 labels). Needs only numpy and
onnxruntime (no torch), so it checks the exported file exactly as cimc's users receive it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def onnx_accuracy(model: Path, test: Path, batch: int = 0) -> tuple[float, int]:
    """Return (accuracy, number of images); batch 0 runs the whole split in one call."""
    with np.load(test) as data:
        x, y = data["x"], data["y"]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    step = batch or len(x)
    logits = np.concatenate(
        [sess.run(None, {inp.name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    )
    return float((logits.argmax(axis=1) == y).mean()), len(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--batch", type=int, default=0, help="images per call (0: all at once)")
    args = parser.parse_args(argv)
    acc, n = onnx_accuracy(args.model, args.test, args.batch)
    print(f"{args.model}: onnxruntime accuracy {acc * 100:.2f}% "
          f"({round(acc * n)}/{n}) on {args.test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
