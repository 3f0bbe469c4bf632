#!/usr/bin/env python3
"""Write the small ONNX fixtures used by the Rust tests (agent/tests/fixtures/).

  tiny_float.onnx   valid float model: x[1,4] -> MatMul -> Add -> Relu -> y[1,3],
                    with tiny_float.card.toml and tiny_float_golden/ (onnxruntime)
  softmax_qdq.onnx  x[1,2] -> Q -> DQ -> Softmax -> Q(1/256, 0, uint8) -> DQ -> y;
                    onnxruntime gives ~[0.73, 0.27] for [[1, 0]] (tract 0.23.9 is
                    known to get DQ -> Softmax -> Q -> DQ wrong); with
                    softmax_qdq.card.toml and softmax_qdq_golden/
  qlinear_add.onnx  QOperator format: Q -> com.microsoft QLinearAdd -> DQ
  if_shapes.onnx    an If whose branches give different shapes ([1,3] / [2,2])

Everything is built with onnx.helper from constants written here, so the files
are byte-for-byte reproducible for a given onnx version.

Usage: models/tools/make_fixtures.py      (venv python)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, sha256_file  # noqa: E402

OUT = REPO / "edge-agent" / "tests" / "fixtures"
IR = 8
OPSET = 13


def model(graph: onnx.GraphProto, extra_opsets: tuple = (), full_check: bool = True) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="iat make_fixtures.py", ir_version=IR)
    # full_check runs strict shape inference: not for contrib ops, nor for an
    # If whose branches disagree on the output shape (if_shapes).
    onnx.checker.check_model(m, full_check=full_check and not extra_opsets)
    return m


def const(name: str, value, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name=name)


def tiny_float() -> onnx.ModelProto:
    w = np.array([[0.5, -0.25, 1.0], [0.75, 0.5, -1.0], [-0.5, 1.25, 0.25], [1.0, -0.75, 0.5]], np.float32)
    b = np.array([0.1, -0.2, 0.05], np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul"),
         helper.make_node("Add", ["xw", "b"], ["xwb"], name="add"),
         helper.make_node("Relu", ["xwb"], ["y"], name="relu")],
        "tiny_float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [const("w", w, np.float32), const("b", b, np.float32)],
    )
    return model(g)


def softmax_qdq() -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "in_scale", "in_zp"], ["xq"], name="q_in"),
         helper.make_node("DequantizeLinear", ["xq", "in_scale", "in_zp"], ["xdq"], name="dq_in"),
         helper.make_node("Softmax", ["xdq"], ["p"], name="softmax", axis=-1),
         helper.make_node("QuantizeLinear", ["p", "out_scale", "out_zp"], ["pq"], name="q_out"),
         helper.make_node("DequantizeLinear", ["pq", "out_scale", "out_zp"], ["y"], name="dq_out")],
        "softmax_qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [const("in_scale", 0.05, np.float32), const("in_zp", 128, np.uint8),
         const("out_scale", 1.0 / 256.0, np.float32), const("out_zp", 0, np.uint8)],
    )
    return model(g)


def qlinear_add() -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"], name="q_in"),
         helper.make_node("QLinearAdd", ["xq", "a_scale", "a_zp", "bq", "b_scale", "b_zp", "c_scale", "c_zp"],
                          ["cq"], name="qlinear_add", domain="com.microsoft"),
         helper.make_node("DequantizeLinear", ["cq", "c_scale", "c_zp"], ["y"], name="dq_out")],
        "qlinear_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [const("a_scale", 0.02, np.float32), const("a_zp", 128, np.uint8),
         const("bq", [[128, 153, 178, 103]], np.uint8), const("b_scale", 0.02, np.float32),
         const("b_zp", 128, np.uint8), const("c_scale", 0.04, np.float32), const("c_zp", 128, np.uint8)],
    )
    return model(g, extra_opsets=(("com.microsoft", 1),))


def if_shapes() -> onnx.ModelProto:
    then_g = helper.make_graph(
        [helper.make_node("Constant", [], ["t"], name="then_const",
                          value=const("tv", np.ones((1, 3)), np.float32))],
        "then_branch", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 3])])
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["e"], name="else_const",
                          value=const("ev", np.zeros((2, 2)), np.float32))],
        "else_branch", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 2])])
    g = helper.make_graph(
        [helper.make_node("Greater", ["x", "zero"], ["cond"], name="greater"),
         helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)],
        "if_shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "cols"])],
        [const("zero", [0.0], np.float32)],
    )
    return model(g, full_check=False)


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def write_golden(name: str, feeds: dict) -> list[np.ndarray]:
    sess = session(OUT / f"{name}.onnx")
    outs = sess.run(None, feeds)
    root = OUT / f"{name}_golden"
    if root.exists():
        shutil.rmtree(root)
    d = root / "test_data_set_0"
    d.mkdir(parents=True)
    for k, i in enumerate(sess.get_inputs()):
        (d / f"input_{k}.pb").write_bytes(numpy_helper.from_array(feeds[i.name], name=i.name).SerializeToString())
    for k, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        (d / f"output_{k}.pb").write_bytes(numpy_helper.from_array(v, name=o.name).SerializeToString())
    return outs


def card(name: str, in_name: str, in_shape: list, out_name: str, out_shape: list,
         abs_tol: float, rel_tol: float, purpose: str, derivation: str) -> str:
    sha = sha256_file(OUT / f"{name}.onnx")
    return f'''# Test fixture card, written by models/tools/make_fixtures.py; not a deployable model.
schema = 1
id = "{name}"
version = "1"
task = "test"
file = "{name}.onnx"
sha256 = "{sha}"
purpose = "{purpose}"
never_for = ["any use outside the project's test suite", "identification of persons"]
owner = "IAT project maintainers"
licence = "MIT OR Apache-2.0"
aggregates = ["none"]

[provenance]
registry = "none"
package = "iat-test-fixtures"
package_version = "1"
package_sha256 = "{sha}"
path = "agent/tests/fixtures/{name}.onnx"
derivation = "{derivation}"
script = "models/tools/make_fixtures.py"

[check]
vectors = "{name}_golden"
abs = {abs_tol}
rel = {rel_tol}
steps = 0

[[inputs]]
name = "{in_name}"
shape = {in_shape}
dtype = "f32"
role = "data"
[inputs.preprocess]
kind = "tensor"

[[outputs]]
name = "{out_name}"
shape = {out_shape}
dtype = "f32"
postprocess = "none"
'''


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in [("tiny_float", tiny_float), ("softmax_qdq", softmax_qdq),
                        ("qlinear_add", qlinear_add), ("if_shapes", if_shapes)]:
        onnx.save(build(), str(OUT / f"{name}.onnx"))

    y = write_golden("tiny_float", {"x": np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)})
    print("tiny_float   y =", y[0])
    (OUT / "tiny_float.card.toml").write_text(card(
        "tiny_float", "x", [1, 4], "y", [1, 3], 1e-5, 1e-4,
        "Smallest valid float model (MatMul, Add, Relu) for fast tests of loading, checking and benchmarking.",
        "generated with onnx.helper: y = relu(x W + b) with fixed W [4,3] and b [3]"))

    y = write_golden("softmax_qdq", {"x": np.array([[1.0, 0.0]], np.float32)})
    print("softmax_qdq  y =", y[0], "(onnxruntime)")
    if not np.allclose(y[0], [[0.73046875, 0.26953125]]):
        raise SystemExit("unexpected onnxruntime result for softmax_qdq")
    (OUT / "softmax_qdq.card.toml").write_text(card(
        "softmax_qdq", "x", [1, 2], "y", [1, 2], 0.004, 0.0,
        "Regression fixture: DequantizeLinear -> Softmax -> QuantizeLinear -> DequantizeLinear, which tract 0.23.9 computes wrongly; the golden values are onnxruntime's.",
        "generated with onnx.helper: Q/DQ (scale 0.05, zero point 128, uint8), Softmax, Q/DQ (scale 1/256, zero point 0, uint8)"))

    (qa,) = session(OUT / "qlinear_add.onnx").run(None, {"x": np.array([[0.0, 0.5, -0.5, 1.0]], np.float32)})
    print("qlinear_add  y =", qa[0], "(onnxruntime; x + [0, 0.5, 1.0, -0.5])")
    for v in (1.0, -1.0):
        (r,) = session(OUT / "if_shapes.onnx").run(None, {"x": np.array([v], np.float32)})
        print(f"if_shapes    x = {v:+}: y shape {list(r.shape)}")
    for p in sorted(OUT.iterdir()):
        if p.is_file():
            print(f"  {p.relative_to(REPO)}  {p.stat().st_size} bytes  {sha256_file(p)}")


if __name__ == "__main__":
    main()
