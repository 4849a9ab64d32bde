"""Latency, energy and area of an artifact, from the same instruction stream the machine runs.

Costs come from the target's ``costs`` section (docs/isa.md, "Instructions"):

- ``mvm``: ``mvm_ns`` and ``mvm_nj`` per input vector (one crossbar MVM each);
- ``dop``, ``slice``, ``im2col``: ``digital_ns_per_element`` / ``digital_pj_per_element`` per
  output element;
- ``send``: the sender's link is busy ``bytes / link_bytes_per_ns``; the message arrives
  ``link_latency_ns`` after that (the ``chip_link_*`` numbers when the cores are on different
  chips); ``link_pj_per_byte`` per byte. A send to the same core is free;
- ``input`` / ``output``: bytes over the chip's I/O link (the ``chip_link_*`` numbers);
- ``recv``: free, but the receiver's clock moves to the message's arrival when that is later.

Each core keeps a clock advanced by its instructions in execution order; the latency is the
latest clock. Work scales linearly with the batch, so a trace taken at one batch size gives the
report for any other.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from cimc.runtime.key import Encryption
from cimc.runtime.machine import Machine, Trace
from cimc.targets.schema import Target


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
    encryption: Encryption | None = None  # None: the weights are not encrypted

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
        return d

    def __str__(self) -> str:
        return format_report(self)


# ------------------------------------------------------------------------------ cost model


@dataclass
class _Clock:
    time: dict[int, float]
    busy: dict[int, float]
    energy: dict[str, float]
    work: Counter
    layer_vectors: Counter
    layer_ns: Counter


def _send_cost(target: Target, same_chip: bool, nbytes: float) -> tuple[float, float, float]:
    """(sender busy ns, extra latency ns, energy nJ) of one transfer."""
    c = target.costs
    if same_chip:
        return nbytes / c.link_bytes_per_ns, c.link_latency_ns, nbytes * c.link_pj_per_byte * 1e-3
    return (nbytes / c.chip_link_bytes_per_ns, c.chip_link_latency_ns,
            nbytes * c.chip_link_pj_per_byte * 1e-3)


def estimate(machine: Machine, trace: Trace, batch: int) -> _Clock:
    """Replay the trace with the target's costs for a batch of ``batch`` inputs."""
    target = machine.art.target
    c = target.costs
    ratio = batch / trace.batch
    chips = {core: code.chip for core, code in machine.codes.items()}
    clk = _Clock(dict.fromkeys(machine.codes, 0.0), dict.fromkeys(machine.codes, 0.0),
                 dict.fromkeys(("mvm", "digital", "link", "io"), 0.0), Counter(), Counter(),
                 Counter())
    inflight: dict[tuple[int, int], deque] = {}
    for core, pc, size in trace.events:
        st = machine.codes[core].steps[pc]
        amount = size * ratio
        dt = 0.0
        kind = st.kind
        clk.work[kind] += amount
        if kind == "mvm":
            dt = amount * c.mvm_ns
            clk.energy["mvm"] += amount * c.mvm_nj
            layer = machine.tiles[st.key].layer or f"core{core}/xbar{st.key[1]}"
            clk.layer_vectors[layer] += amount
            clk.layer_ns[layer] += dt
        elif kind in ("dop", "slice", "im2col"):
            dt = amount * c.digital_ns_per_element
            clk.energy["digital"] += amount * c.digital_pj_per_element * 1e-3
        elif kind in ("input", "output"):
            dt = c.chip_link_latency_ns + amount / c.chip_link_bytes_per_ns
            clk.energy["io"] += amount * c.chip_link_pj_per_byte * 1e-3
        elif kind == "send":
            q = inflight.setdefault((core, st.peer), deque())
            if st.peer == core:
                q.append(clk.time[core])
            else:
                busy, lat, nj = _send_cost(target, chips[core] == chips[st.peer], amount)
                dt = busy
                clk.energy["link"] += nj
                q.append(clk.time[core] + busy + lat)
        elif kind == "recv":
            arrival = inflight[(st.peer, core)].popleft()
            clk.time[core] = max(clk.time[core], arrival)
        clk.time[core] += dt
        clk.busy[core] += dt
    return clk


def build_report(machine: Machine, trace: Trace, batch: int,
                 encryption: Encryption | None = None) -> Report:
    art, target = machine.art, machine.art.target
    clk = estimate(machine, trace, batch)
    instructions = Counter(st.kind for code in machine.codes.values() for st in code.steps)
    chips = max(art.chips, len({code.chip for code in machine.codes.values()}))
    return Report(
        artifact=art.name,
        target=target.name,
        batch=batch,
        chips=chips,
        cores=len(machine.codes),
        crossbars=len(machine.tiles),
        crossbars_available=chips * target.crossbars_per_chip,
        layers=_layers(machine, clk),
        instructions=dict(sorted(instructions.items())),
        executed={k: round(v) for k, v in sorted(clk.work.items())},
        latency_ns=max(clk.time.values(), default=0.0),
        energy_nj=dict(clk.energy),
        core_busy_ns=dict(clk.busy),
        area_mm2=len(machine.codes) * target.chip.core_area_mm2,
        area_total_mm2=chips * target.chip.cores * target.chip.core_area_mm2,
        manifest_layers=art.layers,
        encryption=encryption,
    )


def _layers(machine: Machine, clk: _Clock) -> list[LayerUse]:
    target = machine.art.target
    cap = target.crossbar.rows * target.weight_cols
    per: dict[str, list[int]] = {}
    for tile in machine.tiles.values():
        name = tile.layer or f"core{tile.core}/xbar{tile.index}"
        entry = per.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += tile.rows * tile.cols
    return [LayerUse(name, n, used, n * cap, round(clk.layer_vectors[name]),
                     float(clk.layer_ns[name]))
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
    return "\n".join(lines)
