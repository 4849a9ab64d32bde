"""Pass "encrypt": text in, text out (the flips are an attribute; the interpreter's outputs are
unchanged); the GA (fitness, one-directional mutation, determinism); the fitness evaluator
against the interpreter with the signs flipped; data and placement errors."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import PassError
from cimc.ir import parse_module
from cimc.ir.interpreter import run
from cimc.passes import PassContext, run_pipeline
from cimc.passes.encrypt import candidate_genes
from cimc.passes.flip_eval import FlipEvaluator
from cimc.passes.sign_ga import GAConfig, drop_spare_flips, evolve, fitness
from cimc.testing import check_pass

# One placed 3x3 tile: class k wins on an input near one-hot k (diagonal weights).
SRC = """module attributes {stage = "cim"} {
  func @main(%x: tensor<1x3xf32>) -> (tensor<1x3xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %y = cim.xbar_mvm(%x) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 0, dac_bits = 0, dac_range = 0.0, layer = "fc", levels = dense<[2.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 1.0] : tensor<3x3xf32>>, scale = dense<[1.0, 1.0, 1.0] : tensor<3xf32>>, tile = [0, 0], xbar = 0} : tensor<1x3xf32>
    return(%y)
  }
}
"""

# Two of the three diagonal signs flipped: only the rarest class (2) is still recognised. The
# weights themselves are unchanged, so the interpreter computes the true model.
EXPECTED = """module attributes {stage = "cim"} {
  func @main(%0: tensor<1x3xf32>) -> (tensor<1x3xf32>) attributes {input_cores = [0], input_names = ["x"], output_names = ["y"]} {
    %1 = cim.xbar_mvm(%0) {adc_bits = 0, adc_range = 0.0, chip = 0, core = 0, dac_bits = 0, dac_range = 0.0, flip = [[0, 0], [1, 1]], layer = "fc", levels = dense<[2.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 1.0] : tensor<3x3xf32>>, scale = dense<[1.0, 1.0, 1.0] : tensor<3xf32>>, tile = [0, 0], xbar = 0} : tensor<1x3xf32>
    return(%1)
  }
}
"""

SPEC = "encrypt{epsilon=2,generations=10,population=8}"
LABELS = np.array([0] * 5 + [1] * 4 + [2] * 3)
X = np.eye(3, dtype=np.float32)[LABELS] + np.float32(0.1)


def test_flips_the_fewest_signs_that_reach_chance():
    ctx = PassContext(encrypt_data={"x": X, "labels": LABELS})
    check_pass(SRC, SPEC, EXPECTED, ctx=ctx)
    rep = ctx.encryption
    assert rep.bits == 2 and rep.candidates == 3  # zero weights are never candidates
    assert rep.accuracy_before == 1.0 and rep.accuracy_after == 0.25
    assert rep.reached and rep.target_acc == pytest.approx(1 / 3 + 0.05)
    assert rep.bits_per_layer == {"fc": 2} and rep.seed == 0


def test_without_labels_it_pushes_agreement_down():
    # the unencrypted model's own predictions are the labels here, so the same key results,
    # from --encrypt-data without labels and from the calibration inputs alike
    for ctx in (PassContext(encrypt_data={"x": X}), PassContext(calib={"x": X})):
        check_pass(SRC, SPEC, EXPECTED, ctx=ctx)
        assert "agreement" in ctx.encryption.data


def test_tiles_on_one_crossbar_share_their_flips():
    # the two steps of an unrolled recurrent layer on one crossbar: one set of genes
    attrs = SRC.split("cim.xbar_mvm(%x) ")[1].split(" : tensor<1x3xf32>\n")[0]
    src = SRC.replace(f"%y = cim.xbar_mvm(%x) {attrs}", f"""%a = cim.xbar_mvm(%x) {attrs} : tensor<1x3xf32>
    %r = nn.relu(%a) {{chip = 0, core = 0}} : tensor<1x3xf32>
    %y = cim.xbar_mvm(%r) {attrs}""")
    ctx = PassContext(encrypt_data={"x": X, "labels": LABELS})
    text = check_pass(src, SPEC, ctx=ctx)
    flips = [line.split("flip = ")[1].split("]], ")[0] for line in text.splitlines()
             if "cim.xbar_mvm" in line]
    assert len(flips) == 2 and flips[0] == flips[1]
    assert ctx.encryption.candidates == 3


def test_errors_name_what_is_missing():
    def fails(spec, ctx, match, src=SRC):
        with pytest.raises(PassError, match=match):
            run_pipeline(parse_module(src), spec, ctx)

    data = PassContext(encrypt_data={"x": X, "labels": LABELS})
    fails(SPEC, PassContext(), "encrypt needs data: --encrypt-data")
    fails(SPEC, PassContext(encrypt_data={"x": X, "labels": LABELS[:4]}), "'labels' has 4")
    fails(SPEC, PassContext(encrypt_data={"x": X, "labels": X}), "1-D integer array")
    fails(SPEC, PassContext(encrypt_data={"z": X}), "lacks input")
    fails("encrypt{epsilon=0}", data, "epsilon=0; expected at least 1")
    fails("encrypt{target_acc=2.0}", data, "target_acc=2.0")
    fails("encrypt{layers=conv9}", data, r"layers \['conv9'\] not found.*fc")
    fails(SPEC, data, "run 'place' before 'encrypt'", SRC.replace(", xbar = 0", ""))
    fails(SPEC, data, "already encrypted", EXPECTED)


def test_too_many_activations_are_refused(monkeypatch):
    from cimc.passes import flip_eval

    monkeypatch.setattr(flip_eval, "KEEP_BYTES", 100)
    with pytest.raises(PassError, match="activations of 12 samples take .* lower 'samples'"):
        run_pipeline(parse_module(SRC), SPEC, PassContext(encrypt_data={"x": X, "labels": LABELS}))


# ------------------------------------------------------------------------------ the GA


def test_fitness_is_snngx():
    bits = np.array([3, 5, 6, 10])
    acc = np.array([0.5, 0.2, 0.2, 0.0])
    np.testing.assert_allclose(fitness(bits, acc, 5), [2.5, 1.0, 6 * 1.2, 10.0])


def _important_genes(n_genes: int, important: list[int]):
    """Accuracy falls by 0.18 for each important gene flipped; the others do nothing. Records
    every genome scored."""
    seen = []

    def accuracy(genomes):
        seen.append(genomes.copy())
        return 1.0 - 0.18 * genomes[:, important].sum(axis=1)

    return accuracy, seen


def test_ga_finds_the_important_bits_and_is_deterministic():
    important = [3, 11, 17, 29, 36]
    accuracy, seen = _important_genes(40, important)
    cfg = GAConfig(epsilon=5, population=30, generations=60, seed=4)
    a = evolve(40, accuracy, cfg)
    assert sorted(np.flatnonzero(a.genome)) == important
    assert a.accuracy == pytest.approx(0.1) and a.bits == 5
    b = evolve(40, _important_genes(40, important)[0], cfg)
    assert np.array_equal(a.genome, b.genome) and a.history == b.history
    # the initial population: every gene flipped, minus a few reverted (p = 0.05); its
    # distinct genomes are scored
    first = seen[0]
    assert first.shape[1] == 40 and 20 < len(first) <= 30 and 0.85 < first.mean() < 1.0
    # each genome is scored once
    keys = [g.tobytes() for batch in seen for g in batch]
    assert len(keys) == len(set(keys)) == a.evaluations


def test_mutation_only_reverts_flips():
    # a gene nobody carries is never flipped again: with gene 0 reverted everywhere, the GA
    # cannot find it even though flipping it is all that matters
    def accuracy(genomes):
        return np.where(genomes[:, 0], 0.0, 1.0)

    cfg = GAConfig(epsilon=3, population=10, generations=30, seed=0, mutation=1.0)
    result = evolve(8, accuracy, cfg)  # mutation 1.0 reverts every flip at once
    assert result.bits == 0 and result.accuracy == 1.0


def test_drop_spare_flips_keeps_only_what_matters():
    important = [1, 4]
    accuracy, _ = _important_genes(10, important)
    genome = np.zeros(10, bool)
    genome[[0, 1, 4, 7, 9]] = True
    kept, acc = drop_spare_flips(genome, accuracy, limit=accuracy(genome[None])[0])
    assert sorted(np.flatnonzero(kept)) == important and acc == pytest.approx(0.64)


# ------------------------------------------------------------------------------ the evaluator


@pytest.mark.parametrize("converters", ["exact", "quantised"])
def test_evaluator_matches_the_interpreter_with_the_signs_flipped(converters):
    module, x = _conv_module(converters)
    func = module.main
    tiles = [op for op in func.body.ops if op.name == "cim.xbar_mvm"]
    genes = candidate_genes(tiles, 6)
    n = sum(len(t.rows) for t in genes)
    labels = np.arange(len(x)) % 4
    rng = np.random.default_rng(1)
    genomes = rng.random((9, n)) < 0.3
    genomes[0] = False  # the unencrypted model
    genomes[1, genes[-1].start:] = True  # the last layer only
    with FlipEvaluator(func, genes, [x], labels, threads=2) as ev:
        got = ev.accuracy(genomes)
        agree = FlipEvaluator(func, genes, [x]).accuracy(genomes)
    ref = run(module, {"x": x})["y"].argmax(axis=1)
    for g, genome in enumerate(genomes):
        saved = [op.attrs["levels"] for op in tiles]
        for t in genes:
            flip = genome[t.start:t.stop]
            levels = t.op.attrs["levels"].copy()
            levels[t.rows[flip], t.cols[flip]] *= -1
            t.op.attrs["levels"] = levels
        pred = run(module, {"x": x})["y"].argmax(axis=1)
        for op, levels in zip(tiles, saved):
            op.attrs["levels"] = levels
        # the same numbers, but for float32 rounding in the order of a product's sums, which
        # can move a quantised output across an ADC step (one sample of 24 at most, here)
        tol = 0 if converters == "exact" or g == 0 else 1 / len(x)
        assert abs(got[g] - np.mean(pred == labels)) <= tol, g
        assert abs(agree[g] - np.mean(pred == ref)) <= tol, g


def _conv_module(converters: str):
    """A small conv net (conv, relu, two tiles of a gemm) compiled for the ideal target (with
    8-level weights and 6-bit DACs and ADCs: "quantised"), on a batch of 24 inputs."""
    from onnx import TensorProto, helper, numpy_helper

    import cimc

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4 * 5 * 5, 4)).astype(np.float32) * 0.3
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[0, 0, 0, 0]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "w2"], ["y"], name="fc")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [24, 2, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [24, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    from cimc.targets import load_target

    target = load_target("ideal")
    quantize = "quantize" if converters == "exact" else "quantize{max_level=7,dac_bits=6,adc_bits=6}"
    x = rng.standard_normal((24, 2, 7, 7)).astype(np.float32)
    result = cimc.compile(model, target, calib={"x": x},
                          pipeline="canonicalize,lower-to-mvm,canonicalize,tile{rows=64,cols=4},"
                          f"place{{cores=4,crossbars_per_core=2}},{quantize}")
    assert target.crossbar.rows >= 64
    return result.module, x
