#!/usr/bin/env python3
"""A zoo of small int8 networks that are not the bundled ones, to see whether the agent's
kernels hold for models in general (`cargo xtask models zoo`).

Each network is built with onnx.helper from seeded random weights, each exercising one shape
that third-party models use and the bundled cards do not: convolutions without bias, dilated,
with `auto_pad = SAME_UPPER`, with rectangular kernels and strides (audio CNNs on log-mel
inputs), squeeze-and-excitation blocks (1x1 convolutions on a 1x1 map), a 1x1 convolution
whose bias is a separate `Add`, and a classifier that ends in Softmax. Each is quantised as a
new user would do it, with onnxruntime's `quantize_static` (QDQ format, int8 weights per
channel, uint8 activations, calibrated on seeded random inputs), and written with a card
(`task = "zoo"`, input `kind = "tensor"`) whose golden vectors models/tools/make_golden.py
then computes with onnxruntime.

Usage: models/tools/make_zoo.py OUT_DIR    (venv python; writes OUT_DIR/<name>/card.toml)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

OPSET = 13


class Graph:
    """A sequential-ish graph under construction: weights as initializers."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, kernel, bias=True, group=1, **attrs) -> str:
        kh, kw = kernel
        fan_in = cin // group * kh * kw
        w = self.rng.normal(0, (2.0 / fan_in) ** 0.5, (cout, cin // group, kh, kw))
        inputs = [x, self.const("w", w)]
        if bias:
            inputs.append(self.const("b", self.rng.normal(0, 0.1, cout)))
        return self.op("Conv", inputs, kernel_shape=[kh, kw], group=group, **attrs)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def model(self, x_shape, y: str, y_shape) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def audio_cnn(dilated: bool, same: bool, bias: bool):
    """A log-mel CNN (64 mel bands x 96 frames): 3x3 blocks with pooling, a rectangular
    kernel strided along time, a 1x1, global pooling and a linear head."""
    g = Graph("audio-cnn", 1)
    x = g.relu(g.conv("x", 1, 32, (3, 3), bias=bias, pads=[1, 1, 1, 1]))
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.relu(g.conv(x, 32, 64, (3, 3), bias=bias, pads=[1, 1, 1, 1]))
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    if dilated:
        x = g.relu(g.conv(x, 64, 64, (3, 3), bias=bias, pads=[2, 2, 2, 2], dilations=[2, 2]))
    else:
        x = g.relu(g.conv(x, 64, 64, (3, 3), bias=bias, pads=[1, 1, 1, 1]))
    if same:
        x = g.relu(g.conv(x, 64, 128, (1, 3), bias=bias, strides=[1, 2], auto_pad="SAME_UPPER"))
    else:
        x = g.relu(g.conv(x, 64, 128, (1, 3), bias=bias, strides=[1, 2], pads=[0, 1, 0, 1]))
    x = g.relu(g.conv(x, 128, 128, (1, 1), bias=bias))
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    w = g.const("fc", g.rng.normal(0, 0.1, (128, 10)))
    b = g.const("fcb", g.rng.normal(0, 0.1, 10))
    x = g.op("Gemm", [x, w, b])
    y = g.op("Softmax", [x], axis=1)
    return g.model([1, 1, 64, 96], y, [1, 10])


def se_block():
    """MobileNetV3's inverted residual with squeeze-and-excitation: the excitation's two 1x1
    convolutions run on a 1x1 map."""
    g = Graph("se-block", 2)
    x0 = g.relu(g.conv("x", 16, 16, (3, 3), pads=[1, 1, 1, 1]))
    x = g.relu(g.conv(x0, 16, 96, (1, 1)))
    x = g.relu(g.conv(x, 96, 96, (3, 3), group=96, pads=[1, 1, 1, 1]))
    s = g.op("GlobalAveragePool", [x])
    s = g.relu(g.conv(s, 96, 24, (1, 1)))
    s = g.op("HardSigmoid", [g.conv(s, 24, 96, (1, 1))], alpha=1.0 / 6, beta=0.5)
    x = g.op("Mul", [x, s])
    x = g.conv(x, 96, 16, (1, 1))
    y = g.op("Add", [x, x0])
    return g.model([1, 16, 28, 28], y, [1, 16, 28, 28])


def bias_apart():
    """1x1 convolutions without bias followed by `Add` of a per-channel constant and ReLU,
    on a small map (the form of some exporters)."""
    g = Graph("bias-apart", 3)
    x = "x"
    for cin, cout in [(256, 512), (512, 512)]:
        x = g.conv(x, cin, cout, (1, 1), bias=False)
        x = g.op("Add", [x, g.const("bias", g.rng.normal(0, 0.1, (1, cout, 1, 1)))])
        x = g.relu(x)
    return g.model([1, 256, 6, 5], x, [1, 512, 6, 5])


def softmax_head():
    """A small image classifier whose Softmax output is reshaped (quantize_static then emits
    Softmax -> Q -> DQ -> Reshape -> Q -> DQ)."""
    g = Graph("softmax-head", 4)
    x = g.relu(g.conv("x", 3, 16, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1]))
    x = g.relu(g.conv(x, 16, 32, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1]))
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    w = g.const("fc", g.rng.normal(0, 0.3, (32, 2)))
    x = g.op("Gemm", [x, w, g.const("fcb", np.zeros(2))])
    x = g.op("Softmax", [x], axis=1)
    g.inits.append(numpy_helper.from_array(np.array([1, 2], np.int64), "out_shape"))
    y = g.op("Reshape", [x, "out_shape"])
    return g.model([1, 3, 64, 64], y, [1, 2])


ZOO = {
    "zoo-audio-cnn": lambda: audio_cnn(dilated=False, same=False, bias=True),
    "zoo-audio-cnn-nobias": lambda: audio_cnn(dilated=False, same=False, bias=False),
    "zoo-audio-cnn-dilated": lambda: audio_cnn(dilated=True, same=False, bias=True),
    "zoo-audio-cnn-same": lambda: audio_cnn(dilated=False, same=True, bias=True),
    "zoo-se-block": se_block,
    "zoo-bias-apart": bias_apart,
    "zoo-softmax-head": softmax_head,
}


class Calibration(CalibrationDataReader):
    def __init__(self, shape, seed: int, count: int = 8):
        rng = np.random.default_rng(seed)
        self.data = iter(
            [{"x": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self):
        return next(self.data, None)


def card(name: str, file: str, sha: str, x_shape, y_name: str, y_shape) -> str:
    return f"""schema = 1
id = "{name}"
version = "0.0.1"
task = "zoo"
file = "{file}"
sha256 = "{sha}"
purpose = "A synthetic int8 network of models/tools/make_zoo.py (seeded random weights): a test of the agent's kernels on shapes that third-party models use. Not for deployment."
never_for = ["any deployment: its weights are random"]
owner = "IAT project maintainers"
licence = "Apache-2.0"
legal_basis = "None: a test model, never deployed."
aggregates = ["none"]

[provenance]
registry = "none"
package = "make_zoo"
package_version = "0"
package_sha256 = "{sha}"
path = "{file}"
derivation = "Built and quantised by models/tools/make_zoo.py: seeded random weights, onnxruntime quantize_static (QDQ, int8 weights per channel, uint8 activations)."
script = "models/tools/make_zoo.py"

[accuracy]
summary = "None: random weights."

[check]
vectors = "golden"
abs = 2e-2
rel = 2e-2
steps = 0

[[inputs]]
name = "x"
shape = {list(x_shape)}
dtype = "f32"
role = "data"
[inputs.preprocess]
kind = "tensor"

[[outputs]]
name = "{y_name}"
shape = {list(y_shape)}
dtype = "f32"
postprocess = "none"
"""


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import hashlib

    out = Path(sys.argv[1])
    for seed, (name, build) in enumerate(ZOO.items()):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        model = build()
        x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        y = model.graph.output[0]
        y_shape = [d.dim_value for d in y.type.tensor_type.shape.dim]
        float_path = folder / "float.onnx"
        onnx.save(model, float_path)
        int8_path = folder / "int8.onnx"
        quantize_static(
            str(float_path),
            str(int8_path),
            Calibration(x_shape, 100 + seed),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        sha = hashlib.sha256(int8_path.read_bytes()).hexdigest()
        (folder / "card.toml").write_text(card(name, "int8.onnx", sha, x_shape, y.name, y_shape))
        print(folder / "card.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
