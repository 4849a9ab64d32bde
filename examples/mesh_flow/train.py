"""Train the surface flow of the mesh-flow example and export its vector field as ONNX (not part of
the cimc package).

A neural ODE dx/dt = f(x, t) carries the unit sphere onto the star-shaped target of
``mesh.target_radius`` over t in [0, 1]: each point u of the sphere should arrive at r(u) u. f is
an MLP 4 -> 128 -> 128 -> 3 (tanh) of the point and the time. Training integrates the flow with
8 classic RK4 steps (differentiable, in torch) from the 2,562 vertices of the icosphere template
and 2,048 fresh random points of the sphere per step, and minimises the squared distance to the
target points plus a small penalty on |f|^2 (a short, straight flow). By default the weights see
Gaussian noise of 2 % of each layer's max|W| in every step (hardware-aware training, as the MNIST
example; ``--weight-noise 0`` turns it off), so that the field survives 17-level PCM weights.

Makes, next to this file:
  field.onnx    opset 17; inputs "x" float32 [2562, 3] and "t" float32 [1]; output "dx" [2562, 3].
  template.npz  the icosphere template: "x" float32 [2562, 3] (the initial state) and "faces"
                int32 [5120, 3].

Requires torch (CPU); cimc itself needs none of it. Run from anywhere:
  python examples/mesh_flow/train.py
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mesh  # noqa: E402

SEED = 0
HIDDEN = 128
STEPS = 8
# torch spells t.expand(N, 1) with a shape computation on constants, which cimc folds at import
EXPECTED_OPS = ["ConstantOfShape", "Mul", "Equal", "Where", "Expand", "Concat", "Gemm", "Tanh",
                "Gemm", "Tanh", "Gemm"]


class Field(nn.Module):
    """f(x, t): the point and the time through two tanh layers."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(4, hidden), nn.Linear(hidden, hidden), \
            nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, t.expand(x.shape[0], 1)], dim=1)
        return self.l3(torch.tanh(self.l2(torch.tanh(self.l1(h)))))


def flow(f: Field, x: torch.Tensor, steps: int = STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """RK4 from t = 0 to 1; returns the end points and the mean |f|^2 along the way."""
    h = 1.0 / steps
    energy = x.new_zeros(())
    for i in range(steps):
        t = torch.full((1,), i * h)
        k1 = f(x, t)
        k2 = f(x + h / 2 * k1, t + h / 2)
        k3 = f(x + h / 2 * k2, t + h / 2)
        k4 = f(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        energy = energy + (k1 * k1).sum(1).mean() / steps
    return x, energy


def noisy(f: Field, gen: torch.Generator, level: float) -> list[torch.Tensor]:
    """Add Gaussian noise of ``level`` x max|W| to every weight matrix; returns the clean ones."""
    saved = []
    for layer in (f.l1, f.l2, f.l3):
        w = layer.weight
        saved.append(w.detach().clone())
        with torch.no_grad():
            w.add_(torch.randn(w.shape, generator=gen) * level * w.abs().max())
    return saved


def restore(f: Field, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, w in zip((f.l1, f.l2, f.l3), saved, strict=True):
            layer.weight.copy_(w)


def sphere_points(n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.randn(n, 3, generator=gen)
    return u / u.norm(dim=1, keepdim=True)


def target(u: torch.Tensor) -> torch.Tensor:
    return u * torch.as_tensor(mesh.target_radius(u.numpy()), dtype=u.dtype)[:, None]


def train(steps: int, weight_noise: float) -> tuple[Field, np.ndarray, np.ndarray]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    verts, faces = mesh.icosphere(4)
    template = torch.as_tensor(verts, dtype=torch.float32)
    f = Field()
    opt = torch.optim.Adam(f.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        x0 = torch.cat([template, sphere_points(2048, gen)])
        saved = noisy(f, gen, weight_noise) if weight_noise else None
        x1, energy = flow(f, x0)
        loss = ((x1 - target(x0)) ** 2).sum(1).mean() + 1e-3 * energy
        opt.zero_grad()
        loss.backward()
        if saved is not None:
            restore(f, saved)
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3e}")
    with torch.no_grad():
        x1, _ = flow(f, template, 64)
        err = (x1 - target(template)).norm(dim=1)
    print(f"template: mean distance to its target point {err.mean():.2e} (RK4, 64 steps)")
    return f, verts.astype(np.float32), faces


def export(f: Field, verts: np.ndarray, path: Path) -> None:
    x = torch.as_tensor(verts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(f, (x, torch.zeros(1)), str(path), dynamo=False, opset_version=17,
                          input_names=["x", "t"], output_names=["dx"])
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node if n.op_type != "Constant"]
    assert ops == EXPECTED_OPS, ops
    onnx.checker.check_model(proto, full_check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--weight-noise", type=float, default=0.02)
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()
    f, verts, faces = train(args.steps, args.weight_noise)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(f, verts, args.out_dir / "field.onnx")
    np.savez_compressed(args.out_dir / "template.npz", x=verts, faces=faces)
    print(f"wrote {args.out_dir / 'field.onnx'} and {args.out_dir / 'template.npz'}")


if __name__ == "__main__":
    main()
