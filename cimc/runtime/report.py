"""Latency, energy and area of an artifact, from the same instructions the machine runs.

Every instruction's cost is its definition's (``charge`` in :mod:`cimc.runtime.instructions`,
the "cost" column of docs/isa.md), charged to a :class:`~cimc.runtime.isa.Timeline` as the
reference machine executes: each core keeps a clock, and the latency is the latest clock. Work
scales linearly with the batch, so the trace of one noiseless run at batch 1 replayed with its
work scaled gives the report for any batch (:func:`cimc.runtime.reference.replay`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cimc.errors import ArtifactError
from cimc.runtime.isa import Timeline
from cimc.runtime.key import Encryption
from cimc.runtime.ode_report import OdeUse, format_ode, ode_use

if TYPE_CHECKING:
    from cimc.runtime.artifact import Artifact
    from cimc.runtime.machine import Machine


@dataclass(frozen=True)
class LayerUse:
    """Crossbar use of one model layer."""

    name: str
    crossbars: int
    weights: int  # weight cells used (rows x cols over its crossbars)
    capacity: int  # weight cells its crossbars offer
    mvm_vectors: int  # crossbar MVMs per batch
    mvm_ns: float  # crossbar busy time per batch (summed over its crossbars)

    @property
    def utilisation(self) -> float:
        return self.weights / self.capacity if self.capacity else 0.0


@dataclass
class Report:
    """What an artifact costs on its target, for a batch of ``batch`` inputs."""

    artifact: str
    target: str
    batch: int
    chips: int
    cores: int
    crossbars: int
    crossbars_available: int
    layers: list[LayerUse]
    instructions: dict[str, int]  # static count per mnemonic, over all core programs
    executed: dict[str, int]  # work per mnemonic for this batch: vectors, elements or bytes
    latency_ns: float
    energy_nj: dict[str, float]  # per kind: mvm, digital, link, io
    core_busy_ns: dict[int, float]
    area_mm2: float  # the cores the artifact uses
    area_total_mm2: float  # every core of its chips
    manifest_layers: list[dict[str, Any]] = field(default_factory=list)
    pruning: dict[str, Any] | None = None  # the manifest's prune-similar summary
    encryption: Encryption | None = None  # None: the weights are not encrypted
    ode: OdeUse | None = None  # the last ODE solve (artifacts compiled with --ode)
    # the manifest's replicate summary, with "latency_ns" and "latency_without_ns": the same
    # trace with every copy's work folded onto the core of the original it mirrors
    replication: dict[str, Any] | None = None

    @property
    def total_energy_nj(self) -> float:
        return float(sum(self.energy_nj.values()))

    @property
    def throughput_per_s(self) -> float:
        return self.batch / (self.latency_ns * 1e-9) if self.latency_ns > 0 else 0.0

    @property
    def utilisation(self) -> float:
        cap = sum(u.capacity for u in self.layers)
        return sum(u.weights for u in self.layers) / cap if cap else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [{**asdict(u), "utilisation": u.utilisation} for u in self.layers]
        d["core_busy_ns"] = {str(k): v for k, v in self.core_busy_ns.items()}
        d["total_energy_nj"] = self.total_energy_nj
        d["throughput_per_s"] = self.throughput_per_s
        d["utilisation"] = self.utilisation
        d["encryption"] = self.encryption.to_dict() if self.encryption else None
        d["ode"] = self.ode.to_dict() if self.ode is not None else None
        return d

    def __str__(self) -> str:
        return format_report(self)


# ------------------------------------------------------------------------------ building


def build_report(machine: Machine, timeline: Timeline, batch: int,
                 encryption: Encryption | None = None, stats: dict[str, Any] | None = None,
                 unreplicated: Timeline | None = None) -> Report:
    """The report of ``machine``'s artifact from the ``timeline`` of a batch of ``batch``;
    ``stats``: the last run's statistics (``chip.last_stats``, an ODE solve's);
    ``unreplicated``: the same run with the copies folded onto their originals."""
    art, target = machine.art, machine.art.target
    replication = art.manifest.get("replication")
    if replication is not None:
        replication = {**replication, "latency_ns": timeline.latency_ns,
                       "latency_without_ns": (unreplicated or timeline).latency_ns}
    instructions = Counter(ins.mnemonic for p in machine.programs.values() for ins in p.instrs)
    chips = max(art.chips, len(set(machine.chips.values())))
    executed = {k: round(v) for k, v in sorted(timeline.work.items())}
    return Report(
        artifact=art.name,
        target=target.name,
        batch=batch,
        chips=chips,
        cores=len(machine.programs),
        crossbars=len(machine.crossbars),
        crossbars_available=chips * target.crossbars_per_chip,
        layers=_layers(machine, timeline),
        instructions=dict(sorted(instructions.items())),
        executed=executed,
        latency_ns=timeline.latency_ns,
        energy_nj=dict(timeline.energy),
        core_busy_ns=dict(timeline.busy),
        area_mm2=len(machine.programs) * target.chip.core_area_mm2,
        area_total_mm2=chips * target.chip.cores * target.chip.core_area_mm2,
        manifest_layers=art.layers,
        pruning=art.manifest.get("pruning"),
        encryption=encryption,
        ode=ode_use(art.manifest, target, stats, executed),
        replication=replication,
    )


def replica_fold(art: Artifact) -> dict[int, int]:
    """The artifact's copy cores -> the cores of the originals they mirror (the manifest's
    ``replication``, from ``replicate``)."""
    rep = art.manifest.get("replication") or {}
    cores = {c.id for c in art.cores}
    try:
        fold = {copy: orig for lay in rep.get("layers") or () for copy, orig in lay["cores"]}
    except (AttributeError, KeyError, TypeError, ValueError):
        fold = {-1: -1}
    if not all(isinstance(c, int) and c in cores for pair in fold.items() for c in pair):
        raise ArtifactError(f"{art.path}/manifest.json: 'replication' must list each layer's "
                            "cores as [copy core, original core] pairs of the artifact's cores")
    return fold


def _layers(machine: Machine, timeline: Timeline) -> list[LayerUse]:
    target = machine.art.target
    cap = target.crossbar.rows * target.weight_cols
    per: dict[str, list[int]] = {}
    for xb in machine.crossbars.values():
        entry = per.setdefault(xb.layer, [0, 0])
        entry[0] += 1
        entry[1] += xb.rows * xb.cols
    return [LayerUse(name, n, used, n * cap, round(timeline.layer_vectors[name]),
                     float(timeline.layer_ns[name]))
            for name, (n, used) in per.items()]


# ------------------------------------------------------------------------------ text


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _time(ns: float) -> str:
    for factor, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if ns >= factor:
            return f"{ns / factor:.3g} {unit}"
    return f"{ns:.3g} ns"


def _energy(nj: float) -> str:
    for factor, unit in ((1e9, "J"), (1e6, "mJ"), (1e3, "µJ")):
        if nj >= factor:
            return f"{nj / factor:.3g} {unit}"
    return f"{nj:.3g} nJ"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))))
    return out


def format_report(r: Report) -> str:
    lines = [
        f"artifact {r.artifact} on target {r.target} (batch {r.batch})",
        (f"  chips {r.chips}, cores {r.cores}, crossbars {r.crossbars} of "
        f"{r.crossbars_available} available, utilisation {r.utilisation:.1%}"),
        f"  latency {_time(r.latency_ns)}, throughput {_si(r.throughput_per_s, 'inf/s')}, "
        f"energy {_energy(r.total_energy_nj)} ("
        + ", ".join(f"{k} {_energy(v)}" for k, v in r.energy_nj.items()) + ")",
        (f"  area {r.area_mm2:.3g} mm² used ({r.area_total_mm2:.3g} mm² for all cores of "
        f"{r.chips} chip(s))"),
        *([f"  {r.encryption}"] if r.encryption else []),
        "",
    ]
    rows = [[u.name, str(u.crossbars), str(u.weights), f"{u.utilisation:.1%}",
             str(u.mvm_vectors), _time(u.mvm_ns)] for u in r.layers]
    lines += _table(["layer", "crossbars", "weights", "utilisation", "MVMs", "MVM time"], rows)
    lines.append("")
    rows = [[k, str(n), str(r.executed.get(k, 0))] for k, n in r.instructions.items()]
    lines += _table(["instruction", "count", "work (vectors/elements/bytes)"], rows)
    if r.pruning:
        lines += ["", *format_pruning(r.pruning)]
    if r.ode is not None:
        lines += ["", *format_ode(r.ode)]
    if r.replication:
        lines += ["", *format_replication(r.replication)]
    return "\n".join(lines)


def format_replication(p: dict[str, Any]) -> list[str]:
    """The report's ``replication`` (replicate's summary and both latencies) as text lines."""
    with_ns, without_ns = p["latency_ns"], p["latency_without_ns"]
    ratio = f" ({with_ns / without_ns:.2f}x)" if without_ns else ""
    lines = [
        (f"replication: {len(p['layers'])} layer(s) copied onto the {p['spare_cores']} spare "
         f"core(s) of {p['chips']} chip(s); crossbars {p['crossbars_before']} -> "
         f"{p['crossbars_after']}"),
        f"  latency {_time(with_ns)}, without the copies {_time(without_ns)}{ratio}",
    ]
    if p["layers"]:
        rows = [[lay["name"], str(lay["copies"]),
                 f"{lay['crossbars_before']} -> {lay['crossbars_after']}",
                 f"{lay['vectors']} -> {lay['vectors_per_copy']}"] for lay in p["layers"]]
        lines += ["", *_table(["layer", "copies", "crossbars", "MVMs per copy"], rows)]
    return lines


def format_pruning(p: dict[str, Any]) -> list[str]:
    """The manifest's ``pruning`` summary (prune-similar) as text lines."""
    def arrow(a: Any, b: Any) -> str:
        return "-" if a is None else f"{a} -> {b}"

    saved = p.get("crossbars_saved")
    lines = [
        f"pruning: {p['spec']} ({p['mode']}; compensation: {p['compensation']})",
        f"  MACs {p['macs_before']} -> {p['macs_after']} ({p['macs_removed_fraction']:.1%} "
        f"removed), crossbars {arrow(p.get('crossbars_before'), p.get('crossbars_after'))}"
        + ("" if saved is None else f" ({saved} saved)"),
        "",
    ]
    rows = [[lay["name"], lay["kind"], arrow(lay["filters_before"], lay["filters_after"]),
             arrow(lay["macs_before"], lay["macs_after"]),
             arrow(lay.get("crossbars_before"), lay.get("crossbars_after"))]
            for lay in p["layers"]]
    lines += _table(["layer", "kind", "filters", "MACs", "crossbars"], rows)
    for g in p.get("groups") or []:
        via = f" via {', '.join(g['via'])}" if g["via"] else ""
        lines.append(f"  channels of {', '.join(g['layers'])}{via}: {g['pruned']} of "
                     f"{g['channels']} pruned, {g['status']}")
    return lines
