"""Train the surface flow of the mesh-flow example and export its vector field as ONNX (not part of
the cimc package).

A neural ODE dx/dt = f(x, t) carries the unit sphere onto the star-shaped target of
``mesh.target_radius`` over t in [0, 1]: each point u of the sphere should arrive at r(u) u. The
field is f(x, t) = s'(t) v(x): an MLP v, 3 -> 128 -> 128 -> 3 (tanh), of the point, times a
speed profile of the time, s(t) = (1 - exp(-K t)) / (1 - exp(-K)) with K = ``--decay`` (20):
the mesh moves fast at first and then ever more slowly, the coarse-to-fine schedule of surface
flows. Its trajectories are those of dx/ds = v(x) with s running from 0 to 1, so the paths are
the same whatever K; K sets how unevenly they are travelled in t, which is what an adaptive step
pays off on (with K = 0, constant speed on straight paths, one Heun step solves the ODE). v is
trained by flow matching (Lipman et al., ICLR 2023): along the straight path x_s = (1 + s (r(u) -
1)) u the velocity is (r(u) - 1) u, and these radial paths never cross, so regressing v(x_s) on
it (fresh random u and s in every step) gives a field whose flow is the map itself; no ODE solve
in the training loop. s'(t) is two element-wise ops the chip's digital unit computes (Exp, Mul).
The training is hardware-aware: the weights are used rounded to pcm40's ±8 levels of each
column's max|W| (``--levels``; a straight-through estimator) and with Gaussian noise of 2 % of that
max (``--weight-noise``), so that the field survives 17-level PCM weights: a float-trained field
of this size loses its fine shape to them. The rounded weights are exported. At the end the
template is flowed with 64 RK4 steps in s and its mean distance to the target points is printed.

Makes, next to this file:
  field.onnx    opset 17; inputs "x" float32 [2562, 3] and "t" float32 [1]; output "dx" [2562, 3].
  template.npz  the icosphere template: "x" float32 [2562, 3] (the initial state) and "faces"
                int32 [5120, 3].

Requires torch (CPU); cimc itself needs none of it. Run from anywhere:
  python examples/mesh_flow/train.py
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mesh

SEED = 0
HIDDEN = 128
DECAY = 20.0
EXPECTED_OPS = ["Gemm", "Tanh", "Gemm", "Tanh", "Gemm", "Mul", "Exp", "Mul", "Mul"]


class Field(nn.Module):
    """f(x, t) = s'(t) v(x): v the point through two tanh layers, s' the speed profile of decay
    ``decay`` (the module docstring). With ``levels`` > 0 the weights
    are used rounded to ``levels`` steps of each output's max|W| (pcm40 stores ±8 levels per
    device pair and scales each column), through a straight-through estimator; with ``noise`` >
    0 they also get Gaussian noise of that fraction of each output's max|W| in every forward pass
    (programming noise and drift)."""

    def __init__(self, hidden: int = HIDDEN, levels: int = 0, noise: float = 0.0,
                 decay: float = DECAY) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, hidden), nn.Linear(hidden, hidden), \
            nn.Linear(hidden, 3)
        self.levels, self.noise, self.decay = levels, noise, decay

    def weight(self, layer: nn.Linear) -> torch.Tensor:
        w = layer.weight
        if not self.levels:
            return w
        top = w.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        step = top / self.levels
        w = w + (torch.round(w / step) * step - w).detach()
        if self.noise and self.training:
            w = w + torch.randn_like(w) * self.noise * top
        return w

    def velocity(self, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate((self.l1, self.l2, self.l3)):
            h = nn.functional.linear(h, self.weight(layer), layer.bias)
            if i < 2:
                h = torch.tanh(h)
        return h

    def speed(self, t: torch.Tensor) -> torch.Tensor:
        """s'(t) = K exp(-K t) / (1 - exp(-K)): 1 for K = 0."""
        k = self.decay
        if not k:
            return torch.ones_like(t)
        return torch.exp(t * -k) * (k / -math.expm1(-k))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.velocity(x) * self.speed(t)

    def frozen(self) -> Field:
        """A plain copy whose weights are the rounded ones (what the compiler programs)."""
        out = Field(self.l1.out_features, decay=self.decay)
        with torch.no_grad():
            for mine, theirs in zip((self.l1, self.l2, self.l3), (out.l1, out.l2, out.l3),
                                    strict=True):
                self.eval()
                theirs.weight.copy_(self.weight(mine))
                theirs.bias.copy_(mine.bias)
        return out.eval()


def flow(f: Field, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Classic RK4 of dx/ds = v(x) from s = 0 to 1 (the paths of f from t = 0 to 1)."""
    h = 1.0 / steps
    for _ in range(steps):
        k1 = f.velocity(x)
        k2 = f.velocity(x + h / 2 * k1)
        k3 = f.velocity(x + h / 2 * k2)
        k4 = f.velocity(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def sphere_points(n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.randn(n, 3, generator=gen)
    return u / u.norm(dim=1, keepdim=True)


def target(u: torch.Tensor) -> torch.Tensor:
    return u * torch.as_tensor(mesh.target_radius(u.numpy()), dtype=u.dtype)[:, None]


def train(steps: int, levels: int, noise: float, decay: float, batch: int = 4096
          ) -> tuple[Field, np.ndarray, np.ndarray]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    verts, faces = mesh.icosphere(4)
    template = torch.as_tensor(verts, dtype=torch.float32)
    f = Field(levels=levels, noise=noise, decay=decay)
    opt = torch.optim.Adam(f.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        u = sphere_points(batch, gen)
        s = torch.rand(batch, 1, generator=gen)
        v = target(u) - u  # the velocity along the straight path from u to r(u) u
        loss = ((f.velocity(u + s * v) - v) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3e}")
    frozen = f.frozen()
    with torch.no_grad():
        err = (flow(frozen, template, 64) - target(template)).norm(dim=1)
    print(f"template: mean distance to its target point {err.mean():.2e}, largest "
          f"{err.max():.2e} (RK4, 64 steps, the exported weights)")
    return frozen, verts.astype(np.float32), faces


def export(f: Field, verts: np.ndarray, path: Path) -> None:
    x = torch.as_tensor(verts)
    assert not f.levels and not f.training
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
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--levels", type=int, default=8,
                    help="round the weights to this many steps of each output's max|W| in "
                    "training (pcm40: 8); 0 = float weights")
    ap.add_argument("--weight-noise", type=float, default=0.02)
    ap.add_argument("--decay", type=float, default=DECAY,
                    help="K of the speed profile s'(t) = K exp(-K t) / (1 - exp(-K)); 0 = "
                    "constant speed")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()
    f, verts, faces = train(args.steps, args.levels, args.weight_noise, args.decay)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(f, verts, args.out_dir / "field.onnx")
    np.savez_compressed(args.out_dir / "template.npz", x=verts, faces=faces)
    print(f"wrote {args.out_dir / 'field.onnx'} and {args.out_dir / 'template.npz'}")


if __name__ == "__main__":
    main()
