#!/usr/bin/env python3
"""Convert a TensorFlow.js graph model (model.json + weight shards) to ONNX, standard library only.

Why our own converter: the demo and CI must derive the float detector without TensorFlow
(tf2onnx needs it, ~600 MB). A tfjs graph model is a TensorFlow GraphDef in JSON plus a flat
weight file, so a converter for the operators a model actually uses is small, and writing the
ONNX protobuf by hand makes the output byte-for-byte reproducible (its sha256 is pinned in the
card; no library version can change it).

What it does:
  * reads the weights in manifest order, float16-quantised weights widened to float32 exactly;
  * folds every node whose inputs are all constants (here: onnx-tf's empty SparseToDense,
    integer AddV2 of reshape targets);
  * translates each remaining node; TensorFlow's NHWC-only operators (Conv2D, MaxPool,
    ResizeBilinear) are wrapped in transposes to ONNX's NCHW, a Conv2D's following bias Add
    becomes the Conv's bias, and then transposes that undo each other are removed;
  * infers every shape (the input's is fixed by the model), so resizes get exact sizes and a
    wrong graph fails here, naming the node, rather than in a runtime.

Operators: Const, Placeholder, Identity, Transpose, Pad, PadV2, Conv2D (groups inferred),
Add/AddV2/BiasAdd, LeakyRelu, Relu, Relu6, Sigmoid, ConcatV2, MaxPool, ResizeBilinear,
SplitV, Reshape, SparseToDense (constant only). Anything else is refused with its name.

Usage: python3 tfjs_to_onnx.py MODEL.json OUT.onnx
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from array import array
from pathlib import Path

OPSET = 13
# Written into the ONNX file's producer_version: bump it when the output for a given input changes.
CONVERTER_VERSION = "1"
IR_VERSION = 8

# ONNX TensorProto data types.
FLOAT, INT32, INT64 = 1, 6, 7


class ConvertError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Protobuf writing (the subset of onnx.proto used here).


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def f_int(field: int, n: int) -> bytes:
    return _key(field, 0) + _varint(n)


def f_bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def f_str(field: int, s: str) -> bytes:
    return f_bytes(field, s.encode())


def f_float(field: int, x: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", x)


class Tensor:
    """A constant: data type, shape and a flat list (or array) of values."""

    def __init__(self, dtype: int, shape: list[int], values):
        self.dtype, self.shape, self.values = dtype, list(shape), values
        if len(values) != _prod(shape):
            raise ConvertError(f"constant of shape {shape} has {len(values)} values")

    def raw(self) -> bytes:
        code = {FLOAT: "f", INT32: "i", INT64: "q"}[self.dtype]
        a = array(code, self.values)
        if sys.byteorder != "little":
            a.byteswap()
        return a.tobytes()

    def proto(self, name: str) -> bytes:
        out = b"".join(f_int(1, d) for d in self.shape)
        out += f_int(2, self.dtype) + f_str(8, name) + f_bytes(9, self.raw())
        return out


def attr_proto(name: str, value) -> bytes:
    out = f_str(1, name)
    if isinstance(value, float):
        return out + f_float(2, value) + f_int(20, 1)
    if isinstance(value, bool) or isinstance(value, int):
        return out + f_int(3, int(value)) + f_int(20, 2)
    if isinstance(value, str):
        return out + f_bytes(4, value.encode()) + f_int(20, 3)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return out + b"".join(f_int(8, v) for v in value) + f_int(20, 7)
    raise ConvertError(f"attribute {name}: unsupported value {value!r}")


def value_info(name: str, shape: list[int]) -> bytes:
    dims = b"".join(f_bytes(1, f_int(1, d)) for d in shape)
    tensor_type = f_int(1, FLOAT) + f_bytes(2, dims)
    return f_str(1, name) + f_bytes(2, f_bytes(1, tensor_type))


# --------------------------------------------------------------------------------------------
# Small helpers.


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _strides(shape):
    out, acc = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        out[i] = acc
        acc *= shape[i]
    return out


def transpose_values(values, shape: list[int], perm: list[int]):
    """Values of a row-major tensor of `shape`, permuted by `perm` (as numpy.transpose)."""
    out_shape = [shape[p] for p in perm]
    src = _strides(shape)
    step = [src[p] for p in perm]
    out = array("f" if isinstance(values, array) and values.typecode == "f" else "q")
    if not isinstance(values, array):
        out = []
    idx = [0] * len(out_shape)
    n = _prod(out_shape)
    if n == 0:
        return out, out_shape
    # Iterate over the output in row-major order; the innermost dimension is a strided slice.
    inner = out_shape[-1]
    inner_step = step[-1]
    outer = n // inner
    for _ in range(outer):
        base = sum(i * s for i, s in zip(idx[:-1], step[:-1]))
        out.extend(values[base + j * inner_step] for j in range(inner))
        for d in range(len(out_shape) - 2, -1, -1):
            idx[d] += 1
            if idx[d] < out_shape[d]:
                break
            idx[d] = 0
    return out, out_shape


def f16_to_f32(data: bytes) -> array:
    n = len(data) // 2
    return array("f", struct.unpack(f"<{n}e", data))


def broadcast_shape(a: list[int], b: list[int], where: str) -> list[int]:
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + a
    b = [1] * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ConvertError(f"{where}: shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return out


# --------------------------------------------------------------------------------------------
# The converter.

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]


class Graph:
    def __init__(self):
        self.nodes: list[dict] = []  # {op, inputs, outputs, attrs, name}
        self.initializers: dict[str, Tensor] = {}
        self.shapes: dict[str, list[int]] = {}
        self._n = 0

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self._n}"

    def const(self, base: str, t: Tensor) -> str:
        name = self.fresh(base)
        self.initializers[name] = t
        return name

    def add(self, op: str, inputs: list[str], out: str, shape: list[int], attrs=None, name=None) -> str:
        self.nodes.append({"op": op, "inputs": inputs, "outputs": [out], "attrs": attrs or {},
                           "name": name or out})
        self.shapes[out] = shape
        return out

    def transpose(self, x: str, perm: list[int]) -> str:
        shape = [self.shapes[x][p] for p in perm]
        return self.add("Transpose", [x], self.fresh(x + "_t"), shape, {"perm": perm})


def tf_attr(node: dict, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        import base64
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        return []
    if "type" in a:
        return a["type"]
    return default


def load_weights(model_json: Path, model: dict) -> dict[str, Tensor]:
    out = {}
    for group in model["weightsManifest"]:
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            n = _prod(shape)
            q = w.get("quantization")
            dtype = w["dtype"]
            if q:
                if q.get("dtype") != "float16" or dtype != "float32":
                    raise ConvertError(f"weight {w['name']}: quantisation {q} not supported")
                vals = f16_to_f32(data[pos:pos + 2 * n])
                pos += 2 * n
                out[w["name"]] = Tensor(FLOAT, shape, vals)
            elif dtype == "float32":
                vals = array("f", data[pos:pos + 4 * n])
                if sys.byteorder != "little":
                    vals.byteswap()
                pos += 4 * n
                out[w["name"]] = Tensor(FLOAT, shape, vals)
            elif dtype == "int32":
                vals = array("i", data[pos:pos + 4 * n])
                if sys.byteorder != "little":
                    vals.byteswap()
                pos += 4 * n
                out[w["name"]] = Tensor(INT32, shape, list(vals))
            else:
                raise ConvertError(f"weight {w['name']}: dtype {dtype} not supported")
        if pos != len(data):
            raise ConvertError(f"weights {group['paths']}: {len(data) - pos} bytes left over")
    return out


def tensor_ref(name: str) -> str:
    """A TensorFlow input reference without control marks, with an explicit output index."""
    if name.startswith("^"):
        return ""
    return name if ":" in name else name + ":0"


def fold(op: str, node: dict, args: list[Tensor]) -> Tensor:
    """Evaluates a node whose inputs are all constants."""
    where = f"node {node['name']} ({op})"
    if op in ("Add", "AddV2"):
        a, b = args
        if a.shape != b.shape and _prod(b.shape) != 1 and _prod(a.shape) != 1:
            raise ConvertError(f"{where}: constant broadcast of {a.shape} and {b.shape} not supported")
        if _prod(a.shape) == 1 and _prod(b.shape) != 1:
            a, b = b, a
        bv = b.values if _prod(b.shape) != 1 else [b.values[0]] * len(a.values)
        return Tensor(a.dtype, a.shape, [x + y for x, y in zip(a.values, bv)])
    if op == "SparseToDense":
        indices, out_shape, values, default = args
        shape = [int(v) for v in out_shape.values]
        dense = [default.values[0]] * _prod(shape)
        rows = indices.shape[0] if indices.shape else 1
        st = _strides(shape)
        for r in range(rows):
            width = indices.shape[1] if len(indices.shape) == 2 else 1
            idx = indices.values[r * width:(r + 1) * width]
            v = values.values[r] if _prod(values.shape) > 1 else values.values[0]
            dense[sum(i * s for i, s in zip(idx, st))] = v
        return Tensor(default.dtype, shape, dense)
    if op == "Identity":
        return args[0]
    raise ConvertError(f"{where}: cannot fold this operator over constants")


def as_ints(t: Tensor, where: str) -> list[int]:
    if t.dtype not in (INT32, INT64):
        raise ConvertError(f"{where}: expected an integer constant")
    return [int(v) for v in t.values]


def convert(model_json: Path, producer_version: str = CONVERTER_VERSION) -> bytes:
    model = json.loads(model_json.read_text())
    if model.get("format") != "graph-model":
        raise ConvertError(f"{model_json}: format {model.get('format')!r}, expected graph-model")
    nodes = model["modelTopology"]["node"]
    weights = load_weights(model_json, model)
    g = Graph()
    consts: dict[str, Tensor] = {}  # TF tensor ref -> constant
    onnx_of: dict[str, str] = {}  # TF tensor ref -> ONNX tensor name
    consumers: dict[str, list[dict]] = {}
    for n in nodes:
        for i in n.get("input", []):
            r = tensor_ref(i)
            if r:
                consumers.setdefault(r, []).append(n)
    done: set[str] = set()
    graph_inputs = []

    def onnx_input(ref: str, where: str) -> str:
        if ref in onnx_of:
            return onnx_of[ref]
        if ref in consts:
            t = consts[ref]
            if t.dtype == INT32:
                t = Tensor(INT64, t.shape, t.values)
            name = g.const(ref.split(":")[0].replace("/", "_"), t)
            g.shapes[name] = t.shape
            onnx_of[ref] = name
            return name
        raise ConvertError(f"{where}: input {ref} is not produced by any converted node")

    # Topological order: tfjs graphs are usually ordered, but do not rely on it.
    pending = list(nodes)
    by_name = {n["name"]: n for n in nodes}
    fused: set[str] = set()
    progress = True
    while pending and progress:
        progress = False
        rest = []
        for n in pending:
            ins = [tensor_ref(i) for i in n.get("input", []) if tensor_ref(i)]
            if any(r.rsplit(":", 1)[0] not in done for r in ins):
                rest.append(n)
                continue
            progress = True
            done.add(n["name"])
            if n["name"] in fused:
                continue
            translate(n, ins, g, consts, onnx_of, onnx_input, weights, consumers, fused, graph_inputs)
        pending = rest
    if pending:
        raise ConvertError(f"nodes with unresolvable inputs: {[n['name'] for n in pending[:5]]}")

    outputs = []
    for key in model.get("signature", {}).get("outputs", {}):
        ref = tensor_ref(key)
        if ref not in onnx_of:
            raise ConvertError(f"signature output {key} was not produced")
        outputs.append((ref.split(":")[0], onnx_of[ref]))
    if not outputs:
        raise ConvertError("the model's signature names no outputs")
    outputs.sort(key=lambda o: _natural(o[0]))
    # Name the graph outputs after the TensorFlow outputs.
    for tf_name, onnx_name in outputs:
        g.add("Identity", [onnx_name], tf_name, g.shapes[onnx_name])
    simplify(g, {name for name, _ in outputs})
    return serialise(g, graph_inputs, [name for name, _ in outputs], producer_version)


def _natural(s: str):
    head = s.rstrip("0123456789")
    tail = s[len(head):].lstrip("_")
    return (head.rstrip("_"), int(tail) if tail else -1)


def translate(n, ins, g: Graph, consts, onnx_of, onnx_input, weights, consumers, fused, graph_inputs):
    op, name = n["op"], n["name"]
    where = f"node {name} ({op})"
    out = name + ":0"
    if op == "Const":
        if name in weights:
            consts[out] = weights[name]
        else:
            raise ConvertError(f"{where}: constant has no weights in the manifest")
        return
    if op == "Placeholder":
        dims = n["attr"]["shape"]["shape"]["dim"]
        shape = [int(d["size"]) for d in dims]
        if any(d <= 0 for d in shape):
            raise ConvertError(f"{where}: input shape {shape} is not fixed")
        onnx_of[out] = name
        g.shapes[name] = shape
        graph_inputs.append((name, shape))
        return
    if all(r in consts for r in ins):
        consts[out] = fold(op, n, [consts[r] for r in ins])
        return

    def x(i: int) -> str:
        return onnx_input(ins[i], where)

    def c(i: int) -> Tensor:
        if ins[i] not in consts:
            raise ConvertError(f"{where}: input {i} ({ins[i]}) must be a constant")
        return consts[ins[i]]

    if op == "Identity":
        onnx_of[out] = x(0)
    elif op == "Transpose":
        onnx_of[out] = g.transpose(x(0), as_ints(c(1), where))
    elif op in ("Pad", "PadV2"):
        src = x(0)
        pads = as_ints(c(1), where)
        rank = len(g.shapes[src])
        begins, ends = pads[0::2], pads[1::2]
        if len(begins) != rank:
            raise ConvertError(f"{where}: paddings for rank {len(begins)}, input has rank {rank}")
        shape = [d + b + e for d, b, e in zip(g.shapes[src], begins, ends)]
        inputs = [src, g.const(name + "_pads", Tensor(INT64, [2 * rank], begins + ends))]
        if op == "PadV2":
            cv = c(2)
            inputs.append(g.const(name + "_value", Tensor(FLOAT, [], [float(cv.values[0])])))
        onnx_of[out] = g.add("Pad", inputs, name, shape, {"mode": "constant"})
    elif op == "Conv2D":
        if tf_attr(n, "data_format", "NHWC") != "NHWC":
            raise ConvertError(f"{where}: only NHWC convolutions are supported")
        if tf_attr(n, "padding") != "VALID":
            raise ConvertError(f"{where}: padding {tf_attr(n, 'padding')} not supported (VALID only)")
        strides = tf_attr(n, "strides", [1, 1, 1, 1])
        dil = tf_attr(n, "dilations", [1, 1, 1, 1])
        src = x(0)
        w = c(1)
        kh, kw, cin, cout = w.shape
        nhwc = g.shapes[src]
        if nhwc[3] % cin:
            raise ConvertError(f"{where}: {nhwc[3]} input channels, weights for {cin}")
        group = nhwc[3] // cin
        wv, wshape = transpose_values(w.values, w.shape, [3, 2, 0, 1])
        inputs = [g.transpose(src, NHWC_TO_NCHW), g.const(name + "_W", Tensor(FLOAT, wshape, wv))]
        # A following Add of a constant vector of cout values is this convolution's bias.
        users = consumers.get(out, [])
        bias_node = None
        if len(users) == 1 and users[0]["op"] in ("Add", "AddV2", "BiasAdd"):
            u = users[0]
            other = [tensor_ref(i) for i in u["input"] if tensor_ref(i) != out]
            if len(other) == 1 and other[0] in consts and consts[other[0]].shape == [cout]:
                bias_node = u
                inputs.append(g.const(name + "_B", consts[other[0]]))
        oh = (nhwc[1] - (kh - 1) * dil[1] - 1) // strides[1] + 1
        ow = (nhwc[2] - (kw - 1) * dil[2] - 1) // strides[2] + 1
        y = g.add("Conv", inputs, name, [nhwc[0], cout, oh, ow],
                  {"kernel_shape": [kh, kw], "strides": strides[1:3], "dilations": dil[1:3],
                   "group": group, "pads": [0, 0, 0, 0]})
        y = g.transpose(y, NCHW_TO_NHWC)
        onnx_of[out] = y
        if bias_node is not None:
            fused.add(bias_node["name"])
            onnx_of[bias_node["name"] + ":0"] = y
    elif op in ("Add", "AddV2", "BiasAdd"):
        a, b = x(0), x(1)
        shape = broadcast_shape(g.shapes[a], g.shapes[b], where)
        onnx_of[out] = g.add("Add", [a, b], name, shape)
    elif op in ("LeakyRelu", "Relu", "Sigmoid", "Relu6"):
        src = x(0)
        if op == "LeakyRelu":
            onnx_of[out] = g.add("LeakyRelu", [src], name, g.shapes[src], {"alpha": tf_attr(n, "alpha", 0.2)})
        elif op == "Relu6":
            lo = g.const(name + "_lo", Tensor(FLOAT, [], [0.0]))
            hi = g.const(name + "_hi", Tensor(FLOAT, [], [6.0]))
            onnx_of[out] = g.add("Clip", [src, lo, hi], name, g.shapes[src])
        else:
            onnx_of[out] = g.add(op, [src], name, g.shapes[src])
    elif op == "ConcatV2":
        k = tf_attr(n, "N", len(ins) - 1)
        parts = [x(i) for i in range(k)]
        axis = as_ints(c(k), where)[0]
        shapes = [g.shapes[p] for p in parts]
        rank = len(shapes[0])
        ax = axis % rank
        shape = list(shapes[0])
        shape[ax] = sum(s[ax] for s in shapes)
        onnx_of[out] = g.add("Concat", parts, name, shape, {"axis": axis})
    elif op == "MaxPool":
        if tf_attr(n, "data_format", "NHWC") != "NHWC" or tf_attr(n, "padding") != "VALID":
            raise ConvertError(f"{where}: only NHWC, VALID max pooling is supported")
        k = tf_attr(n, "ksize")
        s = tf_attr(n, "strides")
        src = g.transpose(x(0), NHWC_TO_NCHW)
        nchw = g.shapes[src]
        shape = [nchw[0], nchw[1], (nchw[2] - k[1]) // s[1] + 1, (nchw[3] - k[2]) // s[2] + 1]
        y = g.add("MaxPool", [src], name, shape, {"kernel_shape": k[1:3], "strides": s[1:3]})
        onnx_of[out] = g.transpose(y, NCHW_TO_NHWC)
    elif op == "ResizeBilinear":
        size = as_ints(c(1), where)
        if tf_attr(n, "align_corners", False):
            mode = "align_corners"
        elif tf_attr(n, "half_pixel_centers", False):
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        src = g.transpose(x(0), NHWC_TO_NCHW)
        nchw = g.shapes[src]
        shape = [nchw[0], nchw[1], size[0], size[1]]
        sizes = g.const(name + "_sizes", Tensor(INT64, [4], shape))
        y = g.add("Resize", [src, "", "", sizes], name, shape,
                  {"mode": "linear", "coordinate_transformation_mode": mode})
        onnx_of[out] = g.transpose(y, NCHW_TO_NHWC)
    elif op == "SplitV":
        src = x(0)
        sizes = as_ints(c(1), where)
        axis = as_ints(c(2), where)[0]
        shape = g.shapes[src]
        ax = axis % len(shape)
        if -1 in sizes:
            known = sum(v for v in sizes if v != -1)
            sizes = [shape[ax] - known if v == -1 else v for v in sizes]
        if sum(sizes) != shape[ax]:
            raise ConvertError(f"{where}: splits {sizes} do not cover {shape[ax]}")
        outs = [f"{name}_{i}" for i in range(len(sizes))]
        split = g.const(name + "_split", Tensor(INT64, [len(sizes)], sizes))
        g.nodes.append({"op": "Split", "inputs": [src, split], "outputs": outs, "attrs": {"axis": axis},
                        "name": name})
        for i, (o, sz) in enumerate(zip(outs, sizes)):
            s = list(shape)
            s[ax] = sz
            g.shapes[o] = s
            onnx_of[f"{name}:{i}"] = o
    elif op == "Reshape":
        src = x(0)
        target = as_ints(c(1), where)
        if 0 in target:
            raise ConvertError(f"{where}: a 0 in the target shape {target} is ambiguous across frameworks")
        total = _prod(g.shapes[src])
        if target.count(-1) > 1:
            raise ConvertError(f"{where}: target shape {target} has more than one -1")
        known = _prod(v for v in target if v != -1)
        shape = [total // known if v == -1 else v for v in target]
        if _prod(shape) != total:
            raise ConvertError(f"{where}: cannot reshape {g.shapes[src]} to {target}")
        t = g.const(name + "_shape", Tensor(INT64, [len(target)], target))
        onnx_of[out] = g.add("Reshape", [src, t], name, shape)
    else:
        raise ConvertError(f"{where}: operator not supported by this converter")


def simplify(g: Graph, keep: set[str]) -> None:
    """Merges chains of transposes (removing those that cancel) and drops dead nodes."""
    producer = {}
    for node in g.nodes:
        for o in node["outputs"]:
            producer[o] = node
    rename: dict[str, str] = {}

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    for node in g.nodes:
        node["inputs"] = [resolve(i) if i else i for i in node["inputs"]]
        if node["op"] != "Transpose":
            continue
        src = producer.get(node["inputs"][0])
        if src is None or src["op"] != "Transpose":
            continue
        inner, outer = src["attrs"]["perm"], node["attrs"]["perm"]
        composed = [inner[p] for p in outer]
        node["inputs"] = [src["inputs"][0]]
        node["attrs"]["perm"] = composed
        if composed == list(range(len(composed))) and node["outputs"][0] not in keep:
            rename[node["outputs"][0]] = src["inputs"][0]
            node["dead"] = True
    # Dead-node elimination from the outputs.
    live: set[str] = set(keep)
    order = []
    for node in reversed(g.nodes):
        if node.get("dead"):
            continue
        if any(o in live for o in node["outputs"]):
            order.append(node)
            live.update(i for i in node["inputs"] if i)
    g.nodes = list(reversed(order))
    g.initializers = {k: v for k, v in g.initializers.items() if k in live}


def serialise(g: Graph, inputs, outputs: list[str], producer_version: str, *,
              graph_name: str = "tfjs_to_onnx", producer_name: str = "iat tfjs_to_onnx.py",
              opset: int = OPSET) -> bytes:
    """The ModelProto bytes: nodes in order, initializers sorted by name, the given inputs
    ((name, shape) pairs) and outputs (names, shapes from g.shapes), all float32. Other
    converters of models/tools reuse it with their own names (and opset)."""
    graph = b""
    for node in g.nodes:
        body = b"".join(f_str(1, i) for i in node["inputs"])
        body += b"".join(f_str(2, o) for o in node["outputs"])
        body += f_str(3, node["name"]) + f_str(4, node["op"])
        body += b"".join(f_bytes(5, attr_proto(k, v)) for k, v in sorted(node["attrs"].items()))
        graph += f_bytes(1, body)
    graph += f_str(2, graph_name)
    for name in sorted(g.initializers):
        graph += f_bytes(5, g.initializers[name].proto(name))
    for name, shape in inputs:
        graph += f_bytes(11, value_info(name, shape))
    for name in outputs:
        graph += f_bytes(12, value_info(name, g.shapes[name]))
    model = f_int(1, IR_VERSION) + f_str(2, producer_name) + f_str(3, producer_version)
    model += f_bytes(7, graph) + f_bytes(8, f_str(1, "") + f_int(2, opset))
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model.json of a tfjs graph model (weights beside it)")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    try:
        data = convert(args.model)
    except (ConvertError, OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        print(f"{args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
