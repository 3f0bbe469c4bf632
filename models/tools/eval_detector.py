#!/usr/bin/env python3
"""Precision and recall of NanoDet cards on the hand-checked street frames.

Reads models/nanodet/annotations/street.toml (12 frames of the 1906 street film, boxes in
640x360 pixels), decodes those frames from the pinned sample video by frame index (ffmpeg,
one pass, common.street_frames), and for each card: stretches each frame to the card's input
size (PIL bilinear), applies the card's preprocessing, runs onnxruntime (CPU, one thread),
decodes with detect.decode (the agent's gfl rules: score > threshold, per-class NMS at IoU
0.6), maps the boxes back to 640x360 and matches them against the annotation.

Matching (per frame and class; the six published classes only):
  detections in decreasing score order (ties: decode order); a detection whose best IoU
  with a not yet matched *required* box is >= 0.5 is a true positive (that box is taken);
  otherwise, if its IoU with an *ignore* box is >= 0.5 or its centre lies inside an ignore
  *region*, it is ignored (neither true nor false positive); otherwise it is a false
  positive. Required boxes left unmatched are false negatives.
  Annotated class "train" (cable cars, not a published class) is never matched; bus
  detections overlapping one (IoU >= 0.5 or centre inside) are counted separately for the
  report but stay false positives.

Prints one markdown table per card and threshold: required boxes, TP, FP, FN, ignored
detections, precision TP/(TP+FP), recall TP/(TP+FN), per class and overall, and the number
of ignored detections whose reason was a region (the bound if they were all false).

Usage: models/tools/eval_detector.py CARD... [--threshold T]... [--annotations PATH] [--list]
       (venv python; default threshold 0.35, give --threshold several times for several)
  --list   also print every detection with its outcome, and every missed box
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detect  # noqa: E402
from common import (  # noqa: E402
    MODELS, STREET_MEMBER_SHA256, STREET_SIZE, load_card, ort_session, street_frame_index, street_frames,
    stretch,
)

ANNOTATIONS = MODELS / "nanodet" / "annotations" / "street.toml"
MATCH_IOU = 0.5
LABELS = list(detect.CLASSES.values())          # person, bicycle, car, motorcycle, bus, truck
INDEX = {v: k for k, v in detect.CLASSES.items()}
REFERENCE_CLASSES = {"train"}                   # annotated for reference only, never matched


def load_annotations(path: Path) -> tuple[dict, list[dict]]:
    """(header, frames); each frame {time, index, boxes: [{class, box (np.array), ignore, region}]}."""
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    src = doc["source"]
    if src["sha256"] != STREET_MEMBER_SHA256:
        raise SystemExit(f"{path}: source sha256 {src['sha256']} is not the pinned sample's {STREET_MEMBER_SHA256}")
    w, h = STREET_SIZE
    frames = []
    for fr in doc["frame"]:
        if street_frame_index(fr["time"]) != fr["index"]:
            raise SystemExit(f"{path}: frame at {fr['time']} s has index {fr['index']}, "
                             f"expected {street_frame_index(fr['time'])}")
        boxes = []
        for b in fr.get("box", []):
            cls = b["class"]
            if cls not in INDEX and cls not in REFERENCE_CLASSES:
                raise SystemExit(f"{path}: frame {fr['index']}: unknown class {cls!r}")
            x1, y1, x2, y2 = b["box"]
            if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                raise SystemExit(f"{path}: frame {fr['index']}: box {b['box']} outside {w}x{h} or empty")
            region = bool(b.get("region", False))
            ignore = bool(b["ignore"])
            if region and not ignore:
                raise SystemExit(f"{path}: frame {fr['index']}: a region must have ignore = true")
            boxes.append({"class": cls, "box": np.asarray(b["box"], dtype=np.float64),
                          "ignore": ignore, "region": region})
        frames.append({"time": fr["time"], "index": fr["index"], "boxes": boxes})
    return doc, frames


def card_input(card: dict) -> tuple[str, int, int, dict]:
    (inp,) = card["inputs"]
    _, c, h, w = inp["shape"]
    pre = inp["preprocess"]
    if c != 3 or pre["kind"] != "image" or pre["channels"] != "bgr" or pre["layout"] != "nchw" or pre["scale"] != 1.0:
        raise SystemExit(f"{card['id']}: expected a BGR NCHW image input with scale 1.0")
    names = [o["name"] for o in card["outputs"]]
    if names != list(detect.SCORE_OUTPUTS + detect.BOX_OUTPUTS):
        raise SystemExit(f"{card['id']}: outputs {names} are not the NanoDet layout detect.py decodes")
    return inp["name"], h, w, pre


def run_card(card_path: Path, card: dict, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Raw outputs of the card's model for each 640x360 frame."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    name, h, w, pre = card_input(card)
    sess = ort_session(card_path, card)
    outs = [o["name"] for o in card["outputs"]]
    results = []
    for rgb in frames:
        x = detect.to_input(stretch(rgb, w, h), pre["mean"], pre["std"])
        results.append(dict(zip(outs, sess.run(outs, {name: x}))))
    return results


def detections(outputs: dict[str, np.ndarray], card: dict, threshold: float) -> np.ndarray:
    """Decoded detections [N, 6] in 640x360 frame pixels."""
    _, h, w, _ = card_input(card)
    d = detect.decode(outputs, h, w, threshold)
    fw, fh = STREET_SIZE
    d[:, [0, 2]] *= fw / w
    d[:, [1, 3]] *= fh / h
    return d


def centre_inside(box: np.ndarray, region: np.ndarray) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(region[0] <= cx <= region[2] and region[1] <= cy <= region[3])


def match_frame(dets: np.ndarray, boxes: list[dict]) -> tuple[list[tuple], list[dict]]:
    """Outcome of each detection ('tp', 'fp', 'ignored-box', 'ignored-region') and missed boxes."""
    outcomes = []
    missed = []
    for label in LABELS:
        k = INDEX[label]
        rows = np.nonzero(dets[:, 5] == k)[0]
        rows = rows[np.argsort(-dets[rows, 4], kind="stable")]
        required = [b for b in boxes if b["class"] == label and not b["ignore"]]
        ign = [b for b in boxes if b["class"] == label and b["ignore"] and not b["region"]]
        regions = [b for b in boxes if b["class"] == label and b["region"]]
        free = list(range(len(required)))
        for r in rows:
            d = dets[r]
            outcome = "fp"
            if free:
                ious = detect.iou_one_to_many(d[:4], np.stack([required[i]["box"] for i in free]))
                best = int(np.argmax(ious))
                if ious[best] >= MATCH_IOU:
                    outcome = "tp"
                    free.pop(best)
            if outcome == "fp":
                if ign and detect.iou_one_to_many(d[:4], np.stack([b["box"] for b in ign])).max() >= MATCH_IOU:
                    outcome = "ignored-box"
                elif any(centre_inside(d[:4], b["box"]) for b in regions):
                    outcome = "ignored-region"
            outcomes.append((int(r), label, outcome))
        missed += [required[i] for i in free]
    return outcomes, missed


def on_cable_car(d: np.ndarray, boxes: list[dict]) -> bool:
    trains = [b["box"] for b in boxes if b["class"] == "train"]
    return any(detect.iou_one_to_many(d[:4], t[None])[0] >= MATCH_IOU or centre_inside(d[:4], t) for t in trains)


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def evaluate(card_path: Path, card: dict, frames: list[dict], images: list[np.ndarray],
             thresholds: list[float], listing: bool) -> None:
    outputs = run_card(card_path, card, images)
    for t in thresholds:
        stats = {label: dict(req=0, tp=0, fp=0, fn=0, ign=0, reg=0) for label in LABELS}
        bus_on_cable_car = 0
        lines = []
        for fr, out in zip(frames, outputs):
            dets = detections(out, card, t)
            outcomes, missed = match_frame(dets, fr["boxes"])
            for b in fr["boxes"]:
                if b["class"] in stats and not b["ignore"]:
                    stats[b["class"]]["req"] += 1
            for r, label, outcome in outcomes:
                s = stats[label]
                if outcome == "tp":
                    s["tp"] += 1
                elif outcome == "fp":
                    s["fp"] += 1
                    if label == "bus" and on_cable_car(dets[r], fr["boxes"]):
                        bus_on_cable_car += 1
                else:
                    s["ign"] += 1
                    s["reg"] += outcome == "ignored-region"
                if listing:
                    x1, y1, x2, y2, score, _ = dets[r]
                    lines.append(f"  frame {fr['index']} {label} [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}] "
                                 f"{score:.3f} {outcome}")
            for b in missed:
                stats[b["class"]]["fn"] += 1
                if listing:
                    lines.append(f"  frame {fr['index']} {b['class']} {b['box'].astype(int).tolist()} missed")
        print(f"\n{card['id']} ({card['file']}), threshold {t}, {len(frames)} frames, match IoU >= {MATCH_IOU}")
        print("| class | required | TP | FP | FN | ignored | precision | recall |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        tot = dict(req=0, tp=0, fp=0, fn=0, ign=0, reg=0)
        for label in LABELS:
            s = stats[label]
            for key in tot:
                tot[key] += s[key]
            print(f"| {label} | {s['req']} | {s['tp']} | {s['fp']} | {s['fn']} | {s['ign']} | "
                  f"{ratio(s['tp'], s['tp'] + s['fp'])} | {ratio(s['tp'], s['tp'] + s['fn'])} |")
        print(f"| all six | {tot['req']} | {tot['tp']} | {tot['fp']} | {tot['fn']} | {tot['ign']} | "
              f"{ratio(tot['tp'], tot['tp'] + tot['fp'])} | {ratio(tot['tp'], tot['tp'] + tot['fn'])} |")
        print(f"ignored: {tot['ign'] - tot['reg']} on ignore boxes, {tot['reg']} in ignore regions "
              f"(precision if every region detection were false: "
              f"{ratio(tot['tp'], tot['tp'] + tot['fp'] + tot['reg'])}); "
              f"bus false positives on annotated cable cars: {bus_on_cable_car} of {stats['bus']['fp']}")
        if listing:
            print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cards", nargs="+", type=Path)
    ap.add_argument("--threshold", type=float, action="append",
                    help=f"score threshold (repeatable; default {detect.THRESHOLD})")
    ap.add_argument("--annotations", type=Path, default=ANNOTATIONS)
    ap.add_argument("--list", action="store_true", help="print each detection's outcome and each missed box")
    args = ap.parse_args()
    thresholds = args.threshold or [detect.THRESHOLD]
    doc, frames = load_annotations(args.annotations)
    images = street_frames([f["index"] for f in frames])
    req = {label: [0, 0] for label in LABELS}
    for fr in frames:
        for b in fr["boxes"]:
            if b["class"] in req:
                req[b["class"]][1 if b["ignore"] else 0] += 1
    shown = args.annotations.resolve()
    shown = shown.relative_to(MODELS.parent) if shown.is_relative_to(MODELS.parent) else shown
    print(f"annotations: {shown} ({doc['protocol']['annotator']}); "
          f"frames {', '.join(str(f['index']) for f in frames)}")
    print("boxes (required / ignore incl. regions): "
          + ", ".join(f"{label} {r}/{i}" for label, (r, i) in req.items()))
    for c in args.cards:
        card_path, card = load_card(c)
        evaluate(card_path, card, frames, images, thresholds, args.list)


if __name__ == "__main__":
    main()
