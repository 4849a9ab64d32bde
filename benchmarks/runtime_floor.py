"""The floor under runtime_speed.py's figures: what only the unavoidable arithmetic of the
issue-13 network costs in numpy, as a ratio to onnxruntime measured in the same run.

    python benchmarks/runtime_floor.py [--repeat 10] [--batch 1000] [--blocks 4,8,16,32]

The chip's runtime reproduces the reference machine's numbers bit for bit, so every crossbar's
product is one BLAS product of patches (im2col) by the crossbar's matrix, tile by tile. This
script times nothing but those pieces, on the network's shapes (conv 1->16 5x5, conv 16->32
5x5, fc 1568->128->10; every tile at most 256 rows, as the compiler tiles them), over blocks of
``--blocks`` samples (the best of them counts) in two forked processes with BLAS on one thread
each, as the runtime's two workers, into buffers made once:

- ``exact``: the patches (cimc's own im2col, in the layout the runtime uses) and the products;
- ``noisy``: the same, plus what read noise needs at the least: the variance product
  ``(x*x) @ var`` of the same size, its square root, one standard normal per output
  (cimc.runtime.device.normal_f32) and the multiply-add into the result.

Left out, so the floor is optimistic: the DAC and ADC, bias, ReLU, pooling, partial-sum adds,
the chip's instructions and transfers. It is the floor of this formulation in numpy, not of
every program: a compiled kernel that made each patch as the product reads it, or fused the
noise's element-wise passes, could go below it. runtime_speed.py's goals are ideal <= 2x and
hermes64 <= 4x; the chip's own ratios are measured here too, in the same rounds, to compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import multiprocessing
from contextlib import closing
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

import cimc
from cimc.ops.linalg import SAMPLES, patches
from cimc.runtime.device import normal_f32

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_speed import DATA, issue13, round_times  # noqa: E402

ROWS = 256  # crossbar rows: a longer dot product is split into tiles of at most this many


def tiles(rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + ROWS, rows)) for a in range(0, rows, ROWS)]


class Floor:
    """The issue-13 network's im2col and crossbar products (and read noise), nothing else, into
    buffers made once (as the runtime's workspace)."""

    def __init__(self, block: int, noisy: bool, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.block, self.noisy = block, noisy
        self.buffers: dict[tuple, np.ndarray] = {}

        def mats(rows: int, cols: int) -> list[tuple[np.ndarray, np.ndarray]]:
            return [(rng.standard_normal((b - a, cols), np.float32),
                     rng.random((b - a, cols), np.float32)) for a, b in tiles(rows)]

        self.c1, self.c2 = mats(25, 16), mats(400, 32)
        self.f1, self.f2 = mats(1568, 128), mats(128, 10)
        # conv 2 and fc 1 read a pooled feature map: any numbers of its shape cost the same
        self.p1 = rng.random((block, 16, 14, 14), np.float32)
        self.p2 = rng.random((block, 1568), np.float32)
        self.h = np.ones((block, 128), np.float32)

    def buf(self, *key) -> np.ndarray:
        """A buffer of ``key[-1]`` elements, one per key."""
        if key not in self.buffers:
            self.buffers[key] = np.empty(key[-1], np.float32)
        return self.buffers[key]

    def product(self, x: np.ndarray, w: np.ndarray, var: np.ndarray, rng: np.random.Generator,
                transposed: bool = False) -> np.ndarray:
        shape = (*x.shape[:-2], w.shape[1], x.shape[-1]) if transposed else (x.shape[0],
                                                                             w.shape[1])
        size = int(np.prod(shape))
        y = self.buf("y", w.shape, size).reshape(shape)
        np.matmul(w.T, x, out=y) if transposed else np.matmul(x, w, out=y)
        if self.noisy:
            sq = np.square(x, out=self.buf("sq", x.size).reshape(x.shape))
            std = self.buf("std", w.shape, size).reshape(shape)
            np.matmul(var.T, sq, out=std) if transposed else np.matmul(sq, var, out=std)
            np.sqrt(std, out=std)
            std *= normal_f32(rng, size, self.buf("z", size)).reshape(shape)
            y += std
        return y

    def run_block(self, x: np.ndarray, rng: np.random.Generator) -> None:
        n = len(x)
        (w, var), = self.c1  # conv 1: one channel, patches [N, 25, 784] (patch-major)
        p = patches(x, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), layout=SAMPLES,
                    out=self.buf("p1", n * 25 * 784))
        self.product(p.transpose(0, 3, 1, 2).reshape(n, 25, -1), w, var, rng, transposed=True)
        x2 = self.p1[:n]
        for (a, b), (w, var) in zip(tiles(400), self.c2):  # conv 2: [N*196, rows] per tile
            p = patches(x2, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), rows=(a, b),
                        out=self.buf("p2", a, n * 196 * (b - a)),
                        scratch=self.buf("pad", n * 16 * 18 * 18))
            self.product(p.reshape(-1, b - a), w, var, rng)
        h = self.p2[:n]
        for (a, b), (w, var) in zip(tiles(1568), self.f1):
            self.product(h[:, a:b], w, var, rng)
        (w, var), = self.f2
        self.product(self.h[:n], w, var, rng)


def serve(conn: Connection, x: np.ndarray, seed: int) -> None:
    """A worker process: on each request ``(block, noisy)`` runs its samples ``x`` in blocks of
    that many, BLAS on one thread, and answers when done; None ends it."""
    floors: dict[tuple[int, bool], Floor] = {}
    rng = np.random.default_rng(seed)
    with threadpool_limits(1):
        while (request := conn.recv()) is not None:
            block = request[0]
            if request not in floors:
                floors[request] = Floor(*request)
            floor = floors[request]
            for a in range(0, len(x), block):
                floor.run_block(x[a:a + block], rng)
            conn.send(True)


class Workers:
    """Two forked processes, each with half the batch (one request each, so both always work)."""

    def __init__(self, x: np.ndarray) -> None:
        fork = multiprocessing.get_context("fork")
        half = (len(x) + 1) // 2
        self.conns, self.procs = [], []
        for i, part in enumerate((x[:half], x[half:])):
            mine, theirs = fork.Pipe()
            proc = fork.Process(target=serve, args=(theirs, part, i), daemon=True)
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)

    def run(self, block: int, noisy: bool) -> None:
        for c in self.conns:
            c.send((block, noisy))
        for c in self.conns:
            c.recv()

    def close(self) -> None:
        for c, p in zip(self.conns, self.procs):
            c.send(None)
            p.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--blocks", default="4,8,16,32",
                    help="samples per block to try; each floor is the best of them")
    args = ap.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    with np.load(DATA) as z:
        x = z["x"][: args.batch].astype(np.float32)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    model = issue13()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp, closing(Workers(x)) as workers:
        chips = {}
        for target in ("ideal", "hermes64"):
            art = cimc.compile(model, target, Path(tmp) / f"{target}.cimc",
                               input_shapes={"input": (1, 1, 28, 28)},
                               calib={"input": x[:100]}, replicate="none").artifact
            chips[target] = cimc.load(art, seed=0)
        cases = [(b, noisy) for noisy in (False, True) for b in blocks]
        fns = [lambda: sess.run(None, {"input": x}),
               lambda: chips["ideal"].run({"input": x}, t=0.0),
               lambda: chips["hermes64"].run({"input": x}, t=86400.0),
               *(lambda case=case: workers.run(*case) for case in cases)]
        times = [min(t) for t in round_times(fns, args.repeat)]
        for chip in chips.values():
            chip.close()
    t_ort = times[0]
    floors = dict(zip(cases, times[3:]))
    print(f"onnxruntime {t_ort * 1e3:.1f} ms, batch {len(x)}; the floors on 2 processes, the "
          f"best of blocks of {args.blocks} samples")
    for name, t, goal, best in (
            ("chip, ideal", times[1], 2.0, None),
            ("floor, exact products", *min((floors[b, False], 2.0, b) for b in blocks)),
            ("chip, hermes64 t=1 day", times[2], 4.0, None),
            ("floor, noisy products", *min((floors[b, True], 4.0, b) for b in blocks))):
        blk = "" if best is None else f", blocks of {best}"
        print(f"  {name:<24} {t * 1e3:7.1f} ms = {t / t_ort:5.2f}x onnxruntime "
              f"(runtime_speed.py's goal <= {goal:g}x{blk})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
