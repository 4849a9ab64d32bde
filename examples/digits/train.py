"""Train the bundled 8x8-digits CNN and export it as ONNX (not part of the cimc package).

Makes, next to this file:
  model.onnx  opset 17; input "input" float32 [N, 1, 8, 8] (N dynamic), output "logits" [N, 10].
              BatchNormalization is kept in the graph (exported in PRESERVE mode) so that the
              compiler's BatchNorm folding is exercised.
  test.npz    the held-out split: x float32 [360, 1, 8, 8] (pixels / 16, in [0, 1]), y int64 [360].

Requires torch (CPU) and scikit-learn; cimc itself needs neither. Run from anywhere:
  python examples/digits/train.py
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
EXPECTED_OPS = ["Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization", "Relu",
                "MaxPool", "Flatten", "Gemm"]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return x_train, x_test, y_train, y_test; x scaled to [0, 1] as float32 [n, 1, 8, 8]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=SEED)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        print(f"epoch {epoch + 1:2d}  train loss {total / len(xt):.4f}")


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
        do_constant_folding=False,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE,  # keep BatchNormalization (inference mode)
    )
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    if ops != EXPECTED_OPS:
        raise SystemExit(f"unexpected exported graph {ops}; expected {EXPECTED_OPS}")
    proto.doc_string = "CNN on scikit-learn 8x8 digits; input = pixel / 16 (range [0, 1])"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    x_tr, x_te, y_tr, y_te = load_split()
    model = make_model()
    train(model, x_tr, y_tr, args.epochs)
    acc = accuracy(model, x_te, y_te)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(model, args.out_dir / "model.onnx")
    np.savez_compressed(args.out_dir / "test.npz", x=x_te, y=y_te)
    print(f"train {len(y_tr)} / test {len(y_te)} images")
    n_right = round(acc * len(y_te))
    print(f"test accuracy (torch, fp32): {acc * 100:.2f}% ({n_right}/{len(y_te)})")


if __name__ == "__main__":
    main()
