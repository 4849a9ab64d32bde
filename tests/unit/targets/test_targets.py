"""Targets as data: the bundled profiles, the schema's errors, (de)serialisation and the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimc.errors import CimcError, TargetError
from cimc.targets import Target, list_targets, load_target
from cimc.targets.schema import REGENERATE, _specs_dir, render_targets_doc

SPECS = _specs_dir()
DOCS = Path(__file__).resolve().parents[3] / "docs" / "targets.md"
BUNDLED = ["hermes64", "ideal", "neurram48", "pcm40"]


def spec_text(name: str) -> str:
    return (SPECS / f"{name}.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "pcm40.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_edited(tmp_path: Path, old: str, new: str, base: str = "pcm40") -> Target:
    text = spec_text(base)
    assert old in text, f"test setup: {old!r} not in {base}.toml"
    return load_target(write(tmp_path, text.replace(old, new, 1), f"{base}.toml"))


# ---- bundled profiles -------------------------------------------------------------------------


def test_list_targets_names_every_bundled_profile():
    assert list_targets() == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profile_loads_and_round_trips(name):
    target = load_target(name)
    assert target.name == name
    data = target.to_dict()
    text = json.dumps(data, allow_nan=False)  # plain JSON, as the manifest embeds it
    assert Target.from_dict(json.loads(text)) == target
    assert load_target(SPECS / f"{name}.toml") == target


def test_numbers_from_the_design():
    hermes, neurram, pcm, ideal = (load_target(n) for n in ("hermes64", "neurram48", "pcm40",
                                                             "ideal"))
    assert (hermes.chip.cores, hermes.crossbar.rows, hermes.crossbar.cols) == (64, 256, 256)
    assert hermes.crossbar.devices_per_weight == 4 and hermes.weight_cols == 256
    assert hermes.device.g_max_us == 20.7 and hermes.chip.core_area_mm2 == 0.63
    assert (hermes.converters.dac_bits, hermes.converters.adc_bits) == (8, 8)
    assert (hermes.costs.mvm_ns, hermes.costs.mvm_nj) == (133.0, 13.4)
    assert hermes.device.programming_noise.coeffs_us == (0.16603, 4.71806, -8.48101, 4.68961)
    assert hermes.device.drift.t0_s == 300.0 and hermes.device.drift_compensation
    assert hermes.reported_dict["resnet9_cifar10_top1_chip"] == 92.81

    assert (neurram.chip.cores, neurram.weight_rows, neurram.weight_cols) == (48, 256, 128)
    assert (neurram.converters.dac_bits, neurram.converters.adc_bits) == (4, 6)
    assert (neurram.costs.mvm_ns, neurram.costs.mvm_nj, neurram.chip.core_area_mm2) == (
        4200.0, 4.1, 1.16)
    assert neurram.max_level == 7 and neurram.device.kind == "rram"
    assert neurram.device.drift is None and neurram.device.read_noise.additive_rel == 0.01

    assert pcm.max_level == 8 and pcm.crossbar.devices_per_weight == 2
    assert (pcm.chip.clock_mhz, pcm.chip.pipeline_stages) == (50.0, 9)
    assert pcm.reported_dict["iteration_ms"] == 2.12 and pcm.chip.core_area_mm2 == 0.28
    assert pcm.device.drift.t0_s == 20.0 and pcm.device.read_noise.t_read_s == 250e-9
    assert pcm.device.drift_compensation

    assert ideal.is_ideal and ideal.max_level == 0
    assert (ideal.converters.dac_bits, ideal.converters.adc_bits) == (0, 0)
    assert ideal.device.programming_noise is None and ideal.device.read_noise is None


def test_pcm40_marks_its_assumed_numbers():
    lines = {line.split("=")[0].strip(): line for line in spec_text("pcm40").splitlines()
             if "=" in line and not line.startswith("#")}
    for key in ("rows", "cols", "cores", "mvm_ns", "mvm_nj"):
        assert "# assumed" in lines[key], key
    assert "assumed" not in lines["clock_mhz"] and "assumed" not in lines["pipeline_stages"]


def test_load_target_accepts_paths_and_targets(tmp_path):
    path = write(tmp_path, spec_text("neurram48").replace('name = "neurram48"',
                                                          'name = "my-chip"'), "chip.toml")
    mine = load_target(path)
    assert mine.name == "my-chip" and load_target(str(path)) == mine
    assert load_target(mine) is mine


# ---- errors -----------------------------------------------------------------------------------


def test_wrong_type_names_file_and_key(tmp_path):
    with pytest.raises(TargetError) as info:
        load_edited(tmp_path, "rows = 256", 'rows = "abc"')
    assert str(info.value) == "pcm40.toml: crossbar.rows: expected an integer, got 'abc'"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("rows = 256", "rows = 256.0", "crossbar.rows: expected an integer, got 256.0 (a float)"),
    ("rows = 256", "rows = true", "crossbar.rows: expected an integer, got true (a boolean)"),
    ("bit_slicing = false", "bit_slicing = 1", "crossbar.bit_slicing: expected true or false"),
    ("clock_mhz = 50.0", 'clock_mhz = "fast"', "chip.clock_mhz: expected a number, got 'fast'"),
    ('kind = "pcm"', "kind = 3", "device.kind: expected a string, got 3 (an integer)"),
    ("coeffs_us = [0.26348, 1.9650, -1.1731]", 'coeffs_us = [0.26348, "x"]',
     "device.programming_noise.coeffs_us[1]: expected a number, got 'x'"),
    ("t0_s = 20.0", "t0_s = [20.0]", "device.drift.t0_s: expected a number, got an array"),
])
def test_wrong_types(tmp_path, old, new, message):
    with pytest.raises(TargetError, match=r"^pcm40\.toml: ") as info:
        load_edited(tmp_path, old, new)
    assert message in str(info.value)


def test_section_of_wrong_type():
    data = load_target("pcm40").to_dict()
    data["chip"] = 4
    with pytest.raises(TargetError, match=r"^x: chip: expected a table, got 4 \(an integer\)$"):
        Target.from_dict(data, source="x")


def test_unknown_key_suggests_the_near_one(tmp_path):
    with pytest.raises(TargetError) as info:
        load_edited(tmp_path, "cols = 256", "colz = 256")
    msg = str(info.value)
    assert msg.startswith("pcm40.toml: crossbar.colz: unknown key (did you mean 'cols'?)")
    assert "rows, cols, cols_per_weight" in msg


def test_unknown_section_and_nested_key(tmp_path):
    with pytest.raises(TargetError, match=r"pcm40\.toml: chips: unknown key"):
        load_edited(tmp_path, "[chip]", "[chips]")
    with pytest.raises(TargetError, match=r"device\.drift\.nu_mean\[0\]\.slope: unknown key"):
        load_edited(tmp_path, "log_linear = [-0.0155, 0.0244]", "slope = 1.0")


def test_missing_required_key(tmp_path):
    with pytest.raises(TargetError, match=r"^pcm40\.toml: device\.drift\.t0_s: missing required "
                       r"key \(Time of the first read"):
        load_edited(tmp_path, "t0_s = 20.0", "")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("rows = 256", "rows = 0", "crossbar.rows: must be >= 1, got 0"),
    ("g_max_us = 25.0", "g_max_us = -1.0", "device.g_max_us: must be > 0, got -1.0"),
    ('kind = "pcm"', 'kind = "sram"', "device.kind: expected one of ideal, pcm, rram; got 'sram'"),
    ('input_encoding = "pwm"', 'input_encoding = "morse"', "converters.input_encoding: expected"),
    ("devices_per_weight = 2", "devices_per_weight = 3",
     "crossbar.devices_per_weight: a pcm weight needs an even number of devices"),
    ("cols_per_weight = 2", "cols_per_weight = 3",
     "crossbar.cols_per_weight: 3 does not divide crossbar.cols = 256"),
    ("fit_devices = 1", "fit_devices = 2", "device.fit_devices: 2 does not divide"),
    ("levels = 9", "levels = 1", "crossbar.levels: must be 0 (continuous) or at least 2"),
    ("nu_mean = [{ from_g = 0.0,", "nu_mean = [{ from_g = 0.1,",
     "device.drift.nu_mean[0].from_g: the first piece must start at 0"),
    ("log_linear = [-0.0155, 0.0244], clip", "log_linear = [-0.0155, 0.0244], poly = [1.0], clip",
     "device.drift.nu_mean[0]: give exactly one of poly, log_linear, power (got poly, log_linear)"),
    ("log_linear = [-0.0155, 0.0244]", "log_linear = [-0.0155]",
     "device.drift.nu_mean[0].log_linear: expected two numbers"),
    ("clip = [0.049, 0.1]", "clip = [0.1, 0.049]", "device.drift.nu_mean[0].clip: expected"),
])
def test_range_and_consistency_errors(tmp_path, old, new, message):
    with pytest.raises(TargetError, match=r"^pcm40\.toml: ") as info:
        load_edited(tmp_path, old, new)
    assert message in str(info.value)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("dac_bits = 8", "dac_bits = 64", "converters.dac_bits: must be <= 16, got 64"),
    ("rows = 256", "rows = 100000000", "crossbar.rows: must be <= 65536, got 100000000"),
    ("t_read_s = 250e-9", "t_read_s = 5.0", "device.read_noise.t_read_s: must be <= 1, got 5.0"),
    ("coeffs_us = [0.26348, 1.9650, -1.1731]", "coeffs_us = [0.26348, 1e9, -1.1731]",
     "device.programming_noise.coeffs_us[1]: must be <= 10000, got 1000000000.0"),
    ("clip = [0.049, 0.1]", "clip = [0.049, 1e300]", "device.drift.nu_mean[0].clip[1]: must be <= 1000"),
])
def test_every_number_has_a_physical_range(tmp_path, old, new, message):
    with pytest.raises(TargetError, match=r"^pcm40\.toml: ") as info:
        load_edited(tmp_path, old, new)
    assert message in str(info.value)


def test_every_numeric_field_has_both_bounds():
    """The completeness check of the ranges: a new number in the schema needs its range."""
    import dataclasses

    from cimc.targets.schema import Piece, _leaf_fields

    fields = _leaf_fields(Target) + [(f"<piece>.{f.name}", f, None) for f in dataclasses.fields(Piece)]
    numeric = [(key, f) for key, f, _ in fields
               if f.type in ("int", "float", "tuple[float, ...]") and key != "reported"]
    assert len(numeric) > 30
    unbounded = [key for key, f in numeric
                 if f.metadata.get("max") is None
                 or (f.metadata.get("min") is None and not f.metadata.get("positive"))]
    assert unbounded == []


def test_a_files_every_error_is_reported_at_once(tmp_path):
    text = spec_text("pcm40")
    for old, new in (("rows = 256", "rows = 0"), ("cols = 256", 'cols = "wide"'),
                     ("dac_bits = 8", "dac_bits = 64"), ("clock_mhz = 50.0", "clock_mhx = 50.0"),
                     ("t0_s = 20.0", "t0_s = -1.0"), ("levels = 9", "levels = 1")):
        assert old in text
        text = text.replace(old, new, 1)
    with pytest.raises(TargetError) as info:
        load_target(write(tmp_path, text))
    lines = str(info.value).splitlines()
    assert lines == [
        "pcm40.toml: crossbar.rows: must be >= 1, got 0",
        "pcm40.toml: crossbar.cols: expected an integer, got 'wide'",
        ("pcm40.toml: chip.clock_mhx: unknown key (did you mean 'clock_mhz'?); expected one of: "
         "cores, crossbars_per_core, core_area_mm2, clock_mhz, pipeline_stages"),
        "pcm40.toml: chip.clock_mhz: missing required key (Clock of the digital periphery.)",
        "pcm40.toml: converters.dac_bits: must be <= 16, got 64",
        "pcm40.toml: device.drift.t0_s: must be > 0, got -1.0",
    ]


def test_cross_field_errors_are_reported_together(tmp_path):
    text = spec_text("pcm40").replace("levels = 9", "levels = 1", 1).replace(
        "devices_per_weight = 2", "devices_per_weight = 3", 1)
    with pytest.raises(TargetError) as info:
        load_target(write(tmp_path, text))
    assert str(info.value).splitlines() == [
        ("pcm40.toml: crossbar.devices_per_weight: a pcm weight needs an even number of devices "
         "(G+ and G-), got 3"),
        "pcm40.toml: crossbar.levels: must be 0 (continuous) or at least 2",
    ]


def test_ideal_device_with_noise_is_refused(tmp_path):
    text = spec_text("ideal") + "\n[device.read_noise]\nadditive_rel = 0.01\n"
    with pytest.raises(TargetError, match=r"^ideal\.toml: device: an ideal device has no"):
        load_target(write(tmp_path, text, "ideal.toml"))


def test_curve_pieces_must_increase(tmp_path):
    old = "nu_mean = [{ from_g = 0.0, log_linear = [-0.0155, 0.0244], clip = [0.049, 0.1] }]"
    new = ("nu_mean = [{ from_g = 0.0, poly = [0.05] }, { from_g = 0.5, poly = [0.06] }, "
           "{ from_g = 0.4, poly = [0.07] }]")
    with pytest.raises(TargetError, match=r"nu_mean\[2\]\.from_g: pieces must be in increasing"):
        load_edited(tmp_path, old, new)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(TargetError, match=r"target file '.*nope\.toml' not found.*ideal"):
        load_target(tmp_path / "nope.toml")
    with pytest.raises(TargetError) as info:
        load_target("pcm99")
    assert "unknown target 'pcm99'" in str(info.value)
    assert "hermes64, ideal, neurram48, pcm40" in str(info.value)
    assert isinstance(info.value, CimcError)


def test_invalid_toml(tmp_path):
    with pytest.raises(TargetError, match=r"^bad\.toml: invalid TOML: .*line 1"):
        load_target(write(tmp_path, "name = = 3\n", "bad.toml"))


def test_from_dict_validates_and_names_its_source():
    data = load_target("hermes64").to_dict()
    data["chip"]["cores"] = "many"
    with pytest.raises(TargetError) as info:
        Target.from_dict(data, source="manifest.json")
    assert str(info.value) == "manifest.json: chip.cores: expected an integer, got 'many'"
    data = load_target("hermes64").to_dict()
    data["extra"] = 1
    with pytest.raises(TargetError, match=r"^manifest\.json: extra: unknown key"):
        Target.from_dict(data, source="manifest.json")


# ---- derived numbers --------------------------------------------------------------------------


def test_bit_slicing_derived_numbers(tmp_path):
    target = load_edited(tmp_path, "bit_slicing = false", "bit_slicing = true",
                         base="neurram48")
    # 8-level devices, 4-bit weights: max level 7 fits one slice
    assert (target.max_level, target.slices, target.slice_max_level) == (7, 1, 7)
    text = spec_text("neurram48").replace("bit_slicing = false", "bit_slicing = true")
    text = text.replace("levels = 8", "levels = 4").replace("weight_bits = 4", "weight_bits = 8")
    target = load_target(write(tmp_path, text, "sliced.toml"))
    # ±127 in balanced base-7 digits -3..3: (7^2 - 1)/2 = 24 < 127 <= (7^3 - 1)/2 = 171
    assert (target.max_level, target.slices, target.slice_max_level) == (127, 3, 3)
    assert target.slice_base == 7


def test_units_per_polarity(tmp_path):
    assert load_target("hermes64").units_per_polarity == 1
    target = load_edited(tmp_path, "fit_devices = 2", "fit_devices = 1", base="hermes64")
    assert target.devices_per_polarity == 2 and target.units_per_polarity == 2


# ---- docs -------------------------------------------------------------------------------------


def test_targets_doc_is_current():
    text = DOCS.read_text(encoding="utf-8")
    assert render_targets_doc(text) == text, f"docs/targets.md is out of date: run {REGENERATE}"


def test_targets_doc_shows_every_profile_and_field():
    text = DOCS.read_text(encoding="utf-8")
    for name in BUNDLED:
        assert f"`{name}`" in text
    for key in ("crossbar.devices_per_weight", "device.drift.nu_mean", "costs.mvm_nj",
                "device.read_noise.q_s", "converters.adc_bits"):
        assert f"`{key}`" in text
