"""Benchmark: synthetic corpus generation, vectorised vs a per-example pure-Python generator.

    python benchmarks/corpora.py [--quick] [--full]

For each of the 18 simple tasks of Wu et al. (2022), at paper lengths (data part 10..220, T5
ids), it measures examples/s of the project's vectorised generator (`generate_simple`, in
65,536-example blocks as the workflow runs it) and of the named baseline, a straightforward
per-example pure-Python generator of the same semantics (`synthetic_reference`), in the same
process, and prints their ratio. With --full it also builds all 18 corpora at paper size
(1,050,000 generated -> dedup -> 1,000,000 train / 10,000 valid, written to disk) with two
worker processes and reports the wall time (the issue's target: <= 5 minutes on 2 cores).

Numerals (count, length) need the T5 SentencePiece model at paper scale; the benchmark uses a
stand-in table of the same shape (1-2 ids per number), which costs the same lookup.
The last line is one JSON object of named figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_lib.data.corpus import CorpusSpec, build_corpus  # noqa: E402
from pipeline_lib.data.synthetic import SIMPLE_TASKS, generate_simple  # noqa: E402
from pipeline_lib.data.synthetic_reference import reference_example  # noqa: E402
from pipeline_lib.data.vocab import MAX_NUMBER, paper_layout  # noqa: E402

PAPER_LENGTHS = (10, 220)
BLOCK = 65536


def paper_layout_with_standin_numerals():
    numbers = tuple(
        (1000 + n,) if n < 100 else (200 + n // 100, 1000 + n % 100) for n in range(MAX_NUMBER + 1)
    )
    return dataclasses.replace(paper_layout(), numbers=numbers)


def vectorised_rate(task: str, n: int, layout) -> float:
    t0 = time.perf_counter()
    done, block = 0, 0
    while done < n:
        m = min(BLOCK, n - done)
        generate_simple(task, np.random.default_rng([0, block]), m, layout, PAPER_LENGTHS)
        done += m
        block += 1
    return n / (time.perf_counter() - t0)


def baseline_rate(task: str, n: int, layout) -> float:
    r = random.Random(0)
    internal = SIMPLE_TASKS[task].internal_name
    t0 = time.perf_counter()
    for _ in range(n):
        reference_example(task, r, layout, PAPER_LENGTHS, internal)
    return n / (time.perf_counter() - t0)


def full_build(layout, workers: int) -> float:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as tmp:
        for task in SIMPLE_TASKS:
            spec = CorpusSpec(task=task, seed=0, train_examples=1_000_000, valid_examples=10_000,
                              generate_factor=1.05, length_range=PAPER_LENGTHS, block_size=BLOCK,
                              params={})
            t = time.perf_counter()
            build_corpus(spec, layout, Path(tmp) / task, workers=workers)
            print(f"  full build {task:16s} {time.perf_counter() - t:6.1f} s", flush=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    ap.add_argument("--full", action="store_true", help="also build all 18 paper-size corpora")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    n_vec = 20_000 if args.quick else 200_000
    n_base = 2_000 if args.quick else 20_000
    layout = paper_layout_with_standin_numerals()
    figures: dict[str, float] = {}
    ratios = []
    print(f"{'task':16s} {'vectorised ex/s':>16s} {'baseline ex/s':>14s} {'ratio':>7s}")
    for task in SIMPLE_TASKS:
        vec = vectorised_rate(task, n_vec, layout)
        base = baseline_rate(task, n_base, layout)
        ratios.append(vec / base)
        figures[f"{task}_examples_per_s"] = round(vec)
        figures[f"{task}_baseline_examples_per_s"] = round(base)
        figures[f"{task}_ratio_vs_baseline"] = round(vec / base, 2)
        print(f"{task:16s} {vec:16,.0f} {base:14,.0f} {vec / base:7.1f}", flush=True)
    figures["median_ratio_vs_baseline"] = round(statistics.median(ratios), 2)
    # single-process generation time for 18 x 1.05M examples, from the measured rates
    est = sum(1_050_000 / figures[f"{t}_examples_per_s"] for t in SIMPLE_TASKS)
    figures["estimated_generation_s_18x1.05M_one_core"] = round(est, 1)
    print(f"median ratio vs per-example baseline: {figures['median_ratio_vs_baseline']}x")
    if args.full:
        wall = full_build(layout, args.workers)
        figures["full_build_18x1.05M_wall_s"] = round(wall, 1)
        figures["full_build_workers"] = args.workers
        print(f"all 18 corpora at paper size (generate, dedup, split, write): {wall:.0f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
