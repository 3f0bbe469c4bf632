"""Decoding of NanoDet's Generalized Focal Loss heads (numpy), shared by the evaluation scripts.

The model gives, per stride s in (8, 16, 32), a score output [1, cells, 80] (sigmoid already
applied) and a box output [1, cells, 44]: four sides (left, top, right, bottom) of 11 logits
each. Cells are the input grid at that stride, row by row (n = ceil(width / s) columns).
For cell i: centre ((i % n) + 0.5) * s, ((i // n) + 0.5) * s; each side is the expectation of
the softmax of its logits over the distances 0..10, times s; box = (cx - l, cy - t, cx + r,
cy + b) in input pixels, not clipped. Every cell/class pair scoring above the threshold is a
candidate; then greedy non-maximum suppression per class (a box is dropped when its IoU with a
kept higher-scoring box of the same class is above the NMS IoU). The same rules as the
agent's `gfl-scores`/`gfl-boxes` postprocess (docs/model-card.md).

A detection array has one row per box: x1, y1, x2, y2, score, class (COCO index as float),
sorted by class, then by decreasing score.
"""
from __future__ import annotations

import numpy as np

STRIDES = (8, 16, 32)
SCORE_OUTPUTS = ("Identity", "Identity_1", "Identity_2")    # per stride, [1, cells, 80]
BOX_OUTPUTS = ("Identity_3", "Identity_4", "Identity_5")    # per stride, [1, cells, 44]
BINS = 11                                                   # logits per side (distances 0..10)
THRESHOLD = 0.35
NMS_IOU = 0.6
# The classes the nanodet cards publish: COCO index -> label.
CLASSES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cell_centres(height: int, width: int, stride: int) -> np.ndarray:
    """[cells, 2] (cx, cy) in input pixels, row by row."""
    cols, rows = -(-width // stride), -(-height // stride)
    i = np.arange(rows * cols)
    return np.stack([(i % cols + 0.5) * stride, (i // cols + 0.5) * stride], axis=1)


def distances(box_logits: np.ndarray, stride: int) -> np.ndarray:
    """[cells, 44] logits -> [cells, 4] side lengths (left, top, right, bottom) in pixels."""
    p = softmax(box_logits.reshape(-1, 4, BINS).astype(np.float64), axis=-1)
    return (p * np.arange(BINS)).sum(axis=-1) * stride


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS, in decreasing score order (ties: lower index first)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode(outputs: dict[str, np.ndarray], height: int = 416, width: int = 416,
           threshold: float = THRESHOLD, nms_iou: float = NMS_IOU,
           classes: dict[int, str] | None = None) -> np.ndarray:
    """Detections [N, 6] (x1, y1, x2, y2, score, class) from the six outputs, by name.

    classes: the COCO indices to keep, {index: label} (default CLASSES, the cards' six).
    """
    classes = CLASSES if classes is None else classes
    cand_boxes, cand_scores, cand_cls = [], [], []
    for stride, s_name, b_name in zip(STRIDES, SCORE_OUTPUTS, BOX_OUTPUTS):
        scores = outputs[s_name][0]
        cells, ys = np.nonzero(scores > threshold)
        keep = np.isin(ys, list(classes))
        cells, ys = cells[keep], ys[keep]
        if cells.size == 0:
            continue
        c = cell_centres(height, width, stride)[cells]
        d = distances(outputs[b_name][0][cells], stride)
        cand_boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=1))
        cand_scores.append(scores[cells, ys].astype(np.float64))
        cand_cls.append(ys)
    if not cand_boxes:
        return np.zeros((0, 6))
    boxes, scores, cls = np.concatenate(cand_boxes), np.concatenate(cand_scores), np.concatenate(cand_cls)
    rows = []
    for k in sorted(set(cls.tolist())):
        idx = np.nonzero(cls == k)[0]
        for i in idx[nms(boxes[idx], scores[idx], nms_iou)]:
            rows.append([*boxes[i], scores[i], float(k)])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def match(a: np.ndarray, b: np.ndarray, min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two detection arrays, same class only.

    Pairs (i in a, j in b, IoU) are taken in decreasing IoU order while IoU >= min_iou.
    """
    pairs = []
    for i in range(len(a)):
        same = np.nonzero(b[:, 5] == a[i, 5])[0]
        if same.size:
            ious = iou_one_to_many(a[i, :4], b[same, :4])
            for j, v in zip(same, ious):
                if v >= min_iou:
                    pairs.append((float(v), i, int(j)))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_a, used_b, out = set(), set(), []
    for v, i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j, v))
    return sorted(out)


def to_input(rgb: np.ndarray, mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395)) -> np.ndarray:
    """HxWx3 uint8 RGB at the input size -> [1, 3, H, W] f32, BGR, (pixel - mean) / std."""
    x = rgb[:, :, ::-1].astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def describe(dets: np.ndarray) -> str:
    """'3 person, 1 car' style summary."""
    if len(dets) == 0:
        return "nothing"
    ks, n = np.unique(dets[:, 5].astype(int), return_counts=True)
    return ", ".join(f"{c} {CLASSES.get(k, k)}" for k, c in zip(ks, n))
