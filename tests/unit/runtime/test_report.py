"""The report (cimc.runtime.report): numbers from known costs, worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from runtime_kit import target_dict, write_artifact

from cimc.runtime import load

COSTS = {
    "mvm_ns": 10.0, "mvm_nj": 2.0,
    "digital_ns_per_element": 1.0, "digital_pj_per_element": 1000.0,
    "link_bytes_per_ns": 4.0, "link_pj_per_byte": 1000.0, "link_latency_ns": 5.0,
    "chip_link_bytes_per_ns": 2.0, "chip_link_pj_per_byte": 2000.0, "chip_link_latency_ns": 100.0,
}

P0 = """
.core 0 chip=0
.xbar 0 rows=4 cols=3 layer="fc" tile=[0, 0]
  input  a0, name="x"
  mvm    a1, a0, xbar=0, dac_bits=0, adc_bits=0
  send   a1, to=1
  halt
"""
P1 = """
.core 1 chip={chip}
  recv   b0, from=0
  dop    b1, b0, op="nn.relu"
  output b1, name="y"
  halt
"""


def _chip(tmp_path, chip1: int = 0):
    target = target_dict("ideal", costs=COSTS)
    path = write_artifact(
        tmp_path / f"r{chip1}.cimc", {0: P0, 1: P1.format(chip=chip1)},
        {"xbar/0/0/levels": np.ones((4, 3), np.float32), "xbar/0/0/scale": np.ones(3, np.float32)},
        [("x", (1, 4), "f32")], [("y", (1, 3), "f32")], target=target, chips={1: chip1})
    return load(path)


def test_latency_and_energy_from_known_costs(tmp_path):
    chip = _chip(tmp_path)
    r = chip.report()  # no run yet: batch 1 from a dry run
    # core 0: input 100 + 16 B / 2 = 108; mvm +10 = 118; send busy 12 B / 4 = 3 -> 121,
    # arrives 126. core 1: recv 126; relu 3 elements +3 = 129; output 100 + 12 / 2 -> 235.
    assert r.batch == 1
    assert r.latency_ns == pytest.approx(235.0)
    assert r.energy_nj == pytest.approx({"mvm": 2.0, "digital": 3.0, "link": 12.0,
                                         "io": 16 * 2.0 + 12 * 2.0})
    assert r.core_busy_ns == pytest.approx({0: 121.0, 1: 109.0})
    assert r.instructions == {"dop": 1, "halt": 2, "input": 1, "mvm": 1, "output": 1,
                              "recv": 1, "send": 1}
    assert r.executed["mvm"] == 1 and r.executed["dop"] == 3 and r.executed["send"] == 12
    assert (r.chips, r.cores, r.crossbars) == (1, 2, 1)
    assert r.crossbars_available == 4096
    assert r.area_mm2 == pytest.approx(2 * 0.63)
    assert r.area_total_mm2 == pytest.approx(4096 * 0.63)
    (layer,) = r.layers
    assert (layer.name, layer.crossbars, layer.weights, layer.capacity) == ("fc", 1, 12, 65536)
    assert layer.utilisation == pytest.approx(12 / 65536)
    assert layer.mvm_vectors == 1 and layer.mvm_ns == pytest.approx(10.0)


def test_report_scales_with_the_batch(tmp_path):
    chip = _chip(tmp_path)
    chip.run({"x": np.ones((10, 4), np.float32)})
    r = chip.report()  # the last run's batch
    # core 0: 100 + 160/2 = 180; +100 = 280; +30 = 310 -> arrives 315; core 1: +30 = 345;
    # output 100 + 120/2 -> 505
    assert r.batch == 10 and r.latency_ns == pytest.approx(505.0)
    assert r.energy_nj["mvm"] == pytest.approx(20.0)
    assert r.throughput_per_s == pytest.approx(10 / 505e-9)
    assert chip.report(batch=1).latency_ns == pytest.approx(235.0)


def test_transfer_between_chips_uses_chip_link(tmp_path):
    r = _chip(tmp_path, chip1=1).report()
    # send: busy 12 / 2 = 6 -> 124, arrives +100 = 224; relu 227; output +106 = 333
    assert r.chips == 2 and r.latency_ns == pytest.approx(333.0)
    assert r.energy_nj["link"] == pytest.approx(12 * 2.0)
    assert r.crossbars_available == 2 * 4096


def test_dict_and_text(tmp_path):
    r = _chip(tmp_path).report()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["latency_ns"] == pytest.approx(235.0)
    assert d["layers"][0]["name"] == "fc" and d["core_busy_ns"]["0"] == pytest.approx(121.0)
    assert d["total_energy_nj"] == pytest.approx(2 + 3 + 12 + 56)
    text = str(r)
    assert "latency 235 ns" in text and "fc" in text and "crossbars 1 of 4096" in text
    assert "instruction" in text and "mvm" in text


def test_a_digital_matmul_costs_its_multiply_accumulates(tmp_path):
    """MatMul between activations stays digital; the report charges its K products per output
    element (the op library's work count), not just its output elements."""
    prog = """
.core 0 chip=0
  input  a0, name="x"
  input  a1, name="y"
  dop    a2, a0, a1, op="nn.matmul"
  dop    a3, a2, op="nn.relu"
  output a3, name="z"
  halt
"""
    target = target_dict("ideal", costs=COSTS)
    path = write_artifact(tmp_path / "mm.cimc", {0: prog}, {},
                          [("x", (1, 2, 3), "f32"), ("y", (1, 3, 4), "f32")],
                          [("z", (1, 2, 4), "f32")], target=target)
    r = load(path).report()
    # matmul: 2 x 4 outputs x 3 products = 24; relu: 8 elements
    assert r.executed["dop"] == 24 + 8
    assert r.energy_nj["digital"] == pytest.approx(32 * 1.0)
