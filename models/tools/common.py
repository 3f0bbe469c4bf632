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
