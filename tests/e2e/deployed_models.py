"""The deployed-style models of tests/e2e/deployed/ (made, with seeded weights, by
make_models.py there): the files, seeded inputs of any batch size and the ONNX ops each model is
there to cover."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "deployed"


def bert_inputs(rng: np.random.Generator, n: int = 2) -> dict[str, np.ndarray]:
    mask = np.ones((n, 8), np.int64)
    mask[1:, 5:] = 0  # the sentences after the first are padded
    types = np.zeros((n, 8), np.int64)
    types[:, 4:] = 1
    return {"input_ids": rng.integers(0, 64, (n, 8)), "attention_mask": mask,
            "token_type_ids": types}


BERT_OPS = {"Gather", "Where", "Equal", "Erf", "Pow", "Sqrt", "Max", "Min", "ReduceMax", "Exp",
            "MatMul", "Tanh"}


def _sequences(rng: np.random.Generator, n: int = 2) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((n, 5, 6)).astype(np.float32)}


# name -> (inputs of a batch of n from a seeded generator, ops the model must contain)
MODELS = {
    "yolov8": (lambda rng, n=1: {"images": rng.random((n, 3, 64, 64), dtype=np.float32)},
               {"Conv", "Split", "Expand", "Range", "Shape", "Gather", "Unsqueeze", "Concat",
                "Resize", "MaxPool", "Softmax", "Sigmoid"}),
    "bert_script": (bert_inputs, BERT_OPS | {"Expand", "Range"}),
    "bert_dynamo": (bert_inputs, BERT_OPS | {"Reciprocal"}),
    "filetype": (lambda rng, n=1: {"bytes": rng.integers(0, 256, (n, 64))},
                 {"Conv", "GlobalMaxPool", "ReduceSum", "Tanh", "Gather"}),
    "lstm": (_sequences, {"LSTM"}),
    "gru": (_sequences, {"GRU"}),
}
