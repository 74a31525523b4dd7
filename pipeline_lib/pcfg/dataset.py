"""The workflow's PCFG data stage: one pure function per Snakemake rule.

Every function takes (sections of) the config's validated ``pcfg:`` section
(``spec``), checks it (unknown or missing keys are rejected with one line naming
the key; the defaults live only in the config schema, see :func:`validate_spec`)
and writes one directory atomically
(:func:`pipeline_lib.data.files.atomic_directory`: an exception leaves no
output directory).  Same spec and grammar give byte-identical files.

=====================  ===========================================================
function               directory contents (besides ``meta.json``)
=====================  ===========================================================
:func:`build_grammar`  ``grammar.txt`` (nltk PCFG format)
:func:`build_pretrain` ``sentences.txt`` (one sentence per line), BERT-masked
                       instances as ``.npy`` (``input_ids``, ``input_mask``,
                       ``masked_lm_positions``, ``masked_lm_ids``,
                       ``masked_lm_weights``), ``vocab.txt``, ``sample.jsonl``
:func:`build_downstream` per task: ``{train,validation}.csv`` (original
                       ``text,label``), ``{split}.input_ids.npy``,
                       ``{split}.input_mask.npy``, ``{split}.labels.npy``,
                       ``vocab.txt``, ``sample.jsonl``
:func:`build_optimal_loss` evaluation sentences with their exact conditionals
                       (``conditionals.npy`` ragged over ``offsets.npy``),
                       ``metrics.json`` (optimal loss and standard error),
                       ``sentences.txt``, ``input_ids.npy``, ``input_mask.npy``,
                       ``conditional_vocab_ids.npy``, ``vocab.txt``, ``sample.jsonl``
=====================  ===========================================================

``meta.json`` of every directory has ``format_version``, ``kind``,
``generator``, ``parameters`` (the spec sections used), ``seed`` (a dict keyed
by spec section), ``counts`` and ``checksums`` (sha256 of every other file), so
:func:`pipeline_lib.data.store.verify_checksums` works on it.  Products made
from a grammar record the grammar's sha256, never a path.

Random streams: pre-training sentences use ``(sample.seed, stream 0)``,
downstream ``(downstream.seed, streams 1/2)`` for train/validation (the same
draw as ``pcfg labels --n N --seed S --split ...``, so all tasks of a split
share their sentences), masking ``(mlm.seed, stream 3)`` and the optimal-loss
evaluation set ``(optimal_loss.seed, stream 4)``, so no two products share
random numbers even with equal seeds.

JAX: charts run in fixed-size batches (``chart.batch_size`` rows) padded to a
multiple of 4 tokens, so each chart function compiles once per length bucket.
The persistent compilation cache is used when ``JAX_COMPILATION_CACHE_DIR`` is
set (JAX reads it itself; nothing here overrides it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pipeline_lib import files
from pipeline_lib.data import store
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.generate import GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.grammar_io import format_nltk_grammar, parse_nltk_grammar, read_grammar
from pipeline_lib.pcfg.mlm import (
    MlmConfig,
    MlmVocabulary,
    bert_vocabulary,
    compact_vocabulary,
    create_mlm_instances,
)
from pipeline_lib.pcfg.sample import STREAM_PRETRAINING, sample_sentences, sentences_to_text
from pipeline_lib.pcfg.transduction import TASKS as TRANSDUCTION_TASKS

log = logging.getLogger("pipeline_lib.pcfg")

GRAMMAR_FILE = "grammar.txt"
SAMPLE_ROWS = 100
# Random stream of the optimal-loss evaluation sentences (sample.py uses 0-3).
STREAM_OPTIMAL_LOSS = 4
STREAM_TRANSDUCTION = 5
# Host-side chunk sizes: multiples of the sampler / masking block size (1000),
# so chunking never redraws a block; they only set how often progress is logged.
SAMPLE_CHUNK = 10_000
MLM_CHUNK = 10_000
CHART_CHUNK_BATCHES = 32

class SpecError(PcfgError):
    """A bad value, unknown or missing key in the ``pcfg:`` config section (message names it)."""


# ---------------------------------------------------------------------------
# Spec validation


Check = Callable[[str, Any], Any]


def _integer(minimum: int) -> Check:
    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: {value!r} is not an integer")
        if value < minimum:
            raise SpecError(f"{path}: {value} is below the minimum {minimum}")
        return value

    return check


def _probability(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise SpecError(f"{path}: {value!r} is not a number in (0, 1]")
    return float(value)


def _boolean(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{path}: {value!r} is not true or false")
    return value


def _choice(*options: str) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in options:
            raise SpecError(
                f"{path}: {value!r} is not allowed; allowed values: {', '.join(options)}"
            )
        return value

    return check


def _optional_path(path: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise SpecError(f"{path}: {value!r} is not a file path or null")
    return value


def _task_list(path: str, value: Any, allowed: Sequence[str]) -> list[str]:
    names = ", ".join(allowed)
    if not isinstance(value, list) or not value:
        raise SpecError(f"{path}: {value!r} is not a non-empty list of tasks ({names})")
    for task in value:
        if task not in allowed:
            raise SpecError(f"{path}: {task!r} is not allowed; allowed values: {names}")
    if len(set(value)) != len(value):
        raise SpecError(f"{path}: {value!r} lists a task twice")
    return list(value)


def _tasks(path: str, value: Any) -> list[str]:
    return _task_list(path, value, ("A", "B", "C"))


_RULES: dict[str, Any] = {
    "grammar": _optional_path,
    "grammar_format": _choice("auto", "rules", "nltk"),
    "allow_unreachable": _boolean,
    "generate": {
        "seed": _integer(0),
        "n_roots": _integer(1),
        "n_levels": _integer(1),
        "nonterminals_per_level": _integer(1),
        "n_terminals": _integer(1),
        "binary_rules_per_nonterminal": _integer(1),
        "words_per_bottom_nonterminal": _integer(1),
    },
    "sample": {"seed": _integer(0), "n_sentences": _integer(1), "length_limit": _integer(2)},
    "downstream": {
        "tasks": _tasks,
        "seed": _integer(0),
        "n_train": _integer(1),
        "n_validation": _integer(1),
    },
    "transduction": {
        "tasks": lambda path, value: _task_list(path, value, tuple(TRANSDUCTION_TASKS)),
        "seed": _integer(0),
        "n_train": _integer(1),
        "n_validation": _integer(1),
        "n_test": _integer(1),
        "min_length": _integer(2),
    },
    # >= 2 sentences: the standard error needs two.
    "optimal_loss": {"seed": _integer(0), "n_sentences": _integer(2), "renormalize": _boolean},
    "mlm": {
        "seed": _integer(0),
        "vocab": _optional_path,
        "max_seq_length": _integer(3),
        "masked_lm_prob": _probability,
        "max_predictions_per_seq": _integer(1),
        "dup_factor": _integer(1),
    },
    "chart": {"batch_size": _integer(1), "method": _choice("dense", "sparse")},
}


def validate_spec(spec: Any, where: str = "pcfg", require: Sequence[str] = ()) -> dict[str, Any]:
    """A checked copy of ``spec``: the sections it has, each complete, and those in ``require``.

    There are no defaults here: the config's are written once, in the schema
    (``workflow/schemas/config.schema.yaml``), and filled in by
    :func:`pipeline_lib.config.validate_config`; the workflow passes each rule the
    validated sections it reads.  Raises :class:`SpecError` naming the first unknown,
    missing or bad key.
    """
    checked = _check_section({} if spec is None else spec, _RULES, where, top=True)
    missing = [section for section in require if section not in checked]
    if missing:
        raise SpecError(
            f"{where}.{missing[0]}: missing; this product reads {where}."
            f"{{{', '.join(require)}}}"
        )
    if "generate" in checked and checked.get("grammar", "") is None:
        try:
            _grammar_shape(checked).check()
        except ValueError as error:
            raise SpecError(f"{where}.generate: {error}") from None
    return checked


def _check_section(
    value: Any, rules: dict[str, Any], path: str, top: bool = False
) -> dict[str, Any]:
    """Unknown keys are errors, and so are missing ones below the top level (a section given
    is given whole); the top level keeps only the sections present."""
    if not isinstance(value, dict):
        raise SpecError(f"{path}: expected a mapping, got {value!r}")
    for key in value:
        if key not in rules:
            raise SpecError(f"{path}.{key}: unknown key; allowed keys: {', '.join(rules)}")
    checked: dict[str, Any] = {}
    for key, rule in rules.items():
        if key not in value:
            if top:
                continue
            raise SpecError(
                f"{path}.{key}: missing (pass the whole validated section, "
                "as pipeline_lib.config.validate_config fills it)"
            )
        if isinstance(rule, dict):
            checked[key] = _check_section(value[key], rule, f"{path}.{key}")
        else:
            checked[key] = rule(f"{path}.{key}", value[key])
    return checked


def _grammar_shape(spec: dict[str, Any]) -> GrammarShape:
    fields = {key: value for key, value in spec["generate"].items() if key != "seed"}
    return GrammarShape(**fields)


# ---------------------------------------------------------------------------
# Shared helpers


def _checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` except ``meta.json``, by relative path."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "meta.json")
    return {str(p.relative_to(directory)): store.sha256_file(p) for p in files}


def _finish(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    meta = {"format_version": store.FORMAT_VERSION, **meta, "checksums": _checksums(directory)}
    files.write_json_atomic(directory / "meta.json", meta)
    return meta


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _save(path: Path, array: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def _short(value: float) -> float:
    return float(f"{value:.6g}")


def load_grammar_dir(grammar_dir: Path) -> tuple[Grammar, dict[str, Any]]:
    """The grammar of a :func:`build_grammar` directory and its meta.json (checksum verified)."""
    grammar_dir = Path(grammar_dir)
    meta = store.read_meta(grammar_dir)
    if meta.get("kind") != "pcfg_grammar":
        raise PcfgError(
            f"{grammar_dir}: not a grammar directory (meta.json kind {meta.get('kind')!r})"
        )
    path = grammar_dir / GRAMMAR_FILE
    if not path.exists():
        raise PcfgError(f"{path}: missing")
    if store.sha256_file(path) != meta["checksums"][GRAMMAR_FILE]:
        raise PcfgError(
            f"{path}: checksum mismatch with {grammar_dir / 'meta.json'} (modified grammar?)"
        )
    grammar = read_grammar(path, "nltk", allow_unreachable=bool(meta["allow_unreachable"]))
    return grammar, meta


def _grammar_reference(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "sha256": meta["checksums"][GRAMMAR_FILE],
        "source": meta["source"],
        "counts": meta["counts"],
    }


def _vocabulary(grammar: Grammar, spec: dict[str, Any]) -> tuple[MlmVocabulary, dict[str, Any]]:
    path = spec["mlm"]["vocab"]
    if path is None:
        vocabulary = compact_vocabulary(grammar)
        info: dict[str, Any] = {"kind": "compact"}
    else:
        vocabulary = bert_vocabulary(grammar, path)
        info = {"kind": "file", "path": path, "sha256": store.sha256_file(Path(path))}
    info.update(
        size=vocabulary.size,
        pad_id=vocabulary.pad_id,
        cls_id=vocabulary.cls_id,
        sep_id=vocabulary.sep_id,
        mask_id=vocabulary.mask_id,
    )
    return vocabulary, info


def _vocabulary_text(vocabulary: MlmVocabulary) -> str:
    return "".join(token + "\n" for token in vocabulary.tokens)


def _check_fits(sentences: Sequence[np.ndarray], max_seq_length: int, what: str) -> None:
    for number, sentence in enumerate(sentences):
        if len(sentence) + 2 > max_seq_length:
            raise PcfgError(
                f"{what} sentence {number + 1} has {len(sentence)} words but "
                f"pcfg.mlm.max_seq_length {max_seq_length} fits at most {max_seq_length - 2} "
                "(with [CLS]/[SEP])"
            )


def _padded_inputs(
    sentences: Sequence[np.ndarray], vocabulary: MlmVocabulary, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] w_1 .. w_n [SEP]`` padded to ``length``: (input_ids int32, input_mask int8)."""
    input_ids = np.full((len(sentences), length), vocabulary.pad_id, dtype=np.int32)
    input_mask = np.zeros((len(sentences), length), dtype=np.int8)
    for row, sentence in enumerate(sentences):
        n = len(sentence)
        input_ids[row, 0] = vocabulary.cls_id
        input_ids[row, 1 : n + 1] = vocabulary.terminal_ids[sentence]
        input_ids[row, n + 1] = vocabulary.sep_id
        input_mask[row, : n + 2] = 1
    return input_ids, input_mask


def _sample_chunked(
    grammar: Grammar, n: int, seed: int, stream: int, length_limit: int, what: str
) -> list[np.ndarray]:
    sentences: list[np.ndarray] = []
    for start in range(0, n, SAMPLE_CHUNK):
        count = min(SAMPLE_CHUNK, n - start)
        sentences.extend(
            sample_sentences(
                grammar, count, seed, start_index=start, stream=stream, length_limit=length_limit
            )
        )
        log.info("%s: sampled %d/%d sentences", what, len(sentences), n)
    return sentences


def _chart_chunks(
    sentences: Sequence[np.ndarray], spec: dict[str, Any]
) -> Iterator[tuple[int, Sequence[np.ndarray]]]:
    size = spec["chart"]["batch_size"] * CHART_CHUNK_BATCHES
    for start in range(0, len(sentences), size):
        yield start, sentences[start : start + size]


def _log_jax_cache() -> None:
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if directory:
        log.info("JAX persistent compilation cache: %s", directory)
    else:
        log.info("JAX persistent compilation cache off (set JAX_COMPILATION_CACHE_DIR to enable)")


# ---------------------------------------------------------------------------
# 1. Grammar


def build_grammar(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write ``out_dir/grammar.txt`` (nltk format) and ``meta.json``; returns the meta dict.

    With ``spec["grammar"]`` set, that file is read (``grammar_format``,
    ``allow_unreachable``), validated and re-written; otherwise a grammar is
    generated from ``spec["generate"]``.
    """
    spec = validate_spec(spec, require=("grammar", "grammar_format", "allow_unreachable"))
    if spec["grammar"] is None:
        spec = validate_spec(spec, require=("generate",))
    started = time.perf_counter()
    allow_unreachable = spec["allow_unreachable"]
    parameters: dict[str, Any] = {
        "grammar": spec["grammar"],
        "grammar_format": spec["grammar_format"],
        "allow_unreachable": allow_unreachable,
    }
    if spec["grammar"] is not None:
        path = Path(spec["grammar"])
        grammar = read_grammar(path, spec["grammar_format"], allow_unreachable=allow_unreachable)
        detected = spec["grammar_format"]
        if detected == "auto":
            detected = "nltk" if "->" in path.read_text(encoding="utf-8") else "rules"
        source: dict[str, Any] = {
            "kind": "file",
            "path": spec["grammar"],
            "format": detected,
            "sha256": store.sha256_file(path),
        }
        generator = "pipeline_lib.pcfg.grammar_io:read_grammar"
        seed: dict[str, int] = {}
    else:
        shape = _grammar_shape(spec)
        grammar = generate_grammar(shape, spec["generate"]["seed"])
        source = {"kind": "generated", "seed": spec["generate"]["seed"], "shape": asdict(shape)}
        generator = "pipeline_lib.pcfg.generate:generate_grammar"
        seed = {"generate": spec["generate"]["seed"]}
        parameters["generate"] = spec["generate"]
    text = format_nltk_grammar(grammar)
    # What the other rules will read: check it parses back to the same structure.
    reread = parse_nltk_grammar(text, source=GRAMMAR_FILE, allow_unreachable=allow_unreachable)
    if (reread.nonterminals, reread.terminals, reread.start) != (
        grammar.nonterminals,
        grammar.terminals,
        grammar.start,
    ):
        raise PcfgError("internal error: the written grammar does not read back identically")
    counts = {
        "nonterminals": grammar.n_nonterminals,
        "terminals": grammar.n_terminals,
        "rules": {
            "binary": len(grammar.binary_rules),
            "unary": len(grammar.unary_rules),
            "lexical": len(grammar.lexical_rules),
            "total": len(grammar.binary_rules)
            + len(grammar.unary_rules)
            + len(grammar.lexical_rules),
        },
        "start_unary_children": len(grammar.start_unary_children()),
    }
    with files.atomic_directory(out_dir) as tmp:
        _write_text(tmp / GRAMMAR_FILE, text)
        meta = _finish(
            tmp,
            {
                "kind": "pcfg_grammar",
                "generator": generator,
                "parameters": parameters,
                "seed": seed,
                "source": source,
                "allow_unreachable": allow_unreachable,
                "start_symbol": grammar.start_symbol,
                "counts": counts,
                "max_lhs_probability_sum_deviation": _short(
                    float(np.abs(grammar.lhs_probability_sums() - 1).max())
                ),
            },
        )
    log.info(
        "grammar (%s): %d nonterminals, %d terminals, %d rules -> %s (%.1fs)",
        source["kind"],
        counts["nonterminals"],
        counts["terminals"],
        counts["rules"]["total"],
        out_dir,
        time.perf_counter() - started,
    )
    return meta


# ---------------------------------------------------------------------------
# 2a. Pre-training corpus + MLM instances

MLM_ARRAYS = {
    "input_ids": np.int32,
    "input_mask": np.int8,
    "masked_lm_positions": np.int32,
    "masked_lm_ids": np.int32,
    "masked_lm_weights": np.float32,
}


def build_pretrain(spec: dict[str, Any], grammar_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Sentences (``spec["sample"]``) and their BERT-masked instances (``spec["mlm"]``).

    Instance row ``d * n_sentences + i`` is duplicate ``d`` of sentence ``i``
    (duplicate-major, unshuffled), as :func:`pipeline_lib.pcfg.mlm.create_mlm_instances`.
    """
    spec = validate_spec(spec, require=("sample", "mlm"))
    started = time.perf_counter()
    grammar, grammar_meta = load_grammar_dir(grammar_dir)
    vocabulary, vocabulary_info = _vocabulary(grammar, spec)
    sample_spec, mlm_spec = spec["sample"], spec["mlm"]
    config = MlmConfig(
        max_seq_length=mlm_spec["max_seq_length"],
        masked_lm_prob=mlm_spec["masked_lm_prob"],
        max_predictions_per_seq=mlm_spec["max_predictions_per_seq"],
        dup_factor=mlm_spec["dup_factor"],
    )
    n = sample_spec["n_sentences"]
    with files.atomic_directory(out_dir) as tmp:
        sentences = _sample_chunked(
            grammar,
            n,
            sample_spec["seed"],
            STREAM_PRETRAINING,
            sample_spec["length_limit"],
            "pretrain",
        )
        _check_fits(sentences, config.max_seq_length, "pre-training")
        with open(tmp / "sentences.txt", "w", encoding="utf-8", newline="\n") as handle:
            for start in range(0, n, SAMPLE_CHUNK):
                handle.write(sentences_to_text(grammar, sentences[start : start + SAMPLE_CHUNK]))
        _write_text(tmp / "vocab.txt", _vocabulary_text(vocabulary))

        total = config.dup_factor * n
        widths = {
            "input_ids": config.max_seq_length,
            "input_mask": config.max_seq_length,
            "masked_lm_positions": config.max_predictions_per_seq,
            "masked_lm_ids": config.max_predictions_per_seq,
            "masked_lm_weights": config.max_predictions_per_seq,
        }
        arrays = {
            name: np.lib.format.open_memmap(
                tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=(total, widths[name])
            )
            for name, dtype in MLM_ARRAYS.items()
        }
        for start in range(0, n, MLM_CHUNK):
            chunk = sentences[start : start + MLM_CHUNK]
            instances = create_mlm_instances(
                chunk, vocabulary, mlm_spec["seed"], config, first_index=start
            ).as_dict()
            for duplicate in range(config.dup_factor):
                rows = slice(duplicate * n + start, duplicate * n + start + len(chunk))
                source_rows = slice(duplicate * len(chunk), (duplicate + 1) * len(chunk))
                for name, array in arrays.items():
                    array[rows] = instances[name][source_rows]
            log.info(
                "pretrain: masked %d/%d sentences (x%d duplicates)",
                start + len(chunk),
                n,
                config.dup_factor,
            )
        n_predictions = int(
            sum(
                int(arrays["masked_lm_weights"][i : i + MLM_CHUNK].sum())
                for i in range(0, total, MLM_CHUNK)
            )
        )
        samples = _pretrain_samples(grammar, vocabulary, sentences, arrays)
        for array in arrays.values():
            array.flush()
        del arrays
        _write_jsonl(tmp / "sample.jsonl", samples)

        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=n)
        meta = _finish(
            tmp,
            {
                "kind": "pcfg_pretrain",
                "generator": "pipeline_lib.pcfg.dataset:build_pretrain",
                "parameters": {"sample": sample_spec, "mlm": mlm_spec},
                "seed": {"sample": sample_spec["seed"], "mlm": mlm_spec["seed"]},
                "grammar": _grammar_reference(grammar_meta),
                "vocab": vocabulary_info,
                "layout": {
                    "sentences.txt": "one sentence per line, words separated by spaces",
                    "instances": "row d * n_sentences + i = duplicate d of sentence i (unshuffled)",
                    "arrays": {
                        name: [str(np.dtype(dtype)), "n_instances", widths[name]]
                        for name, dtype in MLM_ARRAYS.items()
                    },
                },
                "counts": {
                    "sentences": n,
                    "tokens": int(lengths.sum()),
                    "sentence_length": store.length_stats(lengths, digits=4),
                    "instances": total,
                    "masked_predictions": n_predictions,
                },
            },
        )
    log.info(
        "pretrain: %d sentences, %d instances -> %s (%.1fs)",
        n,
        total,
        out_dir,
        time.perf_counter() - started,
    )
    return meta


def _pretrain_samples(
    grammar: Grammar,
    vocabulary: MlmVocabulary,
    sentences: Sequence[np.ndarray],
    arrays: dict[str, np.ndarray],
) -> list[dict[str, Any]]:
    rows = []
    for i in range(min(SAMPLE_ROWS, len(sentences))):
        length = int(arrays["input_mask"][i].sum())
        n_masked = int(arrays["masked_lm_weights"][i].sum())
        ids = arrays["input_ids"][i, :length].tolist()
        positions = arrays["masked_lm_positions"][i, :n_masked].tolist()
        rows.append(
            {
                "index": i,
                "text": " ".join(grammar.terminals[int(w)] for w in sentences[i]),
                "masked_text": " ".join(vocabulary.tokens[t] for t in ids),
                "input_ids": ids,
                "masked_lm_positions": positions,
                "masked_lm_labels": [
                    vocabulary.tokens[t] for t in arrays["masked_lm_ids"][i, :n_masked].tolist()
                ],
            }
        )
    return rows


# ---------------------------------------------------------------------------
# 2b. Downstream tasks A/B/C

SPLITS = ("train", "validation")


def _task_stage(spec: dict, require: tuple[str, ...], section_name: str, task: str,
                grammar_dir: Path):
    """The start of a per-task stage: the checked spec, its section (which must list `task`),
    the start time, and the grammar with its meta."""
    spec = validate_spec(spec, require=require)
    section = spec[section_name]
    if task not in section["tasks"]:
        raise SpecError(f"task {task!r} is not in pcfg.{section_name}.tasks "
                        f"({', '.join(section['tasks'])})")
    started = time.perf_counter()
    _log_jax_cache()
    grammar, grammar_meta = load_grammar_dir(grammar_dir)
    return spec, section, started, grammar, grammar_meta


def build_downstream(
    spec: dict[str, Any], grammar_dir: Path, out_dir: Path, task: str
) -> dict[str, Any]:
    """Train and validation sets of one downstream task (labels of :func:`labels.task_labels`).

    Sentences are ``labels.draw_downstream_sentences(grammar, n, downstream.seed, split)``
    (``4 < len < 32``), labels the released semantics; ``{split}.csv`` is the
    original ``text,label`` file, the ``.npy`` files the same rows as
    ``[CLS] .. [SEP]`` ids padded to ``mlm.max_seq_length`` (vocabulary of ``vocab.txt``).
    """
    from pipeline_lib.pcfg.labels import (
        draw_downstream_sentences,
        label_names,
        task_labels,
        write_label_csv,
    )

    spec, downstream, started, grammar, grammar_meta = _task_stage(
        spec, ("downstream", "mlm", "chart"), "downstream", task, grammar_dir)
    vocabulary, vocabulary_info = _vocabulary(grammar, spec)
    names = label_names(grammar, task)  # fails early if the grammar cannot label this task
    length = spec["mlm"]["max_seq_length"]
    counts: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    with files.atomic_directory(out_dir) as tmp:
        for split in SPLITS:
            n = downstream["n_train"] if split == "train" else downstream["n_validation"]
            sentences = draw_downstream_sentences(grammar, n, downstream["seed"], split)
            _check_fits(sentences, length, f"task {task} {split}")
            labels = np.empty(n, dtype=np.int64)
            for start, chunk in _chart_chunks(sentences, spec):
                labels[start : start + len(chunk)] = task_labels(
                    grammar,
                    chunk,
                    task,
                    batch_size=spec["chart"]["batch_size"],
                    method=spec["chart"]["method"],
                )
                log.info(
                    "downstream %s %s: labelled %d/%d sentences", task, split, start + len(chunk), n
                )
            write_label_csv(tmp / f"{split}.csv", grammar, sentences, labels)
            input_ids, input_mask = _padded_inputs(sentences, vocabulary, length)
            _save(tmp / f"{split}.input_ids.npy", input_ids)
            _save(tmp / f"{split}.input_mask.npy", input_mask)
            _save(tmp / f"{split}.labels.npy", labels.astype(np.int32))
            values, frequencies = np.unique(labels, return_counts=True)
            counts[split] = {
                "examples": n,
                "sentence_length": store.length_stats(
                    np.fromiter((len(s) for s in sentences), dtype=np.int64, count=n), digits=4
                ),
                "distinct_labels": len(values),
                "label_counts": {str(int(v)): int(c) for v, c in zip(values, frequencies)},
            }
            if split == "train":
                samples = [
                    {
                        "split": split,
                        "index": i,
                        "text": " ".join(grammar.terminals[int(w)] for w in sentences[i]),
                        "label": int(labels[i]),
                        "label_name": names[int(labels[i])],
                    }
                    for i in range(min(SAMPLE_ROWS, n))
                ]
        _write_text(tmp / "vocab.txt", _vocabulary_text(vocabulary))
        _write_jsonl(tmp / "sample.jsonl", samples)
        meta = _finish(
            tmp,
            {
                "kind": "pcfg_downstream",
                "task": task,
                "generator": "pipeline_lib.pcfg.dataset:build_downstream",
                "parameters": {
                    "downstream": downstream,
                    "max_seq_length": length,
                    "chart": spec["chart"],
                    "length_filter": "4 < len < 32",
                },
                "seed": {"downstream": downstream["seed"]},
                "grammar": _grammar_reference(grammar_meta),
                "vocab": vocabulary_info,
                "labels": {
                    "names": {str(k): v for k, v in sorted(names.items())},
                    "id_space": "A: rank of S_i among the start symbol's children; "
                    "B/C: nonterminal index (sorted names)",
                },
                "counts": counts,
            },
        )
    log.info("downstream %s -> %s (%.1fs)", task, out_dir, time.perf_counter() - started)
    return meta


# ---------------------------------------------------------------------------
# 2c. Optimal-loss evaluation set


def build_optimal_loss(spec: dict[str, Any], grammar_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Evaluation sentences, their exact single-mask conditionals and the optimal MLM loss.

    Sentences come from the pre-training distribution (``sample.length_limit``)
    on their own stream.  ``conditionals.npy`` is ``(n_tokens, T)`` float32:
    row ``offsets[i] + t`` is p(x_t = . | x_-t) of sentence ``i`` over the
    grammar's terminals, whose vocabulary ids are ``conditional_vocab_ids.npy``
    (the original ``pos_list``); the masked token is ``input_ids[i, t + 1]``.
    ``metrics.json`` is :class:`conditionals.OptimalLoss` (as ``pcfg optimal-loss``).
    """
    from pipeline_lib.pcfg.conditionals import entropy_nats, exact_conditionals

    spec = validate_spec(spec, require=("optimal_loss", "sample", "mlm", "chart"))
    started = time.perf_counter()
    _log_jax_cache()
    grammar, grammar_meta = load_grammar_dir(grammar_dir)
    vocabulary, vocabulary_info = _vocabulary(grammar, spec)
    loss_spec, chart_spec = spec["optimal_loss"], spec["chart"]
    chart_grammar = grammar.renormalized() if loss_spec["renormalize"] else grammar
    n = loss_spec["n_sentences"]
    with files.atomic_directory(out_dir) as tmp:
        sentences = _sample_chunked(
            grammar,
            n,
            loss_spec["seed"],
            STREAM_OPTIMAL_LOSS,
            spec["sample"]["length_limit"],
            "optimal-loss",
        )
        _check_fits(sentences, spec["mlm"]["max_seq_length"], "optimal-loss")
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        conditionals = np.lib.format.open_memmap(
            tmp / "conditionals.npy",
            mode="w+",
            dtype=np.float32,
            shape=(int(offsets[-1]), grammar.n_terminals),
        )
        entropy_sums = np.empty(n)
        nll_sums = np.empty(n)
        samples: list[dict[str, Any]] = []
        for start, chunk in _chart_chunks(sentences, spec):
            tables = exact_conditionals(
                chart_grammar,
                chunk,
                batch_size=chart_spec["batch_size"],
                method=chart_spec["method"],
            )
            for k, (words, table) in enumerate(zip(chunk, tables)):
                i = start + k
                if table is None:
                    raise PcfgError(
                        f"optimal-loss sentence {i + 1} has probability zero; "
                        "its conditionals are undefined"
                    )
                conditionals[offsets[i] : offsets[i + 1]] = table
                entropies = entropy_nats(table)
                entropy_sums[i] = entropies.sum()
                nll_sums[i] = -np.log(table[np.arange(len(words)), words]).sum()
                if i < SAMPLE_ROWS:
                    samples.append(_optimal_loss_sample(grammar, i, words, table, entropies))
            log.info("optimal-loss: conditionals of %d/%d sentences", start + len(chunk), n)
        conditionals.flush()
        del conditionals
        metrics = _optimal_loss_metrics(entropy_sums, nll_sums, lengths)

        input_ids, input_mask = _padded_inputs(sentences, vocabulary, spec["mlm"]["max_seq_length"])
        _write_text(tmp / "sentences.txt", sentences_to_text(grammar, sentences))
        _save(tmp / "offsets.npy", offsets)
        _save(tmp / "input_ids.npy", input_ids)
        _save(tmp / "input_mask.npy", input_mask)
        _save(tmp / "conditional_vocab_ids.npy", vocabulary.terminal_ids.astype(np.int32))
        _write_text(tmp / "vocab.txt", _vocabulary_text(vocabulary))
        _write_text(tmp / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True) + "\n")
        _write_jsonl(tmp / "sample.jsonl", samples)
        meta = _finish(
            tmp,
            {
                "kind": "pcfg_optimal_loss",
                "generator": "pipeline_lib.pcfg.dataset:build_optimal_loss",
                "parameters": {
                    "optimal_loss": loss_spec,
                    "length_limit": spec["sample"]["length_limit"],
                    "max_seq_length": spec["mlm"]["max_seq_length"],
                    "chart": chart_spec,
                },
                "seed": {"optimal_loss": loss_spec["seed"]},
                "grammar": _grammar_reference(grammar_meta),
                "vocab": vocabulary_info,
                "metrics": metrics,
                "counts": {
                    "sentences": n,
                    "tokens": int(offsets[-1]),
                    "sentence_length": store.length_stats(lengths, digits=4),
                },
            },
        )
    log.info(
        "optimal-loss: %.4f +- %.4f nats/token over %d sentences -> %s (%.1fs)",
        metrics["expected_cross_entropy_per_token"],
        metrics["expected_cross_entropy_standard_error"],
        n,
        out_dir,
        time.perf_counter() - started,
    )
    return meta


def _optimal_loss_metrics(
    entropy_sums: np.ndarray, nll_sums: np.ndarray, lengths: np.ndarray
) -> dict[str, Any]:
    """The same numbers as :func:`conditionals.optimal_mlm_loss`, from per-sentence sums."""
    from pipeline_lib.pcfg.conditionals import OptimalLoss, ratio_standard_error

    length_array = lengths.astype(float)
    per_token = entropy_sums.sum() / length_array.sum()
    return OptimalLoss(
        expected_cross_entropy_per_token=float(per_token),
        expected_cross_entropy_standard_error=ratio_standard_error(
            entropy_sums, length_array, per_token
        ),
        sampled_nll_per_token=float(nll_sums.sum() / length_array.sum()),
        expected_cross_entropy_per_sentence_mean=float(np.mean(entropy_sums / length_array)),
        n_sentences=len(lengths),
        n_tokens=int(length_array.sum()),
    ).as_dict()


def _optimal_loss_sample(
    grammar: Grammar, index: int, words: np.ndarray, table: np.ndarray, entropies: np.ndarray
) -> dict[str, Any]:
    positions = []
    for t, word in enumerate(words.tolist()):
        top = np.argsort(-table[t], kind="stable")[:3]
        positions.append(
            {
                "word": grammar.terminals[word],
                "p_word": _short(float(table[t, word])),
                "entropy": _short(float(entropies[t])),
                "top3": [[grammar.terminals[int(w)], _short(float(table[t, w]))] for w in top],
            }
        )
    return {
        "index": index,
        "text": " ".join(grammar.terminals[w] for w in words.tolist()),
        "mean_entropy": _short(float(entropies.mean())),
        "positions": positions,
    }


# ---------------------------------------------------------------------------
# CLI glue (argparse wiring lives in cli.py)


def parse_spec_argument(text: str) -> dict[str, Any]:
    """``--spec`` JSON (the config's ``pcfg:`` section) -> validated spec."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"--spec: not valid JSON ({error.msg} at column {error.colno})") from None
    return validate_spec(spec)


def ensure_logging() -> None:
    """Log INFO lines to stderr unless logging is configured (``python -m pipeline_lib.pcfg``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )


# ---------------------------------------------------------------------------
# Seq2seq transduction tasks (pcfg/transduction.py)

# Candidate sentences drawn per distinct one kept, at most (a grammar that cannot produce
# enough distinct sentences of the minimum length fails instead of looping).
_TRANSDUCTION_MAX_DRAWS_PER_SENTENCE = 200


def build_transduction(
    spec: dict[str, Any], grammar_dir: Path, out_dir: Path, task: str
) -> dict[str, Any]:
    """Train / validation / test sets of one seq2seq task of `pcfg.transduction`.

    Sentences (``sample.length_limit``, at least ``transduction.min_length`` words) come from
    their own stream; every sentence occurs once over all splits (train first, then
    validation, then test), so test inputs are never seen in training. ``{split}.tsv`` holds
    ``input<TAB>target`` lines of space-separated words (what the ``pcfg_<task>`` downstream
    adapter reads); targets come from each sentence's Viterbi tree (`transduction.transduce`).
    """
    from pipeline_lib.pcfg.transduction import top_level_split, transduce
    from pipeline_lib.pcfg.viterbi import viterbi_parses

    spec, section, started, grammar, grammar_meta = _task_stage(
        spec, ("transduction", "sample", "chart"), "transduction", task, grammar_dir)
    sizes = {
        "train": section["n_train"],
        "validation": section["n_validation"],
        "test": section["n_test"],
    }
    needed = sum(sizes.values())
    kept: list[np.ndarray] = []
    seen: set[tuple[int, ...]] = set()
    drawn = 0
    while len(kept) < needed:
        if drawn > _TRANSDUCTION_MAX_DRAWS_PER_SENTENCE * needed:
            raise PcfgError(
                f"pcfg.transduction: the grammar gave only {len(kept)} distinct sentences of "
                f">= {section['min_length']} words in {drawn} draws; {needed} are needed "
                "(lower n_train/n_validation/n_test or min_length)"
            )
        batch = sample_sentences(
            grammar, SAMPLE_CHUNK, section["seed"], start_index=drawn,
            stream=STREAM_TRANSDUCTION, length_limit=spec["sample"]["length_limit"],
        )
        drawn += SAMPLE_CHUNK
        for sentence in batch:
            key = tuple(int(w) for w in sentence)
            if len(key) >= section["min_length"] and key not in seen and len(kept) < needed:
                seen.add(key)
                kept.append(sentence)
    parses = viterbi_parses(grammar, kept, batch_size=spec["chart"]["batch_size"])
    rows = []
    for i, (sentence, parse) in enumerate(zip(kept, parses)):
        if parse.tree is None:
            raise PcfgError(f"transduction sentence {i + 1} has probability zero")
        left, right = top_level_split(parse.tree)
        words = [grammar.terminals[int(w)] for w in sentence]
        if left + right != words:
            raise PcfgError(f"transduction sentence {i + 1}: the tree's leaves are not the words")
        rows.append((" ".join(words), " ".join(transduce(task, left, right))))
    counts: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    with files.atomic_directory(out_dir) as tmp:
        start = 0
        for split, n in sizes.items():
            split_rows = rows[start : start + n]
            start += n
            _write_text(tmp / f"{split}.tsv", "".join(f"{a}\t{b}\n" for a, b in split_rows))
            lengths = np.fromiter((len(a.split()) for a, _ in split_rows), np.int64, n)
            counts[split] = {
                "examples": n,
                "sentence_length": store.length_stats(lengths, digits=4),
            }
            if split == "train":
                samples = [{"inputs": a, "targets": b} for a, b in split_rows[:SAMPLE_ROWS]]
        _write_jsonl(tmp / "sample.jsonl", samples)
        meta = _finish(
            tmp,
            {
                "kind": "pcfg_transduction",
                "generator": "pipeline_lib.pcfg.dataset:build_transduction",
                "task": task,
                "description": TRANSDUCTION_TASKS[task],
                "parameters": {
                    "transduction": section,
                    "length_limit": spec["sample"]["length_limit"],
                },
                "seed": {"transduction": section["seed"]},
                "grammar": _grammar_reference(grammar_meta),
                "counts": counts | {"drawn": drawn},
            },
        )
    log.info("transduction %s: %d examples -> %s (%.1fs)", task, needed, out_dir,
             time.perf_counter() - started)
    return meta
