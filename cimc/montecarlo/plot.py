"""A sweep's accuracy bands against time since programming (log axis), as an image file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cimc.errors import CimcError
from cimc.montecarlo.results import SweepResult

MARK = "cimc sweep"  # the plot's title in its metadata: a file with it may be replaced


def check_plot(path: str | Path, force: bool = False, inputs: Sequence[str | Path] = ()) -> str:
    """The image format of ``path``; refuses an unknown one, a missing matplotlib, and a file
    there that is not a sweep's plot (unless ``force``)."""
    from cimc.atomic import check_output

    path = Path(path)
    check_output(path, "a sweep's plot", force=force, inputs=inputs, option="--plot",
                 ours=lambda p: p.is_file() and MARK.encode() in p.read_bytes())
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise CimcError(f"{path}: the plot is written as .png, .pdf or .svg, not "
                        f"{path.suffix or 'a file without a suffix'!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CimcError(f"{path}: drawing the plot needs matplotlib: pip install 'cimc[bench]' "
                        "(or matplotlib)") from None
    return fmt


def plot_sweep(result: SweepResult, path: str | Path, force: bool = False) -> Path:
    """Draw the mean accuracy over instances, the mean ± std band, the min-max band and the 5th
    percentile against time (t = 0 at the left edge) into ``path`` (.png, .pdf or .svg)."""
    path = Path(path)
    fmt = check_plot(path, force)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cimc.atomic import atomic_path
    from cimc.evaluate import format_time

    rows = [r for r in result.summary() if r["mean"] is not None]
    if not rows:
        raise CimcError(f"{path}: no chip instance has finished; nothing to plot")
    done = [result.by_seed[s] for s in result.seeds if s in result.by_seed]
    acc = 100 * np.array(done).T  # times x instances
    positive = [t for t in result.times if t > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    ts = [t if t > 0 else zero_at for t in result.times]
    mean, std = acc.mean(axis=1), acc.std(axis=1)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.fill_between(ts, acc.min(axis=1), acc.max(axis=1), color="C0", alpha=0.15,
                    label="min to max")
    ax.fill_between(ts, mean - std, mean + std, color="C0", alpha=0.3, label="mean ± std")
    ax.plot(ts, mean, "o-", color="C0", label="mean")
    ax.plot(ts, np.percentile(acc, 5, axis=1), "--", color="C3", label="5th percentile")
    ax.set_xscale("log")
    ax.set_xticks(ts, [format_time(t) for t in result.times])
    ax.minorticks_off()
    ax.set_xlabel("time since programming")
    ax.set_ylabel("top-1 accuracy (%)")
    comp = "on" if result.drift_compensation else "off"
    ax.set_title(f"{result.model} on {result.target}: {len(done)} chip instances, "
                 f"{result.samples} samples (drift compensation {comp})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110, metadata={"Title": MARK})
    plt.close(fig)
    return path
