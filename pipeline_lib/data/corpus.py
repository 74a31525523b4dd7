"""Build one pre-training corpus: generate in seeded blocks, deduplicate on inputs, split, write.

Protocol of Wu et al. (reference §1.1): generate `generate_factor x train` examples, keep the
first example of every distinct input, then train = the first `train` and valid = the last
`valid` of the deduplicated list (disjoint). Should deduplication leave too few, more blocks are
generated (deterministically) until there are enough.

Determinism: block b of source s draws only from SeedSequence(seed, spawn_key=(crc32(s), b)),
and blocks are concatenated in index order, so the bytes written do not depend on the number of
worker processes or on how blocks are spread over them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline_lib import files
from pipeline_lib.data import store
from pipeline_lib.data.ragged import Ragged, first_occurrences, row_hashes, stack
from pipeline_lib.data.synthetic import SIMPLE_TASKS, generate_simple
from pipeline_lib.data.vocab import VocabLayout

log = logging.getLogger(__name__)

SAMPLE_ROWS = 100
MAX_TOPUP_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    task: str
    seed: int
    train_examples: int
    valid_examples: int
    generate_factor: float
    length_range: tuple[int, int]
    block_size: int
    params: dict  # task-specific generator parameters (lime / nonsense / nesting)


def sources(task: str) -> list[str]:
    """The independently generated, deduplicated and split parts of a task's corpus."""
    if task == "lime":
        return ["lime_induct", "lime_deduct", "lime_abduct"]
    return [task]


def _generator(source: str, spec: CorpusSpec) -> Callable[..., tuple[Ragged, Ragged]]:
    """(rng, n, layout) -> (inputs, targets) for one source."""
    if source in SIMPLE_TASKS:
        return lambda rng, n, layout: generate_simple(source, rng, n, layout, spec.length_range)
    if source.startswith("lime_"):
        from pipeline_lib.data import lime

        params = lime.LimeParams(**spec.params)
        mode = source.removeprefix("lime_")
        return lambda rng, n, layout: lime.generate_lime(rng, n, mode, layout, params)
    if source == "nonsense_summary":
        from pipeline_lib.data import nonsense

        params = nonsense.NonsenseParams(**spec.params)
        return lambda rng, n, layout: nonsense.generate_nonsense(rng, n, layout, params)
    if source == "nesting_language":
        from pipeline_lib.data import nesting

        params = nesting.NestingParams(**spec.params)
        return lambda rng, n, layout: nesting.generate_nesting(rng, n, layout, params)
    raise ValueError(f"unknown corpus source {source!r}")


def block_rng(seed: int, source: str, block: int) -> np.random.Generator:
    key = zlib.crc32(source.encode())
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key, block)))


def _block_size(spec: CorpusSpec, total: int, block: int) -> int:
    return min(spec.block_size, total - block * spec.block_size)


# Worker-process state: set once per process by the pool initializer (fork start method keeps
# it cheap), so a task only ships a block index.
_WORKER: dict = {}


def _init_worker(source: str, spec: CorpusSpec, layout: VocabLayout) -> None:
    _WORKER.update(
        source=source,
        spec=spec,
        layout=layout,
        gen=_generator(source, spec),
        dtype=store.token_dtype(layout.model_vocab_size),
    )


def _make_block(args: tuple[int, int]) -> tuple[Ragged, Ragged, np.ndarray]:
    """One block: (inputs, targets) in the storage dtype, and the inputs' row hashes.

    Hashing and the dtype conversion happen here, in the worker, so the parent process only
    concatenates and deduplicates (and receives a quarter of the bytes of int64 arrays).
    """
    block, n = args
    w = _WORKER
    rng = block_rng(w["spec"].seed, w["source"], block)
    inputs, targets = w["gen"](rng, n, w["layout"])
    if inputs.n != n or targets.n != n:
        raise RuntimeError(f"{w['source']}: generator returned {inputs.n} examples, asked {n}")
    inputs, targets = inputs.astype(w["dtype"]), targets.astype(w["dtype"])
    return inputs, targets, row_hashes(inputs)


def _generate(source, spec, layout, first_block, n_blocks, total, workers):
    jobs = [(b, _block_size(spec, total, b)) for b in range(first_block, first_block + n_blocks)]
    jobs = [j for j in jobs if j[1] > 0]
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(source, spec, layout)
        results = []
        for i, job in enumerate(jobs):
            results.append(_make_block(job))
            _progress(source, i + 1, len(jobs), job)
        return results
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(source, spec, layout)
    ) as pool:
        results = []
        for i, res in enumerate(pool.map(_make_block, jobs)):
            results.append(res)
            _progress(source, i + 1, len(jobs), jobs[i])
        return results


def _progress(source: str, done: int, total: int, job: tuple[int, int]) -> None:
    log.info("%s: block %d/%d done (%d examples)", source, done, total, job[1])


@dataclasses.dataclass
class SourceSplits:
    train: tuple[Ragged, Ragged]
    valid: tuple[Ragged, Ragged]
    generated: int
    distinct: int


def build_source(source: str, spec: CorpusSpec, layout: VocabLayout, workers: int = 1):
    needed = spec.train_examples + spec.valid_examples
    total = max(needed, int(spec.train_examples * spec.generate_factor))
    n_blocks = math.ceil(total / spec.block_size)
    t0 = time.perf_counter()
    rounds = 0
    blocks = _generate(source, spec, layout, 0, n_blocks, total, workers)
    while True:
        inputs = stack([b[0] for b in blocks])
        hashes = np.concatenate([b[2] for b in blocks])
        keep = first_occurrences(inputs, hashes)
        if keep.size >= needed:
            break
        # Too many duplicates (tiny vocabularies / lengths): add blocks of the same stream.
        rounds += 1
        if rounds > MAX_TOPUP_ROUNDS:
            raise RuntimeError(
                f"{source}: only {keep.size} distinct inputs after {rounds} extra rounds; "
                f"{needed} needed. Increase vocab.data_vocab_size or corpora.length_range"
            )
        extra_blocks = max(1, math.ceil((needed - keep.size) * 2 / spec.block_size))
        first = n_blocks
        n_blocks += extra_blocks
        blocks += _generate(
            source, spec, layout, first, extra_blocks, n_blocks * spec.block_size, workers
        )
    targets = stack([b[1] for b in blocks])
    del blocks
    generated = inputs.n
    # train = the first `train` distinct examples, valid = the last `valid` (disjoint)
    train_rows, valid_rows = keep[: spec.train_examples], keep[keep.size - spec.valid_examples :]
    elapsed = time.perf_counter() - t0
    log.info(
        "%s: %d generated, %d distinct, %d train / %d valid (%.1fs, %.0f examples/s)",
        source, generated, keep.size, spec.train_examples, spec.valid_examples, elapsed,
        generated / max(elapsed, 1e-9),
    )
    return SourceSplits(
        train=(inputs.take_sorted(train_rows), targets.take_sorted(train_rows)),
        valid=(inputs.take_sorted(valid_rows), targets.take_sorted(valid_rows)),
        generated=generated,
        distinct=int(keep.size),
    )


def build_corpus(
    spec: CorpusSpec, layout: VocabLayout, out_dir: Path, workers: int = 1
) -> dict:
    """Generate every source of `spec.task` and write the corpus directory atomically."""
    dtype = store.token_dtype(layout.model_vocab_size)
    meta_sources = {}
    checksums: dict[str, str] = {}
    samples = []
    with files.atomic_directory(Path(out_dir)) as tmp:
        for source in sources(spec.task):
            splits = build_source(source, spec, layout, workers)
            counts = {"generated": splits.generated, "distinct_inputs": splits.distinct}
            lengths = {}
            for split in ("train", "valid"):
                for field, data in zip(store.FIELDS, getattr(splits, split), strict=True):
                    checksums.update(store.write_split(tmp, source, split, field, data, dtype))
                    lengths[f"{split}.{field}"] = store.length_stats(data.lengths)
                counts[split] = getattr(splits, split)[0].n
            meta_sources[source] = {"counts": counts, "lengths": lengths}
            per_source = SAMPLE_ROWS // len(sources(spec.task))
            inputs, targets = splits.train
            for i in range(min(per_source, inputs.n)):
                x, y = inputs.row(i).tolist(), targets.row(i).tolist()
                samples.append(
                    {
                        "source": source,
                        "inputs": x,
                        "targets": y,
                        "inputs_text": layout.decode(x),
                        "targets_text": layout.decode(y),
                    }
                )
        meta = corpus_meta(spec, layout, meta_sources, checksums, dtype)
        files.write_json_atomic(tmp / "meta.json", meta)
        with open(tmp / "sample.jsonl", "w") as f:
            for row in samples:
                f.write(_json_line(row))
    return meta


def _json_line(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True) + "\n"


def corpus_meta(spec: CorpusSpec, layout: VocabLayout, meta_sources, checksums, dtype) -> dict:
    from pipeline_lib.data.vocab import MAX_NUMBER

    vocab = layout.to_json()
    if spec.task in SIMPLE_TASKS:
        internal = SIMPLE_TASKS[spec.task].internal_name
        vocab["task_prefix_ids"] = list(layout.prefix(internal))
    if layout.numbers is not None:
        vocab["numbers"] = {str(n): list(layout.number(n)) for n in range(MAX_NUMBER + 1)}
    return {
        "format_version": store.FORMAT_VERSION,
        "task": spec.task,
        "generator": generator_name(spec.task),
        "parameters": {
            "length_range": list(spec.length_range),
            "generate_factor": spec.generate_factor,
            "block_size": spec.block_size,
            **spec.params,
        },
        "seed": spec.seed,
        "sources": meta_sources,
        "token_dtype": str(dtype),
        "eos_appended": False,
        "vocab": vocab,
        "checksums": dict(sorted(checksums.items())),
    }


def generator_name(task: str) -> str:
    if task in SIMPLE_TASKS:
        return f"pipeline_lib.data.synthetic:{task}"
    return {
        "lime": "pipeline_lib.data.lime",
        "nonsense_summary": "pipeline_lib.data.nonsense",
        "nesting_language": "pipeline_lib.data.nesting",
    }[task]


def load_corpus(
    root: Path, split: str, vocab_size: int | None = None
) -> dict[str, tuple[Ragged, Ragged]]:
    """The native loader: {source: (inputs, targets)} as memory-mapped Ragged arrays.

    Structure is checked on every load (integer dtype, monotonic offsets; with `vocab_size`,
    every id inside the model's vocabulary). Checksums are verified once per data set by the
    job that trains on it (`store.verify_checksums`: ~0.4 s per 200 MB).
    """
    meta = store.read_meta(root)
    out = {}
    for source in meta.get("sources") or {}:
        pair = tuple(store.read_split(Path(root), source, split, f) for f in store.FIELDS)
        if vocab_size is not None:
            for field, data in zip(store.FIELDS, pair):
                store.check_token_range(Path(root), data, f"{source}/{split}.{field}", vocab_size)
        out[source] = pair
    return out
