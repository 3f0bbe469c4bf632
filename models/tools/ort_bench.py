#!/usr/bin/env python3
"""Reference benchmark of a model card with onnxruntime, single-threaded.

Loads the card's file with the card's input shapes (intra_op_num_threads=1,
inter_op_num_threads=1, sequential execution, CPUExecutionProvider), feeds the
inputs of <vectors>/test_data_set_0, and reports:

  load_ms       reading the file, applying the card shapes, creating the session
  p50/p90/p99   per-run latency in ms over --runs runs after --warmup runs
                (nearest-rank percentiles)
  peak_rss_kib  peak resident set of this process (getrusage ru_maxrss): it
                includes the Python interpreter, numpy, onnx and onnxruntime

Usage: models/tools/ort_bench.py CARD [--runs N] [--warmup N] [--json]   (venv python)
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_card, ort_session, read_golden_set  # noqa: E402


def percentile(sorted_ms: list[float], p: float) -> float:
    k = max(1, math.ceil(p / 100 * len(sorted_ms)))
    return sorted_ms[k - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("card", type=Path)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 0:
        raise SystemExit("--runs must be >= 1 and --warmup >= 0")

    card_path, card = load_card(args.card)
    inputs, _ = read_golden_set(card_path.parent / card["check"]["vectors"] / "test_data_set_0")
    feeds = dict(inputs)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    t0 = time.perf_counter()
    sess = ort_session(card_path, card, threads=1)
    load_ms = (time.perf_counter() - t0) * 1e3

    names = [o["name"] for o in card["outputs"]]
    for _ in range(args.warmup):
        sess.run(names, feeds)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter_ns()
        sess.run(names, feeds)
        times.append((time.perf_counter_ns() - t) / 1e6)
    times.sort()
    result = {
        "model": card["id"],
        "load_ms": round(load_ms, 3),
        "p50_ms": round(percentile(times, 50), 3),
        "p90_ms": round(percentile(times, 90), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "runs": args.runs,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']}: load {result['load_ms']:.1f} ms, p50 {result['p50_ms']:.3f} ms, "
              f"p90 {result['p90_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms over {args.runs} runs "
              f"(warmup {args.warmup}), peak RSS {result['peak_rss_kib']} KiB "
              f"(before loading the model: {base_rss} KiB), onnxruntime 1 thread")


if __name__ == "__main__":
    main()
