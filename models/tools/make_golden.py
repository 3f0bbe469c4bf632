#!/usr/bin/env python3
"""Write golden vectors for model cards, from the real samples in models/samples/.

For each card: build the inputs from models/samples/ exactly as the card's
[inputs.preprocess] says, run onnxruntime (CPUExecutionProvider, one thread) on
the card's file with the card's input shapes, check the outputs have the card's
shapes and dtypes, and write ONNX backend-test folders

  <card dir>/<check.vectors>/test_data_set_N/input_K.pb, output_K.pb

(one serialized TensorProto each, named after the graph input/output, K in the
card's [[inputs]] / [[outputs]] order). Existing test_data_set_* folders there
are replaced.

Sets written:
  image models   set 0: the image sample whose size is the input size
                 (samples/people.png 320x256, samples/street.png 416x416), or
                 for any other size samples/street.png resized to it (bilinear)
  audio models   set 0: a speech chunk, set 1: a silence chunk of speech.wav
                 (resampled linearly to the card's rate; stateful models
                 are streamed from the start of the file, so the state inputs
                 hold the real state at that chunk)
  oww-embedding  set 0: a 76-frame mel window of speech, set 1: of street noise
                 (mel frames streamed through oww-melspectrogram as openWakeWord
                 does, then x/10 + 2)
  other tensors  set 0: values from a fixed-seed generator (normal, or uniform
                 integers for integer inputs), the same on every run

Optional [inputs.preprocess] keys take the Rust loader's defaults (image:
channels "rgb", layout "nchw", mean 0, std 1, scale 1; audio: context 0,
gain 1). A card may live anywhere (not only under models/).

Usage: models/tools/make_golden.py CARD.toml...    (venv python)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DTYPES, MODELS, SAMPLES, load_card, load_rgb, ort_session, read_wav_int16  # noqa: E402

# Positions in models/samples/speech.wav (see samples/manifest.toml for segments).
SPEECH_AT_S = 3.0   # inside the first (clean) speech segment
SILENCE_AT_S = 0.5  # inside the leading silence
NOISE_AT_S = 10.5   # end of the street-noise segment (no speech)
OWW_MEL_TRANSFORM = (0.1, 2.0)  # openWakeWord: melspec_transform = x/10 + 2
OWW_WINDOW = 76                 # mel frames per embedding window
IMAGE_SAMPLES = ("people.png", "street.png")  # image cards take the one of their input size


# ---------------------------------------------------------------- inputs

def image_sample(w: int, h: int, c: int) -> tuple[str, np.ndarray]:
    """(name, HxWx3 uint8 RGB): the image sample of exactly this size, else the
    street sample resized to it."""
    if c != 3:
        raise SystemExit(f"an image input has 3 channels, this one {c}")
    for name in IMAGE_SAMPLES:
        rgb = load_rgb(SAMPLES / name)
        if rgb.shape[:2] == (h, w):
            return name, rgb
    from PIL import Image

    name = IMAGE_SAMPLES[-1]
    with Image.open(SAMPLES / name) as im:
        rgb = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.uint8).copy()
    return f"{name} resized to {w}x{h}", rgb


def image_tensor(inp: dict) -> tuple[str, np.ndarray]:
    pre = inp["preprocess"]
    shape = inp["shape"]
    layout = pre.get("layout", "nchw")
    if layout == "nchw":
        _, c, h, w = shape
    else:
        _, h, w, c = shape
    name, rgb = image_sample(w, h, c)
    x = rgb.astype(np.float32)
    if pre.get("channels", "rgb") == "bgr":
        x = x[:, :, ::-1]
    mean = np.asarray(pre.get("mean", [0.0] * 3), dtype=np.float32)
    std = np.asarray(pre.get("std", [1.0] * 3), dtype=np.float32)
    x = (x * np.float32(pre.get("scale", 1.0)) - mean) / std
    if layout == "nchw":
        x = x.transpose(2, 0, 1)
    dtype = DTYPES[inp["dtype"]]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return name, np.ascontiguousarray(x[None]).astype(dtype)


def audio_samples() -> np.ndarray:
    pcm, rate = read_wav_int16(SAMPLES / "speech.wav")
    if rate != 16000:
        raise SystemExit("speech.wav must be 16 kHz")
    return pcm.astype(np.float32) / np.float32(32768.0)  # [-1, 1)


def audio_window(x: np.ndarray, pre: dict, k: int) -> np.ndarray:
    """Chunk k of the stream with `context` samples of history in front (zeros before t=0)."""
    chunk, context = pre["chunk"], pre.get("context", 0)
    start = k * chunk - context
    end = (k + 1) * chunk
    w = np.zeros(end - start, dtype=np.float32)
    src = x[max(start, 0):end]
    w[len(w) - len(src):] = src
    return w * np.float32(pre.get("gain", 1.0))


def constant_tensor(inp: dict) -> np.ndarray:
    return np.asarray(inp["value"], dtype=DTYPES[inp["dtype"]]).reshape(inp["shape"])


def run(sess, card: dict, feeds: dict) -> list[np.ndarray]:
    names = [o["name"] for o in card["outputs"]]
    outs = sess.run(names, feeds)
    for o, v in zip(card["outputs"], outs):
        if list(v.shape) != list(o["shape"]) or v.dtype != DTYPES[o["dtype"]]:
            raise SystemExit(f"output {o['name']}: got {v.dtype}{list(v.shape)}, card says {o['dtype']}{o['shape']}")
    return outs


def audio_sets(card_path: Path, card: dict, sess) -> list[tuple[str, dict, list]]:
    data = [i for i in card["inputs"] if i["role"] == "data"]
    if len(data) != 1:
        raise SystemExit("audio models: exactly one data input supported")
    pre = data[0]["preprocess"]
    x = audio_samples()
    if pre["sample_rate"] != 16000:
        # Linear interpolation to the card's rate (the agent's resampler is linear too).
        n = int(len(x) * pre["sample_rate"] / 16000)
        x = np.interp(np.arange(n) * (16000 / pre["sample_rate"]), np.arange(len(x)), x).astype(np.float32)
    state_inputs = [i for i in card["inputs"] if i["role"] == "state"]
    sets = []
    for label, at_s in (("speech", SPEECH_AT_S), ("silence", SILENCE_AT_S)):
        k_target = int(at_s * pre["sample_rate"]) // pre["chunk"]
        states = {i["name"]: np.zeros(i["shape"], dtype=DTYPES[i["dtype"]]) for i in state_inputs}
        # Stateless models only need the target chunk; stateful ones are streamed from 0.
        first = 0 if state_inputs else k_target
        for k in range(first, k_target + 1):
            feeds = {}
            for i in card["inputs"]:
                if i["role"] == "data":
                    feeds[i["name"]] = audio_window(x, pre, k).reshape(i["shape"]).astype(DTYPES[i["dtype"]])
                elif i["role"] == "state":
                    feeds[i["name"]] = states[i["name"]]
                else:
                    feeds[i["name"]] = constant_tensor(i)
            outs = run(sess, card, feeds)
            by_name = dict(zip([o["name"] for o in card["outputs"]], outs))
            if k == k_target:
                desc = f"{label}: chunk {k} (samples {k * pre['chunk']}..{(k + 1) * pre['chunk']}), streamed from chunk {first}"
                sets.append((desc, feeds, outs))
            for i in state_inputs:
                states[i["name"]] = by_name[i["state_from"]]
    return sets


def oww_mel_frames(x: np.ndarray, end_chunk: int, n_chunks: int) -> np.ndarray:
    """Mel frames as openWakeWord streams them: per 1280-sample chunk, the mel
    model on that chunk plus 480 samples of history gives 8 frames; x/10 + 2."""
    mel_card_path, mel_card = load_card(MODELS / "oww-melspectrogram" / "card.toml")
    sess = ort_session(mel_card_path, mel_card)
    inp = mel_card["inputs"][0]
    frames = []
    for k in range(end_chunk - n_chunks + 1, end_chunk + 1):
        w = audio_window(x, inp["preprocess"], k).reshape(inp["shape"])
        (spec,) = sess.run([mel_card["outputs"][0]["name"]], {inp["name"]: w})
        a, b = OWW_MEL_TRANSFORM
        frames.append(np.squeeze(spec, axis=(0, 1)) * np.float32(a) + np.float32(b))
    return np.concatenate(frames, axis=0)


def oww_embedding_sets(card_path: Path, card: dict, sess) -> list[tuple[str, dict, list]]:
    x = audio_samples()
    inp = card["inputs"][0]
    chunk = 1280
    n_chunks = -(-OWW_WINDOW // 8)  # 8 mel frames per chunk
    sets = []
    for label, at_s in (("speech", SPEECH_AT_S + 1.0), ("street noise", NOISE_AT_S)):
        end_chunk = int(at_s * 16000) // chunk
        frames = oww_mel_frames(x, end_chunk, n_chunks)[-OWW_WINDOW:]
        feeds = {inp["name"]: frames.reshape(inp["shape"]).astype(np.float32)}
        desc = (f"{label}: last {OWW_WINDOW} mel frames of 1280-sample chunks "
                f"{end_chunk - n_chunks + 1}..{end_chunk} (ending at sample {(end_chunk + 1) * chunk})")
        sets.append((desc, feeds, run(sess, card, feeds)))
    return sets


def seeded_tensor_sets(card_path: Path, card: dict, sess) -> list[tuple[str, dict, list]]:
    """Set 0 from a fixed-seed generator: a tensor input with no real source."""
    rng = np.random.default_rng(20261206)
    feeds = {}
    for i in card["inputs"]:
        dtype = DTYPES[i["dtype"]]
        if i["role"] == "constant":
            feeds[i["name"]] = constant_tensor(i)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            lo, hi = max(info.min, -128), min(info.max, 127)
            feeds[i["name"]] = rng.integers(lo, hi, size=i["shape"], endpoint=True).astype(dtype)
        else:
            feeds[i["name"]] = rng.standard_normal(i["shape"]).astype(dtype)
    return [("seeded normal values (seed 20261206)", feeds, run(sess, card, feeds))]


TENSOR_SOURCES = {"oww-embedding": oww_embedding_sets}


def image_sets(card_path: Path, card: dict, sess) -> list[tuple[str, dict, list]]:
    feeds, used = {}, []
    for i in card["inputs"]:
        if i["role"] == "data":
            name, feeds[i["name"]] = image_tensor(i)
            used.append(name)
        else:
            feeds[i["name"]] = constant_tensor(i)
    return [(", ".join(used), feeds, run(sess, card, feeds))]


# ---------------------------------------------------------------- output

def write_sets(card_path: Path, card: dict, sets) -> None:
    root = card_path.parent / card["check"]["vectors"]
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("test_data_set_*"):
        shutil.rmtree(old)
    for n, (desc, feeds, outs) in enumerate(sets):
        d = root / f"test_data_set_{n}"
        d.mkdir()
        for k, i in enumerate(card["inputs"]):
            t = numpy_helper.from_array(feeds[i["name"]], name=i["name"])
            (d / f"input_{k}.pb").write_bytes(t.SerializeToString())
        for k, (o, v) in enumerate(zip(card["outputs"], outs)):
            t = numpy_helper.from_array(v, name=o["name"])
            (d / f"output_{k}.pb").write_bytes(t.SerializeToString())
        size = sum(p.stat().st_size for p in d.iterdir())
        stats = ", ".join(f"{o['name']}: min {v.min():.4g} max {v.max():.4g}" for o, v in zip(card["outputs"], outs))
        shown = d.relative_to(MODELS) if d.is_relative_to(MODELS) else d
        print(f"  {shown}  [{desc}]  {size} bytes\n    {stats}")


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(f"onnxruntime {__import__('onnxruntime').__version__}, onnx {onnx.__version__}, numpy {np.__version__}")
    for arg in sys.argv[1:]:
        card_path, card = load_card(arg)
        print(f"{card['id']}:")
        sess = ort_session(card_path, card)
        kinds = {i["preprocess"]["kind"] for i in card["inputs"] if i["role"] == "data"}
        if kinds == {"image"}:
            sets = image_sets(card_path, card, sess)
        elif kinds == {"audio"}:
            sets = audio_sets(card_path, card, sess)
        elif kinds == {"tensor"}:
            sets = TENSOR_SOURCES.get(card["id"], seeded_tensor_sets)(card_path, card, sess)
        else:
            raise SystemExit(f"{card['id']}: no sample source for data inputs of kind {sorted(kinds)}")
        write_sets(card_path, card, sets)


if __name__ == "__main__":
    main()
