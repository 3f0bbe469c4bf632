#!/usr/bin/env python3
"""Stream models/samples/speech.wav through a voice-activity card and print the
share of chunks above a threshold per labelled segment (samples/manifest.toml).

With --reference WHEEL, also runs silero_vad/data/silero_vad.onnx from that
silero-vad wheel (the package's general model, inputs input/state/sr, fed as the
package's OnnxWrapper does) and prints the largest difference in probability.

Usage: models/tools/vad_shares.py models/silero-vad-16k/card.toml [--threshold 0.5]
           [--reference silero_vad-6.2.3-py3-none-any.whl]      (venv python)
"""
from __future__ import annotations

import argparse
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DTYPES, SAMPLES, load_card, ort_session, read_wav_int16  # noqa: E402


def stream(card_path: Path, card: dict, x: np.ndarray) -> np.ndarray:
    sess = ort_session(card_path, card)
    data = next(i for i in card["inputs"] if i["role"] == "data")
    pre = data["preprocess"]
    chunk, context = pre["chunk"], pre["context"]
    states = {i["name"]: np.zeros(i["shape"], DTYPES[i["dtype"]]) for i in card["inputs"] if i["role"] == "state"}
    prob_name = next(o["name"] for o in card["outputs"] if o["postprocess"] == "speech-probability")
    out_names = [o["name"] for o in card["outputs"]]
    padded = np.concatenate([np.zeros(context, np.float32), x]) * np.float32(pre["gain"])
    probs = []
    for k in range(len(x) // chunk):
        feeds = {data["name"]: padded[k * chunk:(k + 1) * chunk + context].reshape(data["shape"])}
        for i in card["inputs"]:
            if i["role"] == "state":
                feeds[i["name"]] = states[i["name"]]
            elif i["role"] == "constant":
                feeds[i["name"]] = np.asarray(i["value"], DTYPES[i["dtype"]]).reshape(i["shape"])
        outs = dict(zip(out_names, sess.run(out_names, feeds)))
        for i in card["inputs"]:
            if i["role"] == "state":
                states[i["name"]] = outs[i["state_from"]]
        probs.append(float(outs[prob_name].reshape(-1)[0]))
    return np.array(probs)


def reference(wheel: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    with zipfile.ZipFile(wheel) as z:
        model = z.read("silero_vad/data/silero_vad.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    padded = np.concatenate([np.zeros(64, np.float32), x])
    probs = []
    for k in range(len(x) // 512):
        out, state = sess.run(None, {"input": padded[None, k * 512:(k + 1) * 512 + 64], "state": state,
                                     "sr": np.array(16000, np.int64)})
        probs.append(float(out.reshape(-1)[0]))
    return np.array(probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("card", type=Path)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--reference", type=Path)
    args = ap.parse_args()
    card_path, card = load_card(args.card)
    pcm, rate = read_wav_int16(SAMPLES / "speech.wav")
    x = pcm.astype(np.float32) / np.float32(32768.0)
    chunk = next(i for i in card["inputs"] if i["role"] == "data")["preprocess"]["chunk"]
    probs = stream(card_path, card, x)
    with open(SAMPLES / "manifest.toml", "rb") as f:
        segments = tomllib.load(f)["speech"]["segments"]
    print(f"{card['id']}: {len(probs)} chunks of {chunk} samples, threshold {args.threshold}")
    for s in segments:
        ks = range(s["start"] // chunk, s["end"] // chunk)
        p = probs[ks.start:ks.stop]
        print(f"  {s['kind']:<13} {s['start'] / rate:5.2f}-{s['end'] / rate:5.2f} s: "
              f"speech share {np.mean(p > args.threshold):.2f} (mean probability {p.mean():.2f})")
    if args.reference:
        ref = reference(args.reference, x)
        print(f"  max |p - p(silero_vad.onnx)| over the file: {np.abs(ref - probs).max():.2e}")


if __name__ == "__main__":
    main()
