#!/usr/bin/env python3
"""Writes what xtask/tools/ort-run.c needs to run a card with onnxruntime's C library.

In OUTDIR: model.onnx (the card's file with the card's input shapes, as ort_session and the
device loader apply them) and input_K.raw (the bytes of test_data_set_0's inputs). Prints one
JSON object: {"model": PATH, "inputs": ["NAME=TYPE:D0xD1x...:PATH", ...]}, the arguments of
ort-run.

Usage: models/tools/ort_inputs.py CARD OUTDIR   (venv python)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_card, model_path, read_golden_set, set_io_shapes  # noqa: E402

TYPES = {np.float32: "f32", np.uint8: "u8", np.int8: "i8", np.int32: "i32", np.int64: "i64"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("card", type=Path)
    ap.add_argument("outdir", type=Path)
    args = ap.parse_args()
    import onnx

    card_path, card = load_card(args.card)
    args.outdir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path(card_path, card)))
    set_io_shapes(model, {i["name"]: i["shape"] for i in card["inputs"]})
    out_model = args.outdir / "model.onnx"
    onnx.save(model, str(out_model))
    inputs, _ = read_golden_set(card_path.parent / card["check"]["vectors"] / "test_data_set_0")
    specs = []
    for k, (name, array) in enumerate(inputs):
        kind = TYPES.get(array.dtype.type)
        if kind is None:
            raise SystemExit(f"{args.card}: input {name} is {array.dtype}, which ort-run does not take")
        raw = args.outdir / f"input_{k}.raw"
        raw.write_bytes(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
        shape = "x".join(str(d) for d in array.shape)
        specs.append(f"{name}={kind}:{shape}:{raw.resolve()}")
    print(json.dumps({"model": str(out_model.resolve()), "inputs": specs}))


if __name__ == "__main__":
    main()
