"""One-node tests against onnxruntime of the LSTM and GRU converters (the nn.lstm / nn.gru
semantics), and of their unrolled lowering onto crossbars (lower-to-mvm)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from cimc.errors import FrontendError
from cimc.frontend.onnx import import_onnx
from cimc.ir.interpreter import run
from cimc.passes import run_pipeline
from cimc.passes.pipelines import LOWERING
from cimc.testing import compare_with_ort, one_node_model, ort_run

S, N, I, H = 4, 3, 5, 6
GATES = {"LSTM": 4, "GRU": 3}


def rand(shape, seed: int, scale: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def recurrent_model(op_type: str, *, direction: str = "forward", bias: bool = True,
                    states: str = "absent", layout: int = 0, peepholes: bool = False,
                    seq_lens: bool = False, opset: int = 17, **attrs):
    """A one-node LSTM/GRU with constant weights; ``states``: "absent", "input" (graph inputs)
    or "constant" (initializers). Returns the model and its graph inputs."""
    g, d = GATES[op_type], 2 if direction == "bidirectional" else 1
    x = rand((N, S, I) if layout else (S, N, I), 0, 1.0)
    inputs = {"x": x}
    inits = {"w": rand((d, g * H, I), 1), "r": rand((d, g * H, H), 2)}
    names = ["x", "w", "r", "", "", "", "", ""]
    if bias:
        inits["b"] = rand((d, 2 * g * H), 3)
        names[3] = "b"
    if seq_lens:
        inits["lens"] = np.full(N, S, np.int32)
        names[4] = "lens"
    state_names = ["h0", "c0"] if op_type == "LSTM" else ["h0"]
    for k, name in enumerate(state_names):
        shape = (N, d, H) if layout else (d, N, H)
        if states == "input":
            inputs[name] = rand(shape, 4 + k)
        elif states == "constant":
            inits[name] = rand(shape, 4 + k)
        if states != "absent":
            names[5 + k] = name
    if peepholes:
        inits["p"] = rand((d, 3 * H), 6)
        names[7] = "p"
    if layout:
        attrs["layout"] = layout
    while names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"] if op_type == "LSTM" else ["Y", "Y_h"]
    model = one_node_model(op_type, inputs, outputs, initializers=inits, opset=opset,
                           input_names=names, direction=direction, hidden_size=H, **attrs)
    return model, inputs


def check(model, inputs) -> None:
    """onnxruntime == the imported nn op == its unrolled lowering (no nn.lstm/nn.gru left)."""
    compare_with_ort(model, inputs)
    compare_with_ort(model, inputs, passes=LOWERING)
    module = import_onnx(model)
    run_pipeline(module, LOWERING)
    names = {op.name for op in module.walk()}
    assert "cim.mvm" in names and not names & {"nn.lstm", "nn.gru"}


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("states", ["absent", "input", "constant"])
def test_directions_and_initial_states(op_type, direction, states):
    check(*recurrent_model(op_type, direction=direction, states=states))


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
@pytest.mark.parametrize("opset", [7, 14])
def test_opsets_without_bias_with_sequence_lens(op_type, opset):
    check(*recurrent_model(op_type, bias=False, seq_lens=True, opset=opset))


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_batch_first_layout(op_type, direction):
    """onnxruntime refuses layout = 1, so it is checked against the layout-0 model run by
    onnxruntime on the transposed inputs."""
    model, inputs = recurrent_model(op_type, direction=direction, states="input", layout=1,
                                    opset=14)
    ref, _ = recurrent_model(op_type, direction=direction, states="input", opset=14)
    seq_first = {k: v.transpose(1, 0, 2) for k, v in inputs.items()}
    want = ort_run(ref, seq_first)
    module = import_onnx(model)
    for passes in (None, LOWERING):
        if passes:
            run_pipeline(module, passes)
        got = run(module, inputs)
        np.testing.assert_allclose(got["Y"], want["Y"].transpose(2, 0, 1, 3), 1e-4, 1e-5)
        for k in want.keys() - {"Y"}:
            np.testing.assert_allclose(got[k], want[k].transpose(1, 0, 2), 1e-4, 1e-5)


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
def test_clip(op_type):
    check(*recurrent_model(op_type, states="constant", clip=0.3))


@pytest.mark.parametrize("op_type,acts,alpha,beta", [
    ("LSTM", ["HardSigmoid", "LeakyRelu", "Relu"], [0.3, 0.05], [0.4]),
    ("LSTM", ["Sigmoid", "Affine", "ScaledTanh"], [0.5, 1.5], [0.1, 0.7]),
    ("LSTM", ["HardSigmoid", "Tanh", "LeakyRelu"], [], []),  # ONNX defaults
    ("GRU", ["HardSigmoid", "ScaledTanh"], [0.25, 0.9], [0.5, 1.2]),
], ids=str)
def test_activations(op_type, acts, alpha, beta):
    attrs = {"activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    check(*recurrent_model(op_type, states="input", **attrs))


def test_bidirectional_activations_per_direction():
    acts = ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Relu", "Tanh"]
    check(*recurrent_model("LSTM", direction="bidirectional", activations=acts))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("input_forget", [0, 1])
def test_lstm_peepholes_and_input_forget(direction, input_forget):
    check(*recurrent_model("LSTM", direction=direction, states="input", peepholes=True,
                           input_forget=input_forget))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("states", ["absent", "input"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_linear_before_reset(direction, states, linear_before_reset):
    check(*recurrent_model("GRU", direction=direction, states=states,
                           linear_before_reset=linear_before_reset))


def test_weights_computed_at_run_time_stay_a_digital_op():
    model, inputs = recurrent_model("GRU")
    w = next(t for t in model.graph.initializer if t.name == "w")
    model.graph.initializer.remove(w)  # W becomes a graph input
    model.graph.input.append(helper.make_tensor_value_info("w", 1, list(w.dims)))
    inputs = {**inputs, "w": rand(tuple(w.dims), 1)}
    compare_with_ort(model, inputs, passes=LOWERING)
    module = import_onnx(model, {k: v.shape for k, v in inputs.items()})
    run_pipeline(module, LOWERING)
    assert "nn.gru" in {op.name for op in module.walk()}


def test_ragged_sequence_lengths_are_refused():
    model, _ = recurrent_model("LSTM", seq_lens=True)
    lens = next(t for t in model.graph.initializer if t.name == "lens")
    lens.CopyFrom(numpy_helper.from_array(np.array([S, S - 1, S], np.int32), "lens"))
    with pytest.raises(FrontendError, match="sequence_lens"):
        import_onnx(model)


def test_unsupported_activation_is_named():
    model, _ = recurrent_model("GRU", activations=["Softsign", "Tanh"])
    with pytest.raises(FrontendError, match="'Softsign' is not supported"):
        import_onnx(model)
