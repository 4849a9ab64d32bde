"""The onnx package's nine light_* ImageNet models, with seeded random weights."""

from __future__ import annotations

import functools
import os

import numpy as np
import onnx

from cimc.testing import random_inputs, randomize_constant_of_shape

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = [
    "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
    "shufflenet", "squeezenet", "vgg19", "zfnet512",
]


@functools.cache
def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    return randomize_constant_of_shape(onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx")), seed)


def light_inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    return random_inputs(light_model(name), seed)
