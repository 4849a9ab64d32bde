"""The mesh-flow example on the pcm40 chip: deform the icosphere template along the learned flow
(``field.onnx``, made by ``train.py``) and measure the result against the target surface.

For the float64 solve of the same ONNX field (scipy's DOP853 at rtol 1e-10) and for the chip at
t = 0 and after a day of drift (drift control, seed 0), it prints:

- ASSD and HD90 to the target surface and the share of self-intersecting faces (``mesh.py``);
- the largest distance of a vertex from the float64 solve's;
- steps, rejected steps and step-cell writes, and the modelled latency per iteration and per
  solve beside the chip's reported 2.12 ms per iteration.

It draws h against t for drift control and for the classic digital controller on the same chip
(``docs/mesh_flow_steps.png``) and the mesh before and after (``docs/mesh_flow_mesh.png``), and
writes the figures as JSON (``--json``). Needs numpy, scipy and matplotlib (``pip install -e
".[bench]"``); no torch. Run from the repository root:

    python examples/mesh_flow/run.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

import cimc
from cimc.frontend.ode import float64_field

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import mesh

DAY = 86400.0
ODE = {"t1": 1.0, "rtol": 1e-2, "atol": 1e-3}


def metrics(x: np.ndarray, faces: np.ndarray, target: tuple[np.ndarray, np.ndarray],
            ref: np.ndarray | None) -> dict[str, float]:
    tv, tf = target
    d = mesh.surface_distances(np.asarray(x, np.float64), faces, tv, tf, tv)
    assd, hd90 = mesh.assd_hd90(d)
    out = {"assd": assd, "hd90": hd90,
           "sif": float(mesh.self_intersecting_faces(np.asarray(x, np.float64), faces).mean())}
    if ref is not None:
        out["max_from_float64"] = float(np.linalg.norm(x - ref, axis=1).max())
    return out


def chip_solve(art: Path, x0: np.ndarray, t: float, seed: int) -> tuple[np.ndarray, dict, Any]:
    chip = cimc.load(art, seed=seed)
    y = chip.run({"x": x0}, t=t)["x"]
    stats = dict(chip.last_stats)
    return y, stats, chip.report().ode


def plot_steps(drift: dict, digital: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for stats, label, style in ((digital, "classic digital controller", "o-"),
                                (drift, "drift control (PCM step cell)", "s-")):
        tr = stats["trace"]
        t_start = np.concatenate([[0.0], tr["t"][:-1]])  # each try starts where the last ended
        acc = np.array(tr["accepted"], bool)
        ax.plot(t_start[acc], np.array(tr["h"])[acc], style, ms=3, label=label)
        if (~acc).any():
            ax.plot(t_start[~acc], np.array(tr["h"])[~acc], "x", color="k", ms=5)
    ax.set_xlabel("t")
    ax.set_ylabel("step size h")
    ax.set_title("mesh flow on pcm40: step size (x: rejected tries)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_meshes(meshes: list[tuple[str, np.ndarray]], faces: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3.2 * len(meshes), 3.4))
    for i, (title, v) in enumerate(meshes):
        ax = fig.add_subplot(1, len(meshes), i + 1, projection="3d")
        ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=faces, linewidth=0.1,
                        edgecolor="k", color="#9ecae1", alpha=1.0)
        ax.set_title(title, y=0.97)
        ax.set_box_aspect((1, 1, 1), zoom=1.3)
        lim = 1.2
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.92, wspace=0)
    fig.savefig(path, dpi=75)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plots", type=Path, default=ROOT / "docs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--model-dir", type=Path, default=HERE,
                    help="where field.onnx and template.npz are (train.py --out-dir)")
    args = ap.parse_args()
    with np.load(args.model_dir / "template.npz") as z:
        x0, faces = z["x"], z["faces"]
    field = args.model_dir / "field.onnx"
    target = mesh.target_mesh()
    start = time.perf_counter()
    f64, shape = float64_field(field)
    sol = solve_ivp(f64, (0.0, ODE["t1"]), x0.astype(np.float64).ravel(), method="DOP853",
                    rtol=1e-10, atol=1e-12)
    ref = sol.y[:, -1].reshape(shape)
    rows: dict[str, dict[str, Any]] = {
        "template": metrics(x0, faces, target, None),
        "float64 (DOP853)": {**metrics(ref, faces, target, ref), "f_evals": int(sol.nfev)},
    }
    runs = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        arts = {}
        for step in ("drift", "digital"):
            arts[step] = Path(tmp) / f"{step}.cimc"
            cimc.compile(field, "pcm40", arts[step], calib={"x": x0},
                         ode={**ODE, "step": step})
        for name, step, t in (("pcm40, t = 0", "drift", 0.0), ("pcm40, 1 day", "drift", DAY),
                              ("pcm40 digital, t = 0", "digital", 0.0)):
            y, stats, use = chip_solve(arts[step], x0, t, args.seed)
            runs[name] = stats
            rows[name] = {**metrics(y, faces, target, ref), "steps": stats["steps"],
                          "rejected": stats["rejected"], "f_evals": stats["f_evals"],
                          "cell_writes": stats["cell_writes"],
                          "max_writes_per_row": stats["max_writes_per_row"],
                          "iteration_ms": use.iteration_ns * 1e-6,
                          "solve_ms": stats["latency_ns"] * 1e-6,
                          "energy_uj": stats["energy_nj"] * 1e-3}
            if name == "pcm40, t = 0":
                chip_y = y
                report = use
    print(f"mesh flow: {len(x0)} vertices, {len(faces)} faces; ode {ODE}; chip seed {args.seed}")
    print(f"{'':22} {'ASSD':>9} {'HD90':>9} {'SIF':>7} {'max|x-x64|':>10} {'steps':>6} "
          f"{'rej':>4} {'writes':>6} {'ms/iter':>8} {'ms/solve':>9}")
    for name, r in rows.items():
        cells = [format(r[k], f) if k in r else "-".rjust(int(f.rstrip("edg%").split(".")[0]))
                 for k, f in (("max_from_float64", "10.2e"), ("steps", "6d"), ("rejected", "4d"),
                              ("cell_writes", "6d"), ("iteration_ms", "8.3g"),
                              ("solve_ms", "9.4g"))]
        print(f"{name:22} {r['assd']:9.2e} {r['hd90']:9.2e} {r['sif']:7.2%} " + " ".join(cells))
    print(f"modelled time per iteration on pcm40: {report.iteration_ns * 1e-6:.3g} ms "
          f"(reported by the chip: {report.reported_iteration_ms} ms, {report.pipeline}); "
          "work per iteration: " + ", ".join(f"{k} {v * 1e-6:.3g} ms"
                                            for k, v in report.work_ns.items() if v))
    print("assumptions: " + "; ".join(report.assumptions))
    args.plots.mkdir(parents=True, exist_ok=True)
    plot_steps(runs["pcm40, t = 0"], runs["pcm40 digital, t = 0"],
               args.plots / "mesh_flow_steps.png")
    plot_meshes([("template", x0), ("float64 solve", ref), ("pcm40, drift control", chip_y),
                 ("target", x0 * mesh.target_radius(x0.astype(np.float64))[:, None])], faces,
                args.plots / "mesh_flow_mesh.png")
    print(f"wrote {args.plots / 'mesh_flow_steps.png'}, {args.plots / 'mesh_flow_mesh.png'} "
          f"({time.perf_counter() - start:.0f} s, on a shared machine)")
    if args.json is not None:
        args.json.write_text(json.dumps({"ode": ODE, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
